//! HTTP/1 and HTTP/2 proxying: a detected connection is served with hyper,
//! and each request is forwarded to the connection's target over a reused
//! upstream connection of the same protocol, bodies streamed both ways.

pub mod headers;
pub mod upstream;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::balance::{Balancer, Picked};
use crate::config::Config;
use crate::errors::ProxyError;
use crate::proxy::{Target, CONNECT_ATTEMPTS};
use crate::telemetry::HttpMetrics;
use headers::{is_upgrade, strip_hop_by_hop};
use upstream::{H1Session, Upstream};

/// What the proxy answers with: the upstream's body, or its own.
pub type Body = Either<Incoming, Full<Bytes>>;

/// The server side, configured once at start-up and shared by every connection.
#[derive(Debug)]
pub struct HttpServer {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    pub upstream: Arc<Upstream>,
    /// Whether 5xx responses count as endpoint failures.
    accrual_5xx: bool,
    /// Upgraded (WebSocket, h2c) connections outlive the HTTP connection
    /// they came from: they are tracked here so that a drain waits for them.
    tracker: TaskTracker,
}

impl HttpServer {
    pub fn new(config: &Config, tracker: TaskTracker) -> Self {
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
            upstream: Arc::new(Upstream::new(
                config.connect_timeout,
                config.pool_max_idle,
                config.pool_idle_timeout,
            )),
            accrual_5xx: config.failure_accrual_5xx,
            tracker,
        }
    }

    /// The forwarding state of one client connection.
    fn forward(&self, target: Target, metrics: HttpMetrics) -> Arc<Forward> {
        Arc::new(Forward {
            target,
            metrics,
            accrual_5xx: self.accrual_5xx,
            session: H1Session::new(self.upstream.clone()),
            h2: Mutex::new(None),
            upstream: self.upstream.clone(),
            tracker: self.tracker.clone(),
        })
    }

    /// Serves an HTTP/1 client connection until it ends or, after
    /// `shutdown`, until its request in flight is answered.
    pub async fn serve_h1<I>(
        &self,
        io: I,
        target: Target,
        metrics: HttpMetrics,
        shutdown: CancellationToken,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let fwd = self.forward(target, metrics);
        let service = service_fn(move |req| {
            let fwd = fwd.clone();
            async move { Ok::<_, Infallible>(fwd.h1(req).await) }
        });
        let conn = self
            .h1
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        log_conn_error(result);
    }

    /// Serves an HTTP/2 client connection; after `shutdown` it sends GOAWAY
    /// and lets the streams in flight finish.
    pub async fn serve_h2<I>(
        &self,
        io: I,
        target: Target,
        metrics: HttpMetrics,
        shutdown: CancellationToken,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let fwd = self.forward(target, metrics);
        let service = service_fn(move |req| {
            let fwd = fwd.clone();
            async move { Ok::<_, Infallible>(fwd.h2(req).await) }
        });
        let conn = self.h2.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        log_conn_error(result);
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

/// One client connection's forwarding state.
#[derive(Debug)]
struct Forward {
    target: Target,
    metrics: HttpMetrics,
    accrual_5xx: bool,
    session: H1Session,
    h2: Mutex<Option<hyper::client::conn::http2::SendRequest<Incoming>>>,
    upstream: Arc<Upstream>,
    tracker: TaskTracker,
}

impl Forward {
    async fn h1(&self, mut req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        self.metrics.requests.inc();
        let upgrade = is_upgrade(req.headers());
        strip_hop_by_hop(req.headers_mut(), upgrade);
        let result = match (&self.target, upgrade) {
            (_, true) => self.upgrade(req).await,
            (Target::Addr(addr), false) => self.session.send(*addr, req).await,
            (Target::Balanced(dest), false) => {
                let balancer = &dest.balancer;
                match self
                    .pick(dest.addr, balancer, |a| self.session.connect(a))
                    .await
                {
                    Ok((picked, ())) => {
                        let result = self.session.send(picked.addr(), req).await;
                        self.finish(balancer, picked, &result);
                        result
                    }
                    Err(e) => Err(e),
                }
            }
        };
        self.respond(result, start, false, |rsp| {
            if rsp.status() != StatusCode::SWITCHING_PROTOCOLS {
                strip_hop_by_hop(rsp.headers_mut(), false);
            }
        })
    }

    async fn h2(&self, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        self.metrics.requests.inc();
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
        let result = match &self.target {
            Target::Addr(addr) => match self.h2_sender(*addr).await {
                Ok(mut sender) => sender
                    .send_request(req)
                    .await
                    .map_err(|e| ProxyError::Upstream(*addr, e)),
                Err(e) => Err(e),
            },
            Target::Balanced(dest) => {
                let balancer = &dest.balancer;
                let upstream = &self.upstream;
                match self.pick(dest.addr, balancer, |a| upstream.h2(a)).await {
                    Ok((picked, mut sender)) => {
                        let addr = picked.addr();
                        let result = sender
                            .send_request(req)
                            .await
                            .map_err(|e| ProxyError::Upstream(addr, e));
                        self.finish(balancer, picked, &result);
                        result
                    }
                    Err(e) => Err(e),
                }
            }
        };
        self.respond(result, start, grpc, |_| {})
    }

    /// Picks an endpoint and connects to it with `connect`; when connecting
    /// fails (nothing was sent) the failure is recorded and another endpoint
    /// is tried, up to [`CONNECT_ATTEMPTS`].
    async fn pick<T, F, Fut>(
        &self,
        dst: SocketAddr,
        balancer: &Balancer,
        mut connect: F,
    ) -> Result<(Picked, T), ProxyError>
    where
        F: FnMut(SocketAddr) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProxyError>>,
    {
        let mut last = None;
        for _ in 0..CONNECT_ATTEMPTS {
            let picked = balancer
                .pick()
                .map_err(|why| ProxyError::unavailable(dst, why))?;
            match connect(picked.addr()).await {
                Ok(conn) => return Ok((picked, conn)),
                Err(e) => {
                    balancer.failed(picked);
                    if !e.is_connect() {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(ProxyError::AllFailing(dst)))
    }

    /// Records a balanced request's outcome with its endpoint.
    fn finish(
        &self,
        balancer: &Balancer,
        picked: Picked,
        result: &Result<Response<Incoming>, ProxyError>,
    ) {
        let ok = match result {
            Ok(rsp) => !(self.accrual_5xx && rsp.status().is_server_error()),
            Err(_) => false,
        };
        balancer.finish(picked, ok);
    }

    async fn h2_sender(
        &self,
        addr: SocketAddr,
    ) -> Result<hyper::client::conn::http2::SendRequest<Incoming>, ProxyError> {
        if let Some(s) = self
            .h2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|s| !s.is_closed())
        {
            return Ok(s.clone());
        }
        let sender = self.upstream.h2(addr).await?;
        *self.h2.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    /// Sends an upgrade request on a connection of its own and, when the
    /// server switches protocols, splices the two upgraded streams.
    async fn upgrade(&self, mut req: Request<Incoming>) -> Result<Response<Incoming>, ProxyError> {
        let client_side = hyper::upgrade::on(&mut req);
        let (mut sender, addr) = match &self.target {
            Target::Addr(addr) => (self.upstream.h1_connect(*addr, true).await?, *addr),
            Target::Balanced(dest) => {
                let balancer = &dest.balancer;
                let upstream = &self.upstream;
                let (picked, sender) = self
                    .pick(dest.addr, balancer, |a| upstream.h1_connect(a, true))
                    .await?;
                let addr = picked.addr();
                // An upgraded connection is not a request: its length says
                // nothing about the endpoint's latency.
                drop(picked);
                (sender, addr)
            }
        };
        let mut rsp = sender
            .send_request(req)
            .await
            .map_err(|e| ProxyError::Upstream(addr, e))?;
        if rsp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let server_side = hyper::upgrade::on(&mut rsp);
            self.tracker.spawn(async move {
                match tokio::try_join!(client_side, server_side) {
                    Ok((c, s)) => {
                        let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
                        if let Err(error) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
                            debug!(%error, "upgraded connection ended");
                        }
                    }
                    Err(error) => debug!(%error, "upgrade failed"),
                }
            });
        }
        Ok(rsp)
    }

    fn respond(
        &self,
        result: Result<Response<Incoming>, ProxyError>,
        start: Instant,
        grpc: bool,
        fix: impl FnOnce(&mut Response<Incoming>),
    ) -> Response<Body> {
        let rsp = match result {
            Ok(mut rsp) => {
                fix(&mut rsp);
                rsp.map(Either::Left)
            }
            Err(error) => {
                debug!(%error, "answering with an error");
                self.metrics.proxy_error(error.reason());
                error.to_response(grpc).map(|b| Either::Right(Full::new(b)))
            }
        };
        self.metrics.response(rsp.status());
        self.metrics
            .latency
            .observe_us(start.elapsed().as_micros() as u64);
        rsp
    }
}
