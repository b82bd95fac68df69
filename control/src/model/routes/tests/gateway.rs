//! Gateway API routes: GAMMA producer and consumer routes, match
//! precedence, backends, filters, timeouts and retries.

use super::*;

#[test]
fn gamma_producer_routes_serve_everyone_consumer_routes_their_namespace() {
    let s = store(&format!(
        "{}---
{}---
{}",
        shop(),
        http_route(
            "shop",
            "producer",
            None,
            "  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: web-v1, port: 80}]
"
        ),
        http_route(
            "checkout",
            "consumer",
            None,
            "  - backendRefs: [{name: web-canary, namespace: shop, port: 80}]
"
        ),
    ));
    let t = table(&s, "shop", "web", 80);
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    assert_eq!(one(&t, "shop", &Request::get("/v2/cart")), "web-v2");
    assert_eq!(one(&t, "frontend", &Request::get("/v2/cart")), "web-v2");
    assert_eq!(one(&t, "frontend", &Request::get("/cart")), "web-v1");
    // Clients in `checkout` use their own route instead.
    assert_eq!(one(&t, "checkout", &Request::get("/v2/cart")), "web-canary");
    assert_eq!(t.consumers.keys().collect::<Vec<_>>(), ["checkout"]);
    // The routes name port 80: port 9000 has none.
    let other = table(&s, "shop", "web", 9000);
    assert!(other.producer.is_none() && other.consumers.is_empty());
    assert_eq!(one(&other, "checkout", &Request::get("/")), "web");
}

#[test]
fn gateway_match_precedence() {
    // One row per rule: the request meant for it, and the rule's backend.
    let s = store(&format!(
        "{}---
{}---
{}",
        [shop(), svc("shop", "r0", &[80]), svc("shop", "r1", &[80]), svc("shop", "r2", &[80]),
            svc("shop", "r3", &[80]), svc("shop", "r4", &[80]), svc("shop", "r5", &[80]),
            svc("shop", "r6", &[80]), svc("shop", "r7", &[80])].join("---\n"),
        http_route(
            "shop",
            "b-newer",
            Some("2026-01-02T00:00:00Z"),
            "  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: r0, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: r1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api/v1}}]
    backendRefs: [{name: r2, port: 80}]
  - matches: [{path: {type: Exact, value: /api}}]
    backendRefs: [{name: r3, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}, method: POST}]
    backendRefs: [{name: r4, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}, method: POST, headers: [{name: x-a, value: '1'}]}]
    backendRefs: [{name: r5, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}, queryParams: [{name: beta, value: 'yes'}]}]
    backendRefs: [{name: r6, port: 80}]
"
        ),
        http_route(
            "shop",
            "z-older",
            Some("2026-01-01T00:00:00Z"),
            "  - matches: [{path: {type: PathPrefix, value: /api/v1}}]
    backendRefs: [{name: r7, port: 80}]
"
        ),
    ));
    let t = table(&s, "shop", "web", 80);
    let req = |method: &str, path: &str, header: Option<(&str, &str)>| {
        let mut r = Request::get(path);
        r.method = method.into();
        if let Some((k, v)) = header {
            r = r.header(k, v);
        }
        one(&t, "shop", &r)
    };
    // | request | wins | why |
    assert_eq!(req("GET", "/other", None), "r0"); // only `/` matches
    assert_eq!(req("GET", "/api/x", None), "r1"); // longer prefix than `/`
    assert_eq!(req("GET", "/apix", None), "r0"); // prefixes match whole segments
    assert_eq!(req("GET", "/api", None), "r3"); // Exact before any prefix
    assert_eq!(req("POST", "/api/x", None), "r4"); // a method before none
    assert_eq!(req("POST", "/api/x", Some(("X-A", "1"))), "r5"); // more headers
    assert_eq!(req("GET", "/api/x?beta=yes", None), "r6"); // more query params
                                                           // Same prefix /api/v1 in two routes: the older route wins.
    assert_eq!(req("GET", "/api/v1/items", None), "r7");
}

