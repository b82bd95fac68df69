//! Traffic routing as a meshed pod lives it: weft-control in a pod of its
//! own (on the files source, or on the kube source through the fake API
//! server with the SMI and Gateway API kinds served there), a meshed client
//! pod whose proxy routes, and backend pods behind Services that exist only
//! in the manifests. A request reaches a backend only through the client
//! proxy's routing: each test counts what every backend pod served.
//!
//! Issue 14: a 90/10 TrafficSplit within ±3 points over 3,000 requests;
//! weights shifted 0→100 in steps under 200 rps without a failed request;
//! an A/B split by header (HTTPRouteGroup); a TCPRoute split of an opaque
//! port; a GRPCRoute by method; an HTTPRoute and a TrafficSplit on one
//! Service (the HTTPRoute wins).

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use weft_tests::fakekube::{
    FakeKube, Resource, ENDPOINT_SLICES, GRPC_ROUTES, HTTP_ROUTES, HTTP_ROUTE_GROUPS, NAMESPACES,
    SERVICES, TCP_ROUTES, TRAFFIC_SPLITS,
};
use weft_tests::mesh::{app_served, curl, metric, start_proxy};
use weft_tests::relay::HostRelay;
use weft_tests::*;

/// The apex Service and its two versions.
const WEB: &str = "10.96.0.10:80";
const DB: &str = "10.96.0.20:9000";
const ECHO: &str = "10.96.0.30:80";
/// The routing kinds weft reads.
const ROUTING: [Resource; 5] = [
    TRAFFIC_SPLITS,
    HTTP_ROUTE_GROUPS,
    TCP_ROUTES,
    HTTP_ROUTES,
    GRPC_ROUTES,
];
/// Where weft-control's pod reaches the fake API server.
const KUBE_IN_POD: &str = "127.0.0.1:6443";

enum Source {
    Files(PathBuf),
    Kube { kube: FakeKube, _relay: HostRelay },
}

/// What a test runs on: the backends by role and the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// web-v1 (two pods; also the apex `web`'s own endpoints).
    V1,
    /// web-v2 (one pod).
    V2,
    /// db-v1 and db-v2: banner servers.
    Db,
    /// echo-v1 and echo-v2: gRPC Echo servers.
    Echo,
}

/// A node with weft-control, a meshed client and the backends. Fields drop
/// in order: processes before the API server, pods before their node.
struct Mesh {
    procs: Vec<Proc>,
    source: Source,
    client: Pod,
    control_pod: Pod,
    v1: Vec<Pod>,
    v2: Option<Pod>,
    db: Vec<Pod>,
    echo: Vec<Pod>,
    _node: Node,
}

fn service(name: &str, ip: &str, port: u16, app_protocol: Option<&str>) -> Value {
    let mut p =
        json!({"name": "main", "port": port, "targetPort": port_of_pods(port), "protocol": "TCP"});
    if let Some(a) = app_protocol {
        p["appProtocol"] = json!(a);
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [p]},
    })
}

/// Backend pods listen on 8080 (HTTP, gRPC) or 9000 (banner).
fn port_of_pods(service_port: u16) -> u16 {
    if service_port == 9000 {
        9000
    } else {
        8080
    }
}

/// The apex Service `name` on `10.96.0.<base>` (the first pod its own
/// endpoint) and `name-v1`, `name-v2`, … on the next addresses, a pod each.
fn versioned(objs: &mut Vec<Value>, name: &str, base: u8, port: u16, proto: &str, pods: &[Pod]) {
    objs.push(service(name, &format!("10.96.0.{base}"), port, Some(proto)));
    objs.push(slice(name, &[&pods[0]], port));
    for (i, pod) in pods.iter().enumerate() {
        let version = format!("{name}-v{}", i + 1);
        let ip = format!("10.96.0.{}", base as usize + 1 + i);
        objs.push(service(&version, &ip, port, Some(proto)));
        objs.push(slice(&version, &[pod], port));
    }
}

