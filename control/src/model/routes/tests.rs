//! The routing model's cases: the specs' own examples, each precedence
//! and conflict rule, each bad input. Objects go in as YAML through the
//! files source's parser, as an operator writes them.

use std::collections::BTreeMap;

use super::eval::{route, route_tcp, Outcome, Request};
use super::*;
use crate::model::store::DestKey;
use crate::model::{Kind, Store};
use crate::sources::parse;

fn svc(ns: &str, name: &str, ports: &[u16]) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|p| format!("{{name: p{p}, port: {p}}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  clusterIP: 10.96.0.{}\n  ports: [{}]\n",
        name.len() + ns.len(),
        ports.join(", ")
    )
}

/// Applies every object of `yaml`; the first error (parse or model) is
/// returned, after the objects before it were applied.
fn load(store: &mut Store, yaml: &str) -> Result<(), String> {
    for doc in parse::documents(yaml) {
        for obj in parse::objects(&doc)? {
            store.apply(&obj)?;
        }
    }
    Ok(())
}

fn store(yaml: &str) -> Store {
    let mut s = Store::new("cluster.local", "cluster.local");
    load(&mut s, yaml).unwrap();
    s
}

fn dest(ns: &str, name: &str, port: u16) -> DestKey {
    DestKey {
        service: (ns.into(), name.into()),
        port,
    }
}

fn table(s: &Store, ns: &str, name: &str, port: u16) -> RouteTable {
    s.route_table(&dest(ns, name, port))
}

fn all_ready(_: &DestKey) -> bool {
    true
}

/// What `rolls` requests get: backend Service name, or the status.
fn outcome(o: &Outcome<'_>) -> String {
    match o {
        Outcome::Forward { backend, .. } => backend.service.1.clone(),
        Outcome::Redirect { .. } => "redirect".into(),
        Outcome::Respond { status, .. } => status.to_string(),
    }
}

fn spread(t: &RouteTable, client_ns: &str, req: &Request, rolls: u64) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for roll in 0..rolls {
        *out.entry(outcome(&route(t, client_ns, req, roll, &all_ready)))
            .or_default() += 1;
    }
    out
}

