use super::*;
use pb::client_match::Kind as C;
use pb::path_match::Kind as P;

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const PROM: &str = "spiffe://cluster.local/ns/monitoring/sa/prometheus";
const OTHER_NS: &str = "spiffe://cluster.local/ns/ops/sa/web";
const FOREIGN: &str = "spiffe://elsewhere.example/ns/shop/sa/web";

fn scope() -> Scope {
    Scope {
        trust_domain: "cluster.local".into(),
        pod_namespace: "shop".into(),
    }
}

fn sa(ns: &str, name: &str) -> pb::ClientMatch {
    pb::ClientMatch {
        kind: Some(C::ServiceAccount(pb::ServiceAccountRef {
            namespace: ns.into(),
            name: name.into(),
        })),
    }
}

fn regex_route(name: &str, path: &str, methods: &[&str]) -> pb::HttpRouteMatch {
    pb::HttpRouteMatch {
        name: name.into(),
        path: Some(pb::PathMatch {
            kind: Some(P::Regex(path.into())),
        }),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        headers: vec![],
    }
}

fn authz(
    name: &str,
    clients: Vec<pb::ClientMatch>,
    routes: Vec<pb::HttpRouteMatch>,
) -> pb::Authorization {
    pb::Authorization {
        name: name.into(),
        clients,
        http_routes: routes,
    }
}

fn policy(default: pb::DefaultPolicy, authorizations: Vec<pb::Authorization>) -> PortPolicy {
    PortPolicy::compile(
        &pb::InboundPolicy {
            default_policy: default as i32,
            protocol: 0,
            authorizations,
            default_policy_source: String::new(),
        },
        &scope(),
    )
}

fn req(method: &str, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .unwrap()
}

/// The decision for an HTTP request: the route that allowed it, or why not.
fn http(
    p: &PortPolicy,
    client: Option<&str>,
    method: &str,
    path: &str,
) -> Result<String, &'static str> {
    authorize(p, client, Some(&req(method, path)))
        .map(|a| format!("{}:{}", a.by, a.route))
        .map_err(|d| d.0)
}

fn tcp(p: &PortPolicy, client: Option<&str>) -> Result<String, &'static str> {
    authorize::<()>(p, client, None)
        .map(|a| a.by.to_owned())
        .map_err(|d| d.0)
}

/// `web` may GET `/public...`; prometheus any method on `/metrics`.
fn targeted() -> PortPolicy {
    policy(
        pb::DefaultPolicy::Deny,
        vec![
            authz(
                "tt/web",
                vec![sa("shop", "web")],
                vec![regex_route("g/public", "^(?:/public)(?s:.*)", &["GET"])],
            ),
            authz(
                "tt/prom",
                vec![sa("monitoring", "prometheus")],
                vec![regex_route("g/metrics", "/metrics", &[])],
            ),
        ],
    )
}

#[test]
fn an_authorized_client_on_an_authorized_route_is_allowed() {
    let p = targeted();
    assert_eq!(
        http(&p, Some(WEB), "GET", "/public"),
        Ok("tt/web:g/public".into())
    );
    assert_eq!(
        http(&p, Some(WEB), "GET", "/public/x?y=1"),
        Ok("tt/web:g/public".into())
    );
    assert_eq!(
        http(&p, Some(PROM), "POST", "/metrics"),
        Ok("tt/prom:g/metrics".into())
    );
}

#[test]
fn a_client_no_authorization_names_is_denied_by_source() {
    let p = targeted();
    assert_eq!(http(&p, Some(OTHER_NS), "GET", "/public"), Err("source"));
    assert_eq!(http(&p, Some(FOREIGN), "GET", "/public"), Err("source"));
    assert_eq!(tcp(&p, Some(OTHER_NS)), Err("source"));
}

#[test]
fn a_named_client_off_its_routes_is_denied_by_route() {
    let p = targeted();
    assert_eq!(http(&p, Some(WEB), "GET", "/admin"), Err("route"));
    assert_eq!(
        http(&p, Some(WEB), "POST", "/public"),
        Err("route"),
        "method"
    );
    // Another client's route is not this client's.
    assert_eq!(http(&p, Some(WEB), "GET", "/metrics"), Err("route"));
    // The whole-path regex: /metrics does not allow /metricsx.
    assert_eq!(http(&p, Some(PROM), "GET", "/metrics/x"), Err("route"));
    // HTTP routes never allow an opaque connection.
    assert_eq!(tcp(&p, Some(WEB)), Err("route"));
}