#[test]
fn ties_between_routes_go_to_the_older_then_the_name() {
    let rule = |b: &str| format!("  - backendRefs: [{{name: {b}, port: 80}}]\n");
    let two = |a_created: Option<&str>, b_created: Option<&str>| {
        store(&format!(
            "{}---\n{}---\n{}",
            shop(),
            http_route("shop", "a", a_created, &rule("web-v1")),
            http_route("shop", "b", b_created, &rule("web-v2"))
        ))
    };
    let winner = |s: &Store| one(&table(s, "shop", "web", 80), "shop", &Request::get("/"));
    assert_eq!(winner(&two(None, None)), "web-v1", "by name");
    assert_eq!(
        winner(&two(
            Some("2026-02-01T00:00:00Z"),
            Some("2026-01-01T00:00:00Z")
        )),
        "web-v2",
        "the older"
    );
    assert_eq!(
        winner(&two(None, Some("2026-01-01T00:00:00Z"))),
        "web-v2",
        "one with a creation time is older than one without"
    );
}

#[test]
fn weights_of_zero_invalid_backends_and_no_endpoints() {
    let mut s = store(&format!(
        "{}---\n{}",
        shop(),
        http_route(
            "shop",
            "r",
            None,
            "  - matches: [{path: {value: /zero}}]
    backendRefs: [{name: web-v1, port: 80, weight: 0}, {name: web-v2, port: 80, weight: 3}]
  - matches: [{path: {value: /half}}]
    backendRefs: [{name: missing, port: 80}, {name: web-v1, port: 80}]
  - matches: [{path: {value: /none}}]
    backendRefs: [{name: missing, port: 80}, {name: web-v1, port: 81}, {kind: Pod, name: p, port: 80}]
  - matches: [{path: {value: /allzero}}]
    backendRefs: [{name: web-v1, port: 80, weight: 0}]
  - matches: [{path: {value: /self}}]
"
        ),
    ));
    let t = table(&s, "shop", "web", 80);
    assert_eq!(
        spread(&t, "x", &Request::get("/zero"), 30),
        counts(&[("web-v2", 30)])
    );
    assert_eq!(
        spread(&t, "x", &Request::get("/half"), 10),
        counts(&[("500", 5), ("web-v1", 5)])
    );
    assert_eq!(
        spread(&t, "x", &Request::get("/none"), 9),
        counts(&[("500", 9)])
    );
    assert_eq!(
        spread(&t, "x", &Request::get("/allzero"), 3),
        counts(&[("500", 3)])
    );
    // A rule without backendRefs: the parent Service.
    assert_eq!(one(&t, "x", &Request::get("/self")), "web");
    // Routes attached and none matches: 404.
    assert_eq!(one(&t, "x", &Request::get("/elsewhere")), "404");
    let reasons: Vec<&str> = t.problems.iter().map(|p| p.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "spec.rules[1].backendRefs[0]: Service shop/missing does not exist: its share gets 500",
            "spec.rules[2].backendRefs[0]: Service shop/missing does not exist: its share gets 500",
            "spec.rules[2].backendRefs[1]: Service shop/web-v1 has no port 81: its share gets 500",
            "spec.rules[2].backendRefs[2]: kind Pod of group '' is not a Service: its share gets 500",
        ]
    );
    // A backend with no ready endpoint: 503.
    let ready = |d: &DestKey| d.service.1 != "web-v2";
    assert_eq!(
        outcome(&route(&t, "x", &Request::get("/zero"), 0, &ready)),
        "503"
    );
    // The missing Service appears: the table that names it changes.
    let touched = s
        .apply(&parse::objects(&svc("shop", "missing", &[80])).unwrap()[0])
        .unwrap();
    assert!(
        touched.services.contains(&("shop".into(), "web".into())),
        "{touched:?}"
    );
    let t = table(&s, "shop", "web", 80);
    assert_eq!(
        spread(&t, "x", &Request::get("/half"), 10),
        counts(&[("missing", 5), ("web-v1", 5)])
    );
}

