//! What a destination's profile says of its table (`Profile.routes`): the
//! producer set for every client, one consumer profile per namespace with
//! consumer routes, backends named by the authority a proxy watches, and
//! each rule's timeouts and retry folded from the rule, the route object's
//! annotations and the Service's.

use weft_proto::discovery::v1 as pb;

use super::*;
use crate::model::DestView;

fn view(s: &Store, ns: &str, name: &str, port: u16) -> DestView {
    s.destinations(&(ns.into(), name.into()))
        .into_iter()
        .find(|(k, _)| k.port == port)
        .map(|(_, v)| v)
        .expect("the port exists")
}

fn authorities(r: &pb::HttpRule) -> Vec<(String, u32)> {
    r.backends
        .iter()
        .map(
            |b| match b.backend.as_ref().and_then(|b| b.target.as_ref()) {
                Some(pb::backend::Target::Service(s)) => (s.authority.clone(), b.weight),
                other => (format!("{other:?}"), b.weight),
            },
        )
        .collect()
}

#[test]
fn producer_routes_for_everyone_consumer_routes_per_namespace() {
    let s = store(&format!(
        "{}---
{}---
{}",
        shop(),
        http_route(
            "shop",
            "producer",
            None,
            "  - matches: [{path: {type: PathPrefix, value: /v2}, headers: [{name: X-User, type: RegularExpression, value: 'a.*'}]}]
    backendRefs: [{name: web-v2, port: 80, weight: 90}, {name: web-v1, port: 80, weight: 10}]
  - backendRefs: [{name: nowhere, port: 80}]
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
    let v = view(&s, "shop", "web", 80);
    let routes = v.profile.routes.as_ref().expect("routes attached");
    assert_eq!(routes.consumer_namespace, "");
    assert!(routes.tcp.is_none(), "no TrafficSplit");
    let http = routes.http.as_ref().unwrap();
    assert_eq!(http.unmatched(), pb::Unmatched::NotFound);
    assert_eq!(http.rules.len(), 2);
    let rule = &http.rules[0];
    assert_eq!(
        rule.route,
        Some(pb::RouteName {
            kind: "HTTPRoute".into(),
            namespace: "shop".into(),
            name: "producer".into(),
        })
    );
    assert_eq!(
        authorities(rule),
        [
            ("web-v2.shop.svc.cluster.local:80".to_string(), 90),
            ("web-v1.shop.svc.cluster.local:80".to_string(), 10)
        ]
    );
    // A backendRef to a Service that does not exist: its share gets 500.
    let missing = &http.rules[1].backends[0];
    assert!(matches!(
        missing.backend.as_ref().unwrap().target,
        Some(pb::backend::Target::Invalid(ref why)) if why.contains("nowhere")
    ));
    // Matches in precedence order, the regex anchored, names lower case.
    let first = &http.matches[0];
    assert_eq!(first.rule, 0);
    assert_eq!(
        first.path.as_ref().unwrap().kind,
        Some(pb::path_match::Kind::Prefix("/v2".into()))
    );
    assert_eq!(first.headers[0].name, "x-user");
    assert_eq!(
        first.headers[0].value.as_ref().unwrap().kind,
        Some(pb::value_match::Kind::Regex("^(?:a.*)$".into()))
    );
    assert_eq!(http.matches.last().unwrap().rule, 1);

    // Clients in `checkout` see their namespace's route instead; everyone
    // else the producer routes.
    assert_eq!(v.consumers.keys().collect::<Vec<_>>(), ["checkout"]);
    let consumer = v.profile_for("checkout").routes.as_ref().unwrap();
    assert_eq!(consumer.consumer_namespace, "checkout");
    let rules = &consumer.http.as_ref().unwrap().rules;
    assert_eq!(
        authorities(&rules[0]),
        [("web-canary.shop.svc.cluster.local:80".to_string(), 1)]
    );
    assert_eq!(
        pb::Profile {
            routes: None,
            ..v.profile_for("checkout").clone()
        },
        pb::Profile {
            routes: None,
            ..v.profile.clone()
        },
        "the consumer profile differs only in its routes"
    );
    assert_eq!(v.profile_for("frontend"), &v.profile);
    assert_eq!(v.profile_for(""), &v.profile);

    // Port 9000 has no route; a backend is never routed itself.
    assert!(view(&s, "shop", "web", 9000).profile.routes.is_none());
    assert!(view(&s, "shop", "web-v2", 80).profile.routes.is_none());
}

#[test]
fn a_split_carries_its_http_and_tcp_backends() {
    let s = store(&format!(
        "{}---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: canary, namespace: shop}}
spec:
  service: web
  backends: [{{service: web-v1, weight: 1000}}, {{service: web-v2, weight: 500}}]
",
        shop()
    ));
    let routes = view(&s, "shop", "web", 80).profile.routes.unwrap();
    let http = routes.http.unwrap();
    assert_eq!(http.unmatched(), pb::Unmatched::Service);
    assert_eq!(http.matches.len(), 1, "one match for every request");
    assert_eq!(
        http.rules[0].route.as_ref().map(|r| r.kind.as_str()),
        Some("TrafficSplit")
    );
    let tcp = routes
        .tcp
        .expect("a split without matches splits connections too");
    assert_eq!(
        tcp.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
        [1000, 500]
    );
    assert_eq!(tcp.route.unwrap().name, "canary");
}

#[test]
fn rule_timeouts_and_retry_fold_the_annotations_in() {
    let s = store(&format!(
        "{}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: r
  namespace: shop
  annotations: {{weft.dev/retry-limit: \"3\", weft.dev/retry-http: 5xx, weft.dev/retry-timeout: 2s}}
spec:
  parentRefs: [{{kind: Service, group: core, name: web}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /a}}}}]
    timeouts: {{request: 10s}}
    retry: {{codes: [503, 504], backoff: 100ms}}
    backendRefs: [{{name: web-v1, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /b}}}}]
    timeouts: {{request: 0s}}
    backendRefs: [{{name: web-v1, port: 80}}]
",
        shop()
    ));
    let routes = view(&s, "shop", "web", 80).profile.routes.unwrap();
    let rules = routes.http.unwrap().rules;
    let secs = |d: &Option<prost_types::Duration>| d.as_ref().map(|d| (d.seconds, d.nanos));
    // The rule's request timeout; the attempt's from the annotation.
    let t = rules[0].timeouts.as_ref().unwrap();
    assert_eq!(
        (secs(&t.request), secs(&t.per_try)),
        (Some((10, 0)), Some((2, 0)))
    );
    // The rule's codes and the annotation's limit; the backoff beside.
    let r = rules[0].retry.as_ref().unwrap();
    assert_eq!(r.http.as_ref().unwrap().status_codes, [503, 504]);
    assert!(
        !r.http.as_ref().unwrap().server_error,
        "the rule's codes alone"
    );
    assert_eq!(r.limit, 3);
    assert_eq!(secs(&rules[0].retry_backoff), Some((0, 100_000_000)));
    // `0s` turns the request timeout off; no rule retry: the annotation's.
    let t = rules[1].timeouts.as_ref().unwrap();
    assert_eq!(secs(&t.request), Some((0, 0)));
    let r = rules[1].retry.as_ref().unwrap();
    assert!(r.http.as_ref().unwrap().server_error);
    assert_eq!(r.limit, 3);
}

