//! What the in-process proxy tests share: the real `weft_proxy::run::run`
//! on 127.0.0.1 port 0 with the fake original destination of
//! `weft_proxy::test_util`, an in-process weft-control on the files source
//! (and a CA made by the test), test backends that say who they are, and
//! clients that go through the fake original destination.
//!
//! Everything stays on 127.0.0.0/8. Service ClusterIPs are 127.96.x.y:
//! discovery resolves them to endpoints on 127.0.0.1, and should a proxy
//! ever forward one to its original address instead (a fallback), the
//! connection still stays on loopback.
//!
//! Tests wait on signals ([`eventually`]), never on bare sleeps.
#![allow(dead_code)] // each test binary uses a part of it

pub mod backend;
pub mod client;
pub mod control;
pub mod metrics;
pub mod proxy;
pub mod tcp;
pub mod traffic;

#[allow(unused_imports)]
pub use backend::{backends, Backend};
#[allow(unused_imports)]
pub use client::{full, get, post, Reply, H1, H2};
#[allow(unused_imports)]
pub use control::{Ca, Control, Ep, Svc};
#[allow(unused_imports)]
pub use proxy::Proxy;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a test waits for something that must happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// Retries `f` until it succeeds or [`WAIT`] has passed; then fails the
/// test with `what` and the last error.
pub async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> anyhow::Result<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = anyhow::anyhow!("no attempt finished");
    loop {
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(Ok(v)) => return v,
            Ok(Err(e)) => last = e,
            // Cut at the deadline: the attempt before says why.
            Err(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: still not so after {WAIT:?}: {last:#}")
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long one test binary may run: past it a test is stuck somewhere
/// without a deadline, and the binary is stopped rather than left hanging.
const WATCHDOG: Duration = Duration::from_secs(180);

/// Logs of the proxies and control planes a test runs, at `WEFT_TEST_LOG`
/// (tracing syntax; `warn` when unset), captured with the test's output;
/// and the binary's watchdog.
pub fn logs() {
    static WATCHDOG_STARTED: std::sync::Once = std::sync::Once::new();
    WATCHDOG_STARTED.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(WATCHDOG);
            eprintln!("a test is still running after {WATCHDOG:?}: stopping");
            std::process::exit(101);
        });
    });
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_TEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A directory of its own under the system's temporary directory,
/// removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("weft-proxy-test-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("a temporary directory");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A socket address from a literal.
pub fn addr(s: &str) -> std::net::SocketAddr {
    s.parse().expect("a socket address")
}
