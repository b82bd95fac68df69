//! The kube source end to end: weft-control's real kube-rs watchers against
//! the fake Kubernetes API server, and a tonic client watching a
//! destination through initial sync, live changes, a watch broken
//! mid-stream, and a relist after 410 Gone, with no endpoint lost or
//! duplicated.

use serde_json::json;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::Streaming;
use weft_control::config::{Config, Source};
use weft_control::run::{run, Bound};
use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::discovery_client::DiscoveryClient;
use weft_proto::discovery::v1::update::Kind as U;
use weft_tests::fakekube::{FakeKube, ENDPOINT_SLICES, NAMESPACES, PODS, SERVICES};

fn slice(name: &str, ips: &[&str]) -> serde_json::Value {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true},
                         "targetRef": {"kind": "Pod", "name": format!("web-{}", ip.rsplit('.').next().unwrap()), "namespace": "shop"}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    })
}

/// The endpoint set a client builds from the updates it received.
#[derive(Default)]
struct ClientView {
    endpoints: BTreeSet<SocketAddr>,
    meshed: BTreeSet<SocketAddr>,
}

impl ClientView {
    fn apply(&mut self, update: U) {
        let add = |this: &mut Self, eps: Vec<pb::Endpoint>| {
            for e in eps {
                let a = SocketAddr::try_from(e.addr.as_ref().unwrap()).unwrap();
                this.endpoints.insert(a);
                if e.meshed {
                    this.meshed.insert(a);
                } else {
                    this.meshed.remove(&a);
                }
            }
        };
        match update {
            U::Snapshot(s) => {
                self.endpoints.clear();
                self.meshed.clear();
                add(self, s.endpoints);
            }
            U::Add(a) => add(self, a.endpoints),
            U::Remove(r) => {
                for a in r.addrs {
                    let a = SocketAddr::try_from(&a).unwrap();
                    assert!(
                        self.endpoints.remove(&a),
                        "Remove of {a}, which the client did not have"
                    );
                    self.meshed.remove(&a);
                }
            }
            U::NoEndpoints(_) | U::DoesNotExist(_) => {
                self.endpoints.clear();
                self.meshed.clear();
            }
            U::Profile(_) => {}
        }
    }

    /// Reads updates until the set is `want` (and stays so for a moment).
    async fn until(&mut self, stream: &mut Streaming<pb::Update>, want: &[&str]) {
        let want: BTreeSet<SocketAddr> = want.iter().map(|a| a.parse().unwrap()).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.endpoints != want {
            let msg = tokio::time::timeout_at(deadline, stream.message())
                .await
                .unwrap_or_else(|_| panic!("have {:?}, want {want:?}", self.endpoints))
                .unwrap()
                .expect("stream open");
            self.apply(msg.kind.unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_source_syncs_follows_changes_and_survives_broken_watches_and_410() {
    let kube = FakeKube::start();
    kube.apply(&NAMESPACES, json!({"metadata": {"name": "shop"}}));
    kube.apply(&SERVICES, json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }));
    kube.apply(
        &ENDPOINT_SLICES,
        slice("web-a", &["10.244.0.2", "10.244.0.3"]),
    );

    let config = Config {
        kube_api_server: Some(kube.url()),
        poll_interval: Duration::from_millis(500),
        ..Config::loopback(Source::Kube)
    };
    let bound = Bound::bind(&config).await.unwrap();
    let (grpc, admin) = bound.addrs().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let plane = tokio::spawn(run(config, bound, async {
        let _ = stopped.await;
    }));
    // Watches are refused (UNAVAILABLE) until the first list is in.
    weft_tests::until_ready(admin, Duration::from_secs(15)).await;

    let mut client = DiscoveryClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let mut stream = client
        .watch(pb::WatchRequest {
            destination: Some(pb::watch_request::Destination::Authority(
                "web.shop.svc.cluster.local:80".into(),
            )),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut view = ClientView::default();

    // Initial sync.
    view.until(&mut stream, &["10.244.0.2:8080", "10.244.0.3:8080"])
        .await;

    // A live change, and a pod that makes an endpoint meshed.
    kube.apply(&ENDPOINT_SLICES, slice("web-b", &["10.244.0.4"]));
    view.until(
        &mut stream,
        &["10.244.0.2:8080", "10.244.0.3:8080", "10.244.0.4:8080"],
    )
    .await;
    kube.apply(
        &PODS,
        json!({"metadata": {"name": "web-4", "namespace": "shop"},
                             "spec": {"containers": [{"name": "app"}, {"name": "weft-proxy"}]}}),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !view.meshed.contains(&"10.244.0.4:8080".parse().unwrap()) {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("meshed update")
            .unwrap()
            .unwrap();
        view.apply(msg.kind.unwrap());
    }

    // A watch broken mid-stream: resumed from its resourceVersion, no relist.
    let lists = kube.lists(&ENDPOINT_SLICES);
    kube.break_watches();
    kube.apply(
        &ENDPOINT_SLICES,
        slice("web-b", &["10.244.0.4", "10.244.0.5"]),
    );
    view.until(
        &mut stream,
        &[
            "10.244.0.2:8080",
            "10.244.0.3:8080",
            "10.244.0.4:8080",
            "10.244.0.5:8080",
        ],
    )
    .await;
    assert_eq!(
        kube.lists(&ENDPOINT_SLICES),
        lists,
        "a resumed watch must not relist"
    );

    // History compacted while the watch was cut: the resume gets 410, the
    // watcher relists; a slice deleted meanwhile is deleted here too.
    // The API server goes away first (every watch cut, none can reopen),
    // so the delete cannot reach an open watch and the resume must relist.
    kube.set_unavailable(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while kube.open_watches(&ENDPOINT_SLICES) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "watches not cut");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kube.delete(&ENDPOINT_SLICES, "shop", "web-a");
    kube.compact();
    kube.set_unavailable(false);
    view.until(&mut stream, &["10.244.0.4:8080", "10.244.0.5:8080"])
        .await;
    // Live again after the relist.
    kube.apply(&ENDPOINT_SLICES, slice("web-c", &["10.244.0.6"]));
    view.until(
        &mut stream,
        &["10.244.0.4:8080", "10.244.0.5:8080", "10.244.0.6:8080"],
    )
    .await;
    assert!(
        kube.lists(&ENDPOINT_SLICES) > lists,
        "expected a relist after 410"
    );

    // The Service deleted: the destination no longer exists.
    kube.delete(&SERVICES, "shop", "web");
    view.until(&mut stream, &[]).await;

    drop(stream);
    drop(client);
    let _ = stop.send(());
    let result = tokio::time::timeout(Duration::from_secs(5), plane).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
}
