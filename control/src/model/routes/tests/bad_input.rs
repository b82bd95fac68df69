//! Bad input: each refused with a reason naming the field, the last
//! good version kept.

use super::*;

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
