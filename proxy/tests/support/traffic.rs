//! Traffic through a proxy from tasks of their own: a dialer to clone into
//! them, bursts and loops of requests and what came back, and a gRPC
//! channel (tonic's) whose connections go through the proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use weft_proxy::test_util::OrigDst;

use super::client::{self, Reply, H1};
use super::proxy::Proxy;

impl Proxy {
    /// `GET path` to `dst`, `per_client` times in a row on each of
    /// `clients` keep-alive connections at once; what came back.
    pub async fn burst(
        &self,
        dst: SocketAddr,
        path: &str,
        clients: usize,
        per_client: usize,
    ) -> Tally {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let dialer = self.dialer();
                let path = path.to_owned();
                tokio::spawn(async move {
                    let mut h1 = dialer.h1(dst).await;
                    let mut tally = Tally::default();
                    for _ in 0..per_client {
                        let reply = h1.get(&path).await;
                        if reply.is_err() {
                            // As a client would: a new connection after a failed one.
                            h1 = dialer.h1(dst).await;
                        }
                        tally.add(reply);
                    }
                    tally
                })
            })
            .collect();
        let mut total = Tally::default();
        for task in tasks {
            total.merge(task.await.expect("a client task"));
        }
        total
    }

    /// `GET path` to `dst` in a loop on each of `clients` keep-alive
    /// connections, until [`Load::stop`].
    pub fn load(&self, dst: SocketAddr, path: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let dialer = self.dialer();
                let path = path.to_owned();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut h1 = dialer.h1(dst).await;
                    let mut tally = Tally::default();
                    while !stop.load(Ordering::Relaxed) {
                        let reply = h1.get(&path).await;
                        if reply.is_err() {
                            h1 = dialer.h1(dst).await;
                        }
                        tally.add(reply);
                    }
                    tally
                })
            })
            .collect();
        Load { stop, tasks }
    }
}

/// Connects through a proxy's outbound listener (cheap to clone into tasks).
#[derive(Clone, Debug)]
pub struct Dialer {
    orig: OrigDst,
    outbound: SocketAddr,
}

impl Dialer {
    pub fn new(orig: OrigDst, outbound: SocketAddr) -> Self {
        Self { orig, outbound }
    }

    pub async fn connect(&self, dst: SocketAddr) -> TcpStream {
        client::connect_via(&self.orig, self.outbound, dst).await
    }

    pub async fn h1(&self, dst: SocketAddr) -> H1 {
        H1::handshake(self.connect(dst).await).await
    }
}

/// A gRPC channel (tonic's) to `dst` whose every connection goes through
/// the proxy's outbound listener.
pub fn grpc_channel(dialer: Dialer, dst: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_static("http://test.example")
        .connect_with_connector_lazy(GrpcConnector { dialer, dst })
}

#[derive(Clone, Debug)]
struct GrpcConnector {
    dialer: Dialer,
    dst: SocketAddr,
}

impl tonic::codegen::Service<http::Uri> for GrpcConnector {
    type Response = hyper_util::rt::TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let (dialer, dst) = (self.dialer.clone(), self.dst);
        Box::pin(async move { Ok(hyper_util::rt::TokioIo::new(dialer.connect(dst).await)) })
    }
}

/// What a run of requests got back.
#[derive(Debug, Default)]
pub struct Tally {
    /// 2xx answers.
    pub ok: u64,
    /// Everything else: other statuses, and requests that got no answer.
    pub failed: u64,
    /// How many times each (status, body) came back.
    pub answers: BTreeMap<(u16, String), u64>,
    /// Why requests got no answer.
    pub errors: Vec<String>,
}

impl Tally {
    fn add(&mut self, reply: anyhow::Result<Reply>) {
        match reply {
            Ok(r) => {
                if r.status.is_success() {
                    self.ok += 1;
                } else {
                    self.failed += 1;
                }
                *self.answers.entry((r.status.as_u16(), r.body)).or_default() += 1;
            }
            Err(e) => {
                self.failed += 1;
                self.errors.push(format!("{e:#}"));
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        for (k, n) in other.answers {
            *self.answers.entry(k).or_default() += n;
        }
        self.errors.extend(other.errors);
    }

    pub fn sent(&self) -> u64 {
        self.ok + self.failed
    }

    /// How many answers had `body` (any status).
    pub fn with_body(&self, body: &str) -> u64 {
        self.answers
            .iter()
            .filter(|((_, b), _)| b == body)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Requests sent in a loop by tasks of their own.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Tally>>,
}

impl Load {
    /// Stops the loops (each finishes its request in flight); the tally.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for task in self.tasks {
            total.merge(task.await.expect("a load task"));
        }
        total
    }
}
