//! Meshed pods: weft-init applied and weft-proxy running as its uid, as an
//! injected sidecar runs; and reading what the proxy reports.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{bin, install, Pod, Proc, PROXY_UID};

/// Retries `f` until it succeeds or `within` has passed; the last error
/// explains the failure.
pub fn eventually<T>(within: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("still failing after {within:?}")))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
}

/// GETs `path` on the pod's admin port (from inside the pod, with curl).
pub fn admin_get(pod: &Pod, path: &str) -> Result<String> {
    let out = pod
        .command(None, Path::new("curl"))
        .args(["-sS", "--fail", "--max-time", "2"])
        .arg(format!("http://127.0.0.1:4191{path}"))
        .output()?;
    if !out.status.success() {
        bail!(
            "GET {path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies weft-init (with `init_args`) and starts weft-proxy (with `env`)
/// as the proxy uid in `pod`; returns once `/ready` answers 200.
pub fn start_proxy(pod: &Pod, init_args: &[&str], env: &[(&str, &str)]) -> Proc {
    install(pod, init_args);
    let mut cmd = pod.command(Some(PROXY_UID), &bin("weft-proxy"));
    cmd.env("WEFT_LOG", "info,weft_proxy=debug");
    cmd.envs(env.iter().copied());
    let proxy =
        Proc::spawn(&format!("weft-proxy in {}", pod.name), cmd).expect("weft-proxy starts");
    eventually(Duration::from_secs(10), || admin_get(pod, "/ready"))
        .expect("weft-proxy becomes ready");
    proxy
}

/// The value of the sample `name{labels}` (labels exactly as printed, in
/// order) in `/metrics` of the pod's proxy; 0 when the series does not exist.
pub fn metric(pod: &Pod, series: &str) -> Result<f64> {
    let text = admin_get(pod, "/metrics")?;
    for line in text.lines() {
        if let Some(value) = line.strip_prefix(series).and_then(|r| r.strip_prefix(' ')) {
            return value
                .trim()
                .parse()
                .with_context(|| format!("unreadable value in {line:?}"));
        }
    }
    Ok(0.0)
}