fn one(t: &RouteTable, client_ns: &str, req: &Request) -> String {
    outcome(&route(t, client_ns, req, 0, &all_ready))
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn refused(store: &mut Store, yaml: &str) -> String {
    load(store, yaml).expect_err("refused")
}

fn foobar() -> String {
    [
        svc("shop", "foobar", &[80]),
        svc("shop", "foobar-v1", &[80]),
        svc("shop", "foobar-v2", &[80]),
    ]
    .join("---\n")
}

#[test]
fn canary_1000_500_sends_a_third_to_v2() {
    let s = store(&format!(
        "{}---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: foobar-rollout, namespace: shop}}
spec:
  service: foobar
  backends:
  - {{service: foobar-v1, weight: 1000}}
  - {{service: foobar-v2, weight: 500}}
",
        foobar()
    ));
    let t = table(&s, "shop", "foobar", 80);
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    assert_eq!(
        spread(&t, "any", &Request::get("/"), 1500),
        counts(&[("foobar-v1", 1000), ("foobar-v2", 500)])
    );
    // Opaque connections are split the same way.
    let tcp: Vec<String> = (0..3)
        .map(|r| outcome(&route_tcp(&t, r * 500, &all_ready)))
        .collect();
    assert_eq!(tcp, ["foobar-v1", "foobar-v1", "foobar-v2"]);
}

#[test]
fn older_versions_of_trafficsplit_are_read() {
    let mut s = store(&format!(
        "{}---
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {{name: old, namespace: shop}}
spec:
  service: foobar
  backends:
  - {{service: foobar-v1, weight: 500m}}
  - {{service: foobar-v2, weight: 1}}
",
        foobar()
    ));
    let t = table(&s, "shop", "foobar", 80);
    let weights: Vec<u32> = t.producer.unwrap().rules[0]
        .backends
        .iter()
        .map(|b| b.weight)
        .collect();
    assert_eq!(weights, [500, 1000]);

    load(
        &mut s,
        "apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: old, namespace: shop}
spec: {service: foobar, backends: [{service: foobar-v2, weight: 7}]}
",
    )
    .unwrap();
    let t = table(&s, "shop", "foobar", 80);
    assert_eq!(
        spread(&t, "x", &Request::get("/"), 7),
        counts(&[("foobar-v2", 7)])
    );
    assert_eq!(s.count(Kind::Route(ObjectKind::TrafficSplit)), 1);

    let err = refused(
        &mut s,
        "apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: old, namespace: shop}
spec: {service: foobar, backends: [{service: foobar-v2, weight: 5x}]}
",
    );
    assert_eq!(
        err,
        "spec.backends[0].weight: '5x' is not a quantity (500m, 1, 1.5)"
    );
}

fn website() -> String {
    [
        svc("default", "website", &[80]),
        svc("default", "website-v1", &[80]),
        svc("default", "website-v2", &[80]),
    ]
    .join("---\n")
}

#[test]
fn firefox_users_go_to_v2_and_everyone_else_to_the_apex() {
    // The group's headers in both encodings: the CRD's list of one-key
    // maps, and the spec text's plain map.
    for headers in [
        "headers:\n    - user-agent: \".*Firefox.*\"",
        "headers:\n      user-agent: \".*Firefox.*\"",
    ] {
        let s = store(&format!(
            "{}---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: ab-test}}
spec:
  service: website
  matches:
  - {{kind: HTTPRouteGroup, name: ab-test}}
  backends:
  - {{service: website-v1, weight: 0}}
  - {{service: website-v2, weight: 100}}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {{name: ab-test}}
spec:
  matches:
  - name: firefox-users
    {headers}
",
            website()
        ));
        let t = table(&s, "default", "website", 80);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let firefox = Request::get("/").header("User-Agent", "Mozilla/5.0 Firefox/120.0");
        let chrome = Request::get("/").header("User-Agent", "Mozilla/5.0 Chrome/120.0");
        assert_eq!(
            spread(&t, "default", &firefox, 100),
            counts(&[("website-v2", 100)])
        );
        assert_eq!(
            spread(&t, "default", &chrome, 100),
            counts(&[("website", 100)])
        );
        assert_eq!(one(&t, "default", &Request::get("/")), "website");
    }
}

#[test]
fn route_group_matches_or_and_headers_and() {
    let s = store(&format!(
        "{}---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: ab}}
spec:
  service: website
  matches: [{{kind: HTTPRouteGroup, name: the-routes}}]
  backends: [{{service: website-v2, weight: 1}}]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {{name: the-routes}}
spec:
  matches:
  - name: android-insiders
    headers:
      user-agent: \".*Android.*\"
      cookie: \"^(.*?;)?(type=insider)(;.*)?$\"
  - name: iphone-users
    pathRegex: \"/api/.*\"
    methods: [GET, HEAD]
    headers: [{{user-agent: \".*iPhone.*\"}}]
  - name: metrics
    pathRegex: /metrics
    methods: [\"*\"]
",
        website()
    ));
    let t = table(&s, "default", "website", 80);
    let get = |path: &str, ua: &str, cookie: &str| {
        let mut r = Request::get(path).header("user-agent", ua);
        if !cookie.is_empty() {
            r = r.header("cookie", cookie);
        }
        one(&t, "default", &r)
    };
    assert_eq!(get("/", "Android 14", "a=b;type=insider"), "website-v2");
    assert_eq!(
        get("/", "Android 14", "a=b"),
        "website",
        "headers are ANDed"
    );
    assert_eq!(get("/api/cart", "iPhone", ""), "website-v2");
    assert_eq!(
        get("/v2/api/cart", "iPhone", ""),
        "website",
        "pathRegex is anchored at the start"
    );
    let mut post = Request::get("/api/cart").header("user-agent", "iPhone");
    post.method = "POST".into();
    assert_eq!(one(&t, "default", &post), "website");
    // Anchored at the start only: /metrics/extra matches /metrics.
    assert_eq!(get("/metrics/extra", "curl", ""), "website-v2");
}

fn shop() -> String {
    [
        svc("shop", "web", &[80, 9000]),
        svc("shop", "web-v1", &[80]),
        svc("shop", "web-v2", &[80]),
        svc("shop", "web-canary", &[80]),
    ]
    .join("---\n")
}

fn http_route(ns: &str, name: &str, created: Option<&str>, rules: &str) -> String {
    let created = created
        .map(|c| format!(", creationTimestamp: \"{c}\""))
        .unwrap_or_default();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}{created}}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: web, namespace: shop, port: 80}}]
  rules:
{rules}"
    )
}

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
fn an_httproute_wins_over_a_trafficsplit_on_the_same_service() {
    let split = "apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: web-split, namespace: shop}
spec: {service: web, backends: [{service: web-v1, weight: 1}]}
";
    let mut s = store(&format!(
        "{}---\n{split}---\n{}",
        shop(),
        http_route(
            "shop",
            "web-route",
            None,
            "  - backendRefs: [{name: web-v2, port: 80}]\n"
        )
    ));
    let t = table(&s, "shop", "web", 80);
    assert_eq!(one(&t, "any", &Request::get("/")), "web-v2");
    assert_eq!(t.tcp, None);
    assert_eq!(t.problems.len(), 1);
    assert_eq!(t.problems[0].kind, "TrafficSplit");
    assert_eq!(
        t.problems[0].object,
        ("shop".to_owned(), "web-split".to_owned())
    );
    assert!(
        t.problems[0]
            .reason
            .contains("HTTPRoute shop/web-route is attached there"),
        "{}",
        t.problems[0].reason
    );
    // On the port the route does not name, the split would be in force,
    // but no backend has port 9000: it leaves that port alone, unreported.
    let t9000 = table(&s, "shop", "web", 9000);
    assert_eq!((&t9000.producer, &t9000.problems), (&None, &vec![]));
    assert_eq!(one(&t9000, "any", &Request::get("/")), "web");
    // A consumer route does not displace the split for other clients.
    s.delete(
        Kind::Route(ObjectKind::HttpRoute),
        &("shop".into(), "web-route".into()),
    );
    load(
        &mut s,
        &http_route(
            "checkout",
            "mine",
            None,
            "  - backendRefs: [{name: web-v2, namespace: shop, port: 80}]\n",
        ),
    )
    .unwrap();
    let t = table(&s, "shop", "web", 80);
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    assert_eq!(one(&t, "frontend", &Request::get("/")), "web-v1");
    assert_eq!(one(&t, "checkout", &Request::get("/")), "web-v2");
}

