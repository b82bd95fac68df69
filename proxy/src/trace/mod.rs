//! Distributed tracing: each proxied HTTP request that carries a sampled
//! trace context gets a span in this proxy (CLIENT outbound, SERVER
//! inbound), exported over OTLP/gRPC; the context it forwards names that
//! span as the next hop's parent.
//!
//! | file | what |
//! |---|---|
//! | `propagate.rs` | W3C, B3 single and B3 multi-header: read, rewritten |
//! | `export.rs` | the bounded queue, the batch export task and its retries |
//! | `wire.rs` | a batch of spans as an OTLP `ExportTraceServiceRequest` |
//! | `body.rs` | the span ends with the response body (gRPC status from trailers) |
//! | `collector.rs` | the OTLP/gRPC client, dialling the collector through discovery and mesh TLS |
//!
//! Cost: with no collector configured nothing here runs. With one, a
//! request without context costs one pass over its header names (63
//! instructions in the outbound proxy, callgrind); one with an
//! unsampled context also has its ids rewritten (one small header value);
//! only a sampled request records a span: a [`Recording`] of what the
//! proxy already holds (ids, the method, shared names), queued when the
//! response body ends, never waiting for the collector. Its attributes are
//! written only by the export task, straight into the OTLP request
//! (`wire.rs`). The README's tracing section has the figures.

pub mod body;
pub mod collector;
pub mod export;
pub mod propagate;
pub mod wire;

use http::header::HeaderMap;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

pub use body::Spanned;
use export::Queue;
use propagate::{Context, Seen};

/// Which side of a call a span stands for: the outbound proxy's is the
/// CLIENT side, the inbound proxy's the SERVER side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Client,
    Server,
}

/// Whether this proxy takes part in traces, and where its spans go.
#[derive(Debug)]
pub struct Tracer {
    queue: Queue,
    /// Head sampling of requests without context: a random `u32` below
    /// this starts a trace (0: never).
    threshold: u64,
}

/// A sampled request's span, from the request's arrival to the end of its
/// response body, then in the export queue until it is encoded
/// (`wire.rs`). It holds what the span says as the proxy already has it
/// (ids, the method, shared names): no attribute is built on the data
/// path. Boxed: only sampled requests carry one.
#[derive(Debug)]
pub struct Recording {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    kind: SpanKind,
    start: SystemTime,
    end: SystemTime,
    method: http::Method,
    /// `host:port` the client addressed (its `:authority` or `Host`), else
    /// the original destination.
    authority: String,
    name: Name,
    /// The span is named after the route that matched (`http.route`).
    routed: bool,
    status: u16,
    /// The client's mesh identity (inbound: the one its certificate proved;
    /// outbound: this proxy's).
    client_id: Option<Arc<str>>,
    /// The endpoint (or address) the request went to, last attempt's.
    pub endpoint: Option<SocketAddr>,
    /// The `weft-proxy-error` reason, when the proxy answered itself.
    pub error: Option<&'static str>,
    /// The server's mesh identity (outbound: the one the connection
    /// proved).
    pub server_id: Option<Arc<str>>,
    /// The response is gRPC: its status is expected, in its trailers (or
    /// its headers, trailers-only).
    grpc_response: bool,
    /// `grpc-status`, once read.
    grpc: Option<i64>,
    /// The response body did not end (the client went away, or the
    /// upstream failed, mid-body).
    incomplete: bool,
    /// Attempts that were retried, as span events.
    retries: Vec<Retry>,
    queue: Queue,
}

/// What a span is named after (its name is written when it is encoded).
#[derive(Debug)]
enum Name {
    /// A route's name, or the Service's `name.ns:port` as discovery gave it.
    Shared(Arc<str>),
    /// The authority as addressed, shortened by [`service_parts`].
    Addressed,
}

/// A retried attempt, a span event.
#[derive(Debug)]
struct Retry {
    at: SystemTime,
    /// Counting from 1.
    attempt: u32,
    outcome: String,
}

