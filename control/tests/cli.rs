//! The binaries as a user runs them: `weft` prints clap's whole message for
//! bad arguments (exit 64); `weft-control` exits 64 with one line for flags
//! that cannot work together and for a choice it does not know (naming the
//! choices); with port 0 it logs the addresses it bound, and serves there.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const CONTROL: &str = env!("CARGO_BIN_EXE_weft-control");

fn run(bin: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin)
        .args(args)
        .env_remove("WEFT_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn weft_prints_clap_s_whole_message() {
    let (code, stderr) = run(WEFT, &["identity", "init"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("the following required arguments were not provided")
            && stderr.contains("--out <DIR>"),
        "which argument is missing: {stderr}"
    );
    assert!(stderr.contains("Usage:"), "{stderr}");

    let (code, stderr) = run(
        WEFT,
        &["identity", "init", "--out", "/x", "--anchor-hours", "0"],
    );
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("--anchor-hours") && stderr.contains("0"),
        "{stderr}"
    );
}

#[test]
fn weft_control_refuses_bad_configuration_in_one_line() {
    let dir = std::env::temp_dir();
    let source = format!("--source={}", dir.display());
    let (code, stderr) = run(CONTROL, &[&source, "--identity-secret=weft/weft-issuer"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("--identity-secret needs --source=kube"),
        "{stderr}"
    );

    let (code, stderr) = run(CONTROL, &[&source, "--log-format=xml"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("plain, json"), "the choices: {stderr}");
}

/// Kills the child when the test ends, passed or not.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `key=value` field of a log line.
fn field(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?
        .parse()
        .ok()
}

#[test]
fn weft_control_logs_the_addresses_it_bound() {
    let dir = std::env::temp_dir().join(format!("weft-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Child(
        Command::new(CONTROL)
            .arg(format!("--source={}", dir.display()))
            .args(["--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0"])
            .env("WEFT_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("weft-control starts"),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("weft-control logs where it serves");
        if line.contains("weft-control serving") {
            break line;
        }
    };
    let (grpc, admin) = (field(&line, "grpc"), field(&line, "admin"));
    let (Some(grpc), Some(admin)) = (grpc, admin) else {
        panic!("no addresses in {line:?}")
    };
    assert!(grpc.port() != 0 && admin.port() != 0, "{line}");
    // It serves there.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let live = runtime.block_on(weft_tests::http_get(admin, "/live"));
    assert_eq!(live.trim(), "live");
    assert!(std::net::TcpStream::connect(grpc).is_ok());
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_non_ascii_log_filter_is_refused_not_a_panic() {
    // tracing-subscriber 0.3 panics on this one (found by fuzzing).
    let dir = std::env::temp_dir();
    let source = format!("--source={}", dir.display());
    let (code, stderr) = run(CONTROL, &[&source, "--log=x[\u{4c5ca}0=e]"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("a log filter is ASCII"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
