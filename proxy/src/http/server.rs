//! Serving one detected client connection with hyper: HTTP/1 (with
//! upgrades) or HTTP/2, each request handed to the direction's handler
//! (boxed for HTTP/2, whose streams are spawned tasks);
//! after shutdown, HTTP/1 finishes its request in flight and HTTP/2 sends
//! GOAWAY and lets its streams finish. An HTTP/2 client that floods control
//! frames is cut off (`flood.rs`).

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::flood::Guarded;
use super::Body;
use crate::client::Client;
use crate::config::Config;
use crate::tls::Tls;
use crate::trace::Spanned;
use crate::transport::connect::Connector;
use crate::transport::tasks::Tasks;

/// A response as served: its body, with the request's span when sampled
/// (which ends with the body).
pub type Served = Spanned<Body>;

/// The server side, configured once at start-up and shared by every connection.
#[derive(Debug)]
pub struct HttpServer {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    /// How upstream connections are made, and the plain addresses' pool.
    pub client: Arc<Client>,
    /// Whether 5xx responses count as endpoint failures.
    pub accrual_5xx: bool,
    /// Control frames an HTTP/2 client may send a second (`flood.rs`).
    h2_max_control_frames: u32,
    /// Upgraded (WebSocket, h2c) connections outlive the HTTP connection
    /// they came from: they are tracked here so that a drain waits for them.
    pub tasks: Tasks,
}

impl HttpServer {
    pub fn new(config: &Config, tls: Option<Arc<Tls>>, tasks: Tasks) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_header_size(config.max_header_bytes as usize)
            .max_headers(config.max_headers as usize);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(config.h2_max_concurrent_streams)
            .max_pending_accept_reset_streams(config.h2_max_pending_resets)
            .max_local_error_reset_streams(1024)
            .max_header_list_size(config.max_header_bytes)
            .adaptive_window(true)
            .keep_alive_interval(std::time::Duration::from_secs(20))
            .keep_alive_timeout(std::time::Duration::from_secs(20));
        Self {
            h1,
            h2,
            client: Arc::new(Client::new(
                Connector {
                    timeout: config.connect_timeout,
                    tls,
                },
                config.pool_max_idle,
                config.pool_idle_timeout,
            )),
            accrual_5xx: config.failure_accrual_5xx,
            h2_max_control_frames: config.h2_max_control_frames,
            tasks,
        }
    }

    /// Serves an HTTP/2 (`h2`) or HTTP/1 client connection: `Flooded` when
    /// it was cut off for flooding (the caller counts it).
    pub async fn serve<I, H, F>(
        &self,
        h2: bool,
        io: I,
        handle: H,
        shutdown: CancellationToken,
    ) -> Ended
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>) -> F + Send + 'static,
        F: Future<Output = Response<Served>> + Send + 'static,
    {
        if h2 {
            self.serve_h2(io, handle, shutdown).await
        } else {
            self.serve_h1(io, handle, shutdown).await;
            Ended::Done
        }
    }

    /// Serves an HTTP/1 client connection, each request answered by
    /// `handle`, until it ends or, after `shutdown`, until its request in
    /// flight is answered.
    pub async fn serve_h1<I, H, F>(&self, io: I, handle: H, shutdown: CancellationToken)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>) -> F + Send + 'static,
        F: Future<Output = Response<Served>> + Send + 'static,
    {
        let conn = std::pin::pin!(self
            .h1
            .serve_connection(TokioIo::new(io), service(handle))
            .with_upgrades());
        log_conn_error(until_shutdown(conn, |c| c.graceful_shutdown(), shutdown).await);
    }

    /// Serves an HTTP/2 client connection; after `shutdown` it sends GOAWAY
    /// and lets the streams in flight finish.
    pub async fn serve_h2<I, H, F>(&self, io: I, handle: H, shutdown: CancellationToken) -> Ended
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>) -> F + Send + 'static,
        F: Future<Output = Response<Served>> + Send + 'static,
    {
        // Each stream is a spawned task: its future is boxed, so that the
        // spawn (and every move of the task) moves a pointer rather than
        // the request's whole state.
        let boxed = move |req| Box::pin(handle(req));
        let flooded = Arc::new(AtomicBool::new(false));
        let io = Guarded::new(io, self.h2_max_control_frames, flooded.clone());
        let conn = std::pin::pin!(self.h2.serve_connection(TokioIo::new(io), service(boxed)));
        let result = until_shutdown(conn, |c| c.graceful_shutdown(), shutdown).await;
        if flooded.load(Ordering::Relaxed) {
            info!("HTTP/2 client flooding control frames: closed");
            return Ended::Flooded;
        }
        log_conn_error(result);
        Ended::Done
    }
}

/// How a client connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Done,
    /// Cut off: the client flooded control frames (`flood.rs`).
    Flooded,
}

/// `handle` as hyper's service (the proxy answers every request itself,
/// errors included, so the service never fails).
fn service<H, F>(
    handle: H,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Served>,
    Error = Infallible,
    Future = Answer<F>,
> + Send
where
    H: Fn(Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Response<Served>> + Send + 'static,
{
    service_fn(move |req| Answer {
        response: handle(req),
    })
}

pin_project_lite::pin_project! {
    /// A handler's response as the service's `Ok`. A plain future: an
    /// `async` block awaiting the handler's future would hold it twice.
    pub struct Answer<F> {
        #[pin]
        response: F,
    }
}

impl<F: Future> Future for Answer<F> {
    type Output = Result<F::Output, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().response.poll(cx).map(Ok)
    }
}

/// Runs `conn` to its end; after `shutdown`, asks it to finish gracefully
/// (`graceful`) and waits for that. It takes the connection pinned where
/// its caller made it: taken by value, it would be held twice (the
/// argument, and the pinned copy polled), and the connection's state is
/// most of what an idle connection costs.
async fn until_shutdown<C, E>(
    mut conn: Pin<&mut C>,
    graceful: fn(Pin<&mut C>),
    shutdown: CancellationToken,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            graceful(conn.as_mut());
            conn.await
        }
    }
}

/// Malformed requests are answered by hyper (400, 431) and logged here,
/// once per connection.
fn log_conn_error(result: Result<(), hyper::Error>) {
    match result {
        Ok(()) => {}
        Err(e) if e.is_parse() || e.is_parse_too_large() => {
            info!(error = %e, "malformed request refused")
        }
        Err(e) if e.is_timeout() => info!("client too slow sending headers: closed"),
        Err(e) => debug!(error = %e, "client connection ended with an error"),
    }
}