impl Tracer {
    /// A tracer that pushes its spans to `queue`, starting a trace for
    /// `sample_percent` of the requests that arrive without context.
    pub fn new(queue: Queue, sample_percent: f64) -> Self {
        let p = sample_percent.clamp(0.0, 100.0) / 100.0;
        Self {
            queue,
            threshold: (p * f64::from(u32::MAX)).round() as u64 + u64::from(p > 0.0),
        }
    }

    /// Reads the request's context, rewrites it with a new span of this
    /// proxy as the next hop's parent, and returns that span when it is
    /// sampled.
    pub fn start(&self, headers: &mut HeaderMap, kind: SpanKind) -> Option<Box<Recording>> {
        let seen = propagate::scan(headers);
        if let Seen::W3c(ctx) = seen {
            let own = span_id();
            propagate::rewrite_traceparent(headers, &ctx, own);
            return ctx
                .sampling
                .sampled()
                .then(|| self.recording(&ctx, own, Some(ctx.span_id), kind));
        }
        let carried = seen == Seen::Other;
        let ctx = match carried.then(|| propagate::extract(headers)).flatten() {
            Some(ctx) => ctx,
            None if self.threshold == 0 || (carried && propagate::denied(headers)) => return None,
            None if u64::from(rand::random::<u32>()) >= self.threshold => return None,
            None => {
                let own = span_id();
                let root = propagate::root(trace_id(), own);
                propagate::inject(headers, &root, own);
                return Some(self.recording(&root, own, None, kind));
            }
        };
        let own = span_id();
        propagate::inject(headers, &ctx, own);
        ctx.sampling
            .sampled()
            .then(|| self.recording(&ctx, own, Some(ctx.span_id), kind))
    }

    fn recording(
        &self,
        ctx: &Context,
        own: [u8; 8],
        parent: Option<[u8; 8]>,
        kind: SpanKind,
    ) -> Box<Recording> {
        let now = SystemTime::now();
        Box::new(Recording {
            trace_id: ctx.trace_id,
            span_id: own,
            parent,
            kind,
            start: now,
            end: now,
            method: http::Method::GET,
            authority: String::new(),
            name: Name::Addressed,
            routed: false,
            status: 0,
            client_id: None,
            endpoint: None,
            error: None,
            server_id: None,
            grpc_response: false,
            grpc: None,
            incomplete: false,
            retries: Vec::new(),
            queue: self.queue.clone(),
        })
    }

    /// Ends `span` with the response, once its body has ended: the
    /// response goes on with the span in its body, which queues it. The
    /// span is named by its route when one matched, else by its Service
    /// (`service`, as discovery names it), else by the authority as
    /// addressed (see [`Recording::request`]).
    pub fn finish<B: hyper::body::Body>(
        &self,
        mut span: Box<Recording>,
        route: Option<&Arc<str>>,
        service: Option<&Arc<str>>,
        rsp: http::Response<Spanned<B>>,
        client_id: Option<&Arc<str>>,
    ) -> http::Response<Spanned<B>> {
        span.name = match route.or(service) {
            Some(name) => Name::Shared(name.clone()),
            None => Name::Addressed,
        };
        span.routed = route.is_some();
        span.status = rsp.status().as_u16();
        span.client_id = client_id.cloned();
        span.response(rsp.headers());
        rsp.map(|body| body.traced(span))
    }
}

