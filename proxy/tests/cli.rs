//! The binary as an operator runs it: a log filter it cannot take is
//! refused with exit 64 and one line, never a panic.

#[test]
fn a_non_ascii_log_filter_is_refused_not_a_panic() {
    // tracing-subscriber 0.3 panics on this one (found by fuzzing).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .args(["--admin-addr=127.0.0.1:0", "--outbound-addr=127.0.0.1:0"])
        .args(["--inbound-addr=127.0.0.1:0", "--log=x[\u{4c5ca}0=e]"])
        .output()
        .expect("weft-proxy runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("a log filter is ASCII"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
