//! SMI: the specs' TrafficSplit examples, HTTPRouteGroup and TCPRoute.

use super::*;

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
        assert_eq!(
            crate::model::routes::smi::milli_quantity(&v),
            Ok(want),
            "{v}"
        );
    }
    for v in [json!("1x"), json!(""), json!(true), json!("m")] {
        assert!(
            crate::model::routes::smi::milli_quantity(&v).is_err(),
            "{v}"
        );
    }
}

#[test]
fn a_v1alpha1_split_read_at_v1alpha4_takes_its_weights_as_quantities() {
    use crate::model::routes::smi::quantity_weights;
    use serde_json::json;
    let split = |weights: [serde_json::Value; 2]| {
        json!({"spec": {"service": "web", "backends": [
            {"service": "web-v1", "weight": weights[0]},
            {"service": "web-v2", "weight": weights[1]},
        ]}})
    };
    // Any string: every weight is a quantity, an integer one too.
    let mut v = split([json!("500m"), json!(1)]);
    assert_eq!(quantity_weights(&mut v), Ok(true));
    assert_eq!(v, split([json!(500), json!(1000)]));
    // Integers only: left as they are.
    let mut v = split([json!(1), json!(3)]);
    assert_eq!(quantity_weights(&mut v), Ok(false));
    assert_eq!(v, split([json!(1), json!(3)]));
    // No backends, or not a list: nothing to do (the schema check says so).
    assert_eq!(quantity_weights(&mut json!({"spec": {}})), Ok(false));
    assert_eq!(
        quantity_weights(&mut split([json!("1"), json!("5x")])),
        Err("spec.backends[1].weight: '5x' is not a quantity (500m, 1, 1.5)".into())
    );
}