#[test]
fn grpcroutes_by_service_and_method() {
    let s = store(&format!(
        "{}---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: g, namespace: shop}}
spec:
  parentRefs: [{{kind: Service, group: \"\", name: web, sectionName: p9000}}]
  rules:
  - matches: [{{method: {{service: shop.Cart}}}}]
    backendRefs: [{{name: web-v1, port: 80}}]
  - matches: [{{method: {{service: shop.Cart, method: Checkout}}}}]
    backendRefs: [{{name: web-v2, port: 80}}]
",
        shop()
    ));
    let t = table(&s, "shop", "web", 9000);
    let grpc = |path: &str| Request {
        method: "POST".into(),
        path: path.into(),
        headers: vec![("content-type".into(), "application/grpc".into())],
    };
    assert_eq!(one(&t, "x", &grpc("/shop.Cart/Checkout")), "web-v2");
    assert_eq!(one(&t, "x", &grpc("/shop.Cart/List")), "web-v1");
    assert_eq!(one(&t, "x", &grpc("/shop.Other/List")), "404");
    // `sectionName` names port 9000: nothing on 80.
    assert!(table(&s, "shop", "web", 80).producer.is_none());
}

#[test]
fn timeouts_retries_filters_and_annotations_are_carried() {
    let s = store(&format!(
        "{}---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata:
  name: r
  namespace: shop
  annotations: {{weft.dev/retry-limit: \"3\", weft.dev/retry-http: 5xx}}
spec:
  parentRefs: [{{kind: Service, group: core, name: web}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /old}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}, statusCode: 301}}
  - timeouts: {{request: 10s, backendRequest: 1s500ms}}
    retry: {{codes: [503, 504], attempts: 2, backoff: 100ms}}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: X-Env, value: prod}}], remove: [x-debug]}}
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: web-canary, port: 80}}, percent: 10}}
    backendRefs: [{{name: web-v1, port: 80}}]
",
        shop()
    ));
    let t = table(&s, "shop", "web", 80);
    let Outcome::Redirect { rule } = route(&t, "x", &Request::get("/old/a"), 0, &all_ready) else {
        panic!("a redirect");
    };
    assert_eq!(
        rule.filters,
        [Filter::Redirect {
            scheme: None,
            hostname: None,
            path: Some(PathRewrite::Prefix("/new".into())),
            port: None,
            status: 301
        }]
    );
    let Outcome::Forward {
        rule: Some(rule),
        backend,
    } = route(&t, "x", &Request::get("/a"), 0, &all_ready)
    else {
        panic!("forwarded");
    };
    assert_eq!(backend, dest("shop", "web-v1", 80));
    assert_eq!(
        rule.timeouts,
        Some(Timeouts {
            request: Some(std::time::Duration::from_secs(10)),
            backend_request: Some(std::time::Duration::from_millis(1500)),
        })
    );
    assert_eq!(
        rule.retry,
        Some(RuleRetry {
            codes: vec![503, 504],
            attempts: Some(2),
            backoff: Some(std::time::Duration::from_millis(100)),
        })
    );
    assert_eq!(
        rule.filters,
        [
            Filter::RequestHeaders(HeaderEdit {
                set: vec![("x-env".into(), "prod".into())],
                add: vec![],
                remove: vec!["x-debug".into()],
            }),
            Filter::Mirror {
                backend: Target::Service(dest("shop", "web-canary", 80)),
                numerator: 10,
                denominator: 100,
            }
        ]
    );
    assert_eq!(
        rule.policy
            .retry
            .as_ref()
            .map(|r| (r.limit, r.server_error)),
        Some((3, true))
    );
    assert_eq!(rule.route.to_string(), "HTTPRoute shop/r");
}

#[test]
fn deleting_route_objects_touches_their_services() {
    let mut s = store(&format!(
        "{}---\n{}",
        shop(),
        http_route(
            "shop",
            "r",
            None,
            "  - backendRefs: [{name: web-v1, port: 80}]\n"
        )
    ));
    assert_eq!(s.count(Kind::Route(ObjectKind::HttpRoute)), 1);
    let touched = s.delete(
        Kind::Route(ObjectKind::HttpRoute),
        &("shop".into(), "r".into()),
    );
    assert_eq!(
        touched.services.into_iter().collect::<Vec<_>>(),
        [("shop".to_owned(), "web".to_owned())]
    );
    assert!(table(&s, "shop", "web", 80).producer.is_none());
    assert_eq!(s.count(Kind::Route(ObjectKind::HttpRoute)), 0);
}

#[test]
fn gateway_durations() {
    use std::time::Duration;
    for (v, want) in [
        ("1h", 3_600_000),
        ("1m30s", 90_000),
        ("500ms", 500),
        ("0s", 0),
        ("1h1m1s1ms", 3_661_001),
    ] {
        assert_eq!(
            check::gateway_duration(v),
            Some(Duration::from_millis(want)),
            "{v}"
        );
    }
    for v in ["", "10", "1.5s", "123456s", "1d", "1s1s1s1s1s", "-1s"] {
        assert_eq!(check::gateway_duration(v), None, "{v}");
    }
}
