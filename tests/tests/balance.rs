//! Discovery-driven load balancing as a sidecar really runs it: weft-control
//! on the files source in a pod of its own, a meshed client pod (weft-init
//! applied, weft-proxy told where the control plane is) sending to a
//! Service's ClusterIP, and backend pods running the test app behind the
//! Service's EndpointSlice. The ClusterIP exists nowhere but in the
//! manifests: a request reaches a backend only if the proxy balanced it.

use std::path::{Path, PathBuf};
use std::time::Duration;
use weft_tests::mesh::sum_samples;
use weft_tests::*;

const CLUSTER_IP: &str = "10.96.0.10";
const SERVICE: &str = "10.96.0.10:80";

/// A node with weft-control, a meshed client and `backends` test-app pods
/// (each with its own `TESTAPP_*` environment), and the manifests directory.
struct Cluster {
    client: Pod,
    backends: Vec<Pod>,
    control_pod: Pod,
    control: Option<Proc>,
    manifests: PathBuf,
    _client_proxy: Proc,
    _apps: Vec<Proc>,
    _node: Node,
}

fn manifests(dir: &Path, endpoints: &[&Pod]) {
    manifests_annotated(dir, endpoints, "{}");
}

/// The Service `web` (annotations as a YAML flow map) and its one slice.
fn manifests_annotated(dir: &Path, endpoints: &[&Pod], annotations: &str) {
    let eps: String = endpoints
        .iter()
        .map(|p| {
            format!(
                "  - addresses: [\"{}\"]\n    conditions: {{ready: true, serving: true, terminating: false}}\n",
                p.ip
            )
        })
        .collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop, annotations: {annotations}}}\n\
         spec:\n  clusterIP: {CLUSTER_IP}\n  clusterIPs: [\"{CLUSTER_IP}\"]\n  \
         ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: web-1\n  namespace: shop\n  labels: {{kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n{eps}"
    );
    let yaml = if endpoints.is_empty() {
        yaml.replace("endpoints:\n", "endpoints: []\n")
    } else {
        yaml
    };
    let tmp = dir.join(".web.yaml.tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(tmp, dir.join("web.yaml")).unwrap();
}

fn start_control(pod: &Pod, dir: &Path) -> Proc {
    let mut cmd = pod.command(None, &bin("weft-control"));
    cmd.args(["--source", dir.to_str().unwrap()])
        .args([
            "--grpc-addr",
            "0.0.0.0:8086",
            "--admin-addr",
            "127.0.0.1:9990",
        ])
        .args(["--poll-interval", "100ms"]);
    let p = Proc::spawn("weft-control", cmd).unwrap();
    eventually(WAIT, || {
        let out = pod
            .command(None, Path::new("curl"))
            .args([
                "-sS",
                "--fail",
                "--max-time",
                "1",
                "http://127.0.0.1:9990/ready",
            ])
            .output()?;
        anyhow::ensure!(out.status.success(), "weft-control not ready");
        Ok(())
    })
    .unwrap();
    p
}

