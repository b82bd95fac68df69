//! The policy computation: the SMI spec's examples and every edge the
//! issue lists. Objects go in as YAML through the files source's parser.

use weft_proto::policy::v1 as pb;

use super::DefaultPolicy;
use crate::model::{Kind, Store};
use crate::sources::parse;

fn load(store: &mut Store, yaml: &str) -> Result<(), String> {
    for doc in parse::documents(yaml) {
        for obj in parse::objects(&doc)? {
            store.apply(&obj)?;
        }
    }
    Ok(())
}

fn store_with(default: DefaultPolicy, yaml: &str) -> Store {
    let mut s = Store::new("cluster.local", "cluster.local").with_default_policy(default);
    load(&mut s, yaml).unwrap();
    s
}

fn store(yaml: &str) -> Store {
    store_with(DefaultPolicy::AllUnauthenticated, yaml)
}

fn pod(ns: &str, name: &str, sa: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, annotations: {{{annotations}}}}}\nspec:\n  serviceAccountName: {sa}\n  containers: [{{name: app}}]\n---\n"
    )
}

fn policy(s: &Store, ns: &str, name: &str, port: u16) -> pb::InboundPolicy {
    s.pod_policy(&(ns.into(), name.into()))
        .expect("the pod is in the model")
        .port(port)
}

/// Each authorization's name, clients (`ns/sa`) and route names.
fn grants(p: &pb::InboundPolicy) -> Vec<(String, Vec<String>, Vec<String>)> {
    p.authorizations
        .iter()
        .map(|a| {
            let clients = a
                .clients
                .iter()
                .map(|c| match &c.kind {
                    Some(pb::client_match::Kind::ServiceAccount(sa)) => {
                        format!("{}/{}", sa.namespace, sa.name)
                    }
                    other => format!("{other:?}"),
                })
                .collect();
            let routes = a.http_routes.iter().map(|r| r.name.clone()).collect();
            (a.name.clone(), clients, routes)
        })
        .collect()
}

fn g(name: &str, clients: &[&str], routes: &[&str]) -> (String, Vec<String>, Vec<String>) {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
    (name.to_owned(), s(clients), s(routes))
}

/// The SMI spec's HTTPRouteGroup (`the-routes`) and TCPRoute examples.
const ROUTES: &str = r#"
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: the-routes, namespace: default}
spec:
  matches:
  - name: metrics
    pathRegex: "/metrics"
    methods: [GET]
  - name: everything
    pathRegex: ".*"
    methods: ["*"]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: the-tcp-routes, namespace: default}
spec:
  matches:
    ports: [8301, 8302]
---
"#;

/// The spec's `path-specific` TrafficTarget: prometheus may GET /metrics
/// on service-a.
const PATH_SPECIFIC: &str = r#"
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: path-specific, namespace: default}
spec:
  destination: {kind: ServiceAccount, name: service-a, namespace: default}
  rules:
  - kind: HTTPRouteGroup
    name: the-routes
    matches: [metrics]
  sources:
  - {kind: ServiceAccount, name: prometheus, namespace: default}
---
"#;

fn base() -> String {
    format!(
        "{ROUTES}{}{}",
        pod("default", "a-1", "service-a", ""),
        pod("default", "b-1", "service-b", "")
    )
}

#[test]
fn the_spec_path_specific_example() {
    let s = store(&format!("{}{PATH_SPECIFIC}", base()));
    let p = policy(&s, "default", "a-1", 8080);
    assert_eq!(p.default_policy, pb::DefaultPolicy::Deny as i32);
    assert_eq!(p.default_policy_source, "traffictarget");
    assert_eq!(
        grants(&p),
        [g(
            "traffictarget/default/path-specific",
            &["default/prometheus"],
            &["the-routes/metrics"]
        )]
    );
    let route = &p.authorizations[0].http_routes[0];
    assert_eq!(route.methods, ["GET"]);
    let Some(pb::path_match::Kind::Regex(re)) = route.path.as_ref().and_then(|p| p.kind.clone())
    else {
        panic!("a path regex: {route:?}")
    };
    let re = regex::Regex::new(&format!("^(?:{re})$")).unwrap();
    assert!(re.is_match("/metrics") && re.is_match("/metrics/x"));
    assert!(!re.is_match("/admin") && !re.is_match("/x/metrics"));
    // service-b is named by no TrafficTarget: the cluster's default.
    let b = policy(&s, "default", "b-1", 8080);
    assert_eq!(b.default_policy, pb::DefaultPolicy::AllowAll as i32);
    assert_eq!(b.default_policy_source, "cluster");
    assert!(b.authorizations.is_empty());
}

