//! Encode/decode round trips, and the exact bytes of a few messages so that a
//! renumbered field (a silent wire break) fails here.

use std::time::Duration;

use prost::Message;
use weft_proto::discovery::v1 as d;
use weft_proto::identity::v1 as id;

fn addr(s: &str) -> d::SocketAddr {
    s.parse::<std::net::SocketAddr>().unwrap().into()
}

fn duration(d: Duration) -> prost_types::Duration {
    d.try_into().unwrap()
}

fn endpoint(a: &str, zone: &str, identity: Option<&str>) -> d::Endpoint {
    d::Endpoint {
        addr: Some(addr(a)),
        weight: 10_000,
        conditions: Some(d::EndpointConditions {
            ready: true,
            serving: true,
            terminating: false,
        }),
        zone: zone.into(),
        node_name: format!("node-{zone}"),
        hints: Some(d::TopologyHints {
            for_zones: vec![zone.into()],
            for_nodes: vec![],
        }),
        tls_identity: identity.map(|id| d::TlsIdentity {
            spiffe_id: id.into(),
        }),
        meshed: identity.is_some(),
        pod_name: "web-5d8f7c9b4-x2x7k".into(),
        pod_namespace: "shop".into(),
        protocol_hint: d::Protocol::Http2.into(),
    }
}

/// A snapshot with every part of the profile set and two endpoints, IPv4 and
/// IPv6, one meshed and one not.
fn snapshot() -> d::Update {
    d::Update {
        kind: Some(d::update::Kind::Snapshot(d::Snapshot {
            profile: Some(d::Profile {
                service_name: "web".into(),
                service_namespace: "shop".into(),
                fully_qualified_name: "web.shop.svc.cluster.local".into(),
                port: 80,
                port_name: "http".into(),
                protocol: d::Protocol::Grpc.into(),
                external_name: String::new(),
                headless: false,
                internal_traffic_policy: d::InternalTrafficPolicy::Cluster.into(),
                traffic_distribution: d::TrafficDistribution::PreferClose.into(),
                timeouts: Some(d::Timeouts {
                    request: Some(duration(Duration::from_secs(10))),
                    per_try: Some(duration(Duration::from_millis(2_500))),
                }),
                retry: Some(d::RetryPolicy {
                    http: Some(d::HttpRetryConditions {
                        server_error: false,
                        gateway_error: true,
                        connect_failure: true,
                        status_codes: vec![429],
                    }),
                    grpc: Some(d::GrpcRetryConditions {
                        status_codes: vec![14, 4],
                    }),
                    limit: 3,
                    non_idempotent: false,
                    budget: Some(d::RetryBudget {
                        retry_ratio: 0.2,
                        min_retries_per_second: 10,
                        ttl: Some(duration(Duration::from_secs(10))),
                    }),
                }),
                routes: Some(routes()),
            }),
            endpoints: vec![
                endpoint(
                    "10.244.1.7:8080",
                    "zone-a",
                    Some("spiffe://cluster.local/ns/shop/sa/web"),
                ),
                endpoint("[fd00:10:244::9]:8080", "zone-b", None),
            ],
        })),
    }
}

#[test]
fn update_snapshot_round_trips() {
    let update = snapshot();
    let bytes = update.encode_to_vec();
    let decoded = d::Update::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded, update);

    let Some(d::update::Kind::Snapshot(snap)) = decoded.kind else {
        panic!("not a snapshot: {decoded:?}");
    };
    let profile = snap.profile.unwrap();
    assert_eq!(profile.protocol(), d::Protocol::Grpc);
    assert_eq!(
        profile.retry.unwrap().budget.unwrap().retry_ratio,
        0.2,
        "doubles survive the wire exactly"
    );
    let addrs: Vec<std::net::SocketAddr> = snap
        .endpoints
        .iter()
        .map(|e| e.addr.as_ref().unwrap().try_into().unwrap())
        .collect();
    assert_eq!(
        addrs,
        [
            "10.244.1.7:8080".parse().unwrap(),
            "[fd00:10:244::9]:8080".parse().unwrap()
        ]
    );
    assert!(
        snap.endpoints[1].tls_identity.is_none(),
        "unmeshed stays unmeshed"
    );
}

