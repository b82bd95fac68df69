use super::*;
use crate::discovery::Dest;
use crate::outbound::table::{Backends, RouteMetrics, RouteTable};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use weft_proto::discovery::v1 as pb;

const ORIG: &str = "10.96.0.10:80";

fn orig() -> SocketAddr {
    ORIG.parse().unwrap()
}

/// Backend destinations by authority, made on first use.
#[derive(Default)]
struct Env(Mutex<HashMap<String, Arc<Dest>>>);

impl Backends for Env {
    fn backend(&self, authority: &str) -> Arc<Dest> {
        let mut m = self.0.lock().unwrap();
        m.entry(authority.to_string())
            .or_insert_with(|| {
                // The address tells test backends apart.
                let addr = SocketAddr::new(orig().ip(), 1000 + backend_number(authority));
                Dest::detached(addr, Resolution::Service { opaque: false })
            })
            .clone()
    }

    fn metrics(&self, _route: &str, _backend: &str) -> RouteMetrics {
        RouteMetrics::default()
    }
}

/// A port per backend name: `v1` → 1001, `v2` → 1002, ….
fn backend_number(authority: &str) -> u16 {
    authority
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn backend(name: &str, weight: u32) -> pb::WeightedBackend {
    pb::WeightedBackend {
        backend: Some(pb::Backend {
            target: Some(pb::backend::Target::Service(pb::ServicePort {
                name: name.into(),
                namespace: "default".into(),
                port: 80,
                authority: format!("{name}.default.svc.cluster.local:80"),
            })),
        }),
        weight,
        filters: vec![],
    }
}

fn invalid(why: &str, weight: u32) -> pb::WeightedBackend {
    pb::WeightedBackend {
        backend: Some(pb::Backend {
            target: Some(pb::backend::Target::Invalid(why.into())),
        }),
        weight,
        filters: vec![],
    }
}

fn rule(name: &str, backends: Vec<pb::WeightedBackend>) -> pb::HttpRule {
    pb::HttpRule {
        route: Some(pb::RouteName {
            kind: "HTTPRoute".into(),
            namespace: "default".into(),
            name: name.into(),
        }),
        backends,
        ..Default::default()
    }
}

fn prefix(rule: u32, p: &str) -> pb::HttpRouteMatch {
    pb::HttpRouteMatch {
        rule,
        path: Some(pb::PathMatch {
            kind: Some(pb::path_match::Kind::Prefix(p.into())),
        }),
        ..Default::default()
    }
}

fn exact(v: &str) -> Option<pb::ValueMatch> {
    Some(pb::ValueMatch {
        kind: Some(pb::value_match::Kind::Exact(v.into())),
    })
}

fn regex(v: &str) -> Option<pb::ValueMatch> {
    Some(pb::ValueMatch {
        kind: Some(pb::value_match::Kind::Regex(v.into())),
    })
}

fn http_table(
    rules: Vec<pb::HttpRule>,
    matches: Vec<pb::HttpRouteMatch>,
    unmatched: pb::Unmatched,
) -> RouteTable {
    let routes = pb::Routes {
        consumer_namespace: String::new(),
        http: Some(pb::HttpRoutes {
            rules,
            matches,
            grpc_matches: vec![],
            unmatched: unmatched as i32,
        }),
        tcp: None,
    };
    RouteTable::compile(&routes, &Env::default()).unwrap()
}

fn apex() -> Resolved {
    Resolved::Service(Dest::detached(
        orig(),
        Resolution::Service { opaque: false },
    ))
}

fn get(path: &str) -> http::Request<()> {
    http::Request::get(path)
        .header("host", "books")
        .body(())
        .unwrap()
}

/// The port of the backend a plan goes to (the apex: 80).
fn port_of(plan: &Plan<'_>) -> u16 {
    match plan {
        Plan::Forward(r) => r.target.addr().port(),
        Plan::Answer(a) => panic!("answered: {a:?}"),
    }
}

fn status_of(plan: Plan<'_>) -> http::StatusCode {
    match plan {
        Plan::Answer(Answer::Error(e)) => e.status(),
        Plan::Answer(Answer::Redirect(r)) => r.status(),
        Plan::Forward(r) => panic!("forwarded to {:?}", r.target.addr()),
    }
}

#[test]
fn without_routes_a_service_is_balanced_and_an_unknown_address_passed_through() {
    let view = apex();
    for req in [get("/"), get("/api/v1?x=1")] {
        assert_eq!(port_of(&route(&view, None, orig(), &mut req.clone())), 80);
    }
    let plan = route(&Resolved::Passthrough, None, orig(), &mut get("/"));
    assert!(matches!(plan, Plan::Forward(r) if matches!(r.target, Target::Addr(a) if a == orig())));
    assert_eq!(port_of(&route_tcp(&view, None, orig())), 80);
}

#[test]
fn a_split_sends_each_backend_its_weight() {
    let table = http_table(
        vec![rule("split", vec![backend("v1", 900), backend("v2", 100)])],
        vec![prefix(0, "/")],
        pb::Unmatched::NotFound,
    );
    let view = apex();
    let mut v2 = 0;
    let n = 20_000;
    for _ in 0..n {
        if port_of(&route(&view, Some(&table), orig(), &mut get("/"))) == 1002 {
            v2 += 1;
        }
    }
    let share = v2 as f64 / n as f64;
    // 0.1 ± 0.015: eight standard deviations of 20,000 draws.
    assert!((0.085..0.115).contains(&share), "v2 got {share}");
}

#[test]
fn a_zero_weight_gets_nothing_and_all_zero_is_500() {
    let table = http_table(
        vec![
            rule("a", vec![backend("v1", 0), backend("v2", 1)]),
            rule("b", vec![backend("v1", 0)]),
        ],
        vec![prefix(0, "/a"), prefix(1, "/b")],
        pb::Unmatched::NotFound,
    );
    let view = apex();
    for _ in 0..200 {
        assert_eq!(
            port_of(&route(&view, Some(&table), orig(), &mut get("/a"))),
            1002
        );
    }
    assert_eq!(
        status_of(route(&view, Some(&table), orig(), &mut get("/b"))),
        500
    );
}

#[test]
fn an_invalid_backend_gets_500_with_its_reason_and_the_valid_share_still_flows() {
    let table = http_table(
        vec![rule(
            "r",
            vec![
                backend("v1", 1),
                invalid("Service default/gone not found", 1),
            ],
        )],
        vec![prefix(0, "/")],
        pb::Unmatched::NotFound,
    );
    let view = apex();
    let (mut ok, mut bad) = (0, 0);
    for _ in 0..400 {
        match route(&view, Some(&table), orig(), &mut get("/")) {
            Plan::Forward(_) => ok += 1,
            Plan::Answer(Answer::Error(e)) => {
                assert_eq!(e.status(), 500);
                assert!(e.to_string().contains("default/gone not found"), "{e}");
                bad += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(ok > 100 && bad > 100, "{ok} {bad}");
}

#[test]
fn paths_match_by_prefix_element_exact_and_regex_in_order() {
    let mut m_exact = prefix(1, "");
    m_exact.path = Some(pb::PathMatch {
        kind: Some(pb::path_match::Kind::Exact("/books/special".into())),
    });
    let mut m_regex = prefix(2, "");
    m_regex.path = Some(pb::PathMatch {
        kind: Some(pb::path_match::Kind::Regex("^(?:/v[0-9]+/.*)$".into())),
    });
    let table = http_table(
        vec![
            rule("books", vec![backend("v1", 1)]),
            rule("special", vec![backend("v2", 1)]),
            rule("versioned", vec![backend("v3", 1)]),
        ],
        vec![m_exact, prefix(0, "/books/"), m_regex],
        pb::Unmatched::NotFound,
    );
    let view = apex();
    let to = |path: &str| route(&view, Some(&table), orig(), &mut get(path));
    assert_eq!(port_of(&to("/books/special")), 1002);
    assert_eq!(port_of(&to("/books")), 1001);
    assert_eq!(port_of(&to("/books/1")), 1001);
    assert_eq!(port_of(&to("/v2/x")), 1003);
    assert_eq!(
        status_of(to("/booksx")),
        404,
        "a prefix is whole path elements"
    );
    assert_eq!(status_of(to("/")), 404);
}

#[test]
fn methods_headers_and_query_params_must_all_hold() {
    let mut m = prefix(0, "/");
    m.methods = vec!["POST".into()];
    m.headers = vec![
        pb::NamedValueMatch {
            name: "x-user".into(),
            value: regex("^(?:.*@example\\.com)$"),
        },
        pb::NamedValueMatch {
            name: "x-canary".into(),
            value: exact("1"),
        },
    ];
    m.query_params = vec![pb::NamedValueMatch {
        name: "beta".into(),
        value: exact("yes"),
    }];
    let table = http_table(
        vec![rule("canary", vec![backend("v2", 1)])],
        vec![m],
        pb::Unmatched::Service,
    );
    let view = apex();
    let req = |method: &str, user: &str, canary: &str, q: &str| {
        http::Request::builder()
            .method(method)
            .uri(format!("/x?a=1&{q}"))
            .header("x-user", user)
            .header("x-canary", canary)
            .body(())
            .unwrap()
    };
    let port = |mut r| port_of(&route(&view, Some(&table), orig(), &mut r));
    assert_eq!(port(req("POST", "ann@example.com", "1", "beta=yes")), 1002);
    assert_eq!(port(req("GET", "ann@example.com", "1", "beta=yes")), 80);
    assert_eq!(port(req("POST", "ann@example.org", "1", "beta=yes")), 80);
    assert_eq!(port(req("POST", "ann@example.com", "0", "beta=yes")), 80);
    assert_eq!(port(req("POST", "ann@example.com", "1", "beta=no")), 80);
    assert_eq!(port(req("POST", "ann@example.com", "1", "alpha=yes")), 80);
}

#[test]
fn unmatched_requests_get_404_with_gateway_routes_and_the_service_with_a_split() {
    let rules = || vec![rule("r", vec![backend("v1", 1)])];
    let view = apex();
    let gw = http_table(rules(), vec![prefix(0, "/api")], pb::Unmatched::NotFound);
    let plan = route(&view, Some(&gw), orig(), &mut get("/other"));
    assert_eq!(status_of(plan), 404);
    let grpc = http::Request::post("/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    match route(&view, Some(&gw), orig(), &mut grpc.clone()) {
        Plan::Answer(Answer::Error(e)) => {
            let rsp = e.to_response(true);
            assert_eq!(rsp.headers()["grpc-status"], "12", "UNIMPLEMENTED");
        }
        other => panic!("{other:?}"),
    }
    let split = http_table(rules(), vec![prefix(0, "/api")], pb::Unmatched::Service);
    match route(&view, Some(&split), orig(), &mut get("/other")) {
        Plan::Forward(r) => {
            assert_eq!(r.target.addr(), orig());
            assert!(r.metrics.is_some(), "counted under route=default");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn grpc_requests_match_by_service_and_method() {
    let routes = pb::Routes {
        consumer_namespace: String::new(),
        http: Some(pb::HttpRoutes {
            rules: vec![
                rule("get", vec![backend("v1", 1)]),
                rule("other", vec![backend("v2", 1)]),
            ],
            matches: vec![prefix(0, "/")],
            grpc_matches: vec![
                pb::GrpcRouteMatch {
                    rule: 0,
                    service: exact("books.Books"),
                    method: exact("Get"),
                    headers: vec![],
                },
                pb::GrpcRouteMatch {
                    rule: 1,
                    service: exact("books.Books"),
                    method: None,
                    headers: vec![],
                },
            ],
            unmatched: pb::Unmatched::NotFound as i32,
        }),
        tcp: None,
    };
    let table = RouteTable::compile(&routes, &Env::default()).unwrap();
    let view = apex();
    let call = |path: &str| {
        let mut r = http::Request::post(path)
            .header("content-type", "application/grpc+proto")
            .body(())
            .unwrap();
        route(&view, Some(&table), orig(), &mut r)
    };
    assert_eq!(port_of(&call("/books.Books/Get")), 1001);
    assert_eq!(port_of(&call("/books.Books/List")), 1002);
    assert_eq!(status_of(call("/ratings.Ratings/Get")), 404);
    // Not gRPC: the HTTP matches.
    assert_eq!(
        port_of(&route(&view, Some(&table), orig(), &mut get("/x"))),
        1001
    );
}

fn with_filters(filters: Vec<pb::http_filter::Kind>) -> RouteTable {
    let mut r = rule("f", vec![backend("v1", 1)]);
    r.filters = filters
        .into_iter()
        .map(|k| pb::HttpFilter { kind: Some(k) })
        .collect();
    http_table(vec![r], vec![prefix(0, "/old")], pb::Unmatched::NotFound)
}

#[test]
fn a_redirect_is_answered_by_the_proxy_with_the_parts_it_replaces() {
    let table = with_filters(vec![pb::http_filter::Kind::Redirect(pb::RequestRedirect {
        scheme: "https".into(),
        hostname: "new.example.com".into(),
        path: Some(pb::PathModifier {
            kind: Some(pb::path_modifier::Kind::Prefix("/new".into())),
        }),
        port: 0,
        status: 301,
    })]);
    let view = apex();
    match route(&view, Some(&table), orig(), &mut get("/old/page?x=1")) {
        Plan::Answer(Answer::Redirect(rsp)) => {
            assert_eq!(rsp.status(), 301);
            assert_eq!(
                rsp.headers()["location"],
                "https://new.example.com/new/page?x=1"
            );
        }
        other => panic!("{other:?}"),
    }
    let table = with_filters(vec![pb::http_filter::Kind::Redirect(pb::RequestRedirect {
        port: 8080,
        ..Default::default()
    })]);
    match route(&view, Some(&table), orig(), &mut get("/old")) {
        Plan::Answer(Answer::Redirect(rsp)) => {
            assert_eq!(rsp.status(), 302, "the default");
            assert_eq!(rsp.headers()["location"], "http://books:8080/old");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rewrites_and_header_filters_change_the_request_and_the_response() {
    let header = |n: &str, v: &str| pb::Header {
        name: n.into(),
        value: v.into(),
    };
    let table = with_filters(vec![
        pb::http_filter::Kind::RequestHeaders(pb::HeaderModifier {
            set: vec![header("x-set", "1")],
            add: vec![header("x-add", "2")],
            remove: vec!["x-secret".into()],
        }),
        pb::http_filter::Kind::Rewrite(pb::UrlRewrite {
            hostname: "books-v2".into(),
            path: Some(pb::PathModifier {
                kind: Some(pb::path_modifier::Kind::Prefix("/".into())),
            }),
        }),
        pb::http_filter::Kind::ResponseHeaders(pb::HeaderModifier {
            set: vec![header("x-route", "f")],
            ..Default::default()
        }),
    ]);
    let view = apex();
    let mut req = http::Request::get("/old/page?q=1")
        .header("host", "books")
        .header("x-set", "0")
        .header("x-add", "1")
        .header("x-secret", "s")
        .body(())
        .unwrap();
    let plan = route(&view, Some(&table), orig(), &mut req);
    assert_eq!(req.uri(), "/page?q=1");
    assert_eq!(req.headers()["host"], "books-v2");
    assert_eq!(req.headers()["x-set"], "1");
    let added: Vec<_> = req.headers().get_all("x-add").iter().collect();
    assert_eq!(added, ["1", "2"]);
    assert!(req.headers().get("x-secret").is_none());
    let Plan::Forward(routed) = plan else {
        panic!("{plan:?}")
    };
    let mut rsp = http::Response::new(());
    routed.respond(&mut rsp);
    assert_eq!(rsp.headers()["x-route"], "f");
}

#[test]
fn a_rule_with_timeouts_or_retries_carries_its_own_policy() {
    let mut r = rule("slow", vec![backend("v1", 1)]);
    r.timeouts = Some(pb::Timeouts {
        request: Some(prost_types::Duration {
            seconds: 2,
            nanos: 0,
        }),
        per_try: None,
    });
    r.retry = Some(pb::RetryPolicy {
        limit: 3,
        ..Default::default()
    });
    r.retry_backoff = Some(prost_types::Duration {
        seconds: 0,
        nanos: 50_000_000,
    });
    let table = http_table(
        vec![r, rule("plain", vec![backend("v2", 1)])],
        vec![prefix(0, "/slow"), prefix(1, "/")],
        pb::Unmatched::NotFound,
    );
    let view = apex();
    let Plan::Forward(slow) = route(&view, Some(&table), orig(), &mut get("/slow")) else {
        panic!()
    };
    let policy = slow.policy.expect("the rule's policy");
    assert_eq!(policy.timeout, Some(Duration::from_secs(2)));
    assert_eq!(policy.retry.as_ref().map(|r| r.limit), Some(3));
    assert_eq!(policy.backoff, Some(Duration::from_millis(50)));
    let Plan::Forward(plain) = route(&view, Some(&table), orig(), &mut get("/x")) else {
        panic!()
    };
    assert!(plain.policy.is_none(), "the destination's own policy");
}

#[test]
fn tcp_connections_are_split_by_weight_and_refused_when_nothing_can_take_them() {
    let tcp = |backends| pb::Routes {
        consumer_namespace: String::new(),
        http: None,
        tcp: Some(pb::TcpRoutes {
            backends,
            route: None,
        }),
    };
    let view = apex();
    let table = RouteTable::compile(
        &tcp(vec![backend("v1", 1), backend("v2", 3)]),
        &Env::default(),
    )
    .unwrap();
    let v2 = (0..4000)
        .filter(|_| port_of(&route_tcp(&view, Some(&table), orig())) == 1002)
        .count();
    assert!((2700..3300).contains(&v2), "{v2} of 4000");
    let none = RouteTable::compile(&tcp(vec![invalid("gone", 1)]), &Env::default()).unwrap();
    assert!(matches!(
        route_tcp(&view, Some(&none), orig()),
        Plan::Answer(Answer::Error(ProxyError::InvalidBackend(..)))
    ));
    // TCP routes leave HTTP requests alone.
    assert_eq!(
        port_of(&route(&view, Some(&table), orig(), &mut get("/"))),
        80
    );
}

#[test]
fn opaque_services_and_ports_skip_detection() {
    let http = apex();
    let opaque = Resolved::Service(Dest::detached(orig(), Resolution::Service { opaque: true }));
    assert!(detects_http(&http, orig(), &[]));
    assert!(!detects_http(&opaque, orig(), &[]));
    assert!(!detects_http(&http, orig(), &[80]));
    assert!(detects_http(&Resolved::Passthrough, orig(), &[25]));
    assert!(!detects_http(
        &Resolved::Passthrough,
        "10.0.0.1:25".parse().unwrap(),
        &[25]
    ));
}

#[test]
fn a_regex_that_does_not_compile_matches_nothing() {
    let mut m = prefix(0, "");
    m.path = Some(pb::PathMatch {
        kind: Some(pb::path_match::Kind::Regex("(".into())),
    });
    let table = http_table(
        vec![rule("r", vec![backend("v1", 1)])],
        vec![m],
        pb::Unmatched::Service,
    );
    assert_eq!(
        port_of(&route(&apex(), Some(&table), orig(), &mut get("/("))),
        80
    );
}

/// Found by the `route` fuzz target: a rewrite to an empty path left the
/// request with an empty target.
#[test]
fn a_rewritten_path_always_starts_with_a_slash() {
    for (path, want) in [("", "/?a=1"), ("v2/x", "/v2/x?a=1"), ("/ok", "/ok?a=1")] {
        let mut req = Request::get("/old?a=1").body(()).unwrap();
        set_path(&mut req, path);
        assert_eq!(req.uri().to_string(), want, "{path:?}");
    }
    let mut req = Request::get("/old").body(()).unwrap();
    set_path(&mut req, "/bad path");
    assert_eq!(
        req.uri(),
        "/old",
        "a path no URI takes leaves the request as it was"
    );
}