fn cluster(name: &str, backends: &[&[(&str, &str)]], proxy_env: &[(&str, &str)]) -> Cluster {
    let node = Node::new().unwrap();
    let control_pod = node.pod().unwrap();
    let client = node.pod().unwrap();
    let app = bin("weft-testapp");
    let mut apps = Vec::new();
    let mut pods = Vec::new();
    for env in backends {
        let pod = node.pod().unwrap();
        let mut cmd = pod.command(Some(APP_UID), &app);
        cmd.args(["http", "0.0.0.0:8080"]).envs(env.iter().copied());
        let p = Proc::spawn("weft-testapp", cmd).unwrap();
        p.expect_line("LISTENING", WAIT).unwrap();
        apps.push(p);
        pods.push(pod);
    }
    let manifests = std::env::temp_dir().join(format!("weft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&manifests);
    std::fs::create_dir_all(&manifests).unwrap();
    manifests_for(&manifests, &pods);
    let control = start_control(&control_pod, &manifests);
    let control_addr = format!("{}:8086", control_pod.ip);
    let mut env = vec![
        ("WEFT_PROXY_CONTROL_ADDR", control_addr.as_str()),
        ("WEFT_PROXY_LOG", "info"),
    ];
    env.extend_from_slice(proxy_env);
    let client_proxy = start_proxy(&client, &[], &env);
    Cluster {
        client,
        backends: pods,
        control_pod,
        control: Some(control),
        manifests,
        _client_proxy: client_proxy,
        _apps: apps,
        _node: node,
    }
}

fn manifests_for(dir: &Path, pods: &[Pod]) {
    manifests(dir, &pods.iter().collect::<Vec<_>>());
}

impl Cluster {
    /// `weft-testapp load` from the client pod: (sent, ok, failed, output).
    fn load(&self, rate: u32, duration: Duration, concurrency: u32) -> (u64, u64, u64, String) {
        let out = self
            .client
            .run(
                Some(APP_UID),
                &bin("weft-testapp"),
                &[
                    "load",
                    SERVICE,
                    &rate.to_string(),
                    &duration.as_millis().to_string(),
                    &concurrency.to_string(),
                ],
            )
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "weft-testapp load: {stdout}");
        let line = stdout.lines().find(|l| l.starts_with("OK ")).unwrap();
        let n = |k| field(line, k).parse::<u64>().unwrap();
        (n("sent"), n("ok"), n("failed"), stdout)
    }

    fn load_in_background(&self, rate: u32, duration: Duration) -> Proc {
        let mut cmd = self.client.command(Some(APP_UID), &bin("weft-testapp"));
        cmd.args([
            "load",
            SERVICE,
            &rate.to_string(),
            &duration.as_millis().to_string(),
            "4",
        ]);
        Proc::spawn("weft-testapp load", cmd).unwrap()
    }

    /// `/hello` requests backend `i` has served.
    fn served(&self, i: usize) -> u64 {
        weft_tests::mesh::app_served(&self.backends[i])
    }

    fn set_endpoints(&self, pods: &[&Pod]) {
        manifests(&self.manifests, pods);
    }

    /// Every backend behind `web`, with `annotations` on the Service; waits
    /// until the change has reached everything that acts on it: weft-control
    /// has applied both objects of the file (its `model_apply_seconds` count
    /// up by 2) and, when the client's proxy already follows the Service, the
    /// proxy has received the update that carries it (`weft_discovery_updates`
    /// up). A destination the proxy does not follow yet gets the new state
    /// in the snapshot its first request opens.
    fn annotate(&self, annotations: &str) {
        let applied = "weft_control_model_apply_seconds_count";
        let updates = "weft_discovery_updates_total";
        let following = self.following();
        let (applied_before, updates_before) = (
            self.control_metric(applied).unwrap(),
            metric(&self.client, updates).unwrap(),
        );
        manifests_annotated(
            &self.manifests,
            &self.backends.iter().collect::<Vec<_>>(),
            annotations,
        );
        eventually(WAIT, || {
            let n = self.control_metric(applied)?;
            anyhow::ensure!(
                n >= applied_before + 2.0,
                "weft-control applied {} of the 2 objects of web.yaml",
                n - applied_before
            );
            Ok(())
        })
        .unwrap();
        if following {
            eventually(WAIT, || {
                let n = metric(&self.client, updates)?;
                anyhow::ensure!(
                    n > updates_before,
                    "the proxy got no update for {annotations} (annotations unchanged?)"
                );
                Ok(())
            })
            .unwrap();
        }
    }

    /// Whether the client's proxy follows `SERVICE` with its stream up and a
    /// first answer in; waits for that when it has started following it.
    fn following(&self) -> bool {
        let dst = format!("dst=\"{SERVICE}\"");
        let known = |text: &str, family: &str| {
            text.lines()
                .any(|l| l.starts_with(&format!("{family}{{")) && l.contains(&dst))
        };
        let text = weft_tests::mesh::admin_get(&self.client, "/metrics").unwrap();
        if !known(&text, "weft_discovery_stale") {
            return false;
        }
        eventually(WAIT, || {
            let text = weft_tests::mesh::admin_get(&self.client, "/metrics")?;
            let stale = sum_samples(&text, &format!("weft_discovery_stale{{{dst}}}"))?;
            anyhow::ensure!(
                known(&text, "weft_balancer_endpoints") && stale == 0.0,
                "the proxy's stream for {SERVICE} is not up with an answer"
            );
            Ok(())
        })
        .unwrap();
        true
    }

    /// The sum of `series` in weft-control's `/metrics` (its admin port,
    /// on loopback in its pod).
    fn control_metric(&self, series: &str) -> anyhow::Result<f64> {
        let out = self
            .control_pod
            .command(None, Path::new("curl"))
            .args(["-sS", "--fail", "--max-time", "2"])
            .arg("http://127.0.0.1:9990/metrics")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "weft-control /metrics: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        sum_samples(&String::from_utf8_lossy(&out.stdout), series)
    }

    /// curl as the app in the client pod, with `-sS --max-time 5` and `args`.
    fn curl(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.client.command(Some(APP_UID), Path::new("curl"));
        cmd.args(["-sS", "--max-time", "5"]).args(args);
        cmd
    }

    /// GETs `url` from the client pod; its body, after asserting success.
    fn get_ok(&self, url: &str) -> String {
        let out = self.curl(&["--fail", url]).output().unwrap();
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the client's proxy balances over exactly `pods` (their
    /// port 8080; none other known) with its stream up, within `within`.
    /// Sends a request first: a destination is watched from its first use.
    /// An endpoint ejected meanwhile still counts: it is in the set.
    fn wait_endpoints(&self, pods: &[&Pod], within: Duration) {
        let _ = self.curl(&[&format!("http://{SERVICE}/hello")]).output();
        let mut want: Vec<String> = pods.iter().map(|p| format!("{}:8080", p.ip)).collect();
        want.sort();
        let dst = format!("dst=\"{SERVICE}\"");
        eventually(within, || {
            let text = weft_tests::mesh::admin_get(&self.client, "/metrics")?;
            let mut known: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.starts_with("weft_balancer_endpoint_latency_ewma_ms{") && l.contains(&dst)
                })
                .filter_map(|l| l.split("endpoint=\"").nth(1)?.split('"').next())
                .collect();
            known.sort_unstable();
            let count = |state| {
                sum_samples(
                    &text,
                    &format!("weft_balancer_endpoints{{{dst},state=\"{state}\"}}"),
                )
            };
            let balanced = count("ready")? + count("ejected")?;
            let stale = sum_samples(&text, &format!("weft_discovery_stale{{{dst}}}"))?;
            anyhow::ensure!(
                known == want && balanced == want.len() as f64 && stale == 0.0,
                "the proxy knows {known:?} ({balanced} balanced, stale {stale}), not {want:?}"
            );
            Ok(())
        })
        .unwrap();
    }

    /// [`Cluster::wait_endpoints`] over every backend.
    fn wait_backends(&self) {
        self.wait_endpoints(&self.backends.iter().collect::<Vec<_>>(), WAIT);
    }

    /// `/hello` requests the backends `pods` have served in all.
    fn served_by(&self, pods: &[&Pod]) -> u64 {
        pods.iter().map(|p| weft_tests::mesh::app_served(p)).sum()
    }

    /// Waits until a load started in the background reaches `pods` (they
    /// serve more than `before`).
    fn wait_load_flowing(&self, pods: &[&Pod], before: u64) {
        eventually(WAIT, || {
            let now = self.served_by(pods);
            anyhow::ensure!(now > before, "the load has not reached the backends yet");
            Ok(())
        })
        .unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.manifests);
    }
}