/// A canary split by an HTTPRoute rule with a header match, a filter, a
/// timeout and a retry, and a TCP split.
fn routes() -> d::Routes {
    let backend = |name: &str, weight| d::WeightedBackend {
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
    };
    d::Routes {
        consumer_namespace: String::new(),
        http: Some(d::HttpRoutes {
            rules: vec![d::HttpRule {
                route: Some(d::RouteName {
                    kind: "HTTPRoute".into(),
                    namespace: "shop".into(),
                    name: "web".into(),
                }),
                index: 0,
                filters: vec![d::HttpFilter {
                    kind: Some(d::http_filter::Kind::RequestHeaders(d::HeaderModifier {
                        set: vec![d::Header {
                            name: "x-canary".into(),
                            value: "1".into(),
                        }],
                        add: vec![],
                        remove: vec!["x-debug".into()],
                    })),
                }],
                backends: vec![backend("web-v1", 90), backend("web-v2", 10)],
                timeouts: Some(d::Timeouts {
                    request: Some(duration(Duration::from_secs(5))),
                    per_try: None,
                }),
                retry: None,
                retry_backoff: Some(duration(Duration::from_millis(25))),
            }],
            matches: vec![d::HttpRouteMatch {
                rule: 0,
                path: Some(d::PathMatch {
                    kind: Some(d::path_match::Kind::Prefix("/api".into())),
                }),
                methods: vec!["GET".into()],
                headers: vec![d::NamedValueMatch {
                    name: "x-user".into(),
                    value: Some(d::ValueMatch {
                        kind: Some(d::value_match::Kind::Regex("^(?:a.*)$".into())),
                    }),
                }],
                query_params: vec![],
            }],
            grpc_matches: vec![],
            unmatched: d::Unmatched::NotFound.into(),
        }),
        tcp: Some(d::TcpRoutes {
            backends: vec![backend("db-a", 1), backend("db-b", 1)],
            route: None,
        }),
    }
}

#[test]
fn routes_are_profile_field_13_and_old_clients_skip_them() {
    // Profile.routes is field 13 (13 << 3 | 2 = 0x6a).
    let p = d::Profile {
        routes: Some(d::Routes::default()),
        ..Default::default()
    };
    assert_eq!(p.encode_to_vec(), [0x6a, 0]);
    // Routes: consumer_namespace 1, http 2, tcp 3.
    let r = d::Routes {
        consumer_namespace: "n".into(),
        http: Some(Default::default()),
        tcp: Some(Default::default()),
    };
    assert_eq!(r.encode_to_vec(), [0x0a, 1, b'n', 0x12, 0, 0x1a, 0]);

    // A client built before field 13 reads the rest of the profile as it
    // was: prost skips unknown fields, like any protobuf decoder.
    #[derive(Clone, PartialEq, prost::Message)]
    struct OldProfile {
        #[prost(string, tag = "1")]
        service_name: String,
        #[prost(uint32, tag = "4")]
        port: u32,
    }
    let p = d::Profile {
        service_name: "web".into(),
        port: 80,
        routes: Some(routes()),
        ..Default::default()
    };
    let old = OldProfile::decode(p.encode_to_vec().as_slice()).unwrap();
    assert_eq!((old.service_name.as_str(), old.port), ("web", 80));
}

#[test]
fn update_remove_round_trips_and_is_not_confused_with_add() {
    let remove = d::Update {
        kind: Some(d::update::Kind::Remove(d::Remove {
            addrs: vec![addr("10.244.1.7:8080"), addr("[::1]:80")],
        })),
    };
    let decoded = d::Update::decode(remove.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, remove);
    assert!(matches!(decoded.kind, Some(d::update::Kind::Remove(_))));
}

#[test]
fn empty_variants_are_still_said() {
    // An empty message in a oneof is still encoded (tag + zero length), so
    // "no endpoints" and "does not exist" cannot be mistaken for "nothing".
    for kind in [
        d::update::Kind::NoEndpoints(d::NoEndpoints {}),
        d::update::Kind::DoesNotExist(d::DoesNotExist {}),
    ] {
        let update = d::Update { kind: Some(kind) };
        let bytes = update.encode_to_vec();
        assert_eq!(bytes.len(), 2, "{bytes:?}");
        assert_eq!(d::Update::decode(bytes.as_slice()).unwrap(), update);
    }
}

#[test]
fn field_numbers_are_pinned() {
    // SocketAddr { ip (1): IpAddress { octets (1) }, port (2) }
    assert_eq!(
        addr("10.0.0.1:80").encode_to_vec(),
        [0x0a, 0x06, 0x0a, 0x04, 10, 0, 0, 1, 0x10, 80]
    );
    // Update.kind: snapshot 1, add 2, remove 3, no_endpoints 4,
    // does_not_exist 5, profile 6 (field number << 3 | wire type 2).
    let tags = [
        (d::update::Kind::Snapshot(Default::default()), 0x0a),
        (d::update::Kind::Add(Default::default()), 0x12),
        (d::update::Kind::Remove(Default::default()), 0x1a),
        (d::update::Kind::NoEndpoints(Default::default()), 0x22),
        (d::update::Kind::DoesNotExist(Default::default()), 0x2a),
        (d::update::Kind::Profile(Default::default()), 0x32),
    ];
    for (kind, tag) in tags {
        let bytes = d::Update { kind: Some(kind) }.encode_to_vec();
        assert_eq!(
            bytes,
            [tag, 0],
            "tag of {:?}",
            d::Update::decode(&bytes[..])
        );
    }
    // WatchRequest: addr 1, authority 2, context 3.
    let req = d::WatchRequest {
        destination: Some(d::watch_request::Destination::Authority("a:1".into())),
        context: Some(d::ProxyContext {
            pod_namespace: "n".into(),
            ..Default::default()
        }),
    };
    assert_eq!(
        req.encode_to_vec(),
        [0x12, 3, b'a', b':', b'1', 0x1a, 3, 0x0a, 1, b'n']
    );
}

