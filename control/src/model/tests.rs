//! The model's cases, without I/O: objects in, destinations out.

use super::*;
use serde_json::json;
use std::net::SocketAddr;
use weft_proto::discovery::v1 as pb;

fn svc(v: serde_json::Value) -> Object {
    Object::Service(Box::new(serde_json::from_value(v).unwrap()))
}
fn slice(v: serde_json::Value) -> Object {
    Object::Slice(Box::new(serde_json::from_value(v).unwrap()))
}
fn pod(v: serde_json::Value) -> Object {
    Object::Pod(Box::new(serde_json::from_value(v).unwrap()))
}

fn web() -> Object {
    svc(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00:10:96::20"],
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                           {"name": "admin", "port": 9000, "targetPort": 9000, "appProtocol": "grpc"}]}
    }))
}

fn web_slice(name: &str, family: &str, http_port: u16, ips: &[&str]) -> Object {
    let endpoints: Vec<_> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            json!({
                "addresses": [ip],
                "conditions": {"ready": true},
                "nodeName": format!("node-{i}"),
                "zone": "zone-a",
                "targetRef": {"kind": "Pod", "name": format!("web-{name}-{i}"), "namespace": "shop"}
            })
        })
        .collect();
    slice(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": family,
        "ports": [{"name": "http", "port": http_port, "protocol": "TCP"}, {"name": "admin", "port": 9000}],
        "endpoints": endpoints
    }))
}

fn key(ns: &str, name: &str) -> ObjKey {
    (ns.into(), name.into())
}

fn dest(store: &Store, port: u16) -> DestView {
    store
        .destinations(&key("shop", "web"))
        .into_iter()
        .find(|(k, _)| k.port == port)
        .map(|(_, v)| v)
        .expect("destination exists")
}

fn addrs(view: &DestView) -> Vec<String> {
    view.endpoints.keys().map(SocketAddr::to_string).collect()
}

#[test]
fn named_target_ports_resolve_per_slice_and_slices_merge() {
    let mut s = Store::new("cluster.local", "cluster.local");
    s.apply(&web()).unwrap();
    // Two slices whose pods map the port name `http` to different numbers.
    s.apply(&web_slice("a", "IPv4", 8080, &["10.244.0.2", "10.244.0.3"]))
        .unwrap();
    s.apply(&web_slice("b", "IPv4", 8081, &["10.244.0.4"]))
        .unwrap();
    let v = dest(&s, 80);
    assert_eq!(
        addrs(&v),
        ["10.244.0.2:8080", "10.244.0.3:8080", "10.244.0.4:8081"]
    );
    assert_eq!(v.profile.fully_qualified_name, "web.shop.svc.cluster.local");
    assert_eq!(v.profile.port_name, "http");
    let grpc = dest(&s, 9000);
    assert_eq!(grpc.profile.protocol, pb::Protocol::Grpc as i32);
    assert_eq!(addrs(&grpc).len(), 3);
}

#[test]
fn dual_stack_slices_merge_into_one_destination() {
    let mut s = Store::new("cluster.local", "cluster.local");
    s.apply(&web()).unwrap();
    s.apply(&web_slice("v4", "IPv4", 8080, &["10.244.0.2"]))
        .unwrap();
    s.apply(&web_slice("v6", "IPv6", 8080, &["fd00:10:244::2"]))
        .unwrap();
    assert_eq!(
        addrs(&dest(&s, 80)),
        ["10.244.0.2:8080", "[fd00:10:244::2]:8080"]
    );
    assert_eq!(
        s.cluster_ips(&key("shop", "web")),
        [
            "10.96.0.20".parse::<std::net::IpAddr>().unwrap(),
            "fd00:10:96::20".parse().unwrap()
        ]
    );
}

