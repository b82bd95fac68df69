//! The admin server (port 4191): `/live`, `/ready` (listening, the control
//! plane reached once when one is configured, and with mesh TLS on, holding
//! an unexpired certificate), `/metrics` (Prometheus text),
//! `/config` (the configuration in force), `/identity` (the proxy's identity
//! and certificate) and `/shutdown` (POST, from loopback only). It is never redirected (weft-init skips its port) and is
//! the only thing the kubelet and Prometheus talk to.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::discovery::Resolver;
use crate::identity::Credentials;

#[derive(Debug)]
pub struct Admin {
    pub registry: Registry,
    pub ready: AtomicBool,
    pub config_dump: String,
    pub shutdown: CancellationToken,
    /// The proxy's identity, when mesh TLS is on.
    pub identity: Option<Arc<Credentials>>,
    /// Discovery, when a control plane is configured: not ready until it
    /// has been reached once.
    pub discovery: Option<Arc<Resolver>>,
}

impl Admin {
    fn handle(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: String| {
            Response::builder()
                .status(status)
                .header("content-type", "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default()
        };
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/live") => text(StatusCode::OK, "live\n".into()),
            (&Method::GET, "/ready") if !self.ready.load(Ordering::Acquire) => {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())
            }
            (&Method::GET, "/ready") if self.discovery.as_ref().is_some_and(|d| !d.reached()) => {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the control plane has not been reached yet\n".into(),
                )
            }
            (&Method::GET, "/ready") => match self.identity.as_ref().and_then(|c| c.not_ready()) {
                Some(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
                None => text(StatusCode::OK, "ready\n".into()),
            },
            (&Method::GET, "/identity") => match &self.identity {
                Some(c) => text(StatusCode::OK, c.describe()),
                None => text(
                    StatusCode::NOT_FOUND,
                    "mesh TLS is off: no identity\n".into(),
                ),
            },
            (&Method::GET, "/metrics") => {
                let mut out = String::with_capacity(16 * 1024);
                match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
                    Ok(()) => Response::builder()
                        .header(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .body(Full::new(Bytes::from(out)))
                        .unwrap_or_default(),
                    Err(_) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "encoding failed\n".into(),
                    ),
                }
            }
            (&Method::GET, "/config") => text(StatusCode::OK, self.config_dump.clone()),
            (&Method::POST, "/shutdown") if is_loopback(peer) => {
                info!("shutdown requested on the admin port");
                self.shutdown.cancel();
                text(StatusCode::OK, "shutting down\n".into())
            }
            (_, "/shutdown") => text(
                StatusCode::FORBIDDEN,
                "/shutdown takes POST from loopback only\n".into(),
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /live /ready /metrics /config /identity /shutdown\n".into(),
            ),
        }
    }
}

fn is_loopback(peer: SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Serves until `stop` (which fires after the data path drained, so that
/// probes keep answering while the proxy drains).
pub async fn serve(admin: Arc<Admin>, listener: TcpListener, stop: CancellationToken) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(error) => {
                    debug!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let admin = admin.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let rsp = admin.handle(&req, peer);
                async move { Ok::<_, Infallible>(rsp) }
            });
            if let Err(error) = builder.serve_connection(TokioIo::new(tcp), service).await {
                debug!(%error, "admin connection error");
            }
        });
    }
}
