//! Whether this machine can run the network-namespace tests, and what to do
//! when it cannot.

use std::path::Path;

/// Set by `.ci/run`: a test that would be skipped fails instead.
pub const REQUIRE_ENV: &str = "WEFT_REQUIRE_NETNS";

/// Why network-namespace tests cannot run here, if they cannot.
pub fn netns_unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if euid != "0" {
        return Some(format!("not root (euid {euid})"));
    }
    for tool in [
        "ip",
        "iptables",
        "ip6tables",
        "iptables-save",
        "setpriv",
        "curl",
    ] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// Call first in every network-namespace test: `if netns_or_skip("name") { return; }`.
/// Returns true (skip) with a visible message when the machine cannot run
/// it, and panics instead when `WEFT_REQUIRE_NETNS=1`.
pub fn netns_or_skip(test: &str) -> bool {
    let Some(reason) = netns_unavailable() else {
        return false;
    };
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("{test}: network-namespace tests are required ({REQUIRE_ENV}=1) but cannot run: {reason}");
    }
    eprintln!(
        "SKIPPED {test}: network-namespace tests need root, ip, iptables, setpriv and curl: {reason}"
    );
    true
}
