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
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::SpanData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use super::export::Queue;
use crate::telemetry::metrics::GrpcStatuses;

/// A response body, with the span of its request when that is sampled,
/// and where its gRPC status is counted when it comes in trailers.
#[derive(Debug)]
pub struct Spanned<B: Body> {
    inner: B,
    open: Option<Box<Open>>,
    grpc: Option<Arc<GrpcStatuses>>,
}

/// A span waiting for the end of its response body.
#[derive(Debug)]
pub struct Open {
    data: SpanData,
    queue: Queue,
    /// Whether the response is gRPC (its status is read from trailers).
    grpc: bool,
}

impl Open {
    pub(super) fn new(data: SpanData, queue: Queue, response: &HeaderMap) -> Self {
        let grpc = response
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        Self { data, queue, grpc }
    }

    /// The gRPC status of the trailers, on the span (a trailers-only
    /// response had it in its headers, read when the span was opened).
    fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(code) = grpc_status(trailers) {
            status_code(&mut self.data, code);
        }
    }

    /// Queues the span, ended now; `complete`: the body was read to its
    /// end.
    pub(crate) fn end(mut self, complete: bool) {
        if !complete {
            // The client went away (or the upstream failed) mid-body.
            self.data
                .attributes
                .push(KeyValue::new("weft.response.incomplete", true));
            if self.data.status == Status::Unset {
                self.data.status = Status::error("response body not finished");
            }
        } else if self.grpc
            && !self
                .data
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == GRPC_STATUS)
        {
            // A gRPC response must end with a status.
            self.data.status = Status::error("gRPC response without grpc-status");
        }
        self.data.end_time = SystemTime::now();
        self.queue.push(self.data);
    }
}

const GRPC_STATUS: &str = "rpc.grpc.status_code";

/// `grpc-status` of `headers`, when it holds a number.
pub(super) fn grpc_status(headers: &HeaderMap) -> Option<i64> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
}

/// Puts gRPC status `code` on `data`, and the span status OpenTelemetry's
/// gRPC conventions give it: a client span errs on any status but OK, a
/// server span only on those that mean the server failed.
pub(super) fn status_code(data: &mut SpanData, code: i64) {
    data.attributes.retain(|kv| kv.key.as_str() != GRPC_STATUS);
    data.attributes.push(KeyValue::new(GRPC_STATUS, code));
    // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
    // DATA_LOSS.
    let server_fault = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
    let failed = match data.span_kind {
        SpanKind::Server => server_fault,
        _ => code != 0,
    };
    if failed && data.status == Status::Unset {
        data.status = Status::error(format!("grpc-status {code}"));
    }
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
    pub fn traced(mut self, open: Box<Open>) -> Self {
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
                    if let Some(trailers) = f.trailers_ref() {
                        open.trailers(trailers);
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
