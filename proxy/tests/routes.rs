//! Routing as the proxy lives it with weft-control on the files source: a
//! TrafficSplit sharing requests by weight and shifted under load without
//! a failed request, Gateway API HTTPRoutes by path and header with their
//! filters (header modifiers, rewrite, redirect), 404 for a request no
//! route matches, 500 for an invalid backend and 503 for one without
//! endpoints, a GRPCRoute by method, a route's own timeout and retries,
//! and the route metrics an operator reads a canary's error rate from.

mod support;

use http::{Method, StatusCode, Version};
use std::time::Duration;
use support::traffic::Tally;
use support::*;

const WEB: &str = "127.96.7.10:8080";
const V1: &str = "127.96.7.11:8080";
const V2: &str = "127.96.7.12:8080";
const EMPTY: &str = "127.96.7.13:8080";

fn authority(name: &str) -> String {
    format!("{name}.shop.svc.cluster.local:8080")
}

/// The apex `web` (its own endpoint `own`), `web-v1` (`a`), `web-v2`
/// (`b`) and `web-empty` (no endpoint), and `more` manifests.
fn services(own: &Backend, a: &Backend, b: &Backend, more: &str) -> String {
    [
        Svc::new("web", WEB).yaml(&[Ep::ready(own.addr)]),
        Svc::new("web-v1", V1).yaml(&[Ep::ready(a.addr)]),
        Svc::new("web-v2", V2).yaml(&[Ep::ready(b.addr)]),
        Svc::new("web-empty", EMPTY).yaml(&[]),
        more.to_string(),
    ]
    .join("---\n")
}

fn split(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\n\
         metadata: {{name: canary, namespace: shop}}\n\
         spec:\n  service: web\n  backends: [{{service: web-v1, weight: {v1}}}, {{service: web-v2, weight: {v2}}}]\n"
    )
}

