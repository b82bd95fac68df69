//! A request kept to be sent again: its head and its whole (small) body.

use bytes::Bytes;
use http::Request;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use super::Body;
use crate::errors::ProxyError;

/// Largest request body kept to be sent again.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

#[derive(Debug)]
pub(super) struct Replay {
    pub method: http::Method,
    uri: http::Uri,
    version: http::Version,
    pub headers: http::HeaderMap,
    body: Bytes,
}

impl Replay {
    /// Keeps a request whose body is known to be at most
    /// [`MAX_REPLAY_BODY`] (empty, or a small `content-length`); gives any
    /// other back untouched (it is sent once, streamed). Reading the body
    /// is bounded by the caller's deadline.
    pub async fn take(
        req: Request<Incoming>,
    ) -> Result<Result<Self, Request<Incoming>>, ProxyError> {
        use http_body_util::BodyExt;
        use hyper::body::Body as _;
        let empty = req.body().is_end_stream();
        let small = req
            .body()
            .size_hint()
            .upper()
            .is_some_and(|n| n <= MAX_REPLAY_BODY);
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

    /// A copy to send (the body's bytes are shared, not copied).
    pub fn request(&self) -> Request<Body> {
        let mut req = Request::new(Either::Right(Full::new(self.body.clone())));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}