impl Recording {
    /// Takes what the span needs of the request before it goes on.
    pub fn request<B>(&mut self, req: &http::Request<B>, orig: SocketAddr) {
        self.method = req.method().clone();
        // `orig` names a request without any authority (HTTP/1.0).
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok());
        self.authority = match host {
            Some(h) if h.contains(':') => h.to_owned(),
            // No port: the scheme's (the app speaks plain HTTP). Not
            // `format!`: its machinery was most of this function's cost.
            Some(h) => {
                let mut a = String::with_capacity(h.len() + 3);
                a.push_str(h);
                a.push_str(":80");
                a
            }
            None => orig.to_string(),
        };
    }

    /// A retried attempt, `attempt` counting from 1, and what it got.
    pub fn retried(&mut self, attempt: u32, outcome: String) {
        self.retries.push(Retry {
            at: SystemTime::now(),
            attempt,
            outcome,
        });
    }

    /// What the response's headers say: whether it is gRPC, and its status
    /// when it is trailers-only (an error, typically; others have it in
    /// their trailers, `body.rs`).
    fn response(&mut self, headers: &HeaderMap) {
        self.grpc_response = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if let Some(code) = body::grpc_status(headers) {
            self.grpc = Some(code);
        }
    }

    /// Queues the span, ended now; `complete`: the body was read to its
    /// end.
    pub(crate) fn end(mut self: Box<Self>, complete: bool) {
        self.incomplete = !complete;
        self.end = SystemTime::now();
        let queue = self.queue.clone();
        queue.push(self);
    }

    /// The span's status: `None` unset, else ERROR with its message. In
    /// order: the proxy's own error, a 5xx (or a 4xx on the client side),
    /// the gRPC status as OpenTelemetry's gRPC conventions read it (a
    /// client span errs on any status but OK, a server span only on those
    /// that mean the server failed), a body that did not end, a gRPC
    /// response without a status.
    fn error_status(&self) -> Option<Cow<'static, str>> {
        if let Some(reason) = self.error {
            return Some(reason.into());
        }
        let http = self.status >= 500 || (self.kind == SpanKind::Client && self.status >= 400);
        if http {
            return Some("".into());
        }
        if let Some(code) = self.grpc {
            // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
            // UNAVAILABLE, DATA_LOSS.
            let server_fault = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
            if code != 0 && (self.kind == SpanKind::Client || server_fault) {
                return Some(format!("grpc-status {code}").into());
            }
        }
        if self.incomplete {
            Some("response body not finished".into())
        } else if self.grpc_response && self.grpc.is_none() {
            Some("gRPC response without grpc-status".into())
        } else {
            None
        }
    }
}

/// The header in which a client proxy tells the server proxy which
/// Service a sampled request was sent to (`name.ns:port`), so that both
/// spans carry the Service's name (the server side knows only a pod).
pub static WEFT_DST: http::header::HeaderName = http::header::HeaderName::from_static("weft-dst");

/// Adds [`WEFT_DST`] (a sampled request's only).
pub fn tell_service(headers: &mut HeaderMap, service: &str) {
    if let Ok(v) = http::HeaderValue::from_str(service) {
        headers.insert(WEFT_DST.clone(), v);
    }
}

/// Takes [`WEFT_DST`] out of a request: its value, when it has one.
pub fn told_service(headers: &mut HeaderMap) -> Option<Arc<str>> {
    let v = headers.remove(&WEFT_DST)?;
    v.to_str().ok().map(Arc::from)
}

/// A new span id (never all zero).
fn span_id() -> [u8; 8] {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// A new trace id (never all zero).
fn trace_id() -> [u8; 16] {
    loop {
        let id: u128 = rand::random();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// `authority` (a Service's `name.ns.svc.<domain>:port`) as operators read
/// it, `name.ns:port`, in two parts: the name and the port (`""`: none, or
/// kept in the name), which the encoder writes without building the
/// string.
///
/// Written without `split_once(".svc.")` and `format!`: the substring
/// searcher's set-up and the formatting machinery were 500 instructions a
/// span (callgrind, `weft-bench --callgrind`).
pub(crate) fn service_parts(authority: &str) -> (&str, &str) {
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
    let b = host.as_bytes();
    let svc = (0..b.len()).find(|&i| b[i] == b'.' && b[i..].starts_with(b".svc."));
    match svc {
        Some(i) => (&host[..i], port),
        None => (authority, ""),
    }
}

#[cfg(test)]
mod tests;