#[test]
fn a_client_without_mesh_tls_is_denied_where_an_identity_is_needed() {
    let p = targeted();
    assert_eq!(http(&p, None, "GET", "/public"), Err("unauthenticated"));
    assert_eq!(tcp(&p, None), Err("unauthenticated"));
    for d in [
        pb::DefaultPolicy::AllowAuthenticated,
        pb::DefaultPolicy::AllowMeshed,
    ] {
        assert_eq!(
            http(&policy(d, vec![]), None, "GET", "/"),
            Err("unauthenticated")
        );
    }
}

#[test]
fn an_authorization_without_routes_allows_whole_connections() {
    let p = policy(
        pb::DefaultPolicy::Deny,
        vec![authz("tt/db", vec![sa("shop", "web")], vec![])],
    );
    assert_eq!(tcp(&p, Some(WEB)), Ok("tt/db".into()));
    assert_eq!(
        http(&p, Some(WEB), "DELETE", "/anything"),
        Ok("tt/db:".into())
    );
    assert_eq!(tcp(&p, Some(PROM)), Err("source"));
}

#[test]
fn the_defaults() {
    use pb::DefaultPolicy as D;
    let cases = [
        (D::AllowAll, [Ok(()), Ok(()), Ok(()), Ok(()), Ok(())]),
        (
            D::AllowAuthenticated,
            [Err("unauthenticated"), Ok(()), Ok(()), Ok(()), Ok(())],
        ),
        (
            D::AllowMeshed,
            [
                Err("unauthenticated"),
                Ok(()),
                Ok(()),
                Ok(()),
                Err("source"),
            ],
        ),
        (
            D::AllowSameNamespace,
            [
                Err("unauthenticated"),
                Ok(()),
                Err("source"),
                Err("source"),
                Err("source"),
            ],
        ),
        (
            D::Deny,
            [
                Err("default"),
                Err("default"),
                Err("default"),
                Err("default"),
                Err("default"),
            ],
        ),
        (
            D::Unspecified,
            [
                Err("default"),
                Err("default"),
                Err("default"),
                Err("default"),
                Err("default"),
            ],
        ),
    ];
    for (d, want) in cases {
        let p = policy(d, vec![]);
        let got: Vec<_> = [None, Some(WEB), Some(OTHER_NS), Some(PROM), Some(FOREIGN)]
            .map(|c| authorize::<()>(&p, c, None).map(|_| ()).map_err(|e| e.0))
            .into_iter()
            .collect();
        assert_eq!(got, want, "{d:?}");
    }
    // A default a newer control plane knows and this proxy does not: deny.
    let newer = pb::InboundPolicy {
        default_policy: 99,
        ..Default::default()
    };
    let p = PortPolicy::compile(&newer, &scope());
    assert_eq!(tcp(&p, Some(WEB)), Err("default"));
}

#[test]
fn what_the_proxy_cannot_understand_matches_nothing() {
    let broken = [
        regex_route("bad-regex", "(", &[]),
        pb::HttpRouteMatch {
            name: "no-path-kind".into(),
            path: Some(pb::PathMatch { kind: None }),
            ..Default::default()
        },
        pb::HttpRouteMatch {
            name: "bad-method".into(),
            methods: vec!["GET POST".into()],
            ..Default::default()
        },
        pb::HttpRouteMatch {
            name: "no-header-value".into(),
            headers: vec![pb::HeaderMatch {
                name: "x".into(),
                value: None,
            }],
            ..Default::default()
        },
    ];
    for r in broken {
        let name = r.name.clone();
        let p = policy(
            pb::DefaultPolicy::Deny,
            vec![authz("tt", vec![sa("shop", "web")], vec![r])],
        );
        assert_eq!(http(&p, Some(WEB), "GET", "/"), Err("route"), "{name}");
    }
    let unknown_client = pb::ClientMatch { kind: None };
    let p = policy(
        pb::DefaultPolicy::Deny,
        vec![authz("tt", vec![unknown_client], vec![])],
    );
    assert_eq!(tcp(&p, Some(WEB)), Err("source"));
}

