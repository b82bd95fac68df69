//! weft's test harness: isolated network namespaces that play a Kubernetes
//! node and its pods, processes run inside them, and the helpers the
//! end-to-end scenarios in `tests/tests/` share. See `tests/README.md` for
//! the testing levels and the rules these tests follow.
#![forbid(unsafe_code)]

pub mod chart;
pub mod fakekube;
pub mod mesh;
pub mod netns;
pub mod otlp;
pub mod process;
pub mod relay;
pub mod require;
pub mod runner;
pub mod wire;

pub use mesh::{eventually, metric, start_proxy};
pub use netns::{Node, Pod};
pub use process::{bin, Proc};
pub use require::netns_or_skip;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// How long a test waits for a process to say something it must say.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure that something does *not* happen.
pub const QUIET: Duration = Duration::from_millis(400);

/// The proxy's uid, whose traffic weft-init never redirects.
pub const PROXY_UID: u32 = 2102;
/// An ordinary application uid.
pub const APP_UID: u32 = 1000;

/// Runs `weft-init ARGS` as root in `pod`.
pub fn weft_init(pod: &Pod, args: &[&str]) -> Output {
    pod.run(None, &bin("weft-init"), args)
        .expect("weft-init runs")
}

/// Runs `weft-init ARGS` and fails the test unless it succeeded.
pub fn install(pod: &Pod, args: &[&str]) {
    let out = weft_init(pod, args);
    assert!(
        out.status.success(),
        "weft-init {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `weft-netprobe listen ADDR` as `uid` in `pod` and waits until it listens.
pub fn listen(pod: &Pod, uid: u32, addr: &str) -> Proc {
    let p = pod
        .spawn(Some(uid), &bin("weft-netprobe"), &["listen", addr])
        .expect("netprobe starts");
    let line = p.line(WAIT).expect("netprobe says it listens");
    assert!(line.starts_with("LISTENING"), "{line}");
    p
}

/// `weft-netprobe connect ADDR` as `uid` in `pod`: its stdout, and whether it
/// connected and got the listener's answer.
pub fn connect(pod: &Pod, uid: u32, addr: &str) -> (bool, String) {
    let out = pod
        .run(Some(uid), &bin("weft-netprobe"), &["connect", addr, "2000"])
        .expect("netprobe runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The `key=value` field of a netprobe line.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Stderr of a finished process, trimmed.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// The path of a program on `PATH`.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| Path::new(p).is_file())
}

/// The test-only gRPC echo service (`proto/weft/test/v1/echo.proto`).
#[allow(missing_debug_implementations)]
pub mod echo {
    tonic::include_proto!("weft.test.v1");
}

/// The value of one series (name and labels, exactly as the page prints
/// them) on the Prometheus page `/metrics` at `addr`; `None` when absent.
pub async fn admin_metric(addr: std::net::SocketAddr, series: &str) -> Option<f64> {
    http_get(addr, "/metrics").await.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Waits until `series` on `/metrics` at `addr` is present and reads `want`,
/// at most `within`. It polls: the page has no signal to wait on.
///
/// # Panics
/// When `within` passes first, saying what the series read last.
pub async fn until_admin_metric(
    addr: std::net::SocketAddr,
    series: &str,
    want: f64,
    within: std::time::Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = admin_metric(addr, series).await;
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series}: have {got:?}, want {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Waits until `/ready` at `addr` (an admin port) answers `ready`, at most
/// `within`. It polls, as [`until_admin_metric`] does.
///
/// # Panics
/// When `within` passes first, with what `/ready` said last.
pub async fn until_ready(addr: std::net::SocketAddr, within: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let said = http_get(addr, "/ready").await;
        if said.starts_with("ready") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready after {within:?}: {said}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// `GET path` over HTTP/1.1 on loopback (an admin port): the body.
///
/// # Panics
/// If the connection or the exchange fails.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects to the admin port");
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("sends the request");
    let mut out = String::new();
    tcp.read_to_string(&mut out)
        .await
        .expect("reads the answer");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}