#[test]
fn two_splits_for_one_apex_the_oldest_wins_and_the_other_is_reported() {
    let split = |name: &str, created: &str, backend: &str| {
        format!(
            "apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: {name}, namespace: shop{created}}}
spec: {{service: web, backends: [{{service: {backend}, weight: 1}}]}}
"
        )
    };
    let s = store(&format!(
        "{}---\n{}---\n{}",
        shop(),
        split(
            "a-new",
            ", creationTimestamp: \"2026-03-01T00:00:00Z\"",
            "web-v1"
        ),
        split(
            "z-old",
            ", creationTimestamp: \"2026-01-01T00:00:00Z\"",
            "web-v2"
        ),
    ));
    let t = table(&s, "shop", "web", 80);
    assert_eq!(one(&t, "x", &Request::get("/")), "web-v2");
    assert_eq!(t.problems.len(), 1);
    assert_eq!(t.problems[0].object.1, "a-new");
    assert!(
        t.problems[0].reason.contains("TrafficSplit z-old is older"),
        "{}",
        t.problems[0].reason
    );
    // Without creation times: by name.
    let s = store(&format!(
        "{}---\n{}---\n{}",
        shop(),
        split("b", "", "web-v1"),
        split("a", "", "web-v2")
    ));
    let t = table(&s, "shop", "web", 80);
    assert_eq!(one(&t, "x", &Request::get("/")), "web-v2");
    assert_eq!(t.problems[0].object.1, "b");
}

