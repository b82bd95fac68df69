//! The one body type the proxy sends upstream and answers with.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::replay::Attempt;

/// What the proxy sends upstream and answers with.
#[derive(Debug)]
pub enum Body {
    /// Streamed from the other side: a client's request sent once, an
    /// upstream's response.
    Stream(Incoming),
    /// The proxy's own: an answer it made, an empty mirrored request.
    Whole(Full<Bytes>),
    /// One attempt of a request that may be sent again.
    Replay(Attempt),
}

impl Body {
    pub fn whole(bytes: impl Into<Bytes>) -> Self {
        Body::Whole(Full::new(bytes.into()))
    }
}

/// Why a body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// A retry of the request took over its body.
    #[error("the request is being sent again")]
    Superseded,
    /// The client's body failed while an earlier attempt read it.
    #[error("the client's request body failed")]
    ClientFailed,
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Stream(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BodyError::Hyper))),
            Body::Whole(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|never| match never {}))),
            Body::Replay(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Stream(b) => b.is_end_stream(),
            Body::Whole(b) => b.is_end_stream(),
            Body::Replay(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Stream(b) => b.size_hint(),
            Body::Whole(b) => b.size_hint(),
            Body::Replay(b) => b.size_hint(),
        }
    }
}
