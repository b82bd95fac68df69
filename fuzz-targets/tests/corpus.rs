//! Replays every committed corpus file (`fuzz/corpus/<target>/`) through
//! its target's function, on stable: what libFuzzer found interesting
//! once, and every crash it ever found (kept in the corpus after its fix),
//! stays a test. A missing or empty corpus directory fails.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

#[test]
fn every_corpus_file_passes_its_target() {
    let mut failures = Vec::new();
    for (name, target) in weft_fuzz_targets::TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .map(|e| e.expect("a directory entry").path())
                .collect(),
            Err(e) => panic!("{}: {e}: target {name} has no corpus", dir.display()),
        };
        assert!(
            !files.is_empty(),
            "{}: target {name} has an empty corpus",
            dir.display()
        );
        for file in files {
            let data = std::fs::read(&file).expect("a corpus file");
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "corpus files that fail: {failures:#?}");
}

/// Every target has its cargo-fuzz binary, and every binary a target.
#[test]
fn targets_and_fuzz_binaries_agree() {
    let mut binaries: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .map(|e| e.expect("an entry").path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    binaries.sort();
    let mut names: Vec<String> = weft_fuzz_targets::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    names.sort();
    assert_eq!(binaries, names);
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for name in names {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} not in fuzz/Cargo.toml"
        );
    }
}
