//! `outbound::route::route`: what routing costs a request, in ns.
//!
//! A destination with 100 HTTPRoute rules, each matched by a path prefix,
//! a method and a header regex (the last rule by a path regex), two
//! backends per rule; requests that match the first rule, the last one
//! (every match tried before), none (404), and a plain two-backend split;
//! against a destination without routes (the unrouted path).
//!
//! ```text
//! cargo bench -p weft-proxy --bench route
//! ```

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use weft_proto::discovery::v1 as pb;
use weft_proxy::discovery::{Dest, Resolution, Resolved};
use weft_proxy::outbound::route::{route, Plan};
use weft_proxy::outbound::table::{Backends, RouteMetrics, RouteTable};

const RULES: usize = 100;

struct Env;

impl Backends for Env {
    fn backend(&self, _authority: &str) -> Arc<Dest> {
        Dest::detached(
            "10.96.1.1:80".parse().unwrap(),
            Resolution::Service { opaque: false },
        )
    }

    fn metrics(&self, _route: &str, _backend: &str) -> RouteMetrics {
        RouteMetrics::default()
    }
}

fn backend(name: String, weight: u32) -> pb::WeightedBackend {
    pb::WeightedBackend {
        backend: Some(pb::Backend {
            target: Some(pb::backend::Target::Service(pb::ServicePort {
                authority: format!("{name}.shop.svc.cluster.local:80"),
                name,
                namespace: "shop".into(),
                port: 80,
            })),
        }),
        weight,
        filters: vec![],
    }
}

fn regex(re: String) -> Option<pb::ValueMatch> {
    Some(pb::ValueMatch {
        kind: Some(pb::value_match::Kind::Regex(re)),
    })
}

fn table(rules: usize) -> RouteTable {
    let mut http = pb::HttpRoutes {
        unmatched: pb::Unmatched::NotFound as i32,
        ..Default::default()
    };
    for i in 0..rules {
        http.rules.push(pb::HttpRule {
            route: Some(pb::RouteName {
                kind: "HTTPRoute".into(),
                namespace: "shop".into(),
                name: format!("r{i}"),
            }),
            backends: vec![
                backend(format!("v1-{i}"), 90),
                backend(format!("v2-{i}"), 10),
            ],
            ..Default::default()
        });
        let path = if i == rules - 1 {
            pb::path_match::Kind::Regex(format!("^(?:/svc{i}/[a-z]+/[0-9]+)$"))
        } else {
            pb::path_match::Kind::Prefix(format!("/svc{i}"))
        };
        http.matches.push(pb::HttpRouteMatch {
            rule: i as u32,
            path: Some(pb::PathMatch { kind: Some(path) }),
            methods: vec!["GET".into()],
            headers: vec![pb::NamedValueMatch {
                name: "x-tenant".into(),
                value: regex(format!("^(?:tenant-{i}-[a-z]+)$")),
            }],
            query_params: vec![],
        });
    }
    let routes = pb::Routes {
        http: Some(http),
        ..Default::default()
    };
    RouteTable::compile(&routes, &Env).unwrap()
}

fn split() -> RouteTable {
    let routes = pb::Routes {
        http: Some(pb::HttpRoutes {
            rules: vec![pb::HttpRule {
                backends: vec![backend("v1".into(), 900), backend("v2".into(), 100)],
                ..Default::default()
            }],
            matches: vec![pb::HttpRouteMatch::default()],
            unmatched: pb::Unmatched::Service as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    RouteTable::compile(&routes, &Env).unwrap()
}

fn request(path: &str, tenant: &str) -> http::Request<()> {
    http::Request::get(path)
        .header("host", "web")
        .header("user-agent", "curl/8")
        .header("accept", "*/*")
        .header("x-tenant", tenant)
        .body(())
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let orig: SocketAddr = "10.96.0.10:80".parse().unwrap();
    let view = Resolved::Service(Dest::detached(orig, Resolution::Service { opaque: false }));
    let many = table(RULES);
    let two = split();
    let last = RULES - 1;
    let cases: [(&str, Option<&RouteTable>, http::Request<()>); 5] = [
        ("no routes", None, request("/svc0/a", "tenant-0-a")),
        ("split of two backends", Some(&two), request("/svc0/a", "x")),
        (
            "100 rules: the first matches",
            Some(&many),
            request("/svc0/a", "tenant-0-a"),
        ),
        (
            "100 rules: the last (a path regex) matches",
            Some(&many),
            request(&format!("/svc{last}/books/42"), &format!("tenant-{last}-b")),
        ),
        (
            "100 rules: none matches (404)",
            Some(&many),
            request("/nothing", "nobody"),
        ),
    ];
    let mut group = c.benchmark_group("route");
    for (name, table, req) in cases {
        let mut req = req;
        // Each case routes as named.
        let plan = route(&view, table, orig, &mut req);
        assert_eq!(
            matches!(plan, Plan::Answer(_)),
            name.contains("404"),
            "{name}: {plan:?}"
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                let plan = route(black_box(&view), table, orig, &mut req);
                black_box(matches!(plan, Plan::Forward(_)))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