#[test]
fn paths_methods_and_headers() {
    let route = |path: P, headers: Vec<pb::HeaderMatch>| pb::HttpRouteMatch {
        name: "r".into(),
        path: Some(pb::PathMatch { kind: Some(path) }),
        methods: vec![],
        headers,
    };
    let check = |r: pb::HttpRouteMatch, request: http::Request<()>| {
        let p = policy(
            pb::DefaultPolicy::Deny,
            vec![authz("tt", vec![sa("shop", "web")], vec![r])],
        );
        authorize(&p, Some(WEB), Some(&request)).is_ok()
    };
    let prefix = || route(P::Prefix("/api/".into()), vec![]);
    assert!(check(prefix(), req("GET", "/api")));
    assert!(check(prefix(), req("GET", "/api/v1")));
    assert!(!check(prefix(), req("GET", "/apis")));
    assert!(check(
        route(P::Prefix("/".into()), vec![]),
        req("GET", "/anything")
    ));
    assert!(check(
        route(P::Exact("/a".into()), vec![]),
        req("GET", "/a?q")
    ));
    assert!(!check(
        route(P::Exact("/a".into()), vec![]),
        req("GET", "/a/")
    ));
    let header = |value| pb::HeaderMatch {
        name: "X-Tenant".into(),
        value: Some(value),
    };
    let with = |v: &str| {
        http::Request::builder()
            .uri("/")
            .header("x-tenant", "blue")
            .header("x-tenant", v)
            .body(())
            .unwrap()
    };
    let exact = || {
        route(
            P::Prefix("/".into()),
            vec![header(pb::header_match::Value::Exact("red".into()))],
        )
    };
    assert!(check(exact(), with("red")), "any occurrence");
    assert!(!check(exact(), with("redder")));
    assert!(!check(exact(), req("GET", "/")), "missing header");
    let re = || {
        route(
            P::Prefix("/".into()),
            vec![header(pb::header_match::Value::Regex("gr[ae]y".into()))],
        )
    };
    assert!(check(re(), with("grey")));
    assert!(!check(re(), with("greyish")), "whole value");
}

#[test]
fn the_fallback_fails_closed_unless_the_default_allows_everyone() {
    for (default, pending, want) in [
        (
            InboundDefault::AllUnauthenticated,
            true,
            Ok("default".to_owned()),
        ),
        (InboundDefault::AllAuthenticated, true, Err("no_policy")),
        (InboundDefault::Deny, true, Err("no_policy")),
        (
            InboundDefault::AllAuthenticated,
            false,
            Ok("default".to_owned()),
        ),
        (InboundDefault::ClusterAuthenticated, false, Err("source")),
    ] {
        let p = PortPolicy::fallback(default, &scope(), pending);
        let client = if default == InboundDefault::ClusterAuthenticated {
            FOREIGN
        } else {
            WEB
        };
        assert_eq!(tcp(&p, Some(client)), want, "{default:?} pending={pending}");
    }
}

#[test]
fn the_policy_says_whether_the_port_is_opaque() {
    let opaque = pb::InboundPolicy {
        protocol: pb::Protocol::Opaque as i32,
        ..Default::default()
    };
    assert!(PortPolicy::compile(&opaque, &scope()).is_opaque());
    let newer = pb::InboundPolicy {
        protocol: 42,
        ..Default::default()
    };
    assert!(
        !PortPolicy::compile(&newer, &scope()).is_opaque(),
        "unknown: detect"
    );
    assert!(!PortPolicy::fallback(InboundDefault::Deny, &scope(), true).is_opaque());
}

#[test]
fn dot_segments_cannot_reach_another_route() {
    let p = targeted();
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/.%2E/admin",
        "/public/x/../../admin",
    ] {
        assert_eq!(http(&p, Some(WEB), "GET", path), Err("route"), "{path}");
    }
    for path in [
        "/public/./x",
        "/admin/../public",
        "/a/b/../../public/",
        "/public/x/..",
    ] {
        assert_eq!(
            http(&p, Some(WEB), "GET", path),
            Ok("tt/web:g/public".into()),
            "{path}"
        );
    }
    assert_eq!(normalized("/a/b/."), "/a/b/");
    assert_eq!(normalized("/a/.."), "/");
    assert_eq!(normalized("/.."), "/");
    assert_eq!(normalized("*"), "*");
    assert!(matches!(normalized("/plain/path"), Cow::Borrowed(_)));
}
