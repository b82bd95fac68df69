//! A sampled response's span ends with its body, not with its headers: it
//! then covers the whole exchange, and a gRPC response's status, which
//! comes in its trailers, is on the span. A gRPC response's status is
//! counted there too (`weft_grpc_response_total`), sampled or not.
//!
//! Every response the proxy serves goes through [`Spanned`]; one that is
//! neither sampled nor gRPC costs two `Option` checks per frame.

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use super::Recording;
use crate::telemetry::metrics::GrpcStatuses;

/// A response body, with the span of its request when that is sampled,
/// and where its gRPC status is counted when it comes in trailers.
#[derive(Debug)]
pub struct Spanned<B: Body> {
    inner: B,
    open: Option<Box<Recording>>,
    grpc: Option<Arc<GrpcStatuses>>,
}

/// `grpc-status` of `headers`, when it holds a number.
pub(super) fn grpc_status(headers: &HeaderMap) -> Option<i64> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
}

impl<B: Body> Spanned<B> {
    /// A body without a span.
    pub fn plain(inner: B) -> Self {
        Self {
            inner,
            open: None,
            grpc: None,
        }
    }

    /// A gRPC response's body, whose status (in its trailers) is counted
    /// in `grpc`.
    pub fn counted(inner: B, grpc: Option<Arc<GrpcStatuses>>) -> Self {
        Self {
            inner,
            open: None,
            grpc,
        }
    }

    /// This body, ending `open` when it ends.
    pub fn traced(mut self, open: Box<Recording>) -> Self {
        self.open = Some(open);
        self
    }

    /// Counts the status of the trailers `frame` holds (`None`: the body
    /// ended, or its upstream failed, without trailers).
    fn count(&mut self, trailers: Option<&HeaderMap>) {
        if let Some(grpc) = self.grpc.take() {
            grpc.record(trailers.and_then(|t| t.get("grpc-status")));
        }
    }
}

impl<B> Body for Spanned<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if this.grpc.is_some() {
            match &frame {
                Some(Ok(f)) if f.is_trailers() => this.count(f.trailers_ref()),
                Some(Ok(_)) if this.inner.is_end_stream() => this.count(None),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => this.count(None),
            }
        }
        if let Some(open) = &mut this.open {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(code) = f.trailers_ref().and_then(grpc_status) {
                        open.grpc = Some(code);
                    }
                    if this.inner.is_end_stream() {
                        this.open.take().expect("open").end(true);
                    }
                }
                None => this.open.take().expect("open").end(true),
                Some(Err(_)) => this.open.take().expect("open").end(false),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for Spanned<B> {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            // Ended without trailers, and never polled.
            self.count(None);
        }
        if let Some(open) = self.open.take() {
            // Dropped before its end was read: complete only if there was
            // nothing to read (hyper does not poll a body already at its
            // end, such as an empty one).
            open.end(self.inner.is_end_stream());
        }
    }
}
