//! Nothing is answered before the sources synced: a real weft-control on a
//! kube source whose fake API server is away (every request 503), seen by a
//! real `grpc.health.v1` client and a discovery client. Until the first
//! list completes, every health status (the whole server `""`, Discovery,
//! Identity) is NOT_SERVING and a Watch is refused with UNAVAILABLE, never
//! answered DoesNotExist; once the API server is back, everything turns
//! SERVING and watches get the Service. A health Watch left open does not
//! hold the shutdown.

use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use weft_control::config::{Config, Source};
use weft_control::identity::ca;
use weft_control::ready::{DISCOVERY, IDENTITY};
use weft_control::run::{run, Bound};
use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::discovery_client::DiscoveryClient;
use weft_proto::discovery::v1::update::Kind as U;
use weft_tests::fakekube::{FakeKube, ENDPOINT_SLICES, SERVICES};

const WAIT: Duration = Duration::from_secs(15);
const DAY: Duration = Duration::from_secs(24 * 3600);

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn status(health: &mut HealthClient<Channel>, service: &str) -> ServingStatus {
    let rsp = health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("Check({service:?}): {e}"));
    rsp.into_inner().status()
}

fn by_name() -> pb::watch_request::Destination {
    pb::watch_request::Destination::Authority("web.shop.svc.cluster.local:80".into())
}

fn by_addr() -> pb::watch_request::Destination {
    let addr: SocketAddr = "10.96.0.20:80".parse().unwrap();
    pb::watch_request::Destination::Addr(addr.into())
}

async fn watch(
    client: &mut DiscoveryClient<Channel>,
    destination: pb::watch_request::Destination,
) -> Result<tonic::Streaming<pb::Update>, tonic::Status> {
    client
        .watch(pb::WatchRequest {
            destination: Some(destination),
            context: None,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_watches_wait_for_the_first_sync() {
    let kube = FakeKube::start();
    kube.apply(
        &SERVICES,
        json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }),
    );
    kube.apply(
        &ENDPOINT_SLICES,
        json!({
            "metadata": {"name": "web-a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.244.0.2"]}]
        }),
    );
    kube.set_unavailable(true);

    let dir =
        TempDir(std::env::temp_dir().join(format!("weft-before-sync-{}", std::process::id())));
    let ca_dir = dir.0.join("ca");
    ca::generate("cluster.local", 365 * DAY, 30 * DAY)
        .unwrap()
        .write(&ca_dir)
        .unwrap();
    let tokens = dir.0.join("tokens.yaml");
    std::fs::write(&tokens, "token-of-shop-web-0123456789: shop/web\n").unwrap();
    let config = Config {
        kube_api_server: Some(kube.url()),
        identity_dir: Some(ca_dir),
        identity_tokens: Some(tokens),
        ..Config::loopback(Source::Kube)
    };
    let bound = Bound::bind(&config).await.unwrap();
    let (grpc, admin) = bound.addrs().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let plane = tokio::spawn(run(config, bound, async {
        let _ = stopped.await;
    }));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let mut discovery = DiscoveryClient::new(channel);

    // The source keeps trying (a list answered 503 at least twice); all the
    // while nothing is SERVING and watches are refused, not DoesNotExist.
    let deadline = tokio::time::Instant::now() + WAIT;
    while kube.lists(&SERVICES) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no list retried");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for service in ["", DISCOVERY, IDENTITY] {
        assert_eq!(
            status(&mut health, service).await,
            ServingStatus::NotServing,
            "{service:?} before the sync"
        );
    }
    for destination in [by_name(), by_addr()] {
        let err = watch(&mut discovery, destination.clone())
            .await
            .expect_err("a watch before the sync is refused");
        assert_eq!(err.code(), Code::Unavailable, "{destination:?}: {err}");
        assert!(
            err.message().contains("first sync") && err.message().contains("kube"),
            "{}",
            err.message()
        );
    }
    // A request that is no destination is still INVALID_ARGUMENT.
    let err = watch(
        &mut discovery,
        pb::watch_request::Destination::Authority("web".into()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let ready = weft_tests::http_get(admin, "/ready").await;
    assert!(ready.contains("first sync"), "{ready}");

    // Followed by a health Watch: NOT_SERVING, then SERVING once synced.
    let mut overall = health
        .watch(HealthCheckRequest { service: "".into() })
        .await
        .unwrap()
        .into_inner();
    let first = overall.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::NotServing);

    kube.set_unavailable(false);
    let next = tokio::time::timeout(WAIT, overall.message())
        .await
        .expect("SERVING after the sync")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::Serving);
    for service in ["", DISCOVERY, IDENTITY] {
        assert_eq!(
            status(&mut health, service).await,
            ServingStatus::Serving,
            "{service:?} after the sync"
        );
    }
    for destination in [by_name(), by_addr()] {
        let mut stream = watch(&mut discovery, destination).await.unwrap();
        let first = stream.message().await.unwrap().unwrap().kind.unwrap();
        let U::Snapshot(s) = first else {
            panic!("a snapshot after the sync, not {first:?}")
        };
        let addrs: Vec<SocketAddr> = s
            .endpoints
            .iter()
            .map(|e| SocketAddr::try_from(e.addr.as_ref().unwrap()).unwrap())
            .collect();
        assert_eq!(addrs, ["10.244.0.2:8080".parse().unwrap()]);
    }
    assert!(weft_tests::http_get(admin, "/ready")
        .await
        .starts_with("ready"));

    // Shutdown: the open health Watch says NOT_SERVING and ends.
    let _ = stop.send(());
    let last = tokio::time::timeout(WAIT, overall.message())
        .await
        .expect("the health watch is told")
        .unwrap()
        .unwrap();
    assert_eq!(last.status(), ServingStatus::NotServing);
    let result = tokio::time::timeout(WAIT, plane).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
}
