//! The admin server (port 9990): `/live`, `/ready` (200 once every source
//! finished its initial sync and, with Certify served, an issuer is
//! loaded), `/metrics`.
//!
//! Bounded like the proxy's admin server: a connection that does not send
//! its request headers within 10 s is closed, at most 128 connections are
//! served at once, and a failing accept backs off (5 ms doubling to 1 s)
//! instead of spinning.

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::ready::Readiness;

#[derive(Debug)]
pub struct Admin {
    pub registry: Registry,
    /// Every source synced and, when Certify is served, an issuer loaded
    /// (an issuer Secret may not exist yet).
    pub ready: Readiness,
}

impl Admin {
    fn handle(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, body: String| {
            Response::builder()
                .status(status)
                .header("content-type", "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default()
        };
        match (method, path) {
            (&Method::GET, "/live") => reply(StatusCode::OK, "live\n".into()),
            (&Method::GET, "/ready") => match self.ready.overall() {
                Some(why) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                None => reply(StatusCode::OK, "ready\n".into()),
            },
            (&Method::GET, "/metrics") => {
                let mut out = String::new();
                match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
                    Ok(()) => reply(StatusCode::OK, out),
                    Err(_) => reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "encoding failed\n".into(),
                    ),
                }
            }
            _ => reply(StatusCode::NOT_FOUND, "try /live /ready /metrics\n".into()),
        }
    }
}

/// What one slow or hostile admin client can hold, and how a failing
/// accept is waited out: the proxy admin server's limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A connection that has not sent a request's headers within this is
    /// closed.
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub connections: usize,
    /// The first wait after a failed accept (out of file descriptors, say),
    /// doubled on each failure in a row up to `accept_backoff_max`.
    pub accept_backoff: Duration,
    pub accept_backoff_max: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            connections: 128,
            accept_backoff: Duration::from_millis(5),
            accept_backoff_max: Duration::from_secs(1),
        }
    }
}

/// Serves until `stop`, with the default [`Limits`].
pub async fn serve(admin: Arc<Admin>, listener: TcpListener, stop: CancellationToken) {
    serve_with(admin, listener, stop, Limits::default()).await;
}

/// Serves until `stop`.
pub async fn serve_with(
    admin: Arc<Admin>,
    listener: TcpListener,
    stop: CancellationToken,
    limits: Limits,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    accept(listener, stop, limits, "admin", |tcp, permit| {
        let admin = admin.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let rsp = admin.handle(req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(rsp) }
            });
            if let Err(error) = builder.serve_connection(TokioIo::new(tcp), service).await {
                debug!(%error, "admin connection ended");
            }
            drop(permit);
        });
    })
    .await;
}

/// Accepts connections on `listener` until `stop`, at most
/// `limits.connections` at once, backing off after a failed accept;
/// hands each to `serve` with the permit its connection holds. Shared by
/// the admin server and the injector's ([`crate::webhook`]).
pub(crate) async fn accept(
    listener: TcpListener,
    stop: CancellationToken,
    limits: Limits,
    server: &'static str,
    mut serve: impl FnMut(TcpStream, OwnedSemaphorePermit),
) {
    let permits = Arc::new(Semaphore::new(limits.connections));
    let mut backoff = limits.accept_backoff;
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((tcp, _)) => {
                backoff = limits.accept_backoff;
                serve(tcp, permit);
            }
            Err(error) => {
                // Out of file descriptors or memory: wait instead of spinning.
                warn!(%error, ?backoff, server, "accept failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(limits.accept_backoff_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        let (_pending, pending) = tokio::sync::watch::channel(Vec::new());
        let admin = Arc::new(Admin {
            registry: Registry::default(),
            ready: Readiness::new(pending, None),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let limits = Limits {
            header_read_timeout: Duration::from_millis(200),
            connections: 2,
            ..Limits::default()
        };
        let server = tokio::spawn(serve_with(admin, listener, stop.clone(), limits));

        // Two slow clients hold both connections; a third waits its turn.
        let mut slow = Vec::new();
        for _ in 0..2 {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            slow.push(tcp);
        }
        let third = tokio::spawn(get(addr));
        for mut tcp in slow {
            let mut rest = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
            assert!(
                read.is_ok(),
                "the server closes a connection without headers"
            );
            assert!(
                !String::from_utf8_lossy(&rest).contains("200 OK"),
                "no answer to half a request"
            );
        }
        let answer = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("served once a slot is free")
            .unwrap();
        assert!(answer.ends_with("live\n"), "{answer}");
        stop.cancel();
        server.await.unwrap();
    }

    async fn get(addr: std::net::SocketAddr) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        out
    }
}
