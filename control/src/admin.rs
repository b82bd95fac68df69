//! The admin server (port 9990): `/live`, `/ready` (200 once every source
//! finished its initial sync and, with Certify served, an issuer is
//! loaded), `/metrics`.

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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

pub async fn serve(admin: Arc<Admin>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let tcp = tokio::select! {
            a = listener.accept() => match a {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
            _ = stop.cancelled() => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let rsp = admin.handle(req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(rsp) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
