//! The gRPC side of the test application: a tonic Echo server, and a client
//! that makes a unary call, a failing call and a bidi stream.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use weft_tests::echo::echo_client::EchoClient;
use weft_tests::echo::echo_server::{Echo, EchoServer};
use weft_tests::echo::{EchoRequest, EchoResponse};

use crate::say;

#[derive(Debug, Default)]
struct Service {
    /// Unary calls served, failed ones included.
    served: std::sync::atomic::AtomicU64,
}

/// `TESTAPP_FAIL_PERCENT`: that share of Unary calls fail with
/// UNAVAILABLE, spread evenly (as the HTTP server's `/hello`).
fn fail_percent() -> u64 {
    static PERCENT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PERCENT.get_or_init(|| {
        std::env::var("TESTAPP_FAIL_PERCENT")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            .min(100)
    })
}

#[tonic::async_trait]
impl Echo for Service {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let req = req.into_inner();
        if req.fail_with != 0 {
            return Err(Status::new(req.fail_with.into(), "failing as asked"));
        }
        let n = self
            .served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = fail_percent();
        if (n + 1) * p / 100 > n * p / 100 {
            return Err(Status::unavailable("failing on purpose"));
        }
        Ok(Response::new(EchoResponse {
            message: req.message,
            seq: 1,
        }))
    }

    type BidiStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

    async fn bidi(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::BidiStream>, Status> {
        let mut inbound = req.into_inner();
        let out = async_stream(move |tx| async move {
            let mut seq = 0;
            while let Some(msg) = inbound.next().await {
                let msg = match msg {
                    Ok(m) => m,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                seq += 1;
                if tx
                    .send(Ok(EchoResponse {
                        message: msg.message,
                        seq,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// A stream fed by a task through a channel.
fn async_stream<F, Fut>(f: F) -> ReceiverStream<Result<EchoResponse, Status>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<EchoResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    ReceiverStream::new(rx)
}

pub async fn serve(addr: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    say(&format!("LISTENING {addr}"));
    tonic::transport::Server::builder()
        .add_service(EchoServer::new(Service::default()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

/// Unary, a failing unary (the status must come through), and a bidi
/// stream of `n` messages spaced `gap_ms` apart.
pub async fn client(addr: SocketAddr, n: u64, gap_ms: u64) -> Result<()> {
    let mut client = EchoClient::connect(format!("http://{addr}"))
        .await
        .context("connect")?;
    let rsp = client
        .unary(EchoRequest {
            message: "unary".into(),
            fail_with: 0,
        })
        .await?
        .into_inner();
    if rsp.message != "unary" {
        bail!("unary echoed {:?}", rsp.message);
    }
    let status = client
        .unary(EchoRequest {
            message: "x".into(),
            fail_with: tonic::Code::NotFound as i32,
        })
        .await
        .expect_err("the call must fail");
    if status.code() != tonic::Code::NotFound {
        bail!("expected NOT_FOUND, got {status:?}");
    }

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let started = Instant::now();
    let mut responses = client.bidi(ReceiverStream::new(rx)).await?.into_inner();
    for i in 1..=n {
        tx.send(EchoRequest {
            message: format!("m{i}"),
            fail_with: 0,
        })
        .await?;
        let rsp = responses.next().await.context("stream ended early")??;
        if rsp.seq != i || rsp.message != format!("m{i}") {
            bail!("message {i} came back as {rsp:?}");
        }
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
    }
    drop(tx);
    if let Some(extra) = responses.next().await {
        bail!("unexpected message after the end: {extra:?}");
    }
    say(&format!(
        "OK unary=ok status=NOT_FOUND bidi={n} over {}ms",
        started.elapsed().as_millis()
    ));
    Ok(())
}
