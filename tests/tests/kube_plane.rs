//! The mesh with weft-control on the kube source, as a cluster runs it:
//! the fake API server (in this test process, on the host's loopback)
//! reached from weft-control's pod through a relay on the pod's loopback;
//! a CA from `weft identity init` and a token file; meshed pods with
//! weft-init applied and a proxy holding a certificate of its
//! ServiceAccount. What crosses the node's bridge is captured and read
//! back as TCP streams (`weft_tests::wire`).
//!
//! Issue 13, defects 2 and 3: a control plane restarted while the API
//! server answers slowly must not make meshed traffic fall back to
//! plaintext; a pod's own address (a headless Service's pod, a pod no
//! Service selects) is reached over mTLS when the pod is meshed and in
//! plaintext when it is not.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use weft_tests::fakekube::{FakeKube, ENDPOINT_SLICES, NAMESPACES, PODS, SERVICES};
use weft_tests::mesh::{admin_get, app, app_served, contains, curl, get_ok, shop_id, sum_samples};
use weft_tests::relay::HostRelay;
use weft_tests::wire::{tcp_streams, tls_records, Stream};
use weft_tests::*;

/// Where weft-control's pod reaches the fake API server.
const KUBE_IN_POD: &str = "127.0.0.1:6443";

/// A node, the fake API server and weft-control (kube source) in a pod.
/// Fields drop in order: weft-control goes before the API server it
/// watches.
struct Plane {
    control: Option<Proc>,
    _relay: HostRelay,
    kube: FakeKube,
    control_pod: Pod,
    node: Node,
    dir: PathBuf,
}

