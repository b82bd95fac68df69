//! The Helm chart as `scripts/chart-test` rendered it with the Helm SDK:
//! `WEFT_CHART_RENDER_DIR/<case>.json` (default `target/chart-render`), a
//! JSON list of the objects, for the tests that run what the chart renders.

use serde_json::Value;
use std::path::PathBuf;

/// The objects of `case` (`default`), or `None` (with a `SKIPPED` message)
/// when they were not rendered and nobody asked for them: with
/// `WEFT_CHART_RENDER_DIR` set (`scripts/test` sets it) a missing file
/// panics.
pub fn rendered(case: &str) -> Option<Vec<Value>> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("WEFT_CHART_RENDER_DIR").map(PathBuf::from);
    let required = dir.is_some();
    let dir = dir.unwrap_or_else(|| repo.join("target/chart-render"));
    // scripts/test gives a path relative to the repository.
    let dir = if dir.is_relative() {
        repo.join(dir)
    } else {
        dir
    };
    let file = dir.join(format!("{case}.json"));
    match std::fs::read(&file) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).expect("a JSON list of objects")),
        Err(e) if required => panic!("{}: {e} (run scripts/chart-test first)", file.display()),
        Err(_) => {
            eprintln!(
                "SKIPPED: {} is not rendered (scripts/chart-test renders it)",
                file.display()
            );
            None
        }
    }
}

/// The one object of `kind` among `objects`.
///
/// # Panics
/// If there is not exactly one.
pub fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}
