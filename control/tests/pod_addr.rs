//! Watches on a pod's own IP:port (discovery.proto: "returns exactly that
//! pod as the only endpoint"): a real weft-control on a directory source,
//! a tonic client. A meshed pod no Service selects is answered with its
//! identity; the unmeshed pod behind a headless Service without one; an IP
//! no pod holds is DoesNotExist until a pod gets it; a pod that changes or
//! goes is followed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::Streaming;
use weft_control::config::{Config, Source};
use weft_control::run::{run, Bound};
use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::discovery_client::DiscoveryClient;
use weft_proto::discovery::v1::update::Kind as U;

const WAIT: Duration = Duration::from_secs(10);

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn pod(name: &str, ns: &str, ip: &str, meshed: bool) -> String {
    let proxy = if meshed { ", {name: weft-proxy}" } else { "" };
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  serviceAccountName: {name}-sa
  containers: [{{name: app}}{proxy}]
status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}
"
    )
}

const HEADLESS: &str = "apiVersion: v1
kind: Service
metadata: {name: cache, namespace: shop}
spec:
  clusterIP: None
  ports: [{name: redis, port: 6379}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: cache-a, namespace: shop, labels: {kubernetes.io/service-name: cache}}
addressType: IPv4
ports: [{name: redis, port: 6379}]
endpoints:
- addresses: [10.244.2.2]
  targetRef: {kind: Pod, name: cache-0, namespace: shop}
";

async fn next(stream: &mut Streaming<pb::Update>) -> U {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an update in time")
        .expect("no stream error")
        .expect("the stream stays open")
        .kind
        .expect("an update has a kind")
}

/// The one endpoint of a Snapshot of a pod address.
fn only(s: pb::Snapshot) -> pb::Endpoint {
    assert_eq!(s.endpoints.len(), 1, "{s:?}");
    s.endpoints.into_iter().next().unwrap()
}

fn addr_of(e: &pb::Endpoint) -> SocketAddr {
    SocketAddr::try_from(e.addr.as_ref().unwrap()).unwrap()
}

#[tokio::test]
async fn a_pods_own_address_is_that_pod_with_its_identity() {
    let dir = Dir(std::env::temp_dir().join(format!("weft-pod-addr-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    write(&dir.0, "pg.yaml", &pod("pg-0", "db", "10.244.1.5", true));
    write(
        &dir.0,
        "cache.yaml",
        &format!(
            "{HEADLESS}---\n{}",
            pod("cache-0", "shop", "10.244.2.2", false)
        ),
    );
    let config = Config {
        poll_interval: Duration::from_millis(50),
        ..Config::loopback(Source::Files(dir.0.clone()))
    };
    let bound = Bound::bind(&config).await.unwrap();
    let (grpc, admin) = bound.addrs().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let plane = tokio::spawn(run(config, bound, async {
        let _ = stopped.await;
    }));
    weft_tests::until_ready(admin, WAIT).await;
    let mut client = DiscoveryClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let mut watch = async |addr: &str| {
        let addr: SocketAddr = addr.parse().unwrap();
        client
            .watch(pb::WatchRequest {
                destination: Some(pb::watch_request::Destination::Addr(addr.into())),
                context: None,
            })
            .await
            .unwrap()
            .into_inner()
    };

    // A meshed pod that no Service selects: itself, with its identity.
    let mut pg = watch("10.244.1.5:5432").await;
    let U::Snapshot(s) = next(&mut pg).await else {
        panic!("a snapshot of the pod")
    };
    let profile = s.profile.clone().unwrap();
    assert_eq!((profile.service_name.as_str(), profile.port), ("", 5432));
    let e = only(s);
    assert_eq!(addr_of(&e), "10.244.1.5:5432".parse().unwrap());
    assert!(e.meshed);
    assert_eq!(
        e.tls_identity.as_ref().map(|t| t.spiffe_id.as_str()),
        Some("spiffe://cluster.local/ns/db/sa/pg-0-sa")
    );
    assert_eq!(
        (e.pod_name.as_str(), e.pod_namespace.as_str()),
        ("pg-0", "db")
    );

    // The unmeshed pod of a headless Service: itself, no identity.
    let mut cache = watch("10.244.2.2:6379").await;
    let U::Snapshot(s) = next(&mut cache).await else {
        panic!("a snapshot of the pod")
    };
    let e = only(s);
    assert_eq!(addr_of(&e), "10.244.2.2:6379".parse().unwrap());
    assert!(!e.meshed && e.tls_identity.is_none(), "{e:?}");

    // An IP no pod holds, until one does.
    let mut later = watch("10.244.3.3:8080").await;
    assert!(matches!(next(&mut later).await, U::DoesNotExist(_)));
    write(
        &dir.0,
        "api.yaml",
        &pod("api-0", "shop", "10.244.3.3", true),
    );
    let U::Snapshot(s) = next(&mut later).await else {
        panic!("a snapshot once the pod exists")
    };
    assert_eq!(
        only(s).tls_identity.unwrap().spiffe_id,
        "spiffe://cluster.local/ns/shop/sa/api-0-sa"
    );

    // The pod loses its proxy: the endpoint is replaced, unmeshed.
    write(&dir.0, "pg.yaml", &pod("pg-0", "db", "10.244.1.5", false));
    let U::Add(a) = next(&mut pg).await else {
        panic!("the endpoint replaced")
    };
    assert_eq!(a.endpoints.len(), 1);
    assert!(!a.endpoints[0].meshed && a.endpoints[0].tls_identity.is_none());

    // The pod goes: the address is nobody's.
    std::fs::remove_file(dir.0.join("pg.yaml")).unwrap();
    assert!(matches!(next(&mut pg).await, U::DoesNotExist(_)));

    drop((pg, cache, later, client));
    let _ = stop.send(());
    let result = tokio::time::timeout(WAIT, plane).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
}
