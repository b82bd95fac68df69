//! HTTP/1 and HTTP/2 proxying: a detected connection is served with hyper,
//! and each request is forwarded to the connection's target over a reused
//! upstream connection of the same protocol, bodies streamed both ways.

pub mod headers;
pub mod retry;
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
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::balance::{Balancer, Picked};
use crate::config::Config;
use crate::errors::ProxyError;
use crate::proxy::{Target, CONNECT_ATTEMPTS};
use crate::telemetry::HttpMetrics;
use crate::tls::Tls;
use crate::transport::connect::{Connector, Remote};
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
    pub fn new(config: &Config, tls: Option<Arc<Tls>>, tracker: TaskTracker) -> Self {
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
                Connector {
                    timeout: config.connect_timeout,
                    tls,
                },
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
    h2: Mutex<Option<hyper::client::conn::http2::SendRequest<Body>>>,
    upstream: Arc<Upstream>,
    tracker: TaskTracker,
}

impl Forward {
    async fn h1(&self, mut req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        self.metrics.requests.inc();
        let upgrade = is_upgrade(req.headers());
        strip_hop_by_hop(req.headers_mut(), upgrade);
        let result = if upgrade {
            self.upgrade(req).await
        } else {
            self.dispatch(req, false, false).await
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
        let result = self.dispatch(req, true, grpc).await;
        self.respond(result, start, grpc, |_| {})
    }

    /// One request: its deadline (the policy's and the caller's, whichever
    /// is sooner) and, for a Service with a retry policy, its retries.
    async fn dispatch(
        &self,
        req: Request<Incoming>,
        h2: bool,
        grpc: bool,
    ) -> Result<Response<Incoming>, ProxyError> {
        let dest = match &self.target {
            Target::Balanced(dest) => Some(dest),
            Target::Addr(_) => None,
        };
        let policy = dest.map(|d| d.policy.load_full());
        let timeout = match (
            policy.as_ref().and_then(|p| p.timeout),
            retry::incoming_timeout(req.headers()),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let deadline = timeout.map(|t| (tokio::time::Instant::now() + t, t));
        let retry = policy.as_ref().and_then(|p| p.retry.as_ref());
        if let Some(d) = dest.filter(|_| retry.is_some()) {
            d.budget.deposit();
        }
        // The common case: no deadline, no retries.
        if deadline.is_none() && retry.is_none() {
            return self.send(req.map(Either::Left), h2).await;
        }
        let dst = dest.map_or_else(|| self.addr(), |d| d.addr);
        let per_try = policy.as_ref().and_then(|p| p.per_try);
        let replay = match (retry, dest) {
            (Some(_), Some(_)) => Replay::take(req).await?,
            _ => Err(req),
        };
        let attempts = async {
            let mut replay = match replay {
                Ok(replay) => replay,
                // Not retryable: one attempt, with the deadline passed on.
                Err(mut req) => {
                    set_deadline(req.headers_mut(), deadline, grpc);
                    return self.attempt(req.map(Either::Left), h2, per_try, dst).await;
                }
            };
            let (Some(retry), Some(dest)) = (retry, dest) else {
                unreachable!("a replay is taken only with a retry policy");
            };
            let mut tries = 0;
            loop {
                set_deadline(&mut replay.headers, deadline, grpc);
                let result = self.attempt(replay.request(), h2, per_try, dst).await;
                let outcome = match &result {
                    Ok(rsp) => {
                        retry::Outcome::Status(rsp.status(), retry::grpc_status(rsp.headers()))
                    }
                    Err(ProxyError::TryTimeout(..)) => retry::Outcome::TryTimeout,
                    Err(e) if e.is_connect() || matches!(e, ProxyError::Upstream(..)) => {
                        retry::Outcome::ConnectFailure
                    }
                    Err(_) => return result,
                };
                if tries >= retry.limit || !retry.retryable(outcome, &replay.method) {
                    return result;
                }
                if !dest.budget.withdraw(retry.ratio, retry.min_per_second) {
                    dest.retries_skipped.inc();
                    return result;
                }
                dest.retries.inc();
                tries += 1;
                debug!(?outcome, tries, "retrying");
            }
        };
        let result = match deadline {
            None => attempts.await,
            Some((at, t)) => match tokio::time::timeout_at(at, attempts).await {
                Ok(result) => result,
                Err(_) => Err(ProxyError::Timeout(dst, t)),
            },
        };
        if !h2
            && matches!(
                result,
                Err(ProxyError::Timeout(..) | ProxyError::TryTimeout(..))
            )
        {
            self.session.discard();
        }
        result
    }

    /// One attempt, bounded by `per_try` (an elapsed attempt is an error
    /// the retry conditions know).
    async fn attempt(
        &self,
        req: Request<Body>,
        h2: bool,
        per_try: Option<Duration>,
        dst: SocketAddr,
    ) -> Result<Response<Incoming>, ProxyError> {
        match per_try {
            None => self.send(req, h2).await,
            Some(t) => tokio::time::timeout(t, self.send(req, h2))
                .await
                .unwrap_or(Err(ProxyError::TryTimeout(dst, t))),
        }
    }

    /// The target's address, for errors (a balanced target's is the Service's).
    fn addr(&self) -> SocketAddr {
        match &self.target {
            Target::Addr(a) => *a,
            Target::Balanced(d) => d.addr,
        }
    }

    /// Sends one request to the target: over the client connection's
    /// upstream HTTP/1 session or a shared HTTP/2 connection; to a balanced
    /// endpoint when the target is a Service.
    async fn send(&self, req: Request<Body>, h2: bool) -> Result<Response<Incoming>, ProxyError> {
        match (&self.target, h2) {
            (Target::Addr(addr), false) => self.session.send(&Remote::plain(*addr), req).await,
            (Target::Addr(addr), true) => match self.h2_sender(*addr).await {
                Ok(mut sender) => sender
                    .send_request(req)
                    .await
                    .map_err(|e| ProxyError::Upstream(*addr, e)),
                Err(e) => Err(e),
            },
            (Target::Balanced(dest), false) => {
                let balancer = &dest.balancer;
                let (picked, ()) = self
                    .pick(dest.addr, balancer, |r| self.session.connect(r))
                    .await?;
                let result = self.session.send(&picked.remote(), req).await;
                self.finish(balancer, picked, &result);
                result
            }
            (Target::Balanced(dest), true) => {
                let balancer = &dest.balancer;
                let upstream = &self.upstream;
                let (picked, mut sender) = self
                    .pick(
                        dest.addr,
                        balancer,
                        |r| async move { upstream.h2(&r).await },
                    )
                    .await?;
                let addr = picked.addr();
                let result = sender
                    .send_request(req)
                    .await
                    .map_err(|e| ProxyError::Upstream(addr, e));
                self.finish(balancer, picked, &result);
                result
            }
        }
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
        F: FnMut(Remote) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProxyError>>,
    {
        let mut last = None;
        for _ in 0..CONNECT_ATTEMPTS {
            let picked = balancer
                .pick()
                .map_err(|why| ProxyError::unavailable(dst, why))?;
            match connect(picked.remote()).await {
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
    ) -> Result<hyper::client::conn::http2::SendRequest<Body>, ProxyError> {
        if let Some(s) = self
            .h2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|s| !s.is_closed())
        {
            return Ok(s.clone());
        }
        let sender = self.upstream.h2(&Remote::plain(addr)).await?;
        *self.h2.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    /// Sends an upgrade request on a connection of its own and, when the
    /// server switches protocols, splices the two upgraded streams.
    async fn upgrade(&self, mut req: Request<Incoming>) -> Result<Response<Incoming>, ProxyError> {
        let client_side = hyper::upgrade::on(&mut req);
        let (mut sender, addr) = match &self.target {
            Target::Addr(addr) => (
                self.upstream
                    .h1_connect(&Remote::plain(*addr), true)
                    .await?,
                *addr,
            ),
            Target::Balanced(dest) => {
                let balancer = &dest.balancer;
                let upstream = &self.upstream;
                let (picked, sender) = self
                    .pick(dest.addr, balancer, |r| async move {
                        upstream.h1_connect(&r, true).await
                    })
                    .await?;
                let addr = picked.addr();
                // An upgraded connection is not a request: its length says
                // nothing about the endpoint's latency.
                drop(picked);
                (sender, addr)
            }
        };
        let mut rsp = sender
            .send_request(req.map(Either::Left))
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

/// Writes what is left of the deadline into the request, for the next hop.
fn set_deadline(
    headers: &mut http::HeaderMap,
    deadline: Option<(tokio::time::Instant, Duration)>,
    grpc: bool,
) {
    if let Some((at, _)) = deadline {
        let left = at.saturating_duration_since(tokio::time::Instant::now());
        let name = if grpc {
            retry::GRPC_TIMEOUT
        } else {
            retry::WEFT_TIMEOUT
        };
        headers.insert(name, retry::format_timeout(left));
    }
}

/// A request kept to be sent again: its head and its whole (small) body.
#[derive(Debug)]
struct Replay {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Replay {
    /// Keeps a request whose body is known to be at most
    /// [`retry::MAX_REPLAY_BODY`] (empty, or a small `content-length`);
    /// gives any other back untouched (it is sent once, streamed).
    async fn take(req: Request<Incoming>) -> Result<Result<Self, Request<Incoming>>, ProxyError> {
        use http_body_util::BodyExt;
        use hyper::body::Body as _;
        let empty = req.body().is_end_stream();
        let small = req
            .body()
            .size_hint()
            .upper()
            .is_some_and(|n| n <= retry::MAX_REPLAY_BODY);
        if !empty && !small {
            return Ok(Err(req));
        }
        let (parts, incoming) = req.into_parts();
        let body = if empty {
            Bytes::new()
        } else {
            // Small and bounded: the one place a body is gathered.
            incoming
                .collect()
                .await
                .map_err(ProxyError::ClientBody)?
                .to_bytes()
        };
        Ok(Ok(Self {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            body,
        }))
    }

    fn request(&self) -> Request<Body> {
        let mut req = Request::new(Either::Right(Full::new(self.body.clone())));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}
