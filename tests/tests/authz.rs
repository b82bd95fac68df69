//! Authorization as a mesh really runs it: weft-control (files source, a
//! CA from `weft identity init`, a token file) in a pod of its own; a
//! server pod `api-0` (ServiceAccount `api`, weft-init and weft-proxy)
//! with an HTTP app on 8080 and an opaque TCP app on 9000; three meshed
//! client pods as `client-a`, `client-b`, `client-c`, and one unmeshed.
//!
//! The deny matrix: each client × each route (`/public`, `/orders`,
//! `/admin`) over HTTP/1, HTTP/2 and gRPC on the HTTP port, and an opaque
//! connection on the TCP port; the TrafficTargets allow some cells. Every
//! cell must behave as the table says, and the apps' own logs must hold
//! exactly the allowed requests and connections. Then a grant is seen
//! within 1 s, and the policy holds with weft-control killed.

use std::time::{Duration, Instant};
use weft_tests::mesh::admin_get;
use weft_tests::*;

const API_IP: &str = "10.96.0.30";
const CLIENTS: [&str; 3] = ["client-a", "client-b", "client-c"];
const ROUTES: [&str; 3] = ["public", "orders", "admin"];
const PROTOCOLS: [&str; 3] = ["http1", "http2", "grpc"];

/// The table: which client may call which route (any protocol), and who
/// may open the TCP port.
fn allowed(client: &str, cell: &str) -> bool {
    matches!(
        (client, cell),
        ("client-a", "public" | "orders" | "tcp") | ("client-b", "public") | ("client-c", "admin")
    )
}

/// The TrafficTargets that say the table (`orders_sources`: who the
/// `orders` target names; the live test widens it).
fn policy(orders_sources: &[&str]) -> String {
    let routes = "apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: api-routes, namespace: shop}
spec:
  matches:
  - {name: public, pathRegex: /public}
  - {name: orders, pathRegex: /orders}
  - {name: admin, pathRegex: /admin}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: db, namespace: shop}
spec:
  matches: {ports: [9000]}
---
";
    let db = "{kind: TCPRoute, name: db}";
    [
        target("frontend", &["public"], None, &["client-a", "client-b"]),
        target("orders", &["orders"], Some(db), orders_sources),
        target("ops", &["admin"], None, &["client-c"]),
    ]
    .into_iter()
    .fold(routes.to_owned(), |all, t| all + &t)
}

/// A TrafficTarget to `api` from `sources`: these matches of
/// `api-routes`, and `tcp` when given.
fn target(name: &str, matches: &[&str], tcp: Option<&str>, sources: &[&str]) -> String {
    let sources: Vec<String> = sources
        .iter()
        .map(|n| format!("{{kind: ServiceAccount, name: {n}, namespace: shop}}"))
        .collect();
    let group = format!(
        "{{kind: HTTPRouteGroup, name: api-routes, matches: [{}]}}",
        matches.join(", ")
    );
    let rules: Vec<&str> = [Some(group.as_str()), tcp].into_iter().flatten().collect();
    format!(
        "apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {{name: {name}, namespace: shop}}
spec:
  destination: {{kind: ServiceAccount, name: api, namespace: shop}}
  rules: [{}]
  sources: [{}]
---
",
        rules.join(", "),
        sources.join(", ")
    )
}