fn parse_load(stdout: &str) -> (u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("OK "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let n = |k| field(line, k).parse::<u64>().unwrap();
    (n("sent"), n("ok"), n("failed"))
}

#[test]
fn a_slow_endpoint_gets_few_requests() {
    if netns_or_skip("balance_slow_endpoint") {
        return;
    }
    let fast: &[(&str, &str)] = &[("TESTAPP_DELAY_MS", "5")];
    let slow: &[(&str, &str)] = &[("TESTAPP_DELAY_MS", "50")];
    let c = cluster("slow", &[fast, fast, slow], &[]);
    let (sent, ok, failed, out) = c.load(200, Duration::from_secs(8), 8);
    assert_eq!(failed, 0, "{out}");
    let served: Vec<u64> = (0..3).map(|i| c.served(i)).collect();
    let share = served[2] as f64 / served.iter().sum::<u64>() as f64;
    println!(
        "{sent} requests ({ok} ok) over 3 endpoints, one 10× slower: served {served:?}; \
         the slow one got {:.1}%",
        share * 100.0
    );
    assert!(
        share < 0.10,
        "the slow endpoint got {:.1}% of the requests",
        share * 100.0
    );
    assert!(
        served[0] > 0 && served[1] > 0,
        "both fast endpoints are used: {served:?}"
    );
    let ewma = metric(
        &c.client,
        &format!(
            "weft_balancer_endpoint_latency_ewma_ms{{dst=\"{SERVICE}\",endpoint=\"{}:8080\"}}",
            c.backends[2].ip
        ),
    )
    .unwrap();
    assert!(ewma > 20.0, "the slow endpoint's EWMA is {ewma} ms");
    let ready = metric(
        &c.client,
        &format!("weft_balancer_endpoints{{dst=\"{SERVICE}\",state=\"ready\"}}"),
    )
    .unwrap();
    assert_eq!(ready, 3.0);
}

#[test]
fn addresses_outside_every_service_and_failing_endpoints() {
    if netns_or_skip("balance_passthrough") {
        return;
    }
    let c = cluster(
        "passthrough",
        &[&[], &[]],
        &[("WEFT_PROXY_FAILURE_ACCRUAL", "1")],
    );
    // A pod IP is no Service: forwarded to where the app sent it.
    let url = format!("http://{}:8080/hello", c.backends[1].ip);
    let body = c.get_ok(&url);
    assert!(
        body.contains(&format!("hello from {}:8080", c.backends[1].ip)),
        "{body}"
    );

    // An endpoint that refuses connections (nothing listens on the control
    // pod's 8080): requests go to the good one, the bad one is ejected.
    // Certain, not likely: of two endpoints p2c compares both at every
    // pick. The refusing one's estimate is a guess that only decays; the
    // good one's decays alike and takes in each answer, so the refusing one
    // is the cheaper from the good one's next answer on, and its first
    // refusal ejects it (threshold 1): within the first requests of ~200.
    c.set_endpoints(&[&c.backends[0], &c.control_pod]);
    c.wait_endpoints(&[&c.backends[0], &c.control_pod], WAIT);
    let (sent, _, failed, out) = c.load(100, Duration::from_secs(2), 2);
    assert_eq!(
        failed, 0,
        "connect failures are retried on another endpoint: {out}"
    );
    let ejections = metric(
        &c.client,
        &format!("weft_balancer_endpoint_ejections_total{{dst=\"{SERVICE}\"}}"),
    )
    .unwrap();
    assert!(ejections >= 1.0, "no ejection after {sent} requests");

    // No endpoints at all: a clear 503 from the proxy, at once.
    c.set_endpoints(&[]);
    eventually(WAIT, || {
        let out = c
            .curl(&["-i", &format!("http://{SERVICE}/hello")])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        anyhow::ensure!(
            text.contains("503") && text.contains("weft-proxy-error: no endpoints"),
            "{text}"
        );
        Ok(())
    })
    .unwrap();
}

#[test]
fn rolling_replacement_and_a_control_plane_restart_lose_nothing() {
    if netns_or_skip("balance_rolling") {
        return;
    }
    let mut c = cluster("rolling", &[&[], &[], &[], &[]], &[]);
    let (a, b, x, y) = (
        &c.backends[0],
        &c.backends[1],
        &c.backends[2],
        &c.backends[3],
    );
    c.set_endpoints(&[a, b]);
    c.wait_endpoints(&[a, b], WAIT);

    // Every endpoint replaced, one step at a time, under 200 rps. A
    // replaced pod keeps serving until its removal reached the proxy
    // (as a terminating pod drains), then is no longer sent anything.
    // A step is taken once the proxy balances over the last one, which
    // then carries the load for `PACE` (the rollout's pace, about 100
    // requests a step; not a wait for anything).
    const PACE: Duration = Duration::from_millis(500);
    let before = c.served_by(&[a, b]);
    let load = c.load_in_background(200, Duration::from_secs(6));
    c.wait_load_flowing(&[a, b], before);
    for step in [vec![a, b, x], vec![b, x], vec![b, x, y], vec![x, y]] {
        c.set_endpoints(&step);
        c.wait_endpoints(&step, WAIT);
        std::thread::sleep(PACE);
    }
    let early = load.try_line(Duration::ZERO);
    assert!(
        early.is_none(),
        "the load ended before the rollout: {early:?}"
    );
    let stdout = load.line(Duration::from_secs(15)).unwrap();
    let (sent, ok, failed) = parse_load(&stdout);
    println!("rolling replacement under 200 rps: {sent} sent, {ok} ok, {failed} failed");
    assert_eq!(failed, 0, "{stdout}");
    let before: Vec<u64> = (0..4).map(|i| c.served(i)).collect();
    c.load(100, Duration::from_millis(500), 2);
    let after: Vec<u64> = (0..4).map(|i| c.served(i)).collect();
    assert_eq!(
        (before[0], before[1]),
        (after[0], after[1]),
        "replaced pods get nothing"
    );
    assert!(
        before[2] > 0 && before[3] > 0,
        "both new pods took traffic: {before:?}"
    );
    let (old, new) = (after[0] + after[1], after[2] + after[3]);
    assert!(new > before[2] + before[3], "{before:?} → {after:?}");
    println!("served by the replaced pods {old}, by the new ones {new}: {after:?}");

    // The control plane killed under load: known Services keep working.
    let before = c.served(2) + c.served(3);
    let load = c.load_in_background(100, Duration::from_secs(3));
    c.wait_load_flowing(&[&c.backends[2], &c.backends[3]], before);
    drop(c.control.take());
    eventually(WAIT, || {
        let stale = metric(
            &c.client,
            &format!("weft_discovery_stale{{dst=\"{SERVICE}\"}}"),
        )?;
        anyhow::ensure!(stale == 1.0, "not stale yet");
        Ok(())
    })
    .unwrap();
    let early = load.try_line(Duration::ZERO);
    assert!(
        early.is_none(),
        "the load ended before the proxy saw the control plane go: {early:?}"
    );
    let stdout = load.line(Duration::from_secs(15)).unwrap();
    let (sent, _, failed) = parse_load(&stdout);
    println!("control plane killed: {sent} sent, {failed} failed");
    assert_eq!(failed, 0, "{stdout}");
    // A destination never resolved falls back to its original address
    // after the resolve timeout.
    let url = format!("http://{}:8080/hello", c.backends[3].ip);
    let t = std::time::Instant::now();
    c.get_ok(&url);
    println!(
        "new destination with the control plane away: answered in {:?}",
        t.elapsed()
    );
    assert!(metric(&c.client, "weft_discovery_fallbacks_total").unwrap() >= 1.0);

    // Restarted: the stream resumes and changes flow again. The proxy
    // reconnects with a backoff that doubled while the control plane was
    // away and is capped at 10 s: it is back within that, and the change
    // reaches it within WAIT of being back.
    c.control = Some(start_control(&c.control_pod, &c.manifests));
    c.set_endpoints(&[&c.backends[0]]);
    c.wait_endpoints(&[&c.backends[0]], Duration::from_secs(10) + WAIT);
    let before = c.served(0);
    let (_, _, failed, out) = c.load(100, Duration::from_millis(500), 2);
    assert_eq!(failed, 0, "{out}");
    assert!(
        c.served(0) > before,
        "the restored endpoint gets the requests"
    );
}

/// (sent, ok, failed) of a load run, and what the backends served meanwhile.
fn served_during(c: &Cluster, rate: u32, secs: u64) -> ((u64, u64, u64), u64) {
    let before: u64 = (0..c.backends.len()).map(|i| c.served(i)).sum();
    let (sent, ok, failed, _) = c.load(rate, Duration::from_secs(secs), 4);
    let after: u64 = (0..c.backends.len()).map(|i| c.served(i)).sum();
    ((sent, ok, failed), after - before)
}

#[test]
fn retries_hide_a_few_failures_within_the_budget() {
    if netns_or_skip("balance_retries") {
        return;
    }
    let failing: &[(&str, &str)] = &[("TESTAPP_FAIL_PERCENT", "10")];
    let c = cluster("retries", &[failing, failing], &[]);
    c.wait_backends();

    // 10% of answers are 503: retried (default budget), the client sees them all succeed.
    c.annotate("{weft.dev/retry-http: gateway-error}");
    let ((sent, ok, failed), served) = served_during(&c, 200, 5);
    println!(
        "10% failing, retries on: {sent} sent, {ok} ok, {failed} failed; backends served {served}"
    );
    assert!(
        ok as f64 >= 0.999 * sent as f64,
        "{failed} of {sent} failed with retries on"
    );
    let retries = metric(
        &c.client,
        &format!("weft_retry_requests_total{{dst=\"{SERVICE}\"}}"),
    )
    .unwrap();
    assert!(
        retries > 0.0 && retries as u64 == served - sent,
        "{retries} retries, {served} served for {sent}"
    );

    // Retries off: about one in ten fails.
    c.annotate("{}");
    let ((sent, _, failed), _) = served_during(&c, 200, 3);
    let share = failed as f64 / sent as f64;
    println!(
        "10% failing, retries off: {sent} sent, {failed} failed ({:.1}%)",
        share * 100.0
    );
    assert!(
        (0.07..=0.13).contains(&share),
        "{failed} of {sent} failed with retries off"
    );

    // 60% failing: retries stay within the budget (20% of requests plus 10
    // a second), and the proxy stays responsive.
    drop(c);
    let failing: &[(&str, &str)] = &[("TESTAPP_FAIL_PERCENT", "60")];
    let c = cluster("budget", &[failing], &[]);
    c.annotate("{weft.dev/retry-http: 5xx, weft.dev/retry-limit: '3'}");
    let secs = 5;
    let ((sent, ok, failed), served) = served_during(&c, 100, secs);
    let extra = served - sent;
    let bound = 0.2 * sent as f64 + 10.0 * (secs + 1) as f64;
    let skipped = metric(
        &c.client,
        &format!("weft_retry_skipped_budget_total{{dst=\"{SERVICE}\"}}"),
    )
    .unwrap();
    println!(
        "60% failing: {sent} sent, {ok} ok, {failed} failed; {extra} retries \
         (budget allows at most {bound:.0}: 20% of {sent} + 10/s over {} s); {skipped} retries refused by the budget",
        secs + 1
    );
    assert!(
        extra as f64 <= bound,
        "{extra} retries exceed the budget {bound}"
    );
    assert!(skipped > 0.0, "the budget never refused a retry");
    let t = std::time::Instant::now();
    weft_tests::mesh::admin_get(&c.client, "/ready").unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "the proxy answers its admin port at once"
    );
}

