//! The model's cases, without I/O: objects in, destinations out.

use super::*;
use serde_json::json;
use std::collections::BTreeSet;
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
        Touched::services([key("shop", "api"), key("shop", "web")])
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
    assert_eq!(touched.services, BTreeSet::from([key("shop", "web")]));
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
        Touched::services([key("shop", "web")])
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

fn pod_at(name: &str, ip: &str, extra: serde_json::Value) -> Object {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "db"},
        "spec": {"serviceAccountName": "pg", "nodeName": "node-1",
                 "containers": [{"name": "postgres"}, {"name": "weft-proxy"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    });
    merge(&mut v, extra);
    pod(v)
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

#[test]
fn a_pod_ip_is_that_pod_alone_with_its_identity() {
    let mut s = Store::new("cluster.local", "example.org");
    let ip: std::net::IpAddr = "10.244.1.5".parse().unwrap();
    let touched = s.apply(&pod_at("pg-0", "10.244.1.5", json!({}))).unwrap();
    assert_eq!(touched.pod_ips, BTreeSet::from([ip]));
    assert!(touched.services.is_empty(), "no Service selects it");

    let pod = s.pod_at(ip).expect("the pod's IP is known");
    let v = pod.at("10.244.1.5:5432".parse().unwrap());
    assert_eq!(
        v.profile.service_name, "",
        "no Service behind a pod address"
    );
    assert_eq!(v.profile.port, 5432);
    assert_eq!(v.profile.protocol, pb::Protocol::Unspecified as i32);
    assert_eq!(addrs(&v), ["10.244.1.5:5432"]);
    let e = &v.endpoints[&"10.244.1.5:5432".parse().unwrap()];
    assert!(e.meshed);
    assert_eq!(
        e.tls_identity.as_ref().unwrap().spiffe_id,
        "spiffe://example.org/ns/db/sa/pg"
    );
    assert_eq!(
        (e.pod_name.as_str(), e.pod_namespace.as_str()),
        ("pg-0", "db")
    );
    assert_eq!(e.node_name, "node-1");
    let c = e.conditions.as_ref().unwrap();
    assert!(c.ready && c.serving && !c.terminating);
    // Any port of the pod is the pod.
    assert_eq!(
        addrs(&pod.at("10.244.1.5:9187".parse().unwrap())),
        ["10.244.1.5:9187"]
    );

    // Opaque ports of the pod, then of its namespace, reach the profile.
    s.apply(&pod_at(
        "pg-0",
        "10.244.1.5",
        json!({"metadata": {"annotations": {"weft.dev/opaque-ports": "5432"}}}),
    ))
    .unwrap();
    let at = |s: &Store, port: u16| {
        s.pod_at(ip)
            .unwrap()
            .at(SocketAddr::new(ip, port))
            .profile
            .protocol
    };
    assert_eq!(at(&s, 5432), pb::Protocol::Opaque as i32);
    assert_eq!(at(&s, 9187), pb::Protocol::Unspecified as i32);
    let touched = s
        .apply(&Object::Namespace(Box::new(
            serde_json::from_value(json!({"metadata": {"name": "db",
                "annotations": {"weft.dev/opaque-ports": "9187"}}}))
            .unwrap(),
        )))
        .unwrap();
    assert_eq!(touched.pod_ips, BTreeSet::from([ip]));
    assert_eq!(at(&s, 9187), pb::Protocol::Opaque as i32);

    // Unmeshed: the pod, without identity.
    s.apply(&pod_at(
        "pg-0",
        "10.244.1.5",
        json!({"spec": {"containers": [{"name": "postgres"}]}}),
    ))
    .unwrap();
    let v = s.pod_at(ip).unwrap().at(SocketAddr::new(ip, 5432));
    let e = v.endpoints.values().next().unwrap();
    assert!(!e.meshed && e.tls_identity.is_none());

    // Deleted: the IP is nobody's.
    let touched = s.delete(Kind::Pod, &key("db", "pg-0"));
    assert_eq!(touched.pod_ips, BTreeSet::from([ip]));
    assert_eq!(s.pod_at(ip), None);
}

#[test]
fn pod_ips_that_are_not_the_pods_own_are_not_answered() {
    let mut s = Store::new("cluster.local", "cluster.local");
    let ip = |a: &str| a.parse::<std::net::IpAddr>().unwrap();
    // The host's network: its IP is the node's.
    s.apply(&pod_at(
        "agent",
        "192.168.0.10",
        json!({"spec": {"hostNetwork": true}}),
    ))
    .unwrap();
    assert_eq!(s.pod_at(ip("192.168.0.10")), None);
    // A finished pod: its IP may be another pod's by now.
    s.apply(&pod_at(
        "job",
        "10.244.1.7",
        json!({"status": {"phase": "Succeeded"}}),
    ))
    .unwrap();
    assert_eq!(s.pod_at(ip("10.244.1.7")), None);
    // A pod that finishes gives its IP up.
    s.apply(&pod_at("web-0", "10.244.1.8", json!({}))).unwrap();
    assert!(s.pod_at(ip("10.244.1.8")).is_some());
    let touched = s
        .apply(&pod_at(
            "web-0",
            "10.244.1.8",
            json!({"status": {"phase": "Failed"}}),
        ))
        .unwrap();
    assert_eq!(touched.pod_ips, BTreeSet::from([ip("10.244.1.8")]));
    assert_eq!(s.pod_at(ip("10.244.1.8")), None);
    // Two pods on one IP (one being replaced): the one not being deleted.
    s.apply(&pod_at(
        "a-old",
        "10.244.1.9",
        json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
    ))
    .unwrap();
    s.apply(&pod_at("b-new", "10.244.1.9", json!({}))).unwrap();
    assert_eq!(s.pod_at(ip("10.244.1.9")).unwrap().key, key("db", "b-new"));
    s.delete(Kind::Pod, &key("db", "b-new"));
    assert_eq!(s.pod_at(ip("10.244.1.9")).unwrap().key, key("db", "a-old"));
    // Dual stack: both addresses are the pod's; a bad one refuses the pod.
    s.apply(&pod_at(
        "v6",
        "10.244.1.10",
        json!({"status": {"podIPs": [{"ip": "10.244.1.10"}, {"ip": "fd00:10:244::10"}]}}),
    ))
    .unwrap();
    assert!(s.pod_at(ip("fd00:10:244::10")).is_some());
    assert_eq!(
        s.apply(&pod_at("bad", "ten", json!({}))).unwrap_err(),
        "status.podIPs[0] 'ten' is not an IP address"
    );
}

#[test]
fn a_native_sidecar_makes_a_pod_meshed_and_a_plain_init_container_does_not() {
    use k8s_openapi::api::core::v1::Pod;
    let info = |init: serde_json::Value| {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "shop"},
            "spec": {"containers": [{"name": "app"}], "initContainers": init},
        }))
        .unwrap();
        objects::PodInfo::from_k8s(&pod).unwrap().meshed
    };
    assert!(info(
        json!([{"name": "weft-init"}, {"name": "weft-proxy", "restartPolicy": "Always"}])
    ));
    assert!(
        !info(json!([{"name": "weft-proxy"}])),
        "runs to completion: no sidecar"
    );
    assert!(!info(json!([])));
}