/// The Service `api` (HTTP 80 → 8080, opaque 9000) and its pod.
fn service(pod_ip: std::net::Ipv4Addr) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: api, namespace: shop, annotations: {{weft.dev/opaque-ports: \"9000\"}}}}
spec:
  clusterIP: {API_IP}
  clusterIPs: [\"{API_IP}\"]
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}, {{name: db, port: 9000, targetPort: 9000, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: api-1, namespace: shop, labels: {{kubernetes.io/service-name: api}}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}, {{name: db, port: 9000, protocol: TCP}}]
endpoints:
- addresses: [\"{pod_ip}\"]
  conditions: {{ready: true, serving: true, terminating: false}}
  targetRef: {{kind: Pod, name: api-0, namespace: shop}}
---
apiVersion: v1
kind: Pod
metadata: {{name: api-0, namespace: shop, annotations: {{weft.dev/opaque-ports: \"9000\"}}}}
spec:
  serviceAccountName: api
  containers: [{{name: app, image: app}}, {{name: weft-proxy, image: weft}}]
---
"
    )
}

/// weft-control and what the tests add to its manifests.
struct Plane(weft_tests::mesh::FilesPlane);

impl std::ops::Deref for Plane {
    type Target = weft_tests::mesh::FilesPlane;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Plane {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Plane {
    fn new() -> Self {
        Self(weft_tests::mesh::FilesPlane::start(
            "authz",
            &["api", "client-a", "client-b", "client-c"],
        ))
    }

    /// Writes the manifests; waits until weft-control has applied them
    /// (`weft_control_model_apply_seconds_count` moved by `changes`).
    fn write(&self, yaml: &str, changes: f64) {
        let applied = "weft_control_model_apply_seconds_count";
        let before = self.control_metric(applied).unwrap();
        let tmp = self.dir.join("manifests/.all.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, self.dir.join("manifests/all.yaml")).unwrap();
        eventually(WAIT, || {
            let n = self.control_metric(applied)? - before;
            anyhow::ensure!(n >= changes, "{n} changes applied");
            Ok(())
        })
        .unwrap();
    }
}

/// What a cell got: `allow` (the app answered), `deny` (the proxy
/// refused: 403 / PERMISSION_DENIED / connection closed), or what else.
fn try_cell(pod: &Pod, cell: &str, protocol: &str) -> String {
    if cell == "tcp" {
        let (connected, out) = connect(pod, APP_UID, &format!("{API_IP}:9000"));
        return if connected && out.contains("REPLY hello from") {
            "allow".into()
        } else if out.contains("CONNECTED") || out.contains("FAILED") {
            "deny".into()
        } else {
            format!("? {out}")
        };
    }
    let url = format!("http://{API_IP}/{cell}");
    let mut args = vec!["-sS", "-i", "--max-time", "5"];
    match protocol {
        "http1" => {}
        "http2" => args.push("--http2-prior-knowledge"),
        _ => args.extend([
            "--http2-prior-knowledge",
            "-X",
            "POST",
            "-H",
            "content-type: application/grpc",
            "--data-binary",
            "",
        ]),
    }
    args.push(&url);
    let out = pod
        .run(Some(APP_UID), std::path::Path::new("curl"), &args)
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let refused = text.contains("weft-proxy-error: unauthorized");
    let status = text.split_whitespace().nth(1).unwrap_or("");
    match (protocol, refused) {
        ("grpc", true) if text.contains("grpc-status: 7") => "deny".into(),
        (_, true) if status == "403" => "deny".into(),
        // The app has no such route: its own 404 says it was reached.
        (_, false) if status == "404" && text.contains("no such route") => "allow".into(),
        _ => format!("? {text}"),
    }
}

#[test]
fn the_deny_matrix_and_live_changes() {
    if netns_or_skip("authz_matrix") {
        return;
    }
    let mut plane = Plane::new();
    let api = plane.node.pod().unwrap();
    let plain = plane.node.pod().unwrap();
    let clients: Vec<Pod> = CLIENTS.iter().map(|_| plane.node.pod().unwrap()).collect();
    plane.write(
        &format!("{}{}", service(api.ip), policy(&["client-a"])),
        8.0,
    );

    let mut cmd = api.command(Some(APP_UID), &bin("weft-testapp"));
    cmd.args(["http", "0.0.0.0:8080"])
        .env("TESTAPP_LOG_REQUESTS", "1");
    let http_app = Proc::spawn("api http app", cmd).unwrap();
    http_app.expect_line("LISTENING", WAIT).unwrap();
    let tcp_app = listen(&api, APP_UID, "0.0.0.0:9000");
    let mut env = plane.proxy_env("api");
    env.push(("WEFT_PROXY_POD_NAME".into(), "api-0".into()));
    // No WEFT_PROXY_OPAQUE_PORTS: 9000 is opaque by the pod's annotation,
    // which reaches the proxy with the port's policy (mesh TLS, which the
    // client speaks first, is detected on it all the same).
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let _api_proxy = start_proxy(&api, &[], &env);
    let _client_proxies: Vec<Proc> = CLIENTS
        .iter()
        .zip(&clients)
        .map(|(sa, pod)| {
            let env = plane.proxy_env(sa);
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            start_proxy(pod, &[], &env)
        })
        .collect();

    // Every cell, printed as a table.
    let mut wrong = Vec::new();
    let mut want_requests = Vec::new();
    let mut want_connections = 0;
    // The unmeshed client's request, below.
    let mut want_denied = 1;
    println!("deny matrix (allow = reached the app; deny = refused by api-0's proxy)");
    println!(
        "{:<10} {:<8} {:>7} {:>7} {:>7}",
        "client", "route", "http1", "http2", "grpc"
    );
    for (sa, pod) in CLIENTS.iter().zip(&clients) {
        for route in ROUTES {
            let got: Vec<String> = PROTOCOLS.iter().map(|p| try_cell(pod, route, p)).collect();
            println!(
                "{sa:<10} /{route:<7} {:>7} {:>7} {:>7}",
                got[0], got[1], got[2]
            );
            for (p, g) in PROTOCOLS.iter().zip(&got) {
                let want = if allowed(sa, route) { "allow" } else { "deny" };
                if g != want {
                    wrong.push(format!("{sa} /{route} {p}: {g}, not {want}"));
                }
                want_denied += usize::from(want == "deny");
                if want == "allow" {
                    let method = if *p == "grpc" { "POST" } else { "GET" };
                    want_requests.push(format!("REQUEST {method} /{route}"));
                }
            }
        }
        let got = try_cell(pod, "tcp", "tcp");
        println!("{sa:<10} {:<8} {got:>7}", "tcp:9000");
        let want = if allowed(sa, "tcp") { "allow" } else { "deny" };
        if got != want {
            wrong.push(format!("{sa} tcp: {got}, not {want}"));
        }
        want_connections += usize::from(want == "allow");
        want_denied += usize::from(want == "deny");
    }
    // No mesh identity: denied everywhere (the app is reached directly,
    // redirected to api-0's proxy by its iptables).
    let url = format!("http://{}:8080/public", api.ip);
    let out = plain
        .run(
            Some(APP_UID),
            std::path::Path::new("curl"),
            &["-sS", "-i", "--max-time", "5", &url],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    println!(
        "{:<10} {:<8} {:>7}",
        "unmeshed",
        "/public",
        if text.contains(" 403 ") { "deny" } else { "?" }
    );
    if !text.contains("weft-proxy-error: unauthorized") {
        wrong.push(format!("unmeshed /public: {text}"));
    }
    assert!(
        wrong.is_empty(),
        "cells not as the table says:\n{}",
        wrong.join("\n")
    );

    // What reached the apps: exactly the allowed cells.
    let mut seen = Vec::new();
    while let Some(line) = http_app.try_line(QUIET) {
        seen.push(line);
    }
    seen.sort();
    want_requests.sort();
    assert_eq!(seen, want_requests, "requests the HTTP app received");
    let mut accepted = 0;
    while let Some(line) = tcp_app.try_line(QUIET) {
        accepted += usize::from(line.starts_with("ACCEPTED"));
    }
    assert_eq!(
        accepted, want_connections,
        "connections the TCP app received"
    );
    let denied = metric(&api, "weft_inbound_authz_total{result=\"deny\"}").unwrap();
    assert_eq!(denied, want_denied as f64, "denials counted");

    // A grant: client-b may now call /orders, within a second.
    let b = &clients[1];
    assert_eq!(try_cell(b, "orders", "http1"), "deny");
    let granted = Instant::now();
    let tmp = plane.dir.join("manifests/.all.yaml.tmp");
    std::fs::write(
        &tmp,
        format!("{}{}", service(api.ip), policy(&["client-a", "client-b"])),
    )
    .unwrap();
    std::fs::rename(&tmp, plane.dir.join("manifests/all.yaml")).unwrap();
    eventually(Duration::from_secs(3), || {
        anyhow::ensure!(try_cell(b, "orders", "http1") == "allow", "not yet");
        Ok(())
    })
    .unwrap();
    let took = granted.elapsed();
    println!("grant seen after {took:?}");
    assert!(took < Duration::from_secs(1), "the grant took {took:?}");
    assert_eq!(try_cell(b, "tcp", "tcp"), "allow");

    // weft-control killed: the last policy holds.
    plane.control.terminate(WAIT).unwrap();
    assert_eq!(try_cell(b, "orders", "http2"), "allow");
    assert_eq!(try_cell(&clients[2], "public", "http1"), "deny");
    assert_eq!(try_cell(&clients[0], "admin", "grpc"), "deny");
    assert!(admin_get(&api, "/ready").is_ok());
}