#[test]
fn grpc_routes_carry_service_and_method_matches() {
    let s = store(&format!(
        "{}---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: g, namespace: shop}}
spec:
  parentRefs: [{{kind: Service, group: \"\", name: web, port: 80}}]
  rules:
  - matches: [{{method: {{service: shop.Cart}}}}]
    backendRefs: [{{name: web-v1, port: 80}}]
  - matches: [{{method: {{service: shop.Cart, method: Checkout}}, headers: [{{name: X-Tenant, value: a}}]}}]
    backendRefs: [{{name: web-v2, port: 80}}]
",
        shop()
    ));
    let http = view(&s, "shop", "web", 80)
        .profile
        .routes
        .unwrap()
        .http
        .unwrap();
    assert!(http.matches.is_empty(), "no HTTPRoute: gRPC matches alone");
    assert_eq!(http.unmatched(), pb::Unmatched::NotFound);
    let exact = |v: &str| {
        Some(pb::ValueMatch {
            kind: Some(pb::value_match::Kind::Exact(v.into())),
        })
    };
    // The more specific match (a method) first.
    let first = &http.grpc_matches[0];
    assert_eq!(
        (first.rule, &first.service, &first.method),
        (1, &exact("shop.Cart"), &exact("Checkout"))
    );
    assert_eq!(first.headers[0].name, "x-tenant");
    let second = &http.grpc_matches[1];
    assert_eq!((second.rule, &second.method), (0, &None));
    assert_eq!(
        http.rules[1].route.as_ref().map(|r| r.kind.as_str()),
        Some("GRPCRoute")
    );
}

#[test]
fn a_tcp_route_split_applies_to_its_ports_only() {
    let s = store(&format!(
        "apiVersion: split.smi-spec.io/v1alpha4
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
---
{}---
{}",
        svc("default", "db", &[3306, 9104]),
        svc("default", "db-next", &[3306, 9104]),
    ));
    let on = |port| view(&s, "default", "db", port).profile.routes.unwrap();
    let tcp = on(3306).tcp.expect("the TCPRoute lists 3306");
    assert_eq!(tcp.backends.len(), 1);
    assert!(matches!(
        &tcp.backends[0].backend.as_ref().unwrap().target,
        Some(pb::backend::Target::Service(p)) if p.authority == "db-next.default.svc.cluster.local:3306"
    ));
    let http = on(3306).http.unwrap();
    assert_eq!(http.matches.len(), 1, "HTTP on the port is split too");
    // 9104: not listed, so neither connections nor requests are split.
    let other = on(9104);
    assert!(other.tcp.is_none());
    let http = other.http.unwrap();
    assert!(http.matches.is_empty());
    assert_eq!(http.unmatched(), pb::Unmatched::Service);
}