#[test]
fn a_slice_moving_to_another_service_touches_both() {
    let mut s = Store::new("cluster.local", "cluster.local");
    s.apply(&web()).unwrap();
    s.apply(&web_slice("a", "IPv4", 8080, &["10.244.0.2"]))
        .unwrap();
    let moved = slice(json!({
        "metadata": {"name": "a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "api"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["10.244.0.2"]}]
    }));
    let touched = s.apply(&moved).unwrap();
    assert_eq!(
        touched,
        Touched::from([key("shop", "api"), key("shop", "web")])
    );
    assert!(dest(&s, 80).endpoints.is_empty());
}

#[test]
fn conditions_identity_and_meshing_come_from_slices_and_pods() {
    let mut s = Store::new("cluster.local", "example.org");
    s.apply(&web()).unwrap();
    s.apply(&slice(json!({
        "metadata": {"name": "a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": ["10.244.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true},
             "hints": {"forZones": [{"name": "zone-b"}]},
             "targetRef": {"kind": "Pod", "name": "web-0"}},
            {"addresses": ["10.244.0.3"], "targetRef": {"kind": "Pod", "name": "web-1"}}
        ]
    })))
    .unwrap();
    let touched = s
        .apply(&pod(json!({
            "metadata": {"name": "web-0", "namespace": "shop", "annotations": {"weft.dev/opaque-ports": "8080"}},
            "spec": {"serviceAccountName": "web-sa", "containers": [{"name": "app"}, {"name": "weft-proxy"}]}
        })))
        .unwrap();
    assert_eq!(touched, Touched::from([key("shop", "web")]));
    let v = dest(&s, 80);
    let e0 = &v.endpoints[&"10.244.0.2:8080".parse().unwrap()];
    let c = e0.conditions.as_ref().unwrap();
    assert_eq!((c.ready, c.serving, c.terminating), (false, true, true));
    assert!(e0.meshed);
    assert_eq!(
        e0.tls_identity.as_ref().unwrap().spiffe_id,
        "spiffe://example.org/ns/shop/sa/web-sa"
    );
    assert_eq!(e0.hints.as_ref().unwrap().for_zones, ["zone-b"]);
    assert_eq!(e0.protocol_hint, pb::Protocol::Opaque as i32);
    // No pod known: unmeshed, no identity, ready by default.
    let e1 = &v.endpoints[&"10.244.0.3:8080".parse().unwrap()];
    assert!(!e1.meshed && e1.tls_identity.is_none());
    assert!(e1.conditions.as_ref().unwrap().ready);
}

#[test]
fn headless_external_name_and_policies() {
    let mut s = Store::new("cluster.local", "cluster.local");
    s.apply(&svc(json!({
        "metadata": {"name": "db", "namespace": "shop", "annotations": {"weft.dev/opaque-ports": "5432"}},
        "spec": {"clusterIP": "None", "ports": [{"port": 5432}],
                 "internalTrafficPolicy": "Local", "trafficDistribution": "PreferClose"}
    })))
    .unwrap();
    s.apply(&svc(json!({
        "metadata": {"name": "ext", "namespace": "shop"},
        "spec": {"type": "ExternalName", "externalName": "db.example.com", "ports": [{"port": 443}]}
    })))
    .unwrap();
    let db = &s.destinations(&key("shop", "db"))[0].1;
    assert!(db.profile.headless);
    assert_eq!(db.profile.protocol, pb::Protocol::Opaque as i32);
    assert_eq!(
        db.profile.internal_traffic_policy,
        pb::InternalTrafficPolicy::Local as i32
    );
    assert_eq!(
        db.profile.traffic_distribution,
        pb::TrafficDistribution::PreferClose as i32
    );
    let ext = &s.destinations(&key("shop", "ext"))[0].1;
    assert_eq!(ext.profile.external_name, "db.example.com");
}

#[test]
fn names_resolve_in_every_form() {
    let mut s = Store::new("cluster.local", "cluster.local");
    s.apply(&web()).unwrap();
    for host in [
        "web",
        "web.shop",
        "web.shop.svc",
        "web.shop.svc.cluster.local",
        "WEB.shop.svc.cluster.local.",
    ] {
        assert_eq!(
            s.service_by_name(host, "shop"),
            Some(key("shop", "web")),
            "{host}"
        );
    }
    assert_eq!(s.service_by_name("web", "other"), None);
    assert_eq!(s.service_by_name("web.shop.svc.other.domain", "shop"), None);
    assert_eq!(s.service_by_name("a.b.c.d.e.f", "shop"), None);
}

#[test]
fn invalid_objects_are_refused_and_good_state_stays() {
    let mut s = Store::new("cluster.local", "cluster.local");
    s.apply(&web()).unwrap();
    s.apply(&web_slice("a", "IPv4", 8080, &["10.244.0.2"]))
        .unwrap();
    let cases = [
        (
            svc(
                json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"ports": [{"port": 70000}]}}),
            ),
            "spec.ports[0].port 70000 is out of range 1-65535",
        ),
        (
            svc(json!({"metadata": {"namespace": "shop"}, "spec": {}})),
            "Service without metadata.name",
        ),
        (
            svc(
                json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"clusterIP": "ten"}}),
            ),
            "spec.clusterIPs: 'ten' is not an IP address",
        ),
        (
            slice(
                json!({"metadata": {"name": "a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
                      "addressType": "IPv4", "ports": [{"name": "http", "port": 0}], "endpoints": []}),
            ),
            "ports[0].port 0 is out of range 1-65535",
        ),
        (
            slice(
                json!({"metadata": {"name": "a", "namespace": "shop"}, "addressType": "IPv4",
                      "endpoints": [{"addresses": ["fd00::1"]}]}),
            ),
            "endpoints[0] address fd00::1 is not of addressType IPv4",
        ),
        (
            svc(
                json!({"metadata": {"name": "web", "namespace": "shop", "annotations": {"weft.dev/opaque-ports": "http"}}}),
            ),
            "annotation weft.dev/opaque-ports: 'http' is not a port",
        ),
        (
            svc(
                json!({"metadata": {"name": "web", "namespace": "shop", "annotations": {"weft.dev/retry-limit": "many"}}}),
            ),
            "annotation weft.dev/retry-limit: 'many' is not a number in 0..=10",
        ),
    ];
    for (obj, reason) in cases {
        assert_eq!(s.apply(&obj).unwrap_err(), reason);
    }
    assert_eq!(addrs(&dest(&s, 80)), ["10.244.0.2:8080"]);
    assert_eq!(dest(&s, 80).profile.port, 80);
}

