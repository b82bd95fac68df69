//! Writes the seed inputs of the fuzz targets into `fuzz/corpus/<target>/`
//! (file names `seed-*`): spec examples, ClientHellos as rustls writes
//! them, route tables and policies as the control plane sends them, and
//! manifests and AdmissionReviews shaped like real ones.
//!
//! `cargo run -p weft-fuzz-targets --example seeds` (from the repo root).
//! Each seed goes through its target here first, so a seed that breaks an
//! invariant is caught before it is written.

use prost::Message;
use std::path::Path;
use weft_proto::discovery::v1 as d;
use weft_proto::policy::v1 as p;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut n = 0;
    for (target, seeds) in all() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        let (_, body) = weft_fuzz_targets::TARGETS
            .iter()
            .find(|(name, _)| *name == target)
            .expect("a target");
        for (i, seed) in seeds.iter().enumerate() {
            body(seed);
            std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("write a seed");
            n += 1;
        }
    }
    println!("{n} seeds written under {}", root.display());
}

fn all() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("detect", detect()),
        ("client_hello", hellos()),
        (
            "grpc_timeout",
            text(&["100m", "2S", "1H", "99999999n", "5M", "250u", "1m"]),
        ),
        ("trace_context", trace()),
        ("flags", flags()),
        ("route", route()),
        ("inbound_policy", policy()),
        ("manifest", text(&[SERVICE, LIST, ROUTES])),
        ("admission_review", reviews()),
    ]
}