/// Shares of `hello` answers from each backend in a tally.
fn share(tally: &Tally, backend: &Backend) -> f64 {
    tally.with_body(&backend.hello(Version::HTTP_11)) as f64 / tally.sent() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traffic_split_shares_requests_by_weight_and_shifts_under_load_without_a_failure() {
    let [own, a, b] = backends(["own", "a", "b"]).await.try_into().unwrap();
    let web = addr(WEB);
    let control = Control::start(&services(&own, &a, &b, &split(900, 100))).await;
    let proxy = Proxy::with_control(&control, &[]).await;

    let tally = proxy.burst(web, "/hello", 4, 500).await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    let v2 = share(&tally, &b);
    // 10% ± 3 points over 2,000 requests (about five standard deviations).
    assert!((0.07..=0.13).contains(&v2), "web-v2 got {v2:.3}: {tally:?}");
    assert!(
        (share(&tally, &a) - (1.0 - v2)).abs() < 1e-9,
        "the rest went to web-v1"
    );
    assert_eq!(own.requests(), 0, "the apex's own endpoint is no backend");

    let canary = format!(
        "weft_route_response_total{{dst=\"{web}\",route=\"TrafficSplit/shop/canary\",backend=\"{}\",status_class=\"2xx\"}}",
        authority("web-v2")
    );
    let counted = proxy.metric(&canary).await;
    assert_eq!(counted, tally.with_body(&b.hello(Version::HTTP_11)) as f64);

    // Shifted in steps under load: every request answered by a backend.
    let load = proxy.load(web, "/hello", 4);
    for (v1, v2) in [(500, 500), (100, 900), (0, 1000)] {
        control.apply(&services(&own, &a, &b, &split(v1, v2)));
        eventually("the new weights apply", async || {
            let t = proxy.burst(web, "/hello", 1, 100).await;
            let v1_share = share(&t, &a);
            match v1 {
                0 => anyhow::ensure!(v1_share == 0.0, "web-v1 still gets {v1_share}"),
                // Half (±20 points) when both weigh the same.
                500 => anyhow::ensure!((0.3..0.7).contains(&v1_share), "web-v1 got {v1_share}"),
                _ => anyhow::ensure!(v1_share < 0.3, "web-v1 still gets {v1_share}"),
            }
            Ok(())
        })
        .await;
    }
    let tally = load.stop().await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert!(tally.sent() > 100, "{tally:?}");
}

fn http_route(rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: web, namespace: shop}}\n\
         spec:\n  parentRefs: [{{group: \"\", kind: Service, name: web, port: 8080}}]\n  rules:\n{rules}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_pick_backends_by_path_and_header_apply_filters_and_404_the_rest() {
    let [own, a, b] = backends(["own", "a", "b"]).await.try_into().unwrap();
    let web = addr(WEB);
    let rules = "  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: x-canary, value: '1'}]}]
    backendRefs: [{name: web-v2, port: 8080}]
    filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-route, value: canary}], remove: [x-secret]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-served-by, value: web-v2}]}}
  - matches: [{path: {type: PathPrefix, value: /app}}]
    backendRefs: [{name: web-v1, port: 8080}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
  - matches: [{path: {type: Exact, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: new.example, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: web-v1, port: 8080}]
";
    let control = Control::start(&services(&own, &a, &b, &http_route(rules))).await;
    let proxy = Proxy::with_control(&control, &[]).await;

    let r = proxy.get(web, "/v2/hello").await;
    assert_eq!(r.body, b.hello(Version::HTTP_11));
    assert_eq!(r.header("x-served-by"), Some("web-v2"));
    let req = http::Request::get("/hello")
        .header("x-canary", "1")
        .header("x-secret", "s3")
        .body(full(""))
        .unwrap();
    let r = proxy.h1(web).await.send(req).await.unwrap();
    assert_eq!(r.body, b.hello(Version::HTTP_11), "matched by header");
    let seen = b.seen().pop().unwrap();
    assert_eq!(seen.headers["x-route"], "canary");
    assert!(seen.headers.get("x-secret").is_none());

    let r = proxy.get(web, "/app/hello?q=1").await;
    assert_eq!(r.body, a.hello(Version::HTTP_11));
    assert_eq!(
        a.seen().pop().unwrap().path,
        "/hello",
        "the prefix rewritten"
    );

    let r = proxy.get(web, "/old").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("location"), Some("http://new.example:8080/old"));

    let r = proxy.get(web, "/api/hello").await;
    assert_eq!(r.body, a.hello(Version::HTTP_11));

    let r = proxy.get(web, "/elsewhere").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.proxy_error(), Some("no route"));
    assert_eq!(own.requests(), 0);
    let not_found = format!(
        "weft_route_response_total{{dst=\"{web}\",route=\"default\",backend=\"\",status_class=\"4xx\"}}"
    );
    assert_eq!(proxy.metric(&not_found).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_backend_gets_500_and_a_backend_without_endpoints_503() {
    let [own, a, b] = backends(["own", "a", "b"]).await.try_into().unwrap();
    let web = addr(WEB);
    let rules = "  - matches: [{path: {type: PathPrefix, value: /gone}}]
    backendRefs: [{name: nowhere, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /empty}}]
    backendRefs: [{name: web-empty, port: 8080}]
  - backendRefs: [{name: web-v1, port: 8080}]
";
    let control = Control::start(&services(&own, &a, &b, &http_route(rules))).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    let r = proxy.get(web, "/gone").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert_eq!(r.proxy_error(), Some("invalid backend"));
    assert!(
        r.body.contains("nowhere"),
        "the reason names the backend: {}",
        r.body
    );
    let r = proxy.get(web, "/empty").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.proxy_error(), Some("no endpoints"));
    let r = proxy.get(web, "/").await;
    assert_eq!(r.body, a.hello(Version::HTTP_11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_route_picks_a_backend_by_method() {
    let [own, a, b] = backends(["own", "a", "b"]).await.try_into().unwrap();
    let web = addr(WEB);
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n\
         metadata: {name: books, namespace: shop}\n\
         spec:\n  parentRefs: [{group: \"\", kind: Service, name: web, port: 8080}]\n  rules:\n\
         \x20 - matches: [{method: {service: books.Books, method: Get}}]\n\
         \x20   backendRefs: [{name: web-v2, port: 8080}]\n\
         \x20 - matches: [{method: {service: books.Books}}]\n\
         \x20   backendRefs: [{name: web-v1, port: 8080}]\n";
    let control = Control::start(&services(&own, &a, &b, route)).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    let mut h2 = proxy.h2(web).await;
    let mut call = async |path: &str| {
        let req = http::Request::builder()
            .method(Method::POST)
            .uri(format!("http://web{path}"))
            .header("content-type", "application/grpc")
            .body(full(""))
            .unwrap();
        h2.send(req).await.unwrap()
    };
    assert_eq!(
        call("/books.Books/Get").await.body,
        b.hello(Version::HTTP_2)
    );
    assert_eq!(
        call("/books.Books/List").await.body,
        a.hello(Version::HTTP_2)
    );
    let r = call("/ratings.Ratings/Get").await;
    assert_eq!(
        r.header("grpc-status"),
        Some("12"),
        "UNIMPLEMENTED: no route"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_timeout_and_retries_apply_to_its_requests_only() {
    let [own, a, b] = backends(["own", "a", "b"]).await.try_into().unwrap();
    let web = addr(WEB);
    let rules = "  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 300ms}
    backendRefs: [{name: web-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /flaky}}]
    retry: {codes: [503], attempts: 2}
    backendRefs: [{name: web-v2, port: 8080}]
  - backendRefs: [{name: web-v1, port: 8080}]
";
    let control = Control::start(&services(&own, &a, &b, &http_route(rules))).await;
    let proxy = Proxy::with_control(&control, &[]).await;

    let r = proxy.get(web, "/slow?ms=5000").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.body);
    assert_eq!(r.proxy_error(), Some("request timeout"));
    // The other rule has no timeout: a slow answer arrives.
    a.set_delay(Duration::from_millis(600));
    let r = proxy.get(web, "/hello").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    a.set_delay(Duration::ZERO);

    // One of every two requests to web-v2 fails: each is retried once.
    b.fail(1, 2);
    for _ in 0..5 {
        let r = proxy.get(web, "/flaky").await;
        assert_eq!(r.status, StatusCode::OK, "retried: {}", r.body);
    }
    assert_eq!(b.failed(), 5, "every first attempt failed and was retried");
    let retries = format!(
        "weft_retry_requests_total{{dst=\"{}\"}}",
        authority("web-v2")
    );
    assert_eq!(proxy.metric(&retries).await, 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_gets_a_copy_of_each_request_without_a_body_and_the_client_only_the_backends_answer(
) {
    let [own, a, b] = backends(["own", "a", "b"]).await.try_into().unwrap();
    let web = addr(WEB);
    let rules = "  - backendRefs: [{name: web-v1, port: 8080}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web-v2, port: 8080}}}]
";
    let control = Control::start(&services(&own, &a, &b, &http_route(rules))).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    for _ in 0..5 {
        let r = proxy.get(web, "/hello").await;
        assert_eq!(
            r.body,
            a.hello(Version::HTTP_11),
            "the client gets web-v1's answer"
        );
    }
    let mirrored = format!(
        "weft_route_response_total{{dst=\"{web}\",route=\"HTTPRoute/shop/web\",backend=\"{}\",status_class=\"2xx\"}}",
        authority("web-v2")
    );
    proxy.wait_metric(&mirrored, 5.0).await;
    assert_eq!(b.requests(), 5, "web-v2 got a copy of each");
    assert_eq!(b.seen()[0].path, "/hello");
    // A request with a body goes to web-v1 alone.
    let r = proxy
        .h1(web)
        .await
        .send(post("/echo", "payload"))
        .await
        .unwrap();
    assert_eq!(r.body, "payload");
    assert_eq!(a.requests(), 6);
    let r = proxy.get(web, "/hello").await;
    assert_eq!(r.status, StatusCode::OK);
    proxy.wait_metric(&mirrored, 6.0).await;
    assert_eq!(b.requests(), 6, "the POST was not copied, the next GET was");
}