#[test]
fn bad_bytes_are_an_error_not_a_panic() {
    let bytes = snapshot().encode_to_vec();
    assert!(d::Update::decode(&bytes[..bytes.len() - 3]).is_err());
}

#[test]
fn certify_request_and_response_round_trip() {
    // Not a real CSR: the API carries DER as opaque bytes, including zeros and
    // 0xff that a string field would reject.
    let csr: Vec<u8> = (0..=255u8).chain([0x30, 0x82, 0x01, 0x0a]).collect();
    let req = id::CertifyRequest {
        identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
        token: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDp3ZWIifQ.c2ln"
            .into(),
        certificate_signing_request: csr.clone(),
    };
    let decoded = id::CertifyRequest::decode(req.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, req);
    assert_eq!(decoded.certificate_signing_request, csr);

    let resp = id::CertifyResponse {
        leaf_certificate: vec![0x30, 0x82, 0x02, 0x00, 0x00, 0xff],
        intermediate_certificates: vec![vec![0x30, 1], vec![0x30, 2]],
        valid_until: Some(prost_types::Timestamp {
            seconds: 1_900_000_000,
            nanos: 500,
        }),
    };
    let decoded = id::CertifyResponse::decode(resp.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, resp);
    assert_eq!(
        decoded.intermediate_certificates.len(),
        2,
        "order and count kept"
    );
}

#[test]
fn policy_field_numbers_and_enum_values_are_pinned() {
    use weft_proto::policy::v1 as p;
    // InboundRequest: pod_namespace 1, pod_name 2, port 3.
    let req = p::InboundRequest {
        pod_namespace: "n".into(),
        pod_name: "a".into(),
        port: 80,
    };
    assert_eq!(
        req.encode_to_vec(),
        [0x0a, 1, b'n', 0x12, 1, b'a', 0x18, 80]
    );
    // InboundPolicy: default_policy 1, protocol 2, authorizations 3,
    // default_policy_source 4; Authorization: name 1, clients 2,
    // http_routes 3; ClientMatch: spiffe_id 1, service_account 2;
    // ServiceAccountRef: namespace 1, name 2.
    let policy = p::InboundPolicy {
        default_policy: p::DefaultPolicy::AllowAuthenticated.into(),
        protocol: p::Protocol::Opaque.into(),
        authorizations: vec![p::Authorization {
            name: "t".into(),
            clients: vec![p::ClientMatch {
                kind: Some(p::client_match::Kind::ServiceAccount(
                    p::ServiceAccountRef {
                        namespace: "n".into(),
                        name: "s".into(),
                    },
                )),
            }],
            http_routes: vec![],
        }],
        default_policy_source: "c".into(),
    };
    assert_eq!(
        policy.encode_to_vec(),
        [
            0x08, 5, 0x10, 1, 0x1a, 13, 0x0a, 1, b't', 0x12, 8, 0x12, 6, 0x0a, 1, b'n', 0x12, 1,
            b's', 0x22, 1, b'c'
        ]
    );
    // HttpRouteMatch: name 1, path 2, methods 3, headers 4; PathMatch:
    // exact 1, prefix 2, regex 3; HeaderMatch: name 1, exact 2, regex 3.
    let route = p::HttpRouteMatch {
        name: "r".into(),
        path: Some(p::PathMatch {
            kind: Some(p::path_match::Kind::Regex("x".into())),
        }),
        methods: vec!["GET".into()],
        headers: vec![p::HeaderMatch {
            name: "h".into(),
            value: Some(p::header_match::Value::Exact("v".into())),
        }],
    };
    assert_eq!(
        route.encode_to_vec(),
        [
            0x0a, 1, b'r', 0x12, 3, 0x1a, 1, b'x', 0x1a, 3, b'G', b'E', b'T', 0x22, 6, 0x0a, 1,
            b'h', 0x12, 1, b'v'
        ]
    );
    let values = [
        (p::DefaultPolicy::Unspecified, 0),
        (p::DefaultPolicy::AllowAll, 1),
        (p::DefaultPolicy::Deny, 2),
        (p::DefaultPolicy::AllowMeshed, 3),
        (p::DefaultPolicy::AllowSameNamespace, 4),
        (p::DefaultPolicy::AllowAuthenticated, 5),
    ];
    for (v, n) in values {
        assert_eq!(v as i32, n, "{v:?}");
    }
}