#[test]
fn a_backend_without_the_apex_port_gets_no_traffic() {
    // The spec's birds: blue-birds has no port 8080.
    let s = store(&format!(
        "{}---
{}---
{}---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: birds}}
spec:
  service: birds
  backends: [{{service: blue-birds, weight: 50}}, {{service: green-birds, weight: 50}}]
",
        svc("default", "birds", &[8080]),
        svc("default", "blue-birds", &[1024]),
        svc("default", "green-birds", &[8080]),
    ));
    let t = table(&s, "default", "birds", 8080);
    assert_eq!(
        spread(&t, "x", &Request::get("/"), 100),
        counts(&[("green-birds", 100)])
    );
    assert_eq!(t.problems.len(), 1);
    assert!(
        t.problems[0].reason.contains("blue-birds has no port 8080"),
        "{}",
        t.problems[0].reason
    );
}

#[test]
fn a_split_never_resolves_through_another_and_the_apex_means_its_own_endpoints() {
    let s = store(&format!(
        "{}---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: outer, namespace: shop}}
spec:
  service: web
  backends: [{{service: web, weight: 1}}, {{service: web-v1, weight: 1}}]
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: inner, namespace: shop}}
spec: {{service: web-v1, backends: [{{service: web-v2, weight: 1}}]}}
",
        shop()
    ));
    let t = table(&s, "shop", "web", 80);
    let targets: Vec<Target> = t.producer.as_ref().unwrap().rules[0]
        .backends
        .iter()
        .map(|b| b.target.clone())
        .collect();
    assert_eq!(
        targets,
        [
            Target::Service(dest("shop", "web", 80)),
            Target::Service(dest("shop", "web-v1", 80))
        ]
    );
    assert_eq!(
        spread(&t, "x", &Request::get("/"), 2),
        counts(&[("web", 1), ("web-v1", 1)])
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
fn splits_all_of_whose_backends_are_invalid_answer_500() {
    let s = store(&format!(
        "{}---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: s, namespace: shop}}
spec: {{service: web, backends: [{{service: nowhere, weight: 1}}, {{service: web-v1, weight: 0}}]}}
",
        shop()
    ));
    let t = table(&s, "shop", "web", 80);
    assert_eq!(one(&t, "x", &Request::get("/")), "500");
    assert_eq!(t.problems.len(), 1);
    assert_eq!(
        t.problems[0].reason,
        "backend nowhere: Service shop/nowhere does not exist"
    );
}

#[test]
fn tcproutes_choose_the_ports_a_split_applies_to() {
    let s = store(&format!(
        "{}---
{}---
{}---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: db}}
spec:
  service: db
  matches: [{{kind: TCPRoute, name: mysql}}]
  backends: [{{service: db-next, weight: 1}}]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {{name: mysql}}
spec: {{matches: {{ports: [3306]}}}}
",
        svc("default", "db", &[3306, 9104]),
        svc("default", "db-next", &[3306, 9104]),
        svc("default", "unused", &[1]),
    ));
    let on = |port| table(&s, "default", "db", port);
    assert_eq!(outcome(&route_tcp(&on(3306), 0, &all_ready)), "db-next");
    assert_eq!(outcome(&route_tcp(&on(9104), 0, &all_ready)), "db");
    assert_eq!(one(&on(9104), "x", &Request::get("/")), "db");
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

/// A good object, then a bad version of it: refused with the reason, and
/// the good one stays in force.
fn keeps_last_good(good: &str, bad: &str) -> String {
    let mut s = store(&format!("{}---\n{good}", shop()));
    let before = table(&s, "shop", "web", 80);
    assert!(before.producer.is_some(), "the good version applies");
    let err = refused(&mut s, bad);
    assert_eq!(
        table(&s, "shop", "web", 80),
        before,
        "the last good version stays: {err}"
    );
    err
}

