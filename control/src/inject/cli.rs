//! `weft inject` and `weft uninject`: read FILEs, DIRs (their `.yaml`,
//! `.yml` and `.json` files, in name order) or `-` (standard input),
//! process them with [`manifest::process`], and say on stderr what was
//! done to each workload. Nothing is written when any input is unreadable
//! or has a bad annotation value.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::manifest::{self, Line, Mode};
use super::Settings;

/// The output (YAML for stdout) and the summary, or every reason it failed,
/// one a line, each naming its file.
pub fn run(
    inputs: &[PathBuf],
    settings: &Settings,
    mode: Mode,
) -> Result<(String, Vec<String>), String> {
    let mut out = String::new();
    let mut summary = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in read_all(inputs)? {
        match manifest::process(&text, settings, mode) {
            Ok((yaml, lines)) => {
                if !yaml.is_empty() {
                    if !out.is_empty() {
                        out.push_str("---\n");
                    }
                    out.push_str(&yaml);
                }
                summary.extend(lines.iter().map(|l| describe(&name, l)));
            }
            Err(e) => errors.extend(e.lines().map(|l| format!("{name}: {l}"))),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    if summary.is_empty() {
        summary.push("no workload (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob) found".into());
    }
    Ok((out, summary))
}

fn describe(name: &str, line: &Line) -> String {
    let mark = if line.changed { "✓" } else { "-" };
    format!("{mark} {name}: {line}")
}

/// Each input's name and text.
fn read_all(inputs: &[PathBuf]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for input in inputs {
        if input == Path::new("-") {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("standard input: {e}"))?;
            out.push(("-".to_owned(), text));
        } else if input.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| format!("{}: {e}", input.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
                })
                .collect();
            files.sort();
            for file in files {
                out.push(read(&file)?);
            }
        } else {
            out.push(read(input)?);
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<(String, String), String> {
    std::fs::read_to_string(path)
        .map(|text| (path.display().to_string(), text))
        .map_err(|e| format!("{}: {e}", path.display()))
}