#[test]
fn deletes_remove_endpoints_and_services() {
    let mut s = Store::new("cluster.local", "cluster.local");
    s.apply(&web()).unwrap();
    s.apply(&web_slice("a", "IPv4", 8080, &["10.244.0.2"]))
        .unwrap();
    assert_eq!(
        s.delete(Kind::Slice, &key("shop", "a")),
        Touched::from([key("shop", "web")])
    );
    assert!(dest(&s, 80).endpoints.is_empty());
    s.delete(Kind::Service, &key("shop", "web"));
    assert!(s.destinations(&key("shop", "web")).is_empty());
    assert_eq!(s.count(Kind::Slice), 0);
}

#[test]
fn retry_and_timeout_annotations_reach_the_profile() {
    let mut s = Store::new("cluster.local", "cluster.local");
    s.apply(&svc(json!({
        "metadata": {"name": "web", "namespace": "shop", "annotations": {
            "weft.dev/retry-http": "gateway-error,connect-failure",
            "weft.dev/retry-grpc": "unavailable",
            "weft.dev/retry-budget": "0.25",
            "weft.dev/timeout": "2s",
            "weft.dev/retry-timeout": "300ms"}},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}
    })))
    .unwrap();
    let p = dest(&s, 80).profile;
    let retry = p.retry.expect("a retry policy");
    let http = retry.http.unwrap();
    assert!(http.gateway_error && http.connect_failure && !http.server_error);
    assert_eq!(retry.grpc.unwrap().status_codes, [14]);
    assert_eq!(retry.limit, 2);
    let budget = retry.budget.unwrap();
    assert_eq!(
        (budget.retry_ratio, budget.min_retries_per_second),
        (0.25, 10)
    );
    let t = p.timeouts.unwrap();
    assert_eq!(t.request.unwrap().seconds, 2);
    assert_eq!(t.per_try.unwrap().nanos, 300_000_000);

    // Without annotations: neither.
    s.apply(&web()).unwrap();
    let p = dest(&s, 80).profile;
    assert!(p.retry.is_none() && p.timeouts.is_none());
}

#[test]
fn protocol_hints_say_only_what_the_endpoint_adds_to_the_profile() {
    let mut s = Store::new("cluster.local", "cluster.local");
    s.apply(&web()).unwrap();
    s.apply(&web_slice("a", "IPv4", 8080, &["10.244.0.2", "10.244.0.3"]))
        .unwrap();
    // web-a-0 treats 8080 and 9000 as opaque; web-a-1 says nothing.
    s.apply(&pod(json!({
        "metadata": {"name": "web-a-0", "namespace": "shop",
                     "annotations": {"weft.dev/opaque-ports": "8080,9000"}},
        "spec": {"containers": [{"name": "app"}, {"name": "weft-proxy"}]}
    })))
    .unwrap();
    let hint = |s: &Store, port: u16, addr: &str| {
        let v = dest(s, port);
        let e = &v.endpoints[&addr.parse().unwrap()];
        (
            pb::Protocol::try_from(v.profile.protocol).unwrap(),
            pb::Protocol::try_from(e.protocol_hint).unwrap(),
        )
    };
    use pb::Protocol::*;
    // Port 80 (no appProtocol): the pod's opaque port is news.
    assert_eq!(hint(&s, 80, "10.244.0.2:8080"), (Unspecified, Opaque));
    // The Service's protocol is the profile's, never repeated per endpoint.
    assert_eq!(hint(&s, 80, "10.244.0.3:8080"), (Unspecified, Unspecified));
    assert_eq!(hint(&s, 9000, "10.244.0.3:9000"), (Grpc, Unspecified));
    assert_eq!(hint(&s, 9000, "10.244.0.2:9000"), (Grpc, Opaque));

    // A Service that is opaque on that port already says it all.
    s.apply(&svc(json!({
        "metadata": {"name": "web", "namespace": "shop", "annotations": {"weft.dev/opaque-ports": "80"}},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    })))
    .unwrap();
    assert_eq!(hint(&s, 80, "10.244.0.2:8080"), (Opaque, Unspecified));
}