#[test]
fn bad_trafficsplits_are_refused_and_the_last_good_one_stays() {
    let split = |spec: &str| {
        format!("apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: s, namespace: shop}}\nspec: {spec}\n")
    };
    let good = split("{service: web, backends: [{service: web-v1, weight: 1}]}");
    let cases = [
        ("{service: web, backends: [{service: web-v1, weight: -1}]}",
         "spec.backends[0].weight: -1 is not a weight (a whole number 0-4294967295)"),
        ("{service: web, matches: [{kind: HTTPRoute, name: x}], backends: [{service: web-v1, weight: 1}]}",
         "spec.matches[0].kind: 'HTTPRoute' is not HTTPRouteGroup or TCPRoute"),
        ("{service: web, backends: []}", "spec.backends: no backend"),
        ("{backends: [{service: web-v1, weight: 1}]}", "spec.service: the apex Service is not named"),
        ("{service: web, backends: [{service: web-v1, weight: 1}, {service: web-v1, weight: 2}]}",
         "spec.backends[1].service: web-v1 is listed twice"),
    ];
    for (spec, reason) in cases {
        assert_eq!(keeps_last_good(&good, &split(spec)), reason);
    }
}

#[test]
fn a_split_naming_a_missing_service_is_reported_and_takes_effect_when_it_appears() {
    let mut s = store(&format!(
        "{}---\napiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: s, namespace: shop}}\nspec: {{service: web, backends: [{{service: web-v3, weight: 1}}, {{service: web-v1, weight: 1}}]}}\n",
        shop()
    ));
    let t = table(&s, "shop", "web", 80);
    assert_eq!(t.problems[0].object, ("shop".to_owned(), "s".to_owned()));
    assert_eq!(
        t.problems[0].reason,
        "backend web-v3: Service shop/web-v3 does not exist"
    );
    assert_eq!(
        spread(&t, "x", &Request::get("/"), 4),
        counts(&[("web-v1", 4)])
    );
    load(&mut s, &svc("shop", "web-v3", &[80])).unwrap();
    let t = table(&s, "shop", "web", 80);
    assert!(t.problems.is_empty());
    assert_eq!(
        spread(&t, "x", &Request::get("/"), 4),
        counts(&[("web-v1", 2), ("web-v3", 2)])
    );
    // A split whose apex does not exist is kept, and in force once it does.
    load(&mut s, "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: t, namespace: shop}\nspec: {service: later, backends: [{service: web-v1, weight: 1}]}\n").unwrap();
    assert!(table(&s, "shop", "later", 80).producer.is_some());
    let touched = s
        .apply(&parse::objects(&svc("shop", "later", &[80])).unwrap()[0])
        .unwrap();
    assert!(touched.services.contains(&("shop".into(), "later".into())));
    assert_eq!(
        one(&table(&s, "shop", "later", 80), "x", &Request::get("/")),
        "web-v1"
    );
}

#[test]
fn bad_route_groups_and_tcproutes_are_refused() {
    let group = |matches: &str| {
        format!("apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {{name: g, namespace: shop}}\nspec: {{matches: {matches}}}\n")
    };
    let mut s = store(&shop());
    for (matches, reason) in [
        ("[{name: a, pathRegex: \"/api/(\"}]", "spec.matches[0].pathRegex: regex '/api/(' does not compile: error: unclosed group"),
        ("[{name: a, headers: [{user-agent: \"[\"}]}]", "spec.matches[0].headers[0]: regex '[' does not compile: error: unclosed character class"),
        ("[{name: a, headers: {user-agent: \"*x\"}}]", "spec.matches[0].headers.user-agent: regex '*x' does not compile: error: repetition operator missing expression"),
        ("[{name: a, methods: [GETT]}]", "spec.matches[0].methods[0]: 'GETT' is not an HTTP method or *"),
        ("[{name: a}, {name: a}]", "spec.matches[1].name: 'a' is used twice"),
        ("[{pathRegex: /}]", "spec.matches[0].name: a match needs a name"),
    ] {
        assert_eq!(refused(&mut s, &group(matches)), reason);
    }
    assert_eq!(s.count(Kind::Route(ObjectKind::HttpRouteGroup)), 0);
    let err = refused(&mut s, "apiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata: {name: t}\nspec: {matches: {ports: [0]}}\n");
    assert_eq!(err, "spec.matches.ports[0]: 0 is out of range 1-65535");
}

