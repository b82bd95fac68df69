//! The demo as a newcomer runs it (`weft-demo`, which `./scripts/demo`
//! starts): a short run must end with every verdict passing, computed
//! from the proxies' metrics; and the demo must leave nothing behind,
//! after a full run and after Ctrl-C in the middle of one: no network
//! namespace of its own, no process in any of its namespaces, no rule
//! changed on this machine, no working directory.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;
use weft_tests::*;

/// The verdicts the summary must hold, each passing.
const FEATURES: [&str; 5] = [
    "mTLS on every meshed hop",
    "traffic split follows its weights",
    "ratings' failures hidden by retries",
    "intruder denied, the app never reached",
    "one request traced across the mesh",
];
/// How long the demo may take to set up and show its first frame.
const START: Duration = Duration::from_secs(90);

/// The demo's network namespaces (`weft-PID-…`) and their inode numbers.
fn namespaces_of(pid: u32) -> BTreeSet<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let list = netns::ip(["netns", "list"]).unwrap_or_default();
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("weft-{pid}-")))
        .filter_map(|n| {
            let ino = std::fs::metadata(format!("/run/netns/{n}")).ok()?.ino();
            Some((n.to_owned(), ino))
        })
        .collect()
}

/// Processes whose network namespace is one of `inodes`.
fn processes_in(inodes: &BTreeSet<u64>) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(link) = std::fs::read_link(entry.path().join("ns/net")) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        let ino = link
            .strip_prefix("net:[")
            .and_then(|l| l.strip_suffix(']'))
            .and_then(|l| l.parse::<u64>().ok());
        if ino.is_some_and(|i| inodes.contains(&i)) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            out.push(format!(
                "{} {}",
                entry.file_name().to_string_lossy(),
                comm.trim()
            ));
        }
    }
    out
}

fn host_rules() -> String {
    let save = Command::new("iptables-save").output().unwrap();
    netns::normalise_save(&String::from_utf8_lossy(&save.stdout))
}

/// Starts the demo; returns it and its namespaces once the first frame of
/// the live view is out.
fn start(duration: &str) -> (Proc, BTreeSet<(String, u64)>) {
    let mut cmd = Command::new(bin("weft-demo"));
    cmd.args(["--duration", duration]);
    let demo = Proc::spawn("weft-demo", cmd).unwrap();
    demo.expect_line("weft demo · ", START)
        .expect("the demo shows its live view");
    let spaces = namespaces_of(demo.pid());
    assert!(spaces.len() >= 10, "the demo's pods: {spaces:?}");
    (demo, spaces)
}

/// Every line it prints until it closes its output.
fn rest(demo: &Proc, within: Duration) -> Vec<String> {
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + within;
    while let Ok(l) = demo.line(deadline.saturating_duration_since(std::time::Instant::now())) {
        lines.push(l);
    }
    lines
}

fn assert_nothing_left(pid: u32, spaces: &BTreeSet<(String, u64)>, rules: &str) {
    assert!(
        namespaces_of(pid).is_empty(),
        "namespaces left: {:?}",
        namespaces_of(pid)
    );
    let inodes: BTreeSet<u64> = spaces.iter().map(|(_, i)| *i).collect();
    let left = processes_in(&inodes);
    assert!(
        left.is_empty(),
        "processes left in the demo's namespaces: {left:?}"
    );
    assert_eq!(host_rules(), rules, "the demo changed this machine's rules");
    let dir = std::env::temp_dir().join(format!("weft-{pid}-demo"));
    assert!(!dir.exists(), "{} left", dir.display());
}

#[test]
fn a_short_run_passes_every_verdict_and_leaves_nothing() {
    if netns_or_skip("demo") {
        return;
    }
    let rules = host_rules();
    let (mut demo, spaces) = start("15s");
    let pid = demo.pid();
    let lines = rest(&demo, Duration::from_secs(120));
    let code = demo.wait_exit(Duration::from_secs(10)).unwrap();
    let text = lines.join("\n");
    for feature in FEATURES {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("PASS {feature}: "))),
            "no PASS for {feature:?}:\n{text}"
        );
    }
    assert!(!lines.iter().any(|l| l.starts_with("FAIL ")), "{text}");
    assert!(text.contains("all verdicts pass"), "{text}");
    // A trace id (32 hex digits) and its spans, one per hop.
    let trace = lines
        .iter()
        .find(|l| l.contains("PASS one request traced"))
        .and_then(|l| {
            l.split_whitespace()
                .find(|w| w.len() == 32 && w.chars().all(|c| c.is_ascii_hexdigit()))
        });
    assert!(trace.is_some(), "{text}");
    assert_eq!(code, Some(0), "{text}");
    assert_nothing_left(pid, &spaces, &rules);
}

#[test]
fn ctrl_c_in_the_middle_removes_everything() {
    if netns_or_skip("demo ctrl-c") {
        return;
    }
    let rules = host_rules();
    let (mut demo, spaces) = start("10m");
    let pid = demo.pid();
    let sent = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let lines = rest(&demo, Duration::from_secs(60));
    let code = demo.wait_exit(Duration::from_secs(10)).unwrap();
    assert_eq!(code, Some(130), "{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("interrupted: every namespace")),
        "{}",
        lines.join("\n")
    );
    assert_nothing_left(pid, &spaces, &rules);
}