fn slice(service: &str, pods: &[&Pod], port: u16) -> Value {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|p| json!({"addresses": [p.ip.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "main", "port": port_of_pods(port), "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn kind_of(obj: &Value) -> Resource {
    match obj["kind"].as_str().unwrap() {
        "Service" => SERVICES,
        "EndpointSlice" => ENDPOINT_SLICES,
        "TrafficSplit" => TRAFFIC_SPLITS,
        "HTTPRouteGroup" => HTTP_ROUTE_GROUPS,
        "TCPRoute" => TCP_ROUTES,
        "HTTPRoute" => HTTP_ROUTES,
        "GRPCRoute" => GRPC_ROUTES,
        other => panic!("no resource for {other}"),
    }
}

impl Mesh {
    fn new(name: &str, kube: bool, roles: &[Role]) -> Self {
        let node = Node::new().unwrap();
        let control_pod = node.pod().unwrap();
        let client = node.pod().unwrap();
        let mut procs = Vec::new();
        let mut start = |pod: &Pod, args: &[&str], env: &[(&str, &str)]| {
            let mut cmd = pod.command(Some(APP_UID), &bin("weft-testapp"));
            cmd.args(args).envs(env.iter().copied());
            let p = Proc::spawn("weft-testapp", cmd).unwrap();
            p.expect_line("LISTENING", WAIT).unwrap();
            procs.push(p);
        };
        let http = ["http", "0.0.0.0:8080"];
        let (mut v1, mut v2, mut db, mut echo) = (vec![], None, vec![], vec![]);
        for role in roles {
            match role {
                Role::V1 => {
                    for _ in 0..2 {
                        let pod = node.pod().unwrap();
                        start(&pod, &http, &[]);
                        v1.push(pod);
                    }
                }
                Role::V2 => {
                    let pod = node.pod().unwrap();
                    start(&pod, &http, &[]);
                    v2 = Some(pod);
                }
                Role::Db => {
                    for name in ["db-v1", "db-v2"] {
                        let pod = node.pod().unwrap();
                        start(&pod, &["banner", "0.0.0.0:9000"], &[("TESTAPP_NAME", name)]);
                        db.push(pod);
                    }
                }
                Role::Echo => {
                    for _ in 0..2 {
                        let pod = node.pod().unwrap();
                        start(&pod, &["grpc", "0.0.0.0:8080"], &[]);
                        echo.push(pod);
                    }
                }
            }
        }
        let dir = std::env::temp_dir().join(format!("weft-routes-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut control = control_pod.command(None, &bin("weft-control"));
        control
            .args([
                "--grpc-addr",
                "0.0.0.0:8086",
                "--admin-addr",
                "127.0.0.1:9990",
            ])
            .args(["--poll-interval", "100ms"]);
        let source = if kube {
            let kube = FakeKube::start();
            kube.apply(&NAMESPACES, json!({"metadata": {"name": "shop"}}));
            // The CRDs installed, as the chart installs the SMI ones (and a
            // cluster with the Gateway API has its own).
            for r in ROUTING {
                kube.register(&r);
            }
            let relay = HostRelay::start(&control_pod, KUBE_IN_POD.parse().unwrap(), kube.addr())
                .expect("the relay to the fake API server starts");
            control
                .args(["--source", "kube", "--kube-api-server"])
                .arg(format!("http://{KUBE_IN_POD}"));
            Source::Kube {
                kube,
                _relay: relay,
            }
        } else {
            control.arg("--source").arg(&dir);
            Source::Files(dir)
        };
        let mut mesh = Self {
            procs,
            source,
            client,
            control_pod,
            v1,
            v2,
            db,
            echo,
            _node: node,
        };
        mesh.apply(&[]);
        mesh.procs
            .push(Proc::spawn("weft-control", control).unwrap());
        eventually(WAIT, || {
            let (code, text) = curl(&mesh.control_pod, None, "http://127.0.0.1:9990/ready")
                .ok_or_else(|| anyhow::anyhow!("weft-control's admin port did not answer"))?;
            anyhow::ensure!(code == 200, "weft-control not ready: {code} {text}");
            Ok(())
        })
        .unwrap();
        let control_addr = format!("{}:8086", mesh.control_pod.ip);
        let env = [
            ("WEFT_PROXY_CONTROL_ADDR", control_addr.as_str()),
            ("WEFT_PROXY_LOG", "info"),
            ("WEFT_PROXY_POD_NAMESPACE", "shop"),
        ];
        mesh.procs.push(start_proxy(&mesh.client, &[], &env));
        mesh
    }

    /// The Services of the backends this mesh runs.
    fn services(&self) -> Vec<Value> {
        let mut objs = Vec::new();
        if !self.v1.is_empty() {
            let v1: Vec<&Pod> = self.v1.iter().collect();
            objs.push(service("web", "10.96.0.10", 80, None));
            objs.push(slice("web", &v1, 80));
            objs.push(service("web-v1", "10.96.0.11", 80, None));
            objs.push(slice("web-v1", &v1, 80));
        }
        if let Some(v2) = &self.v2 {
            objs.push(service("web-v2", "10.96.0.12", 80, None));
            objs.push(slice("web-v2", &[v2], 80));
        }
        if !self.db.is_empty() {
            versioned(&mut objs, "db", 20, 9000, "tcp", &self.db);
        }
        if !self.echo.is_empty() {
            versioned(&mut objs, "echo", 30, 80, "grpc", &self.echo);
        }
        objs
    }

    /// Replaces the routing objects with `routes` (the Services stay), and
    /// waits until weft-control holds exactly them.
    fn apply(&self, routes: &[Value]) {
        let mut objs = self.services();
        objs.extend_from_slice(routes);
        match &self.source {
            Source::Files(dir) => {
                // JSON is YAML: one document per object.
                let docs: Vec<String> = objs.iter().map(Value::to_string).collect();
                let tmp = dir.join(".all.yaml.tmp");
                std::fs::write(&tmp, docs.join("\n---\n")).unwrap();
                std::fs::rename(tmp, dir.join("all.yaml")).unwrap();
            }
            Source::Kube { kube, .. } => {
                for r in [
                    TRAFFIC_SPLITS,
                    HTTP_ROUTE_GROUPS,
                    TCP_ROUTES,
                    HTTP_ROUTES,
                    GRPC_ROUTES,
                ] {
                    for old in kube.objects(&r) {
                        let name = old["metadata"]["name"].as_str().unwrap();
                        let keep = objs.iter().any(|o| {
                            o["kind"] == old["kind"] && o["metadata"]["name"].as_str() == Some(name)
                        });
                        if !keep {
                            kube.delete(&r, "shop", name);
                        }
                    }
                }
                for obj in objs.iter() {
                    kube.apply(&kind_of(obj), obj.clone());
                }
            }
        }
        if !self.control_running() {
            return;
        }
        for kind in [
            "TrafficSplit",
            "HTTPRouteGroup",
            "TCPRoute",
            "HTTPRoute",
            "GRPCRoute",
        ] {
            let n = routes.iter().filter(|o| o["kind"] == kind).count() as f64;
            let series = format!("weft_control_objects{{kind=\"{kind}\"}}");
            eventually(WAIT, || {
                let held = self.control_metric(&series)?;
                anyhow::ensure!(held == n, "weft-control holds {held} {kind}, not {n}");
                Ok(())
            })
            .unwrap();
        }
    }

    fn control_running(&self) -> bool {
        curl(&self.control_pod, None, "http://127.0.0.1:9990/ready").is_some()
    }

    fn control_metric(&self, series: &str) -> anyhow::Result<f64> {
        weft_tests::mesh::control_metric(&self.control_pod, series)
    }

    /// Applies `routes` and waits until requests from the client follow
    /// them: `check` holds on what a burst of 40 GETs of `path` did.
    fn apply_and_wait(&self, routes: &[Value], path: &str, check: impl Fn(u64, u64) -> bool) {
        self.apply(routes);
        eventually(WAIT, || {
            let (v1, v2) = self.burst(path, &[], 40);
            anyhow::ensure!(check(v1, v2), "40 GETs: {v1} to web-v1, {v2} to web-v2");
            Ok(())
        })
        .unwrap();
    }

    /// `/hello` requests served so far by web-v1's pods and by web-v2's.
    fn served(&self) -> (u64, u64) {
        let v1 = self.v1.iter().map(app_served).sum();
        let v2 = self.v2.as_ref().map_or(0, app_served);
        (v1, v2)
    }

    /// `n` GETs of `path` (with `headers`) from the client's app to `web`
    /// on one curl: how many each version served.
    fn burst(&self, path: &str, headers: &[&str], n: usize) -> (u64, u64) {
        let before = self.served();
        let url = format!("http://{WEB}{path}");
        let mut cmd = self.client.command(Some(APP_UID), Path::new("curl"));
        cmd.args(["-sS", "--fail", "--max-time", "10", "-o", "/dev/null"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        for _ in 0..n {
            cmd.arg(&url);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let after = self.served();
        (after.0 - before.0, after.1 - before.1)
    }

    /// `weft-testapp load` from the client to `web`: (sent, ok, failed, output).
    fn load(&self, rate: u32, duration: Duration) -> (u64, u64, u64, String) {
        let out = self
            .client
            .run(
                Some(APP_UID),
                &bin("weft-testapp"),
                &[
                    "load",
                    WEB,
                    &rate.to_string(),
                    &duration.as_millis().to_string(),
                    "8",
                ],
            )
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "weft-testapp load: {stdout}");
        load_line(&stdout)
    }
}

fn load_line(stdout: &str) -> (u64, u64, u64, String) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("OK "))
        .unwrap_or_else(|| panic!("no OK line: {stdout}"));
    let n = |k: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {k}= in {line}"))
    };
    (n("sent"), n("ok"), n("failed"), stdout.to_string())
}

fn split(v1: u32, v2: u32) -> Value {
    json!({
        "apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
        "metadata": {"name": "web-split", "namespace": "shop"},
        "spec": {"service": "web", "backends": [
            {"service": "web-v1", "weight": v1}, {"service": "web-v2", "weight": v2}]},
    })
}

fn ninety_ten(kube: bool) {
    let mesh = Mesh::new(
        if kube { "split-kube" } else { "split" },
        kube,
        &[Role::V1, Role::V2],
    );
    mesh.apply_and_wait(&[split(900, 100)], "/hello", |_, v2| v2 > 0);
    let before = mesh.served();
    let (sent, ok, failed, out) = mesh.load(500, Duration::from_secs(6));
    assert_eq!(failed, 0, "{out}");
    let after = mesh.served();
    let (v1, v2) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(v1 + v2, ok, "every answer came from a backend: {out}");
    assert!(sent >= 2900, "{out}");
    let share = v2 as f64 / (v1 + v2) as f64;
    println!(
        "90/10 split: {v1} to web-v1, {v2} to web-v2 of {sent}: web-v2 {:.2}%",
        share * 100.0
    );
    assert!(
        (0.07..=0.13).contains(&share),
        "web-v2 got {share:.4} of {sent}"
    );
}

#[test]
fn a_90_10_split_is_within_3_points_over_3000_requests_on_the_files_source() {
    if netns_or_skip(
        "routes_a_90_10_split_is_within_3_points_over_3000_requests_on_the_files_source",
    ) {
        return;
    }
    ninety_ten(false);
}

#[test]
fn a_90_10_split_is_within_3_points_over_3000_requests_on_the_kube_source() {
    if netns_or_skip(
        "routes_a_90_10_split_is_within_3_points_over_3000_requests_on_the_kube_source",
    ) {
        return;
    }
    ninety_ten(true);
}

#[test]
fn weights_shifted_from_0_to_100_under_200_rps_fail_no_request() {
    if netns_or_skip("routes_weights_shifted_from_0_to_100_under_200_rps_fail_no_request") {
        return;
    }
    let mesh = Mesh::new("shift", false, &[Role::V1, Role::V2]);
    mesh.apply_and_wait(&[split(100, 0)], "/hello", |v1, v2| v1 == 40 && v2 == 0);
    let mut cmd = mesh.client.command(Some(APP_UID), &bin("weft-testapp"));
    cmd.args(["load", WEB, "200", "12000", "4"]);
    let mut load = Proc::spawn("weft-testapp load", cmd).unwrap();
    for v2 in [25, 50, 75, 100] {
        let start = mesh.served().1;
        mesh.apply(&[split(100 - v2, v2)]);
        // The step is in force once web-v2 serves the load's requests.
        eventually(WAIT, || {
            let now = mesh.served().1;
            anyhow::ensure!(
                now >= start + 20,
                "web-v2 served {} since the step to {v2}",
                now - start
            );
            Ok(())
        })
        .unwrap();
    }
    let v1_at_100 = mesh.served().0;
    let line = load.expect_line("OK ", Duration::from_secs(30)).unwrap();
    let (sent, _, failed, out) = load_line(&line);
    assert_eq!(load.wait_exit(WAIT).unwrap(), Some(0), "{out}");
    assert_eq!(failed, 0, "{out}");
    assert!(sent > 1000, "{out}");
    let web_v1_after = mesh.served().0 - v1_at_100;
    println!("weights 0→100 for web-v2 in 4 steps under 200 rps: {sent} sent, 0 failed; web-v1 served {web_v1_after} after the last step");
    assert!(
        web_v1_after <= 8,
        "at weight 0 web-v1 got {web_v1_after} (at most the requests in flight)"
    );
}

#[test]
fn a_header_matched_ab_split_sends_only_the_matching_requests_to_b() {
    if netns_or_skip("routes_a_header_matched_ab_split_sends_only_the_matching_requests_to_b") {
        return;
    }
    let mesh = Mesh::new("ab", true, &[Role::V1, Role::V2]);
    // The Firefox example of the SMI spec, by a header of our own.
    let group = json!({
        "apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
        "metadata": {"name": "ab-test", "namespace": "shop"},
        "spec": {"matches": [{"name": "group-b", "headers": [{"x-group": "^b$"}]}]},
    });
    let ab = json!({
        "apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
        "metadata": {"name": "ab", "namespace": "shop"},
        "spec": {"service": "web",
                 "matches": [{"kind": "HTTPRouteGroup", "name": "ab-test"}],
                 "backends": [{"service": "web-v2", "weight": 100}]},
    });
    mesh.apply(&[group, ab]);
    eventually(WAIT, || {
        let (v1, v2) = mesh.burst("/hello", &["x-group: b"], 20);
        anyhow::ensure!((v1, v2) == (0, 20), "group b: {v1} to v1, {v2} to v2");
        Ok(())
    })
    .unwrap();
    let (v1, v2) = mesh.burst("/hello", &["x-group: a"], 20);
    assert_eq!(
        (v1, v2),
        (20, 0),
        "group a goes to the apex (web-v1's pods)"
    );
    let (v1, v2) = mesh.burst("/hello", &[], 20);
    assert_eq!((v1, v2), (20, 0), "no header: the apex");
}

#[test]
fn an_httproute_and_a_trafficsplit_on_one_service_the_httproute_wins() {
    if netns_or_skip("routes_an_httproute_and_a_trafficsplit_on_one_service_the_httproute_wins") {
        return;
    }
    let mesh = Mesh::new("precedence", false, &[Role::V1, Role::V2]);
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/hello"}}],
                            "backendRefs": [{"name": "web-v2", "port": 80}]}]},
    });
    mesh.apply_and_wait(&[split(100, 0), route], "/hello", |v1, v2| {
        (v1, v2) == (0, 40)
    });
    // The route leaves other paths unmatched: 404, not the split.
    let (code, text) = curl(&mesh.client, Some(APP_UID), &format!("http://{WEB}/other")).unwrap();
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("weft-proxy-error: no route"), "{text}");
    // The route removed, the split is in force again.
    mesh.apply_and_wait(&[split(100, 0)], "/hello", |v1, v2| (v1, v2) == (40, 0));
}