#[test]
fn bad_httproutes_are_refused_and_the_last_good_one_stays() {
    let route = |rules: &str| http_route("shop", "r", None, rules);
    let good = route("  - backendRefs: [{name: web-v1, port: 80}]\n");
    let many = |n: usize, item: &str| vec![item; n].join(", ");
    let cases: Vec<(String, String)> = vec![
        (route("  - matches: [{path: {type: RegularExpression, value: \"/(a\"}}]\n"),
         "spec.rules[0].matches[0].path.value: regex '/(a' does not compile: error: unclosed group".into()),
        (route("  - backendRefs: [{name: web-v1, port: 80, weight: -1}]\n"),
         "spec.rules[0].backendRefs[0].weight: -1 is out of range 0-1000000".into()),
        (route("  - backendRefs: [{name: web-v1, port: 80, weight: 1000001}]\n"),
         "spec.rules[0].backendRefs[0].weight: 1000001 is out of range 0-1000000".into()),
        (route(&"  - backendRefs: [{name: web-v1, port: 80}]\n".repeat(17)),
         "spec.rules: 17 items, over the limit of 16".into()),
        (route(&format!("  - matches: [{}]\n", many(65, "{method: GET}"))),
         "spec.rules[0].matches: 65 items, over the limit of 64".into()),
        (route(&format!("  - matches: [{}]\n", many(43, "{method: GET}")).repeat(3)),
         "spec.rules: 129 matches in all, over the limit of 128".into()),
        (route(&format!("  - backendRefs: [{}]\n", many(17, "{name: web-v1, port: 80}"))),
         "spec.rules[0].backendRefs: 17 items, over the limit of 16".into()),
        (route(&format!("  - matches: [{{headers: [{}]}}]\n", many(17, "{name: a, value: b}"))),
         "spec.rules[0].matches[0].headers: 17 items, over the limit of 16".into()),
        (route("  - matches: [{path: {type: Prefix, value: /}}]\n"),
         "spec.rules[0].matches[0].path.type: 'Prefix' is not Exact, PathPrefix or RegularExpression".into()),
        (route("  - matches: [{path: {value: api}}]\n"),
         "spec.rules[0].matches[0].path.value: 'api' is not an absolute path".into()),
        (route("  - matches: [{method: FETCH}]\n"),
         "spec.rules[0].matches[0].method: 'FETCH' is not an HTTP method".into()),
        (route("  - backendRefs: [{name: web-v1}]\n"),
         "spec.rules[0].backendRefs[0].port: a Service backendRef needs a port".into()),
        (route("  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 301}}]\n    backendRefs: [{name: web-v1, port: 80}]\n"),
         "spec.rules[0]: RequestRedirect with backendRefs (a redirect answers itself)".into()),
        (route("  - filters: [{type: ExtensionRef, extensionRef: {group: x.io, kind: F, name: f}}]\n"),
         "spec.rules[0].filters[0].type: 'ExtensionRef' is not a filter weft supports here".into()),
        (route("  - matches: [{path: {value: /a}}, {path: {value: /b}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}}]\n"),
         "spec.rules[0]: ReplacePrefixMatch needs exactly one PathPrefix match".into()),
        (route("  - timeouts: {request: '10'}\n"),
         "spec.rules[0].timeouts.request: '10' is not a Gateway API duration (1h, 10s, 500ms, 1m30s)".into()),
        (route("  - timeouts: {request: 1s, backendRequest: 2s}\n"),
         "spec.rules[0].timeouts.backendRequest: longer than request".into()),
        (route("  - retry: {codes: [200]}\n"),
         "spec.rules[0].retry.codes[0]: 200 is not a status in 400-599".into()),
        (route("  - backendRefs: [{name: web-v1, port: 80, filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web-v2, port: 80}}}]}]\n"),
         "spec.rules[0].backendRefs[0].filters[0].type: 'RequestMirror' is not a filter weft supports here".into()),
    ];
    for (bad, reason) in cases {
        assert_eq!(keeps_last_good(&good, &bad), reason);
    }
    // A bad annotation refuses the route too.
    let annotated = good.replace(
        "namespace: shop}",
        "namespace: shop, annotations: {weft.dev/timeout: soon}}",
    );
    assert!(keeps_last_good(&good, &annotated).starts_with("annotation weft.dev/timeout"));
}

