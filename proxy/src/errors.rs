//! The proxy's errors, and the one place they become responses.
//!
//! Every response the proxy makes itself carries `weft-proxy-error: <reason>`
//! so that a client (and an operator reading its logs) can tell the proxy's
//! answer from the application's. gRPC requests get a gRPC status instead of
//! an HTTP error, as gRPC clients expect.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use std::net::SocketAddr;
use std::time::Duration;

/// Names the header that marks proxy-generated responses.
pub const PROXY_ERROR_HEADER: &str = "weft-proxy-error";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("connection to {0} refused")]
    ConnectRefused(SocketAddr),
    #[error("connection to {0} timed out after {1:?}")]
    ConnectTimeout(SocketAddr, Duration),
    #[error("connection to {0} failed: {1}")]
    Connect(SocketAddr, #[source] std::io::Error),
    #[error("{1}")]
    Tls(SocketAddr, String),
    /// This proxy has no certificate of its own (yet): it cannot speak mesh
    /// TLS to anyone, whichever endpoint it picks.
    #[error("no certificate for this proxy's identity: cannot connect to {0} over mesh TLS")]
    NoIdentity(SocketAddr),
    #[error("HTTP handshake with {0} failed: {1}")]
    Handshake(SocketAddr, #[source] hyper::Error),
    #[error("upstream {0} failed: {1}")]
    Upstream(SocketAddr, #[source] hyper::Error),
    #[error("no endpoint of {0} is ready")]
    NoEndpoints(SocketAddr),
    #[error("every endpoint of {0} is failing")]
    AllFailing(SocketAddr),
    #[error("request to {0} timed out after {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("attempt to {0} timed out after {1:?}")]
    TryTimeout(SocketAddr, Duration),
    #[error("the client's request body failed: {0}")]
    ClientBody(#[source] hyper::Error),
    /// Inbound authorization refused the request (the reason of
    /// `weft_inbound_authz_total`).
    #[error("unauthorized: {0}")]
    Forbidden(&'static str),
    /// Routes are attached to the destination and none matches the request
    /// (the Gateway API says 404).
    #[error("no route of {0} matches the request")]
    NoRoute(SocketAddr),
    /// The route's chosen backend cannot take traffic (the control plane's
    /// reason: a missing Service, a port it lacks, every weight zero).
    #[error("the route's backend for {0} is invalid: {1}")]
    InvalidBackend(SocketAddr, std::sync::Arc<str>),
}

impl ProxyError {
    /// Whether connecting to an endpoint failed because of the endpoint
    /// (nothing was sent, so another one may be tried, and this one's
    /// failure is recorded).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            ProxyError::ConnectRefused(_)
                | ProxyError::ConnectTimeout(..)
                | ProxyError::Connect(..)
                | ProxyError::Tls(..)
        )
    }
}

impl ProxyError {
    /// A copy of a failure to connect, for the requests that waited on the
    /// same attempt (none for other errors: they are not shared).
    pub fn copy_connect(&self) -> Option<ProxyError> {
        Some(match self {
            ProxyError::ConnectRefused(a) => ProxyError::ConnectRefused(*a),
            ProxyError::ConnectTimeout(a, t) => ProxyError::ConnectTimeout(*a, *t),
            ProxyError::Connect(a, e) => {
                ProxyError::Connect(*a, std::io::Error::new(e.kind(), e.to_string()))
            }
            ProxyError::Tls(a, why) => ProxyError::Tls(*a, why.clone()),
            ProxyError::NoIdentity(a) => ProxyError::NoIdentity(*a),
            _ => return None,
        })
    }

    /// The short reason in the header and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::ConnectRefused(_) => "connect refused",
            ProxyError::ConnectTimeout(..) => "connect timeout",
            ProxyError::Connect(..) => "connect failed",
            ProxyError::Tls(..) => "tls failed",
            ProxyError::NoIdentity(_) => "no identity",
            ProxyError::Handshake(..) => "handshake failed",
            ProxyError::Upstream(..) => "upstream failed",
            ProxyError::NoEndpoints(_) => "no endpoints",
            ProxyError::AllFailing(_) => "endpoints failing",
            ProxyError::Timeout(..) => "request timeout",
            ProxyError::TryTimeout(..) => "attempt timeout",
            ProxyError::ClientBody(_) => "client body failed",
            ProxyError::Forbidden(_) => "unauthorized",
            ProxyError::NoRoute(_) => "no route",
            ProxyError::InvalidBackend(..) => "invalid backend",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::ConnectTimeout(..)
            | ProxyError::Timeout(..)
            | ProxyError::TryTimeout(..) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::NoEndpoints(_) | ProxyError::AllFailing(_) | ProxyError::NoIdentity(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::NoRoute(_) => StatusCode::NOT_FOUND,
            ProxyError::InvalidBackend(..) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// gRPC status: UNAVAILABLE, DEADLINE_EXCEEDED for a timeout,
    /// PERMISSION_DENIED for a refusal, UNIMPLEMENTED for no route (the
    /// method is not served here), INTERNAL for an invalid backend.
    fn grpc_status(&self) -> &'static str {
        match self {
            ProxyError::Forbidden(_) => "7",
            ProxyError::NoRoute(_) => "12",
            ProxyError::InvalidBackend(..) => "13",
            ProxyError::ConnectTimeout(..)
            | ProxyError::Timeout(..)
            | ProxyError::TryTimeout(..) => "4",
            _ => "14",
        }
    }

    /// The response a client gets for this error.
    pub fn to_response(&self, grpc: bool) -> Response<Bytes> {
        let reason = HeaderValue::from_static(self.reason());
        let mut rsp = Response::new(Bytes::new());
        if !grpc {
            *rsp.status_mut() = self.status();
            *rsp.body_mut() = Bytes::from(format!("{self}\n"));
        }
        let h = rsp.headers_mut();
        h.insert(PROXY_ERROR_HEADER, reason.clone());
        if grpc {
            // A trailers-only gRPC response: HTTP 200 with the status in the headers.
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from_static(self.grpc_status()));
            h.insert("grpc-message", reason);
        } else {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        rsp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_grpc_responses() {
        let dst: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let rsp = ProxyError::ConnectRefused(dst).to_response(false);
        assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(rsp.headers()[PROXY_ERROR_HEADER], "connect refused");
        let rsp = ProxyError::ConnectTimeout(dst, Duration::from_secs(1)).to_response(false);
        assert_eq!(rsp.status(), StatusCode::GATEWAY_TIMEOUT);
        let rsp = ProxyError::ConnectRefused(dst).to_response(true);
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["grpc-status"], "14");
        let rsp = ProxyError::NoEndpoints(dst).to_response(false);
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rsp.headers()[PROXY_ERROR_HEADER], "no endpoints");
        let rsp = ProxyError::NoIdentity(dst).to_response(false);
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rsp.headers()[PROXY_ERROR_HEADER], "no identity");
        assert!(
            !ProxyError::NoIdentity(dst).is_connect(),
            "not the endpoint's fault"
        );
    }
}
