//! HTTP client connections to one upstream destination: made (TCP, mesh
//! TLS when the destination is meshed, the HTTP handshake), and kept by
//! whoever owns the destination.
//!
//! A balancer endpoint owns its [`Conns`]: one HTTP/2 connection shared by
//! every request to it, and its idle HTTP/1 connections. They go when the
//! endpoint leaves discovery ([`Conns::retire`]), so nothing here grows
//! with pod churn and no request takes a lock or a map lookup shared by
//! every destination. Requests to a plain address (the original
//! destination, the app inbound) keep their HTTP/2 connection per client
//! connection, and share idle HTTP/1 connections through [`AddrPool`],
//! which is touched once per client connection and bounded.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Client`]: how connections are made |
//! | `h2.rs` | [`H2Slot`]: one HTTP/2 connection, made once for concurrent first requests |
//! | `pool.rs` | [`Conns`] of one destination; [`AddrPool`] of plain addresses |

mod h2;
mod pool;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tracing::debug;

use crate::errors::ProxyError;
use crate::tls::Alpn;
use crate::transport::connect::{Connector, Remote};

pub use self::h2::H2Slot;
pub use pool::{AddrPool, Conns};

pub use crate::http::body::Body;
pub type H1 = http1::SendRequest<Body>;
pub type H2 = http2::SendRequest<Body>;

/// A connection being made. Boxed: connecting (TCP, TLS, the HTTP
/// handshake) is a large future, and a request that finds its connection
/// made should not carry (and move, at every spawn) its space.
pub type Connecting<'a, T> = Pin<Box<dyn Future<Output = Result<T, ProxyError>> + Send + 'a>>;

/// How upstream connections are made and how long idle ones are kept;
/// configured once at start-up.
#[derive(Debug)]
pub struct Client {
    pub connector: Connector,
    /// Idle HTTP/1 connections kept per destination.
    pub max_idle: usize,
    pub idle_timeout: Duration,
    h2_builder: http2::Builder<TokioExecutor>,
    /// Idle HTTP/1 connections to plain addresses.
    pub addrs: AddrPool,
}

impl Client {
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
            h2_builder,
            addrs: AddrPool::default(),
        }
    }

    /// A new HTTP/1 connection; `upgrades` lets it switch protocols.
    pub fn h1_connect<'a>(&'a self, remote: &'a Remote, upgrades: bool) -> Connecting<'a, H1> {
        Box::pin(self.h1_connecting(remote, upgrades))
    }

    async fn h1_connecting(&self, remote: &Remote, upgrades: bool) -> Result<H1, ProxyError> {
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

    /// A new HTTP/2 connection. It closes when the last sender for it is
    /// dropped (and its streams are done).
    pub fn h2_connect<'a>(&'a self, remote: &'a Remote) -> Connecting<'a, H2> {
        Box::pin(self.h2_connecting(remote))
    }

    async fn h2_connecting(&self, remote: &Remote) -> Result<H2, ProxyError> {
        let dst = remote.addr;
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
        Ok(sender)
    }
}