#[test]
fn bad_grpcroutes_are_refused() {
    let mut s = store(&shop());
    let grpc = |rules: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: g, namespace: shop}}\nspec:\n  parentRefs: [{{kind: Service, group: \"\", name: web}}]\n  rules: {rules}\n")
    };
    for (rules, reason) in [
        ("[{matches: [{method: {type: Exact}}]}]", "spec.rules[0].matches[0].method: one or both of service and method must be given"),
        ("[{matches: [{method: {service: \"shop/Cart\"}}]}]", "spec.rules[0].matches[0].method.service: 'shop/Cart' is not a gRPC service name"),
        ("[{matches: [{method: {type: RegularExpression, method: \"(\"}}]}]", "spec.rules[0].matches[0].method.method: regex '(' does not compile: error: unclosed group"),
        ("[{filters: [{type: URLRewrite, urlRewrite: {hostname: x}}]}]", "spec.rules[0].filters[0].type: 'URLRewrite' is not a filter weft supports here"),
    ] {
        assert_eq!(refused(&mut s, &grpc(rules)), reason);
    }
}

#[test]
fn the_files_source_reads_the_versions_weft_takes_and_refuses_the_rest() {
    let read = |api: &str, kind: &str| {
        parse::objects(&format!(
            "apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\nspec: {{}}\n"
        ))
        .map(|objs| objs.iter().map(|o| o.kind().as_str()).collect::<Vec<_>>())
    };
    for (api, kind) in [
        ("split.smi-spec.io/v1alpha4", "TrafficSplit"),
        ("split.smi-spec.io/v1alpha2", "TrafficSplit"),
        ("split.smi-spec.io/v1alpha1", "TrafficSplit"),
        ("specs.smi-spec.io/v1alpha4", "HTTPRouteGroup"),
        ("specs.smi-spec.io/v1alpha4", "TCPRoute"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
        ("gateway.networking.k8s.io/v1beta1", "HTTPRoute"),
        ("gateway.networking.k8s.io/v1", "GRPCRoute"),
    ] {
        assert_eq!(read(api, kind), Ok(vec![kind]), "{api} {kind}");
    }
    assert_eq!(
        read("split.smi-spec.io/v1alpha3", "TrafficSplit").unwrap_err(),
        "TrafficSplit apiVersion 'split.smi-spec.io/v1alpha3' is not one weft reads: use split.smi-spec.io/v1alpha4 or split.smi-spec.io/v1alpha2 or split.smi-spec.io/v1alpha1"
    );
    assert_eq!(
        read("gateway.networking.k8s.io/v1alpha2", "GRPCRoute").unwrap_err(),
        "GRPCRoute apiVersion 'gateway.networking.k8s.io/v1alpha2' is not one weft reads: use gateway.networking.k8s.io/v1"
    );
    assert_eq!(
        read("specs.smi-spec.io/v1alpha4", "UDPRoute").unwrap_err(),
        "kind 'UDPRoute' is not a kind of specs.smi-spec.io weft reads (HTTPRouteGroup, TCPRoute)"
    );
    // Gateways' own kinds are skipped, like a Deployment.
    assert_eq!(read("gateway.networking.k8s.io/v1", "Gateway"), Ok(vec![]));
    let err = parse::objects("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: x}\nspec: {rules: 3}\n").unwrap_err();
    assert!(
        err.starts_with("HTTPRoute does not fit its schema"),
        "{err}"
    );
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
fn quantities() {
    use serde_json::json;
    for (v, want) in [
        (json!("500m"), 500),
        (json!("1"), 1000),
        (json!(2), 2000),
        (json!("1.5"), 1500),
        (json!("1k"), 1_000_000),
        (json!("-1"), -1000),
    ] {
        assert_eq!(smi::milli_quantity(&v), Ok(want), "{v}");
    }
    for v in [json!("1x"), json!(""), json!(true), json!("m")] {
        assert!(smi::milli_quantity(&v).is_err(), "{v}");
    }
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