#[test]
fn omitted_matches_mean_every_match_of_the_group() {
    let tt = PATH_SPECIFIC.replace("    matches: [metrics]\n", "");
    let s = store(&format!("{}{tt}", base()));
    assert_eq!(
        grants(&policy(&s, "default", "a-1", 8080)),
        [g(
            "traffictarget/default/path-specific",
            &["default/prometheus"],
            &["the-routes/metrics", "the-routes/everything"]
        )]
    );
    // An empty list picks none: it never means "all".
    let none = PATH_SPECIFIC.replace("matches: [metrics]", "matches: []");
    let s = store(&format!("{}{none}", base()));
    let p = policy(&s, "default", "a-1", 8080);
    assert!(p.authorizations.is_empty());
    assert_eq!(p.default_policy, pb::DefaultPolicy::Deny as i32);
}

const TCP_TARGET: &str = r#"
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: tcp, namespace: default}
spec:
  destination: {kind: ServiceAccount, name: service-a}
  rules:
  - {kind: TCPRoute, name: the-tcp-routes}
  sources:
  - {kind: ServiceAccount, name: consul}
---
"#;

#[test]
fn a_tcp_route_allows_whole_connections_on_its_ports_only() {
    let s = store(&format!("{}{TCP_TARGET}", base()));
    let on = policy(&s, "default", "a-1", 8301);
    assert_eq!(
        grants(&on),
        [g("traffictarget/default/tcp", &["default/consul"], &[])],
        "empty routes: the whole connection, namespaces defaulted"
    );
    let off = policy(&s, "default", "a-1", 8080);
    assert!(off.authorizations.is_empty(), "{off:?}");
    assert_eq!(off.default_policy, pb::DefaultPolicy::Deny as i32);
}

#[test]
fn a_tcp_route_without_ports_covers_every_port() {
    let routes = ROUTES.replace("ports: [8301, 8302]", "ports: []");
    let s = store(&format!(
        "{routes}{}{TCP_TARGET}",
        pod("default", "a-1", "service-a", "")
    ));
    for port in [1, 8080, 65535] {
        assert_eq!(
            grants(&policy(&s, "default", "a-1", port)),
            [g("traffictarget/default/tcp", &["default/consul"], &[])]
        );
    }
}

#[test]
fn a_tcp_rule_beside_http_rules_opens_only_its_ports() {
    let both = TCP_TARGET.replace(
        "  - {kind: TCPRoute, name: the-tcp-routes}\n",
        "  - {kind: TCPRoute, name: the-tcp-routes}\n  - {kind: HTTPRouteGroup, name: the-routes, matches: [metrics]}\n",
    );
    let s = store(&format!("{}{both}", base()));
    let name = "traffictarget/default/tcp";
    assert_eq!(
        grants(&policy(&s, "default", "a-1", 8302)),
        [g(name, &["default/consul"], &[])]
    );
    assert_eq!(
        grants(&policy(&s, "default", "a-1", 8080)),
        [g(name, &["default/consul"], &["the-routes/metrics"])]
    );
}

#[test]
fn several_targets_on_one_destination_are_ored() {
    let s = store(&format!("{}{PATH_SPECIFIC}{TCP_TARGET}", base()));
    assert_eq!(
        grants(&policy(&s, "default", "a-1", 8301)),
        [
            g(
                "traffictarget/default/path-specific",
                &["default/prometheus"],
                &["the-routes/metrics"]
            ),
            g("traffictarget/default/tcp", &["default/consul"], &[]),
        ]
    );
}

#[test]
fn overlapping_route_groups_allow_their_union_and_nothing_else() {
    let yaml = format!(
        r#"{}
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {{name: more, namespace: default}}
spec:
  matches:
  - {{name: metrics, pathRegex: "/metrics", methods: [GET]}}
  - {{name: health, pathRegex: "/healthz"}}
  - {{name: admin, pathRegex: "/admin"}}
---
{}
"#,
        base(),
        PATH_SPECIFIC.replace(
            "    matches: [metrics]\n",
            "    matches: [metrics]\n  - {kind: HTTPRouteGroup, name: more, matches: [metrics, health]}\n"
        )
    );
    let s = store(&yaml);
    assert_eq!(
        grants(&policy(&s, "default", "a-1", 8080)),
        [g(
            "traffictarget/default/path-specific",
            &["default/prometheus"],
            &["the-routes/metrics", "more/metrics", "more/health"]
        )]
    );
}

