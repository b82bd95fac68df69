//! The generated clients and servers, talking gRPC over a loopback TCP
//! connection: a tiny Discovery that knows one Service and a tiny Identity.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot, Notify},
    task::JoinHandle,
};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{transport::Server, Code, Request, Response, Status};
use weft_proto::discovery::v1::{self as d, discovery_client::DiscoveryClient, discovery_server};
use weft_proto::identity::v1::{self as id, identity_client::IdentityClient, identity_server};

/// How long a test waits for any one message before failing.
const DEADLINE: Duration = Duration::from_secs(10);

const WEB: &str = "web.shop.svc.cluster.local:80";

/// Knows one destination, `WEB`: streams a snapshot at once, then, when the
/// test releases it, an endpoint in the watcher's own zone (so the request's
/// context must have arrived), then ends the stream.
#[derive(Debug, Default)]
struct FakeDiscovery {
    release_add: Arc<Notify>,
}

#[tonic::async_trait]
impl discovery_server::Discovery for FakeDiscovery {
    type WatchStream = ReceiverStream<Result<d::Update, Status>>;

    async fn watch(
        &self,
        req: Request<d::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = req.into_inner();
        let (tx, rx) = mpsc::channel(1);
        match req.destination {
            None => return Err(Status::invalid_argument("the request names no destination")),
            Some(d::watch_request::Destination::Authority(a)) if a == WEB => {
                let zone = req.context.map(|c| c.zone).unwrap_or_default();
                let release_add = self.release_add.clone();
                tokio::spawn(async move {
                    tx.send(Ok(super::wire::snapshot())).await?;
                    release_add.notified().await;
                    let add = d::Add {
                        endpoints: vec![d::Endpoint {
                            addr: Some("10.244.2.3:8080".parse::<SocketAddr>().unwrap().into()),
                            zone,
                            ..Default::default()
                        }],
                    };
                    tx.send(Ok(d::Update {
                        kind: Some(d::update::Kind::Add(add)),
                    }))
                    .await
                });
            }
            Some(_) => {
                let gone = d::update::Kind::DoesNotExist(d::DoesNotExist {});
                tx.send(Ok(d::Update { kind: Some(gone) })).await.unwrap();
            }
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Certifies anyone presenting the token `good`, echoing the CSR as the leaf.
#[derive(Debug)]
struct FakeIdentity;

#[tonic::async_trait]
impl identity_server::Identity for FakeIdentity {
    async fn certify(
        &self,
        req: Request<id::CertifyRequest>,
    ) -> Result<Response<id::CertifyResponse>, Status> {
        let req = req.into_inner();
        if req.token != "good" {
            return Err(Status::unauthenticated("the token is not valid"));
        }
        Ok(Response::new(id::CertifyResponse {
            leaf_certificate: req.certificate_signing_request,
            intermediate_certificates: vec![b"intermediate".to_vec()],
            valid_until: Some(prost_types::Timestamp {
                seconds: 86_400,
                nanos: 0,
            }),
        }))
    }
}

/// Both fakes served on 127.0.0.1:<ephemeral> until `stop`.
struct Running {
    addr: SocketAddr,
    release_add: Arc<Notify>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let discovery = FakeDiscovery::default();
        let release_add = discovery.release_add.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            Server::builder()
                .add_service(discovery_server::DiscoveryServer::new(discovery))
                .add_service(identity_server::IdentityServer::new(FakeIdentity))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        Running {
            addr,
            release_add,
            stop,
            server,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and checks that it stopped cleanly.
    async fn stop(self) {
        let _ = self.stop.send(());
        within(self.server).await.unwrap().unwrap();
    }
}

/// Fails the test if `f` takes longer than `DEADLINE`.
async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("no answer before the deadline")
}

fn watch(authority: &str, zone: &str) -> d::WatchRequest {
    d::WatchRequest {
        destination: Some(d::watch_request::Destination::Authority(authority.into())),
        context: Some(d::ProxyContext {
            pod_namespace: "shop".into(),
            pod_name: "client-0".into(),
            node_name: "node-1".into(),
            zone: zone.into(),
        }),
    }
}

#[tokio::test]
async fn watch_streams_a_snapshot_then_an_add() {
    let server = Running::start().await;
    let mut client = DiscoveryClient::connect(server.endpoint()).await.unwrap();

    let mut updates = within(client.watch(watch(WEB, "zone-c")))
        .await
        .unwrap()
        .into_inner();

    let first = within(updates.message())
        .await
        .unwrap()
        .expect("a first update");
    assert_eq!(first, super::wire::snapshot(), "the snapshot arrives whole");

    // Only now does the server make the Add: the snapshot came through a
    // stream that was still open, not a finished one.
    server.release_add.notify_one();
    let second = within(updates.message())
        .await
        .unwrap()
        .expect("a second update");
    let Some(d::update::Kind::Add(add)) = second.kind else {
        panic!("expected an Add, got {second:?}");
    };
    assert_eq!(add.endpoints.len(), 1);
    let ep = &add.endpoints[0];
    let ep_addr = SocketAddr::try_from(ep.addr.as_ref().unwrap()).unwrap();
    assert_eq!(ep_addr, "10.244.2.3:8080".parse().unwrap());
    assert_eq!(ep.zone, "zone-c", "the server saw the watcher's context");

    assert_eq!(
        within(updates.message()).await.unwrap(),
        None,
        "then the stream ends"
    );
    server.stop().await;
}

#[tokio::test]
async fn watch_says_does_not_exist_and_refuses_an_empty_request() {
    let server = Running::start().await;
    let mut client = DiscoveryClient::connect(server.endpoint()).await.unwrap();

    let mut updates = within(client.watch(watch("nope.shop:80", "zone-a")))
        .await
        .unwrap()
        .into_inner();
    let first = within(updates.message())
        .await
        .unwrap()
        .expect("a first update");
    assert_eq!(
        first.kind,
        Some(d::update::Kind::DoesNotExist(d::DoesNotExist {}))
    );

    let err = within(client.watch(d::WatchRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn certify_answers_and_refuses() {
    let server = Running::start().await;
    let mut client = IdentityClient::connect(server.endpoint()).await.unwrap();

    let req = id::CertifyRequest {
        identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
        token: "good".into(),
        certificate_signing_request: vec![0x30, 0x00, 0xff],
    };
    let resp = within(client.certify(req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.leaf_certificate, [0x30, 0x00, 0xff]);
    assert_eq!(resp.intermediate_certificates, [b"intermediate".to_vec()]);
    assert_eq!(resp.valid_until.unwrap().seconds, 86_400);

    let bad = id::CertifyRequest {
        token: "bad".into(),
        ..req
    };
    let err = within(client.certify(bad)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    server.stop().await;
}