fn text(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// ClientHellos that rustls writes, offering mesh and other ALPN names.
fn hellos() -> Vec<Vec<u8>> {
    use rustls::pki_types::ServerName;
    let alpns: [&[&[u8]]; 4] = [
        &[b"weft.h2"],
        &[b"weft.http1", b"h2"],
        &[b"h2", b"http/1.1"],
        &[],
    ];
    alpns
        .iter()
        .map(|alpn| {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            let name = ServerName::try_from("web.shop.svc.cluster.local").expect("a name");
            let mut conn = rustls::ClientConnection::new(config.into(), name).expect("a client");
            let mut out = Vec::new();
            conn.write_tls(&mut out).expect("a ClientHello");
            out
        })
        .collect()
}

fn detect() -> Vec<Vec<u8>> {
    // The first byte: bit 0 mesh, bit 1 HTTP, the rest the piece size.
    let hello = hellos().remove(0);
    let mut seeds = vec![];
    for (control, payload) in [
        (
            0b0000_0011,
            &b"GET /books HTTP/1.1\r\nHost: books\r\n\r\n"[..],
        ),
        (0b0001_0010, b"POST /x?y=1 HTTP/1.0\r\n\r\n"),
        (
            0b0000_0010,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        ),
        (0b1111_1110, b"SSH-2.0-OpenSSH_9.6\r\n"),
        (0b0000_0010, b"GET /long/path?q=1"),
        (0b0000_0001, &hello),
        (0b0100_0011, &hello),
    ] {
        let mut seed = vec![control];
        seed.extend_from_slice(payload);
        seeds.push(seed);
    }
    seeds
}

fn trace() -> Vec<Vec<u8>> {
    text(&[
        // W3C Trace Context's examples; a future version with more fields.
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-follows",
        // B3 single, with and without parent and sampling; only a decision.
        "\n80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        "\na3ce929d0e0e4736-00f067aa0ba902b7-d",
        "\n80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1",
        "\n0",
        // B3 multi-header.
        "\n\n463ac35c9f6413ad48485a3953bb6124\na2fb4a1d1a96d312\n0020000000000001\n1\n",
        "\n\na3ce929d0e0e4736\n00f067aa0ba902b7\n\n\n1",
    ])
}

fn flags() -> Vec<Vec<u8>> {
    let mut seeds = vec![];
    for (which, texts) in [
        (
            0u8,
            &["300ms", "1.5s", "1h30m", "2562047h", "250µs", "0", "-1s"][..],
        ),
        (1, &["8080", "8000-8100", "1-65535", " 4143 "]),
        (
            2,
            &[
                "10.0.0.0/8",
                "10.1.2.3",
                "fd00::1/8",
                "::/0",
                "192.168.0.0/33",
            ],
        ),
        (3, &["100m", "64Mi", "1e3", "0.5", "1E-3"]),
        (4, &["10", "0.5", "100"]),
        (
            5,
            &[concat!(
                "inject=enabled\n",
                "skip-inbound-ports=4190,8000-8100\n",
                "skip-outbound-ports=25,3306\n",
                "skip-outbound-cidrs=10.1.2.3/8,fd00::/8\n",
                "opaque-ports=3306,5432\n",
                "shutdown-grace=30s\n",
                "proxy-cpu-request=100m\n",
                "proxy-cpu-limit=1\n",
                "proxy-memory-limit=64Mi\n",
                "proxy-log-level=warn,weft_proxy=debug\n",
                "default-inbound-policy=all-authenticated\n",
                "trace-sample-percent=12.5\n",
            )],
        ),
    ] {
        for t in texts {
            let mut seed = vec![which];
            seed.extend_from_slice(t.as_bytes());
            seeds.push(seed);
        }
    }
    seeds
}

/// A message with its 2-byte length in front, then `rest`.
fn framed(message: &impl Message, rest: &[u8]) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut seed = u16::try_from(bytes.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    seed.extend_from_slice(&bytes);
    seed.extend_from_slice(rest);
    seed
}

fn backend(name: &str, weight: u32) -> d::WeightedBackend {
    d::WeightedBackend {
        backend: Some(d::Backend {
            target: Some(d::backend::Target::Service(d::ServicePort {
                name: name.into(),
                namespace: "shop".into(),
                port: 80,
                authority: format!("{name}.shop.svc.cluster.local:80"),
            })),
        }),
        weight,
        filters: vec![],
    }
}

fn value(kind: d::value_match::Kind) -> Option<d::ValueMatch> {
    Some(d::ValueMatch { kind: Some(kind) })
}

fn route() -> Vec<Vec<u8>> {
    use d::value_match::Kind as V;
    let name = |n: &str| {
        Some(d::RouteName {
            kind: "HTTPRoute".into(),
            namespace: "shop".into(),
            name: n.into(),
        })
    };
    let header = |n: &str, v: &str| d::Header {
        name: n.into(),
        value: v.into(),
    };
    let rules = vec![
        d::HttpRule {
            route: name("books-v2"),
            backends: vec![backend("books-v1", 90), backend("books-v2", 10)],
            filters: vec![
                d::HttpFilter {
                    kind: Some(d::http_filter::Kind::RequestHeaders(d::HeaderModifier {
                        set: vec![header("x-canary", "1")],
                        add: vec![header("x-route", "books")],
                        remove: vec!["cookie".into()],
                    })),
                },
                d::HttpFilter {
                    kind: Some(d::http_filter::Kind::Rewrite(d::UrlRewrite {
                        hostname: "books.internal".into(),
                        path: Some(d::PathModifier {
                            kind: Some(d::path_modifier::Kind::Prefix("/v2".into())),
                        }),
                    })),
                },
            ],
            timeouts: Some(d::Timeouts {
                request: Some(prost_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
                per_try: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 500_000_000,
                }),
            }),
            ..Default::default()
        },
        d::HttpRule {
            route: name("old"),
            filters: vec![d::HttpFilter {
                kind: Some(d::http_filter::Kind::Redirect(d::RequestRedirect {
                    scheme: "https".into(),
                    hostname: "shop.example".into(),
                    path: Some(d::PathModifier {
                        kind: Some(d::path_modifier::Kind::Full("/new".into())),
                    }),
                    port: 0,
                    status: 301,
                })),
            }],
            ..Default::default()
        },
        d::HttpRule {
            route: name("grpc"),
            backends: vec![backend("reviews", 1)],
            ..Default::default()
        },
    ];
    let matches = vec![
        d::HttpRouteMatch {
            rule: 0,
            path: Some(d::PathMatch {
                kind: Some(d::path_match::Kind::Prefix("/books".into())),
            }),
            methods: vec!["GET".into()],
            headers: vec![d::NamedValueMatch {
                name: "x-user".into(),
                value: value(V::Regex("^(alice|bob)$".into())),
            }],
            query_params: vec![d::NamedValueMatch {
                name: "beta".into(),
                value: value(V::Exact("1".into())),
            }],
        },
        d::HttpRouteMatch {
            rule: 1,
            path: Some(d::PathMatch {
                kind: Some(d::path_match::Kind::Regex("/old/[0-9]+".into())),
            }),
            ..Default::default()
        },
    ];
    let grpc = vec![d::GrpcRouteMatch {
        rule: 2,
        service: value(V::Exact("shop.Reviews".into())),
        method: value(V::Regex("Get.*".into())),
        headers: vec![],
    }];
    let routes = d::Routes {
        consumer_namespace: "shop".into(),
        http: Some(d::HttpRoutes {
            rules,
            matches,
            grpc_matches: grpc,
            unmatched: d::Unmatched::NotFound as i32,
        }),
        tcp: Some(d::TcpRoutes {
            backends: vec![backend("books-v1", 1)],
            route: None,
        }),
    };
    let profile = d::Profile {
        service_name: "books".into(),
        service_namespace: "shop".into(),
        port: 80,
        timeouts: Some(d::Timeouts {
            request: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
            per_try: None,
        }),
        retry: Some(d::RetryPolicy {
            http: Some(d::HttpRetryConditions {
                server_error: true,
                gateway_error: true,
                connect_failure: true,
                status_codes: vec![429],
            }),
            limit: 2,
            budget: Some(d::RetryBudget {
                retry_ratio: 0.2,
                min_retries_per_second: 10,
                ttl: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![
        framed(&routes, b"GET /books/1?beta=1\nhost: books\nx-user: alice"),
        framed(&routes, b"GET /old/42?x=y\nhost: books:8080"),
        framed(
            &routes,
            b"POST /shop.Reviews/GetReview\ncontent-type: application/grpc\nhost: reviews",
        ),
        framed(&routes, b"GET /nothing"),
        framed(&profile, b"GET /"),
    ]
}

fn policy() -> Vec<Vec<u8>> {
    let route = |name: &str, path: p::path_match::Kind, methods: &[&str]| p::HttpRouteMatch {
        name: name.into(),
        path: Some(p::PathMatch { kind: Some(path) }),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        headers: vec![p::HeaderMatch {
            name: "x-team".into(),
            value: Some(p::header_match::Value::Regex("ops|web".into())),
        }],
    };
    let policy = p::InboundPolicy {
        default_policy: p::DefaultPolicy::AllowMeshed as i32,
        protocol: p::Protocol::Http1 as i32,
        authorizations: vec![
            p::Authorization {
                name: "web-reads".into(),
                clients: vec![p::ClientMatch {
                    kind: Some(p::client_match::Kind::ServiceAccount(
                        p::ServiceAccountRef {
                            namespace: "shop".into(),
                            name: "web".into(),
                        },
                    )),
                }],
                http_routes: vec![
                    route(
                        "books",
                        p::path_match::Kind::Prefix("/books".into()),
                        &["GET"],
                    ),
                    route("admin", p::path_match::Kind::Regex("/admin/.*".into()), &[]),
                ],
            },
            p::Authorization {
                name: "prometheus".into(),
                clients: vec![p::ClientMatch {
                    kind: Some(p::client_match::Kind::SpiffeId(
                        "spiffe://cluster.local/ns/monitoring/sa/prometheus".into(),
                    )),
                }],
                http_routes: vec![],
            },
        ],
        default_policy_source: "namespace".into(),
    };
    let deny = p::InboundPolicy {
        default_policy: p::DefaultPolicy::Deny as i32,
        protocol: p::Protocol::Opaque as i32,
        ..Default::default()
    };
    vec![
        framed(
            &policy,
            b"spiffe://cluster.local/ns/shop/sa/web\nGET /books/%2e%2e/admin/x\nx-team: web",
        ),
        framed(
            &policy,
            b"spiffe://cluster.local/ns/monitoring/sa/prometheus\n",
        ),
        framed(&policy, b"\nGET /books"),
        framed(&deny, b"spiffe://cluster.local/ns/ops/sa/web\n"),
    ]
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: books
  namespace: shop
  annotations:
    weft.dev/opaque-ports: \"3306\"
spec:
  clusterIP: 10.96.0.20
  ports:
  - name: http
    port: 80
    targetPort: http
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: books-abc
  namespace: shop
  labels:
    kubernetes.io/service-name: books
addressType: IPv4
ports:
- name: http
  port: 8080
endpoints:
- addresses: [10.244.1.5]
  conditions: {ready: true, serving: true, terminating: false}
  zone: zone-a
  targetRef: {kind: Pod, name: books-1, namespace: shop}
";

const LIST: &str = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: shop
    annotations: {weft.dev/inject: enabled}
- apiVersion: v1
  kind: Pod
  metadata: {name: books-1, namespace: shop, labels: {app: books}}
  spec:
    serviceAccountName: books
    containers: [{name: app, image: books:1, ports: [{name: http, containerPort: 8080}]}]
  status: {podIP: 10.244.1.5}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: skipped}
";

const ROUTES: &str = "apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: books, namespace: shop}
spec:
  service: books
  backends:
  - {service: books-v1, weight: 90}
  - {service: books-v2, weight: 10}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: books, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: books, port: 80}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /v2}
      headers: [{type: RegularExpression, name: x-user, value: \"^a.*\"}]
    timeouts: {request: 2s, backendRequest: 500ms}
    backendRefs: [{name: books-v2, port: 80, weight: 1}]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: web-books, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: books, namespace: shop}
  sources: [{kind: ServiceAccount, name: web, namespace: shop}]
  rules: [{kind: HTTPRouteGroup, name: books-routes, matches: [reads]}]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: books-routes, namespace: shop}
spec:
  matches: [{name: reads, pathRegex: \"/books/.*\", methods: [GET]}]
";

fn reviews() -> Vec<Vec<u8>> {
    let review = |operation: &str, annotations: serde_json::Value| {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "generateName": "books-7d9c-",
                        "namespace": "shop",
                        "labels": {"app": "books"},
                        "annotations": annotations,
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                            "name": "books-7d9c", "uid": "1", "controller": true}]
                    },
                    "spec": {
                        "serviceAccountName": "books",
                        "containers": [{"name": "app", "image": "books:1",
                            "ports": [{"containerPort": 8080}]}]
                    }
                },
                "dryRun": false
            }
        })
        .to_string()
        .into_bytes()
    };
    vec![
        review("CREATE", serde_json::json!({"weft.dev/inject": "enabled"})),
        review(
            "CREATE",
            serde_json::json!({"weft.dev/inject": "enabled", "weft.dev/skip-outbound-ports": "25,3306",
                "weft.dev/proxy-cpu-limit": "10m", "weft.dev/proxy-cpu-request": "1"}),
        ),
        review("CREATE", serde_json::json!({})),
        review("UPDATE", serde_json::json!({"weft.dev/inject": "enabled"})),
    ]
}