#[test]
fn a_missing_route_group_never_widens_access() {
    let missing = PATH_SPECIFIC.replace("name: the-routes", "name: not-yet");
    let mut s = store(&format!("{}{missing}", base()));
    let p = policy(&s, "default", "a-1", 8080);
    assert!(p.authorizations.is_empty(), "{p:?}");
    assert_eq!(p.default_policy, pb::DefaultPolicy::Deny as i32);
    // A match name the group does not have allows nothing either.
    let unknown = PATH_SPECIFIC.replace("matches: [metrics]", "matches: [nope]");
    let t = store(&format!("{}{unknown}", base()));
    assert!(policy(&t, "default", "a-1", 8080).authorizations.is_empty());
    // The group appears: its matches are allowed.
    let group = ROUTES
        .split("---")
        .next()
        .unwrap()
        .replace("the-routes", "not-yet");
    load(&mut s, &group).unwrap();
    assert_eq!(
        grants(&policy(&s, "default", "a-1", 8080)),
        [g(
            "traffictarget/default/path-specific",
            &["default/prometheus"],
            &["not-yet/metrics"]
        )]
    );
    // And goes again.
    s.delete(
        Kind::Route(crate::model::routes::ObjectKind::HttpRouteGroup),
        &("default".into(), "not-yet".into()),
    );
    assert!(policy(&s, "default", "a-1", 8080).authorizations.is_empty());
}

#[test]
fn bad_targets_are_refused_with_the_field_and_the_last_good_one_stays() {
    let mut s = store(&format!("{}{PATH_SPECIFIC}", base()));
    let good = policy(&s, "default", "a-1", 8080);
    for (from, to, reason) in [
        (
            "name: service-a, namespace: default",
            "name: service-a, namespace: other",
            "spec.destination.namespace: 'other' is not the TrafficTarget's namespace 'default'",
        ),
        (
            "kind: HTTPRouteGroup",
            "kind: HTTPRoute",
            "spec.rules[0].kind: 'HTTPRoute' is not HTTPRouteGroup or TCPRoute",
        ),
        (
            "{kind: ServiceAccount, name: service-a",
            "{kind: Deployment, name: service-a",
            "spec.destination.kind: 'Deployment' is not ServiceAccount",
        ),
        (
            "{kind: ServiceAccount, name: prometheus, namespace: default}",
            "{kind: ServiceAccount, name: prometheus, namespace: Bad_NS}",
            "spec.sources[0].namespace: 'Bad_NS' is not a namespace name",
        ),
        (
            "  sources:\n  - {kind: ServiceAccount, name: prometheus, namespace: default}\n",
            "  sources: []\n",
            "spec.sources: no source ServiceAccount",
        ),
        (
            "    name: the-routes\n",
            "    name: \"\"\n",
            "spec.rules[0].name: no HTTPRouteGroup named",
        ),
    ] {
        let bad = PATH_SPECIFIC.replace(from, to);
        assert_ne!(bad, PATH_SPECIFIC, "{from}");
        let err = load(&mut s, &bad).unwrap_err();
        assert!(err.contains(reason), "{err}");
        assert_eq!(policy(&s, "default", "a-1", 8080), good, "{reason}");
    }
    let err = load(&mut s, &PATH_SPECIFIC.replace("v1alpha3", "v1alpha2")).unwrap_err();
    assert!(err.contains("use access.smi-spec.io/v1alpha3"), "{err}");
}

#[test]
fn deleting_the_last_target_restores_the_default() {
    let mut s = store(&format!("{}{PATH_SPECIFIC}", base()));
    s.delete(
        Kind::TrafficTarget,
        &("default".into(), "path-specific".into()),
    );
    let p = policy(&s, "default", "a-1", 8080);
    assert_eq!(p.default_policy, pb::DefaultPolicy::AllowAll as i32);
    assert!(p.authorizations.is_empty());
}

