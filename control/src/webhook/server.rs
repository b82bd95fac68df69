//! HTTPS for the injector: TLS 1.2/1.3 with the current serving
//! certificate, HTTP/1.1, `POST /inject` only. Bounded like the admin
//! server ([`crate::admin::Limits`]): the TLS handshake and the request
//! headers must come within the header timeout, connections are capped,
//! a failing accept backs off, and a body over 3 MiB (the API server's own
//! object limit) is refused.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::cert::ServingCert;
use super::{Injector, PATH};
use crate::admin::Limits;

const MAX_BODY: usize = 3 * 1024 * 1024;

/// Serves admissions on `listener` with `cert` until `stop`.
pub async fn serve(
    injector: Arc<Injector>,
    cert: Arc<ServingCert>,
    listener: TcpListener,
    stop: CancellationToken,
    limits: Limits,
) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = match rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder.with_no_client_auth().with_cert_resolver(cert),
        Err(error) => {
            warn!(%error, "webhook TLS configuration failed; not serving");
            return;
        }
    };
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let handshake_timeout = limits.header_read_timeout;
    crate::admin::accept(listener, stop, limits, "webhook", |tcp, permit| {
        let (acceptor, builder, injector) = (acceptor.clone(), builder.clone(), injector.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    debug!(%error, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = service_fn(move |req| {
                let injector = injector.clone();
                async move { Ok::<_, Infallible>(handle(&injector, req).await) }
            });
            if let Err(error) = builder.serve_connection(TokioIo::new(tls), service).await {
                debug!(%error, "webhook connection ended");
            }
            drop(permit);
        });
    })
    .await;
}

async fn handle(injector: &Injector, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    let text = |status: StatusCode, msg: String| {
        reply(status, "text/plain; charset=utf-8", msg.into_bytes())
    };
    if req.uri().path() != PATH {
        return text(
            StatusCode::NOT_FOUND,
            format!("the injector serves POST {PATH}\n"),
        );
    }
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, format!("POST {PATH}\n"));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("unreadable body: {e}\n"),
            )
        }
    };
    match injector.review(&body).await {
        Ok(review) => match serde_json::to_vec(&review) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        },
        Err(e @ super::ReviewError::Malformed(_)) => {
            text(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}
