//! Connections to destinations, reused.
//!
//! HTTP/2: one multiplexed connection per destination, shared by every
//! client connection that goes there. HTTP/1: a client connection keeps the
//! upstream connection it got for all its requests ([`H1Session`]), and gives
//! it back to a per-destination idle pool when it ends, so the pool's lock is
//! taken per connection, never per request. Upgraded (WebSocket, h2c)
//! connections are never pooled.

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::debug;

use super::Body;
use crate::errors::ProxyError;
use crate::tls::Alpn;
use crate::transport::connect::{Connector, Remote};

type H1 = http1::SendRequest<Body>;
type H2 = http2::SendRequest<Body>;

#[derive(Debug)]
pub struct Upstream {
    pub connector: Connector,
    max_idle: usize,
    idle_timeout: Duration,
    h1_idle: Mutex<HashMap<SocketAddr, Vec<(Instant, H1)>>>,
    h2: Mutex<HashMap<SocketAddr, H2>>,
    h2_builder: http2::Builder<TokioExecutor>,
}

impl Upstream {
    pub fn new(connector: Connector, max_idle: usize, idle_timeout: Duration) -> Self {
        let mut h2_builder = http2::Builder::new(TokioExecutor::new());
        h2_builder
            .timer(hyper_util::rt::TokioTimer::new())
            .adaptive_window(true)
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20));
        Self {
            connector,
            max_idle,
            idle_timeout,
            h1_idle: Mutex::default(),
            h2: Mutex::default(),
            h2_builder,
        }
    }

    /// A new HTTP/1 connection; `upgrades` lets it switch protocols.
    pub async fn h1_connect(&self, remote: &Remote, upgrades: bool) -> Result<H1, ProxyError> {
        let dst = remote.addr;
        let io = self.connector.connect(remote, Alpn::Http1).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| ProxyError::Handshake(dst, e))?;
        if upgrades {
            tokio::spawn(async move {
                if let Err(error) = conn.with_upgrades().await {
                    debug!(%dst, %error, "upstream connection ended");
                }
            });
        } else {
            tokio::spawn(async move {
                if let Err(error) = conn.await {
                    debug!(%dst, %error, "upstream connection ended");
                }
            });
        }
        Ok(sender)
    }

    /// An idle pooled HTTP/1 connection to `dst`, or a new one.
    async fn h1(&self, remote: &Remote) -> Result<H1, ProxyError> {
        if let Some(sender) = self.take_idle(remote.addr) {
            return Ok(sender);
        }
        self.h1_connect(remote, false).await
    }

    fn take_idle(&self, dst: SocketAddr) -> Option<H1> {
        let mut idle = self.h1_idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&dst)?;
        let now = Instant::now();
        while let Some((since, sender)) = list.pop() {
            if now.duration_since(since) < self.idle_timeout && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn release_h1(&self, dst: SocketAddr, sender: H1) {
        if !sender.is_ready() {
            return;
        }
        let mut idle = self.h1_idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(dst).or_default();
        let now = Instant::now();
        list.retain(|(since, s)| now.duration_since(*since) < self.idle_timeout && !s.is_closed());
        if list.len() < self.max_idle {
            list.push((now, sender));
        }
    }

    /// The shared HTTP/2 connection to `dst`, made if there is none.
    pub async fn h2(&self, remote: &Remote) -> Result<H2, ProxyError> {
        let dst = remote.addr;
        if let Some(sender) = self
            .h2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dst)
            .filter(|s| !s.is_closed())
        {
            return Ok(sender.clone());
        }
        let io = self.connector.connect(remote, Alpn::Http2).await?;
        let (sender, conn) = self
            .h2_builder
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| ProxyError::Handshake(dst, e))?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                debug!(%dst, %error, "upstream HTTP/2 connection ended");
            }
        });
        self.h2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dst, sender.clone());
        Ok(sender)
    }
}

/// The upstream HTTP/1 connection of one client connection. With a
/// balanced target successive requests may go to different endpoints: the
/// session keeps the connection of the last one and swaps it through the
/// pool only when the endpoint changes.
#[derive(Debug)]
pub struct H1Session {
    upstream: std::sync::Arc<Upstream>,
    // HTTP/1 requests on a connection come one at a time: this lock is never
    // contended, it only makes the session shareable with hyper's service.
    held: Mutex<Option<(SocketAddr, H1)>>,
}

impl H1Session {
    pub fn new(upstream: std::sync::Arc<Upstream>) -> Self {
        Self {
            upstream,
            held: Mutex::new(None),
        }
    }

    fn take(&self, dst: SocketAddr) -> Option<H1> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
        match held {
            Some((addr, sender)) if addr == dst => Some(sender),
            Some((addr, sender)) => {
                self.upstream.release_h1(addr, sender);
                None
            }
            None => None,
        }
    }

    /// Drops the connection held (a request on it was abandoned, so it may
    /// still be busy with it: it is neither reused nor pooled).
    pub fn discard(&self) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn hold(&self, dst: SocketAddr, sender: H1) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some((dst, sender));
    }

    /// Makes sure the session holds a connection to `dst` (pooled or new):
    /// an error here means nothing was sent.
    pub async fn connect(&self, remote: Remote) -> Result<(), ProxyError> {
        let sender = match self.take(remote.addr) {
            Some(s) => s,
            None => self.upstream.h1(&remote).await?,
        };
        self.hold(remote.addr, sender);
        Ok(())
    }

    /// Sends `req` to `dst` on this session's connection (made or taken
    /// from the pool when the session holds none to `dst`). A pooled
    /// connection that turns out closed before the request went out is
    /// replaced once.
    pub async fn send(
        &self,
        remote: &Remote,
        req: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        let dst = remote.addr;
        let mut req = req;
        for attempt in 0..2 {
            let mut sender = match self.take(dst) {
                Some(s) => s,
                None => self.upstream.h1(remote).await?,
            };
            if sender.ready().await.is_err() {
                continue;
            }
            let sent = sender.try_send_request(req);
            self.hold(dst, sender);
            match sent.await {
                Ok(rsp) => return Ok(rsp),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if attempt == 0 => {
                        self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
                        req = unsent;
                    }
                    _ => return Err(ProxyError::Upstream(dst, e.into_error())),
                },
            }
        }
        // Two connections in a row were closed before the request went out.
        let mut sender = self.upstream.h1_connect(remote, false).await?;
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| ProxyError::Upstream(dst, e));
        self.hold(dst, sender);
        rsp
    }
}

impl Drop for H1Session {
    fn drop(&mut self) {
        let held = self
            .held
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((dst, sender)) = held {
            self.upstream.release_h1(dst, sender);
        }
    }
}