#[test]
fn the_default_comes_from_the_pod_then_the_namespace_then_the_cluster() {
    let ns = |v: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, annotations: {{weft.dev/default-inbound-policy: {v}}}}}\n---\n"
        )
    };
    let yaml = format!(
        "{}{}{}{}",
        ns("all-authenticated"),
        pod("shop", "plain", "web", ""),
        pod(
            "shop",
            "strict",
            "web",
            "weft.dev/default-inbound-policy: deny"
        ),
        pod(
            "shop",
            "typo",
            "web",
            "weft.dev/default-inbound-policy: alow-all"
        ),
    );
    let s = store_with(DefaultPolicy::ClusterAuthenticated, &yaml);
    let d = |name| {
        let p = policy(&s, "shop", name, 80);
        (p.default_policy, p.default_policy_source)
    };
    use pb::DefaultPolicy as D;
    assert_eq!(
        d("plain"),
        (D::AllowAuthenticated as i32, "namespace".into())
    );
    assert_eq!(d("strict"), (D::Deny as i32, "pod".into()));
    assert_eq!(d("typo"), (D::Deny as i32, "pod".into()), "fails closed");
    let other = store_with(
        DefaultPolicy::ClusterAuthenticated,
        &pod("web", "w", "web", ""),
    );
    let p = policy(&other, "web", "w", 80);
    assert_eq!(
        (p.default_policy, p.default_policy_source.as_str()),
        (D::AllowMeshed as i32, "cluster")
    );
    // A pod the model does not know: its namespace's, else the cluster's.
    assert_eq!(s.unknown_pod_policy("shop").source, "namespace");
    assert_eq!(
        s.unknown_pod_policy("elsewhere").default,
        DefaultPolicy::ClusterAuthenticated
    );
    // A TrafficTarget wins over every annotation.
    let targeted = store(&format!(
        "{ROUTES}{}{PATH_SPECIFIC}",
        pod(
            "default",
            "a-1",
            "service-a",
            "weft.dev/default-inbound-policy: all-unauthenticated"
        )
    ));
    let p = policy(&targeted, "default", "a-1", 80);
    assert_eq!(p.default_policy, D::Deny as i32);
}

#[test]
fn opaque_ports_are_told() {
    let s = store(&pod("shop", "db", "db", "weft.dev/opaque-ports: \"5432\""));
    assert_eq!(
        policy(&s, "shop", "db", 5432).protocol,
        pb::Protocol::Opaque as i32
    );
    assert_eq!(
        policy(&s, "shop", "db", 8080).protocol,
        pb::Protocol::Unspecified as i32
    );
}

#[test]
fn grants_are_computed_once_per_service_account() {
    let s = store(&format!(
        "{}{}{PATH_SPECIFIC}",
        base(),
        pod("default", "a-2", "service-a", "")
    ));
    let all = s.pod_policies_in("default");
    let a: Vec<_> = all.iter().filter(|(k, _)| k.1.starts_with("a-")).collect();
    assert_eq!(a.len(), 2);
    assert!(std::sync::Arc::ptr_eq(&a[0].1.grants, &a[1].1.grants));
}

#[test]
fn references_to_missing_objects_are_named() {
    let tt = PATH_SPECIFIC
        .replace("matches: [metrics]", "matches: [metrics, nope]")
        .replace(
            "    matches: [metrics, nope]\n",
            "    matches: [metrics, nope]\n  - {kind: TCPRoute, name: gone}\n  - {kind: HTTPRouteGroup, name: later}\n",
        );
    let mut s = store(&format!("{}{tt}", base()));
    let reasons: Vec<String> = s
        .target_problems("default")
        .into_iter()
        .map(|(key, why)| format!("{}/{}: {why}", key.0, key.1))
        .collect();
    assert_eq!(
        reasons,
        [
            "default/path-specific: spec.rules[0].matches: HTTPRouteGroup default/the-routes has no match nope: allowed nothing",
            "default/path-specific: spec.rules[1]: TCPRoute default/gone does not exist: the rule allows nothing",
            "default/path-specific: spec.rules[2]: HTTPRouteGroup default/later does not exist: the rule allows nothing",
        ]
    );
    let later = ROUTES
        .split("---")
        .next()
        .unwrap()
        .replace("the-routes", "later");
    load(&mut s, &later).unwrap();
    assert_eq!(s.target_problems("default").len(), 2);
    assert!(s.target_problems("elsewhere").is_empty());
}
