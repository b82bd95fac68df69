//! Inbound authorization between in-process proxies: a server-side proxy
//! (pod `api-0`, ServiceAccount `api`) in front of an app, its policy from
//! a real weft-control (files source) holding an SMI TrafficTarget; meshed
//! clients of ServiceAccounts `client` and `other`, and plaintext clients.
//!
//! Allowed, denied by source, denied by route, denied without mesh TLS,
//! a grant and a revocation seen on an open keep-alive connection, the
//! last policy kept while the control plane is away, and fail-closed
//! before the first policy.

mod support;

use http::{StatusCode, Version};
use std::net::SocketAddr;
use support::control::NOTHING;
use support::*;
use weft_proxy::test_util::OrigDst;

const API: &str = "127.96.7.10:8080";

/// `client` may GET `/public` (and what `extra` matches add); nobody else
/// anything.
fn policy(extra_matches: &str) -> String {
    format!(
        "---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {{name: api-routes, namespace: shop}}
spec:
  matches:
  - {{name: public, pathRegex: /public, methods: [GET]}}
  - {{name: admin, pathRegex: /admin}}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {{name: client-to-api, namespace: shop}}
spec:
  destination: {{kind: ServiceAccount, name: api, namespace: shop}}
  rules: [{{kind: HTTPRouteGroup, name: api-routes, matches: [public{extra_matches}]}}]
  sources: [{{kind: ServiceAccount, name: client, namespace: shop}}]
"
    )
}

struct Authz {
    api: Svc,
    endpoints: Vec<Ep>,
    client: Proxy,
    other: Proxy,
    server: Proxy,
    control: Control,
    _ca: Ca,
}

impl Authz {
    async fn start(app: &Backend, policy: &str) -> Self {
        let ca = Ca::new(&["client", "api", "other"]);
        let control = Control::with_identity(NOTHING, &ca).await;
        let orig = OrigDst::default();
        let with = |sa: &str| ca.meshed_args(sa, &control);
        let mut server_args = with("api");
        server_args.push("--pod-name=api-0".into());
        let server = Proxy::start_with(orig.clone(), &server_args).await;
        let app_port = support::addr(&format!("127.0.0.1:{}", app.addr.port()));
        orig.set_listener(server.inbound, app_port);
        let api = Svc::new("api", API);
        let endpoints = vec![Ep::ready(server.inbound).meshed("api-0", "api")];
        let client = Proxy::start_with(orig.clone(), &with("client")).await;
        let other = Proxy::start_with(orig, &with("other")).await;
        let m = Self {
            api,
            endpoints,
            client,
            other,
            server,
            control,
            _ca: ca,
        };
        m.apply(policy).await;
        for p in [&m.client, &m.other] {
            p.wait_endpoints(m.api.addr, &[m.server.inbound]).await;
        }
        m
    }

    /// Replaces the policy objects; returns once weft-control has them.
    async fn apply(&self, policy: &str) {
        let before = self
            .control_metric("weft_control_model_apply_seconds_count")
            .await;
        self.control
            .apply(&format!("{}{policy}", self.api.yaml(&self.endpoints)));
        eventually("weft-control applied the change", async || {
            let now = self
                .control_metric("weft_control_model_apply_seconds_count")
                .await;
            anyhow::ensure!(now > before, "not yet");
            Ok(())
        })
        .await;
    }

    async fn control_metric(&self, series: &str) -> f64 {
        let scrape = client::http_get(self.control.admin, "/metrics")
            .await
            .unwrap();
        metrics::sum(&scrape.body, series)
    }

    /// The policies the server proxy has received.
    async fn policy_updates(&self) -> f64 {
        self.server
            .metric("weft_inbound_policy_updates_total")
            .await
    }
}

/// `weft_inbound_authz_total` by result and reason (any port, client, route).
async fn decisions(p: &Proxy, result: &str, reason: &str) -> f64 {
    let series = format!("weft_inbound_authz_total{{result=\"{result}\",reason=\"{reason}\"}}");
    p.metric(&series).await
}

const COUNTED: [(&str, &str); 4] = [
    ("allow", "authorized"),
    ("deny", "route"),
    ("deny", "source"),
    ("deny", "unauthenticated"),
];