impl Plane {
    fn new(name: &str) -> Self {
        let node = Node::new().unwrap();
        let dir = std::env::temp_dir().join(format!("weft-kube-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        weft_tests::mesh::identity(&dir, &["client", "web", "db"]);
        let kube = FakeKube::start();
        kube.apply(&NAMESPACES, json!({"metadata": {"name": "shop"}}));
        let control_pod = node.pod().unwrap();
        let relay = HostRelay::start(&control_pod, KUBE_IN_POD.parse().unwrap(), kube.addr())
            .expect("the relay to the fake API server starts");
        let mut plane = Self {
            node,
            dir,
            kube,
            control_pod,
            control: None,
            _relay: relay,
        };
        plane.control = Some(plane.spawn_control());
        eventually(Duration::from_secs(10), || plane.control_ready()).unwrap();
        plane
    }

    /// Starts weft-control without waiting for it.
    fn spawn_control(&self) -> Proc {
        let mut cmd = self.control_pod.command(None, &bin("weft-control"));
        cmd.args(["--source", "kube", "--kube-api-server"])
            .arg(format!("http://{KUBE_IN_POD}"))
            .args(["--grpc-addr", "0.0.0.0:8086"])
            .args(["--admin-addr", "127.0.0.1:9990"])
            .arg("--identity-dir")
            .arg(self.dir.join("ca"))
            .arg("--identity-tokens")
            .arg(self.dir.join("tokens.yaml"));
        Proc::spawn("weft-control", cmd).unwrap()
    }

    /// weft-control's `/ready`: (status, body).
    fn control_status(&self) -> anyhow::Result<(u16, String)> {
        curl(&self.control_pod, None, "http://127.0.0.1:9990/ready")
            .ok_or_else(|| anyhow::anyhow!("weft-control's admin port did not answer"))
    }

    fn control_ready(&self) -> anyhow::Result<()> {
        let (code, text) = self.control_status()?;
        anyhow::ensure!(code == 200, "weft-control not ready: {code} {text}");
        Ok(())
    }

    fn control_metric(&self, series: &str) -> anyhow::Result<f64> {
        let (_, text) = curl(&self.control_pod, None, "http://127.0.0.1:9990/metrics")
            .ok_or_else(|| anyhow::anyhow!("weft-control's /metrics did not answer"))?;
        sum_samples(&text, series)
    }

    /// A Pod object for `pod` (Running, its IP in the status).
    fn pod(&self, name: &str, pod: &Pod, sa: &str, meshed: bool) {
        let mut containers = vec![json!({"name": "app", "image": "app"})];
        if meshed {
            containers.push(json!({"name": "weft-proxy", "image": "weft"}));
        }
        let ip = pod.ip.to_string();
        self.kube.apply(
            &PODS,
            json!({
                "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
                "spec": {"serviceAccountName": sa, "containers": containers},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
            }),
        );
    }

    /// A Service on port 80 (target 8080), or headless (`cluster_ip`
    /// None, port 8080), and its one EndpointSlice naming `pods`.
    fn service(&self, name: &str, cluster_ip: Option<&str>, pods: &[(&str, &Pod)]) {
        let spec = match cluster_ip {
            Some(ip) => json!({
                "clusterIP": ip, "clusterIPs": [ip],
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            }),
            None => json!({
                "clusterIP": "None", "clusterIPs": ["None"],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }),
        };
        self.kube.apply(
            &SERVICES,
            json!({"metadata": {"name": name, "namespace": "shop"}, "spec": spec}),
        );
        let endpoints: Vec<Value> = pods
            .iter()
            .map(|(pod_name, pod)| {
                json!({
                    "addresses": [pod.ip.to_string()],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                    "targetRef": {"kind": "Pod", "name": pod_name, "namespace": "shop"},
                })
            })
            .collect();
        self.kube.apply(
            &ENDPOINT_SLICES,
            json!({
                "metadata": {
                    "name": format!("{name}-1"), "namespace": "shop",
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": endpoints,
            }),
        );
    }

    /// Waits until the model holds `n` objects of each kind.
    fn holds(&self, counts: &[(&str, f64)]) {
        eventually(WAIT, || {
            for (kind, n) in counts {
                let held =
                    self.control_metric(&format!("weft_control_objects{{kind=\"{kind}\"}}"))?;
                anyhow::ensure!(held == *n, "{held} {kind} objects in the model, not {n}");
            }
            Ok(())
        })
        .unwrap();
    }

    /// A meshed pod's proxy running as `sa`, ready (with its certificate).
    fn meshed(&self, pod: &Pod, sa: &str) -> Proc {
        let control = format!("{}:8086", self.control_pod.ip);
        let token = self.dir.join(format!("{sa}.token")).display().to_string();
        let anchors = self.dir.join("ca/ca.crt").display().to_string();
        mesh::start_proxy(
            pod,
            &[],
            &[
                ("WEFT_PROXY_CONTROL_ADDR", control.as_str()),
                ("WEFT_PROXY_IDENTITY_TOKEN_FILE", token.as_str()),
                ("WEFT_PROXY_IDENTITY_TRUST_ANCHORS", anchors.as_str()),
                ("WEFT_PROXY_POD_NAMESPACE", "shop"),
                ("WEFT_PROXY_SERVICE_ACCOUNT", sa),
            ],
        )
    }

    /// Starts capturing every frame on the bridge for `span`.
    fn capture(&self, file: &str, span: Duration) -> (Proc, PathBuf) {
        let path = self.dir.join(file);
        let mut cmd = self.node.command(&bin("weft-netprobe"));
        cmd.arg("capture")
            .arg(&path)
            .arg(span.as_millis().to_string());
        let capture = Proc::spawn("capture", cmd).unwrap();
        capture.expect_line("CAPTURING", WAIT).unwrap();
        (capture, path)
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The streams between `a` and `b`, both ways.
fn between(streams: &[Stream], a: &Pod, b: &Pod) -> Vec<Stream> {
    let (a, b) = (std::net::IpAddr::V4(a.ip), std::net::IpAddr::V4(b.ip));
    streams
        .iter()
        .filter(|s| (s.src.ip() == a && s.dst.ip() == b) || (s.src.ip() == b && s.dst.ip() == a))
        .cloned()
        .collect()
}

/// Asserts that every byte of every stream between `client` and `server`
/// is a TLS record from the first (each connection seen from its SYN, no
/// byte missed), that each connection opens with the mesh's ClientHello
/// (ALPN `weft.http1`), and returns how many application-data records
/// the server sent.
fn all_mtls(streams: &[Stream], client: &Pod, server: &Pod) -> usize {
    let ours = between(streams, client, server);
    assert!(!ours.is_empty(), "no connection between the pods captured");
    let mut answers = 0;
    for s in &ours {
        assert!(
            s.from_start,
            "{} → {}: its SYN was not captured",
            s.src, s.dst
        );
        assert!(!s.gap, "{} → {}: the capture missed bytes", s.src, s.dst);
        if s.bytes.is_empty() {
            continue;
        }
        let records = tls_records(&s.bytes)
            .unwrap_or_else(|e| panic!("{} → {} is not all TLS: {e:#}", s.src, s.dst));
        if s.src.ip() == std::net::IpAddr::V4(client.ip) {
            assert_eq!(
                records[0], 0x16,
                "{} → {}: no handshake first",
                s.src, s.dst
            );
            assert!(
                contains(&s.bytes, b"weft.http1"),
                "{} → {}: not the mesh's ClientHello",
                s.src,
                s.dst
            );
        } else {
            answers += records.iter().filter(|t| **t == 0x17).count();
        }
    }
    answers
}

/// Plays kube-proxy in `pod`: connections to `service` that leave the pod
/// (the proxy's own, which weft-init does not redirect) go to `endpoint`.
/// A destination the proxy passed through to its original address then
/// reaches the app, in plaintext, as in a cluster.
fn kube_proxy(pod: &Pod, service: SocketAddr, endpoint: SocketAddr) {
    pod.sh(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        &format!("{}/32", service.ip()),
        "--dport",
        &service.port().to_string(),
        "-j",
        "DNAT",
        "--to-destination",
        &endpoint.to_string(),
    ])
    .unwrap();
}

/// How long the restarted weft-control's first lists take to be answered.
const SLOW_API: Duration = Duration::from_secs(4);

#[test]
fn a_control_plane_restarted_on_a_slow_api_server_leaves_traffic_on_mtls() {
    if netns_or_skip("kube_restart") {
        return;
    }
    let mut plane = Plane::new("restart");
    let client = plane.node.pod().unwrap();
    let web = plane.node.pod().unwrap();
    plane.pod("web-0", &web, "web", true);
    plane.service("web", Some("10.96.0.20"), &[("web-0", &web)]);
    plane.holds(&[("Service", 1.0), ("EndpointSlice", 1.0), ("Pod", 1.0)]);
    let _app = app(&web);
    let _web_proxy = plane.meshed(&web, "web");
    let _client_proxy = plane.meshed(&client, "client");
    let service: SocketAddr = "10.96.0.20:80".parse().unwrap();
    kube_proxy(&client, service, SocketAddr::new(web.ip.into(), 8080));
    // What a pass-through would do: the request reaches the app, in
    // plaintext (the proxy's uid is not redirected).
    let (code, text) = curl(&client, Some(PROXY_UID), "http://10.96.0.20/hello").unwrap();
    assert_eq!(code, 200, "kube-proxy's stand-in: {text}");
    let inbound_plain = "weft_request_total{direction=\"inbound\",tls=\"false\"}";
    let plain_before = metric(&web, inbound_plain).unwrap();
    assert!(
        plain_before >= 1.0,
        "the web proxy saw the plaintext request"
    );

    // The capture starts before the client ever called the Service, so it
    // holds every connection between the pods from its first byte.
    let span = Duration::from_secs(16);
    let (mut capture, pcap) = plane.capture("restart.bin", span);
    let started = Instant::now();
    get_ok(&client, "http://10.96.0.20/hello?canary=BEFORE-7f3a");
    let mtls_out = format!(
        "weft_request_total{{direction=\"outbound\",dst=\"{service}\",tls=\"true\",server_id=\"{}\"}}",
        shop_id("web")
    );
    let plain_out =
        format!("weft_request_total{{direction=\"outbound\",dst=\"{service}\",tls=\"false\"}}");
    let mtls_before = metric(&client, &mtls_out).unwrap();
    assert!(mtls_before >= 1.0, "{mtls_out}");
    let load = client
        .spawn(
            Some(APP_UID),
            &bin("weft-testapp"),
            &["load", &service.to_string(), "40", "14000", "4"],
        )
        .unwrap();
    eventually(WAIT, || {
        let n = metric(&client, &mtls_out)?;
        anyhow::ensure!(n >= mtls_before + 20.0, "{n} requests over mTLS");
        Ok(())
    })
    .unwrap();

    // The restart: SIGTERM, then a new instance whose lists the API server
    // takes SLOW_API to answer.
    plane.control.take().unwrap().terminate(WAIT).unwrap();
    plane.kube.set_latency(SLOW_API);
    let restarted = Instant::now();
    plane.control = Some(plane.spawn_control());
    // Up (its listeners are bound before it answers anything) and not
    // synced.
    eventually(WAIT, || {
        let (code, text) = plane.control_status()?;
        anyhow::ensure!(code == 503, "{code} {text}");
        Ok(())
    })
    .unwrap();
    let errors = "weft_discovery_stream_errors_total";
    let errors_up = metric(&client, errors).unwrap();
    // Until it synced: new connections from the app, each with a canary;
    // the proxy's watch is refused (a stream error now can only be the
    // new instance's UNAVAILABLE) and requests keep going over mTLS.
    let mut refused_at = None;
    let mut fresh = 0;
    let deadline = Instant::now() + SLOW_API + WAIT;
    while plane.control_ready().is_err() {
        assert!(
            Instant::now() < deadline,
            "the new weft-control never synced"
        );
        if refused_at.is_none() && metric(&client, errors).unwrap() > errors_up {
            refused_at = Some(metric(&client, &mtls_out).unwrap());
        }
        // Once refused, at least this request follows before the sync.
        get_ok(
            &client,
            &format!("http://10.96.0.20/hello?canary=WINDOW-{fresh}-7f3a"),
        );
        fresh += 1;
    }
    let synced_after = restarted.elapsed();
    let mtls_synced = metric(&client, &mtls_out).unwrap();
    let refused_at = refused_at.expect("the proxy was never refused by the unsynced instance");
    println!(
        "restarted: synced after {synced_after:?}; {fresh} new connections meanwhile; \
         mTLS requests {refused_at} when refused, {mtls_synced} at sync"
    );
    assert!(
        mtls_synced > refused_at,
        "no request went over mTLS while the new instance was not synced"
    );
    assert!(fresh >= 3, "only {fresh} new connections during the window");
    assert!(
        load.try_line(Duration::ZERO).is_none(),
        "the load ended before the new instance synced"
    );
    assert!(
        started.elapsed() < span,
        "the capture ended before the new instance synced"
    );

    // Synced: the proxy's stream comes back (its backoff is capped at
    // 10 s) and its destination is no longer stale; fresh connections
    // keep working meanwhile.
    plane.kube.set_latency(Duration::ZERO);
    let stale = format!("weft_discovery_stale{{dst=\"{service}\"}}");
    let deadline = Instant::now() + Duration::from_secs(10) + WAIT;
    while metric(&client, &stale).unwrap() != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the proxy never followed the new instance"
        );
        get_ok(
            &client,
            &format!("http://10.96.0.20/hello?canary=AFTER-{fresh}-7f3a"),
        );
        fresh += 1;
    }
    println!(
        "followed the new instance {:?} after the restart",
        restarted.elapsed()
    );

    let done = load.expect_line("OK ", span).unwrap();
    println!("load across the restart: {done}");
    assert_eq!(field(&done, "failed"), "0", "{done}");
    let ok: u64 = field(&done, "ok").parse().unwrap();
    assert!(ok >= 200, "{done}");
    capture.expect_line("CAPTURED", span).unwrap();
    capture.wait_exit(WAIT).unwrap();

    // No plaintext request at either end, no pass-through.
    assert_eq!(metric(&client, &plain_out).unwrap(), 0.0, "{plain_out}");
    assert_eq!(
        metric(&web, inbound_plain).unwrap(),
        plain_before,
        "{inbound_plain}"
    );
    assert_eq!(
        metric(&client, "weft_discovery_fallbacks_total").unwrap(),
        0.0
    );
    let inbound_mtls = format!(
        "weft_request_total{{direction=\"inbound\",tls=\"true\",client_id=\"{}\"}}",
        shop_id("client")
    );
    assert!(
        metric(&web, &inbound_mtls).unwrap() >= ok as f64,
        "{inbound_mtls}"
    );

    // On the wire: never the app's answer nor a request in clear; every
    // byte between the pods is TLS.
    let wire = std::fs::read(&pcap).unwrap();
    assert!(
        !contains(&wire, b"hello from"),
        "an answer crossed in plaintext"
    );
    assert!(!contains(&wire, b"-7f3a"), "a request crossed in plaintext");
    let streams = tcp_streams(&wire).unwrap();
    let answers = all_mtls(&streams, &client, &web);
    println!(
        "capture: {} bytes, {} TCP streams, {answers} TLS records of answers from web",
        wire.len(),
        streams.len()
    );
    assert!(
        answers >= fresh,
        "{answers} answers on the wire, {fresh} new connections alone"
    );
    // Whatever else the client pod sent went to the control plane.
    let control: SocketAddr = SocketAddr::new(plane.control_pod.ip.into(), 8086);
    let web_addr = SocketAddr::new(web.ip.into(), 8080);
    for s in streams.iter().filter(|s| !s.bytes.is_empty()) {
        let other = if s.src.ip() == std::net::IpAddr::V4(client.ip) {
            s.dst
        } else if s.dst.ip() == std::net::IpAddr::V4(client.ip) {
            s.src
        } else {
            continue;
        };
        assert!(
            other == control || other == web_addr,
            "the client pod talked to {other}"
        );
    }
}

#[test]
fn pod_addresses_are_reached_over_mtls_when_meshed_and_in_plaintext_when_not() {
    if netns_or_skip("kube_pod_addr") {
        return;
    }
    let plane = Plane::new("podaddr");
    let client = plane.node.pod().unwrap();
    let db = plane.node.pod().unwrap();
    let legacy = plane.node.pod().unwrap();
    // db-0 is the pod of a headless Service (a StatefulSet's); legacy-0
    // no Service selects, and it runs no proxy.
    plane.pod("db-0", &db, "db", true);
    plane.service("db", None, &[("db-0", &db)]);
    plane.pod("legacy-0", &legacy, "web", false);
    plane.holds(&[("Service", 1.0), ("EndpointSlice", 1.0), ("Pod", 2.0)]);
    let _apps = [app(&db), app(&legacy)];
    let _db_proxy = plane.meshed(&db, "db");
    let _client_proxy = plane.meshed(&client, "client");

    let (mut capture, pcap) = plane.capture("podaddr.bin", Duration::from_secs(3));
    let body = get_ok(
        &client,
        &format!("http://{}:8080/hello?canary=DB-CANARY-7f3a", db.ip),
    );
    assert!(body.contains("hello from"), "{body}");
    let body = get_ok(
        &client,
        &format!("http://{}:8080/hello?canary=LEGACY-CANARY-7f3a", legacy.ip),
    );
    assert!(body.contains("hello from"), "{body}");
    capture.expect_line("CAPTURED", WAIT).unwrap();
    capture.wait_exit(WAIT).unwrap();
    let wire = std::fs::read(&pcap).unwrap();
    // The capture reads plaintext (the unmeshed pod's) ...
    assert!(
        contains(&wire, b"LEGACY-CANARY-7f3a"),
        "the capture saw no plaintext"
    );
    // ... and the meshed pod's address was reached over mTLS only.
    assert!(
        !contains(&wire, b"DB-CANARY-7f3a"),
        "the request to db-0 crossed in plaintext"
    );
    let streams = tcp_streams(&wire).unwrap();
    assert!(
        all_mtls(&streams, &client, &db) >= 1,
        "no TLS answer from db-0"
    );

    // Both proxies name the other: the server's inbound request carries
    // the client's identity, the client's outbound one the server's.
    let inbound = format!(
        "weft_request_total{{direction=\"inbound\",tls=\"true\",client_id=\"{}\",server_id=\"{}\"}}",
        shop_id("client"),
        shop_id("db")
    );
    assert_eq!(metric(&db, &inbound).unwrap(), 1.0, "{inbound}");
    let outbound = format!(
        "weft_request_total{{direction=\"outbound\",dst=\"{}:8080\",tls=\"true\",server_id=\"{}\"}}",
        db.ip,
        shop_id("db")
    );
    assert_eq!(metric(&client, &outbound).unwrap(), 1.0, "{outbound}");
    let plain = format!(
        "weft_request_total{{direction=\"outbound\",dst=\"{}:8080\",tls=\"false\"}}",
        legacy.ip
    );
    assert_eq!(metric(&client, &plain).unwrap(), 1.0, "{plain}");
    assert_eq!(app_served(&legacy), 1);
    assert_eq!(
        metric(&client, "weft_discovery_fallbacks_total").unwrap(),
        0.0
    );
    let identity = admin_get(&client, "/identity").unwrap();
    assert!(identity.contains(&shop_id("client")), "{identity}");
}
