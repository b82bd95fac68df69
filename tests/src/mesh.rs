//! Meshed pods: weft-init applied and weft-proxy running as its uid, as an
//! injected sidecar runs; and reading what the proxy reports.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{bin, install, Node, Pod, Proc, APP_UID, PROXY_UID, WAIT};

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

/// weft-control on the files source, as [`control_command`] starts it, in a
/// pod of its own on a new node, over the [`identity`] set-up of `accounts`
/// in a fresh directory (`dir`, removed on drop; manifests go in
/// `dir/manifests`). Fields drop in order: weft-control before its pod,
/// the pods before the node.
#[derive(Debug)]
pub struct FilesPlane {
    pub control: Proc,
    pub control_pod: Pod,
    pub dir: PathBuf,
    pub node: Node,
}

impl FilesPlane {
    /// Starts it (`name` names the directory); returns once weft-control
    /// has synced its source.
    pub fn start(name: &str, accounts: &[&str]) -> Self {
        let node = Node::new().expect("a test node");
        let dir = std::env::temp_dir().join(format!("weft-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).expect("creates the manifests directory");
        identity(&dir, accounts);
        let control_pod = node.pod().expect("a pod for weft-control");
        let cmd = control_command(&control_pod, &dir, &[]);
        let control = Proc::spawn("weft-control", cmd).expect("weft-control starts");
        let plane = Self {
            control,
            control_pod,
            dir,
            node,
        };
        eventually(WAIT, || {
            let synced = plane.control_metric("weft_control_source_synced")?;
            anyhow::ensure!(synced == 1.0, "weft-control has not synced its source");
            Ok(())
        })
        .expect("weft-control syncs its source");
        plane
    }

    /// The proxy environment of a meshed pod in `shop` running as `sa`:
    /// this weft-control, `sa`'s token and the trust anchors.
    pub fn proxy_env(&self, sa: &str) -> Vec<(String, String)> {
        let path = |p: &str| self.dir.join(p).display().to_string();
        vec![
            (
                "WEFT_PROXY_CONTROL_ADDR".into(),
                format!("{}:8086", self.control_pod.ip),
            ),
            (
                "WEFT_PROXY_IDENTITY_TOKEN_FILE".into(),
                path(&format!("{sa}.token")),
            ),
            (
                "WEFT_PROXY_IDENTITY_TRUST_ANCHORS".into(),
                path("ca/ca.crt"),
            ),
            ("WEFT_PROXY_POD_NAMESPACE".into(), "shop".into()),
            ("WEFT_PROXY_SERVICE_ACCOUNT".into(), sa.into()),
        ]
    }

    /// The sum of `series` on weft-control's `/metrics` ([`control_metric`]).
    pub fn control_metric(&self, series: &str) -> Result<f64> {
        control_metric(&self.control_pod, series)
    }
}

impl Drop for FilesPlane {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The sum of `series` (as [`metric`] reads it) on weft-control's
/// `/metrics`, asked from inside `control_pod`, where its admin port is on
/// loopback at 9990.
pub fn control_metric(control_pod: &Pod, series: &str) -> Result<f64> {
    let (code, text) = curl(control_pod, Some(APP_UID), "http://127.0.0.1:9990/metrics")
        .context("weft-control's /metrics did not answer")?;
    anyhow::ensure!(code == 200, "weft-control's /metrics: {code}");
    sum_samples(&text, series)
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
/// as the proxy uid in `pod`, without waiting for it.
pub fn spawn_proxy(pod: &Pod, init_args: &[&str], env: &[(&str, &str)]) -> Proc {
    install(pod, init_args);
    let mut cmd = pod.command(Some(PROXY_UID), &bin("weft-proxy"));
    cmd.env("WEFT_LOG", "info,weft_proxy=debug");
    cmd.envs(env.iter().copied());
    Proc::spawn(&format!("weft-proxy in {}", pod.name), cmd).expect("weft-proxy starts")
}

/// Applies weft-init (with `init_args`) and starts weft-proxy (with `env`)
/// as the proxy uid in `pod`; returns once `/ready` answers 200.
pub fn start_proxy(pod: &Pod, init_args: &[&str], env: &[(&str, &str)]) -> Proc {
    let proxy = spawn_proxy(pod, init_args, env);
    eventually(Duration::from_secs(10), || admin_get(pod, "/ready"))
        .expect("weft-proxy becomes ready");
    proxy
}

/// How many `/hello` requests the test app on 8080 in `pod` has served
/// (asked from inside the pod, over loopback, which is never redirected).
pub fn app_served(pod: &Pod) -> u64 {
    let out = pod
        .sh(&[
            "curl",
            "-sS",
            "--max-time",
            "2",
            "http://127.0.0.1:8080/served",
        ])
        .expect("the test app answers /served");
    out.trim().parse().expect("/served is a number")
}

/// The sum of the samples of `name{labels}` in `/metrics` of the pod's
/// proxy, over every series that has at least the labels given (in any
/// order; other labels may be there too); 0 when none matches.
pub fn metric(pod: &Pod, series: &str) -> Result<f64> {
    sum_samples(&admin_get(pod, "/metrics")?, series)
}

/// `name{a="1",b="2"}` → (name, [`a="1"`, `b="2"`]).
fn split_series(series: &str) -> (&str, Vec<&str>) {
    match series.split_once('{') {
        Some((name, rest)) => {
            let labels = rest.trim_end_matches('}');
            let mut out = Vec::new();
            // Label values here never contain `",`: split after each closing quote.
            let mut start = 0;
            for (i, _) in labels.match_indices("\",") {
                out.push(&labels[start..=i]);
                start = i + 2;
            }
            if start < labels.len() {
                out.push(&labels[start..]);
            }
            (name, out)
        }
        None => (series, Vec::new()),
    }
}

/// What [`metric`] computes, from the text of a scrape.
pub fn sum_samples(text: &str, series: &str) -> Result<f64> {
    let (name, wanted) = split_series(series);
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (line_name, labels) = split_series(key);
        if line_name == name && wanted.iter().all(|w| labels.contains(w)) {
            sum += value
                .trim()
                .parse::<f64>()
                .with_context(|| format!("unreadable value in {line:?}"))?;
        }
    }
    Ok(sum)
}

/// A mesh identity set-up in `dir`: `ca/` made by `weft identity init`
/// (the trust anchor `ca/ca.crt` and the issuer, for weft-control's
/// `--identity-dir`), `tokens.yaml` accepting a token for each of
/// `accounts` in `shop` (for `--identity-tokens`), and `<sa>.token` with
/// that token (a proxy's `WEFT_PROXY_IDENTITY_TOKEN_FILE`).
pub fn identity(dir: &Path, accounts: &[&str]) {
    std::fs::create_dir_all(dir.join("ca")).expect("creates the CA directory");
    let out = std::process::Command::new(bin("weft"))
        .args(["identity", "init", "--out"])
        .arg(dir.join("ca"))
        .output()
        .expect("weft identity init runs");
    assert!(
        out.status.success(),
        "weft identity init: {}",
        crate::stderr(&out)
    );
    let tokens: String = accounts
        .iter()
        .map(|sa| format!("\"{}\": shop/{sa}\n", shop_token(sa)))
        .collect();
    std::fs::write(dir.join("tokens.yaml"), tokens).expect("writes the token file");
    for sa in accounts {
        std::fs::write(dir.join(format!("{sa}.token")), shop_token(sa)).expect("writes a token");
    }
}

/// weft-control in `pod` over the [`identity`] set-up in `dir`: the files
/// source on `dir/manifests` polled every 100 ms, gRPC on `0.0.0.0:8086`,
/// admin on `127.0.0.1:9990`, Certify from `dir/ca` and `dir/tokens.yaml`;
/// `extra` flags after those. Not waited for.
pub fn control_command(pod: &Pod, dir: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = pod.command(None, &bin("weft-control"));
    cmd.arg("--source")
        .arg(dir.join("manifests"))
        .args([
            "--grpc-addr",
            "0.0.0.0:8086",
            "--admin-addr",
            "127.0.0.1:9990",
        ])
        .args(["--poll-interval", "100ms"])
        .arg("--identity-dir")
        .arg(dir.join("ca"))
        .arg("--identity-tokens")
        .arg(dir.join("tokens.yaml"))
        .args(extra);
    cmd
}

/// The SPIFFE ID of ServiceAccount `sa` in the scenarios' namespace `shop`.
pub fn shop_id(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/shop/sa/{sa}")
}

/// The token the scenarios' control planes accept for `sa` in `shop`.
pub fn shop_token(sa: &str) -> String {
    format!("token-of-{sa}-0123456789abcdef")
}

/// The test app's HTTP server on 8080 in `pod`, as the app's uid.
pub fn app(pod: &Pod) -> Proc {
    let p = pod
        .spawn(
            Some(APP_UID),
            &bin("weft-testapp"),
            &["http", "0.0.0.0:8080"],
        )
        .unwrap();
    p.expect_line("LISTENING", WAIT).unwrap();
    p
}

/// curl `url` in `pod` as `uid` (root when None), on a new connection:
/// (HTTP status, headers and body).
pub fn curl(pod: &Pod, uid: Option<u32>, url: &str) -> Option<(u16, String)> {
    let out = pod
        .command(uid, Path::new("curl"))
        .args(["-sS", "-i", "--max-time", "5", url])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

/// A GET by the app of `pod` that must succeed: its headers and body.
pub fn get_ok(pod: &Pod, url: &str) -> String {
    let (code, text) =
        curl(pod, Some(APP_UID), url).unwrap_or_else(|| panic!("GET {url}: no answer"));
    assert_eq!(code, 200, "GET {url}: {text}");
    text
}

/// Whether `needle` appears in `haystack` (a capture, say).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_are_matched_by_label_subset_and_summed() {
        let text = "# HELP x\n\
            weft_request_total{direction=\"inbound\",dst=\"10.0.0.1:80\",tls=\"true\"} 2\n\
            weft_request_total{direction=\"inbound\",dst=\"10.0.0.1:80\",tls=\"false\"} 3\n\
            weft_request_total{direction=\"outbound\",dst=\"10.0.0.1:80\",tls=\"false\"} 7\n";
        let sum = |s| super::sum_samples(text, s).unwrap();
        assert_eq!(sum("weft_request_total{direction=\"inbound\"}"), 5.0);
        assert_eq!(
            sum("weft_request_total{tls=\"true\",direction=\"inbound\"}"),
            2.0
        );
        assert_eq!(sum("weft_request_total"), 12.0);
        assert_eq!(sum("weft_request_total{direction=\"sideways\"}"), 0.0);
        assert_eq!(sum("weft_request{direction=\"inbound\"}"), 0.0);
    }
}