fn grpc(path: &str) -> http::Request<client::Body> {
    let mut req = support::post(path, &b"\0\0\0\0\0"[..]);
    req.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_a_traffic_target_allows_reaches_the_app() {
    let app = Backend::start("app").await;
    let m = Authz::start(&app, &policy("")).await;
    // (Waiting for discovery made opaque connections, denied: counted
    // from here.)
    let mut before = Vec::new();
    for (result, reason) in COUNTED {
        before.push(decisions(&m.server, result, reason).await);
    }

    // Allowed: the named client, on its route, over HTTP/1 and HTTP/2.
    let r = m.client.get(m.api.addr, "/public").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, app.hello(Version::HTTP_11));
    let r = m
        .client
        .h2(m.api.addr)
        .await
        .get("/public/x")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);

    // Denied by route: the same client, another path or method.
    let r = m.client.get(m.api.addr, "/admin").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.proxy_error(), Some("unauthorized"));
    let r = m
        .client
        .h2(m.api.addr)
        .await
        .send(grpc("/pkg.Svc/Admin"))
        .await
        .unwrap();
    assert_eq!(r.header("grpc-status"), Some("7"), "PERMISSION_DENIED");

    // Denied by source: another ServiceAccount, even on /public.
    let r = m.other.get(m.api.addr, "/public").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.proxy_error(), Some("unauthorized"));

    // Denied without mesh TLS: a plaintext client on the inbound port.
    let tcp = m.server.connect_inbound(app.addr).await;
    let r = H1::handshake(tcp).await.get("/public").await.unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Only the allowed requests reached the app.
    let seen: Vec<String> = app.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(seen, ["/public", "/public/x"]);
    let mut counted = Vec::new();
    for ((result, reason), before) in COUNTED.into_iter().zip(before) {
        counted.push(decisions(&m.server, result, reason).await - before);
    }
    // Each decision above is counted. The connections that waiting for
    // discovery made (one per client proxy, closed at once) are decided
    // too, and may be counted only after the baseline was read: at most
    // one more each, never fewer.
    let expected = [2.0, 2.0, 1.0, 1.0];
    let late: f64 = counted.iter().zip(expected).map(|(c, e)| c - e).sum();
    assert!(
        counted.iter().zip(expected).all(|(c, e)| *c >= e) && late <= 2.0,
        "{COUNTED:?}: counted {counted:?}, expected {expected:?} (+ at most 2 probes)"
    );
    let route = format!(
        "weft_inbound_authz_total{{result=\"allow\",client_id=\"{}\",route=\"api-routes/public\",port=\"{}\"}}",
        Ca::id("client"),
        app.addr.port()
    );
    assert_eq!(m.server.metric(&route).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_and_revocations_reach_an_open_connection_and_outlive_the_control_plane() {
    let app = Backend::start("app").await;
    let mut m = Authz::start(&app, &policy("")).await;
    // One keep-alive connection of the app to the client proxy, which
    // keeps one mesh connection to the server proxy.
    let mut conn = m.client.h1(m.api.addr).await;
    assert_eq!(conn.get("/public").await.unwrap().status, StatusCode::OK);
    assert_eq!(
        conn.get("/admin").await.unwrap().status,
        StatusCode::FORBIDDEN
    );
    let inbound_conns = "weft_tcp_open_total{direction=\"inbound\"}";
    let opened = m.server.metric(inbound_conns).await;

    // Granted: /admin gets through on the same connections.
    let updates = m.policy_updates().await;
    m.apply(&policy(", admin")).await;
    m.server
        .wait_metric("weft_inbound_policy_updates_total", updates + 1.0)
        .await;
    assert_eq!(conn.get("/admin").await.unwrap().status, StatusCode::OK);

    // Revoked: /public is denied on them.
    m.apply(&policy("").replace("matches: [public]", "matches: [admin]"))
        .await;
    m.server
        .wait_metric("weft_inbound_policy_updates_total", updates + 2.0)
        .await;
    assert_eq!(
        conn.get("/public").await.unwrap().status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(conn.get("/admin").await.unwrap().status, StatusCode::OK);
    assert_eq!(
        m.server.metric(inbound_conns).await,
        opened,
        "the same connection"
    );

    // The control plane away: the last policy holds, for new connections
    // too.
    m.control.stop().await;
    assert_eq!(
        conn.get("/public").await.unwrap().status,
        StatusCode::FORBIDDEN
    );
    let r = m.client.get(m.api.addr, "/admin").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = m.other.get(m.api.addr, "/admin").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let seen: Vec<String> = app.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(seen, ["/public", "/admin", "/admin", "/admin"]);
}

/// A proxy whose control plane never answers: nothing listens there.
async fn unanswered(default: &str) -> (Backend, Proxy) {
    let app = Backend::start("app").await;
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = nobody.local_addr().unwrap();
    drop(nobody);
    let proxy = Proxy::launch(
        OrigDst::default(),
        &[
            format!("--control-addr={addr}"),
            "--pod-namespace=shop".into(),
            "--pod-name=api-0".into(),
            format!("--default-inbound-policy={default}"),
            "--inbound-policy-timeout=200ms".into(),
        ],
    );
    (app, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_fails_closed_before_its_first_policy_unless_everyone_is_allowed() {
    let (app, proxy) = unanswered("all-authenticated").await;
    let tcp = proxy.connect_inbound(app.addr).await;
    let r = H1::handshake(tcp).await.get("/").await.unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.proxy_error(), Some("unauthorized"));
    assert_eq!(decisions(&proxy, "deny", "no_policy").await, 1.0);
    assert_eq!(app.requests(), 0);

    let (app, proxy) = unanswered("all-unauthenticated").await;
    let tcp = proxy.connect_inbound(app.addr).await;
    let r = H1::handshake(tcp).await.get("/").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(decisions(&proxy, "allow", "default").await, 1.0);
    assert_eq!(app.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_control_plane_the_configured_default_is_the_policy() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&["--default-inbound-policy=all-authenticated"]).await;
    let tcp = proxy.connect_inbound(app.addr).await;
    let r = H1::handshake(tcp).await.get("/").await.unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(decisions(&proxy, "deny", "unauthenticated").await, 1.0);
    // An opaque connection is closed without reaching the app.
    let proxy = Proxy::start(&[
        "--default-inbound-policy=deny",
        &format!("--opaque-ports={}", app.addr.port()),
    ])
    .await;
    let mut tcp = proxy.connect_inbound(app.addr).await;
    let got = client::exchange(&mut tcp, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", WAIT).await;
    assert_eq!(got, "", "closed at once");
    assert_eq!(decisions(&proxy, "deny", "default").await, 1.0);
    assert_eq!(app.connections(), 0);
}