#[test]
fn a_tcp_route_splits_the_connections_of_an_opaque_port() {
    if netns_or_skip("routes_a_tcp_route_splits_the_connections_of_an_opaque_port") {
        return;
    }
    let mesh = Mesh::new("tcp", false, &[Role::Db]);
    let tcp_route = json!({
        "apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute",
        "metadata": {"name": "db-port", "namespace": "shop"},
        "spec": {"matches": {"ports": [9000]}},
    });
    let db_split = json!({
        "apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"service": "db", "matches": [{"kind": "TCPRoute", "name": "db-port"}],
                 "backends": [{"service": "db-v1", "weight": 50}, {"service": "db-v2", "weight": 50}]},
    });
    mesh.apply(&[tcp_route, db_split]);
    let banner = || {
        let out = mesh
            .client
            .run(
                Some(APP_UID),
                &bin("weft-testapp"),
                &["tcp-client", DB, "banner"],
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eventually(WAIT, || {
        let outs: Vec<String> = (0..6).map(|_| banner()).collect();
        anyhow::ensure!(
            outs.iter().any(|o| o.contains("banner db-v2")),
            "db-v2 not reached yet: {outs:?}"
        );
        Ok(())
    })
    .unwrap();
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..40 {
        let out = banner();
        if out.contains("banner db-v1") {
            v1 += 1;
        } else if out.contains("banner db-v2") {
            v2 += 1;
        } else {
            panic!("no banner: {out}");
        }
    }
    println!("TCPRoute 50/50 split of 40 connections: db-v1 {v1}, db-v2 {v2}");
    assert!(v1 >= 6 && v2 >= 6, "db-v1 {v1}, db-v2 {v2} of 40");
}

#[test]
fn a_grpc_route_sends_each_method_to_its_backend() {
    if netns_or_skip("routes_a_grpc_route_sends_each_method_to_its_backend") {
        return;
    }
    let mesh = Mesh::new("grpc", false, &[Role::Echo]);
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"name": "echo", "namespace": "shop"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 80}],
                 "rules": [
                     {"matches": [{"method": {"service": "weft.test.v1.Echo", "method": "Unary"}}],
                      "backendRefs": [{"name": "echo-v2", "port": 80}]},
                     {"matches": [{"method": {"service": "weft.test.v1.Echo"}}],
                      "backendRefs": [{"name": "echo-v1", "port": 80}]}]},
    });
    mesh.apply(&[route]);
    let series = |backend: &str| {
        format!("weft_route_response_total{{dst=\"{ECHO}\",route=\"GRPCRoute/shop/echo\",backend=\"{backend}.shop.svc.cluster.local:80\"}}")
    };
    eventually(WAIT, || {
        let out = mesh
            .client
            .run(
                Some(APP_UID),
                &bin("weft-testapp"),
                &["grpc-client", ECHO, "3", "0"],
            )
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(out.status.success(), "grpc-client: {stdout}");
        anyhow::ensure!(
            metric(&mesh.client, &series("echo-v2"))? >= 2.0,
            "no Unary call went to echo-v2 yet"
        );
        Ok(())
    })
    .unwrap();
    // The route in force: one more run, counted alone.
    let counts = || {
        (
            metric(&mesh.client, &series("echo-v2")).unwrap(),
            metric(&mesh.client, &series("echo-v1")).unwrap(),
        )
    };
    let before = counts();
    let out = mesh
        .client
        .run(
            Some(APP_UID),
            &bin("weft-testapp"),
            &["grpc-client", ECHO, "3", "0"],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "grpc-client: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let after = counts();
    let (unary, bidi) = (after.0 - before.0, after.1 - before.1);
    println!("GRPCRoute: of one grpc-client run, {unary} calls to echo-v2 (Unary), {bidi} to echo-v1 (Bidi)");
    // A run makes two Unary calls (one failing with NOT_FOUND) and one Bidi stream.
    assert_eq!((unary, bidi), (2.0, 1.0));
}