#[test]
fn deadlines_cut_slow_requests_and_reach_the_backend() {
    if netns_or_skip("balance_deadlines") {
        return;
    }
    let c = cluster("deadline", &[&[]], &[]);
    c.wait_backends();
    let curl = |extra: &[&str], url: &str| {
        let out = c
            .curl(&["-i", "-w", "\nTIME %{time_total}\n"])
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let secs: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("TIME "))
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        (text.to_lowercase(), Duration::from_secs_f64(secs))
    };
    let url = format!("http://{SERVICE}/slow?ms=1000");

    // HTTP with grpc-timeout 200m: 504 from the proxy after about 200 ms;
    // the backend saw what was left of the deadline.
    let (text, took) = curl(&["-H", "grpc-timeout: 200m"], &url);
    println!("grpc-timeout 200m, backend taking 1 s: answered in {took:?}");
    assert!(text.starts_with("http/1.1 504"), "{text}");
    assert!(text.contains("weft-proxy-error: request timeout"), "{text}");
    assert!(
        took >= Duration::from_millis(150) && took <= Duration::from_millis(250),
        "answered after {took:?}"
    );
    let saw = c._apps[0].expect_line("SAW", WAIT).unwrap();
    let ms: u64 = field(&saw, "weft-timeout")
        .trim_end_matches('m')
        .parse()
        .unwrap_or_else(|_| panic!("{saw}"));
    assert!((100..=200).contains(&ms), "the backend saw {saw}");

    // gRPC: DEADLINE_EXCEEDED, with grpc-timeout passed on.
    let (text, took) = curl(
        &[
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/grpc",
            "-H",
            "grpc-timeout: 200m",
        ],
        &url,
    );
    println!("gRPC with grpc-timeout 200m: answered in {took:?}");
    assert!(text.contains("grpc-status: 4"), "{text}");
    assert!(
        took <= Duration::from_millis(250),
        "answered after {took:?}"
    );
    let saw = c._apps[0].expect_line("SAW", WAIT).unwrap();
    assert!(!field(&saw, "grpc-timeout").starts_with('-'), "{saw}");

    // The Service's own timeout shortens a longer caller deadline.
    c.annotate("{weft.dev/timeout: 300ms}");
    let (text, took) = curl(&["-H", "weft-timeout: 5S"], &url);
    assert!(text.starts_with("http/1.1 504"), "{text}");
    assert!(
        took <= Duration::from_millis(400),
        "answered after {took:?}"
    );
    let saw = c._apps[0].expect_line("SAW", WAIT).unwrap();
    let ms: u64 = field(&saw, "weft-timeout")
        .trim_end_matches('m')
        .parse()
        .unwrap_or_else(|_| panic!("{saw}"));
    assert!(ms <= 300, "the backend saw {saw}");
}

#[test]
fn opaque_services_are_balanced_per_connection() {
    if netns_or_skip("balance_opaque") {
        return;
    }
    let slow: &[(&str, &str)] = &[("TESTAPP_DELAY_MS", "500")];
    let c = cluster("opaque", &[slow, slow], &[]);
    // The Service marks its port opaque: no protocol detection, one
    // endpoint per connection, bytes copied as they are. Connections open
    // at once: each one open counts as load on its endpoint.
    c.annotate("{weft.dev/opaque-ports: '80'}");
    let url = format!("http://{SERVICE}/hello");
    let curls: Vec<_> = (0..10)
        .map(|_| {
            c.curl(&["--fail", &url])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for curl in curls {
        let out = curl.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let served: Vec<u64> = (0..2).map(|i| c.served(i)).collect();
    println!("10 concurrent connections to an opaque Service port: served {served:?}");
    assert!(
        served.iter().all(|n| *n > 0) && served.iter().sum::<u64>() == 10,
        "{served:?}"
    );
    let opaque = metric(
        &c.client,
        "weft_protocol_detect_total{direction=\"outbound\",protocol=\"opaque_port\"}",
    )
    .unwrap();
    assert!(opaque >= 10.0, "{opaque} opaque connections");
}
