//! Distributed tracing: each proxied HTTP request that carries a sampled
//! trace context gets a span in this proxy (CLIENT outbound, SERVER
//! inbound), exported over OTLP/gRPC; the context it forwards names that
//! span as the next hop's parent.
//!
//! | file | what |
//! |---|---|
//! | `propagate.rs` | W3C, B3 single and B3 multi-header: read, rewritten |
//! | `export.rs` | the bounded queue and the batch export task |
//! | `body.rs` | the span ends with the response body (gRPC status from trailers) |
//! | `collector.rs` | the exporter dials the collector through discovery and mesh TLS |
//!
//! Cost: with no collector configured nothing here runs. With one, a
//! request without context costs one pass over its header names (63
//! instructions in the outbound proxy, callgrind); one with an
//! unsampled context also has its ids rewritten (one small header value);
//! only a sampled request builds a span (its attributes, its name) and
//! hands it to the queue, never waiting for the collector.

pub mod body;
pub mod collector;
pub mod export;
pub mod propagate;

use http::header::HeaderMap;
pub use opentelemetry::trace::SpanKind;
use opentelemetry::trace::{Event, SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use body::Open;
pub use body::Spanned;
use export::Queue;
use propagate::Context;

/// Whether this proxy takes part in traces, and where its spans go.
#[derive(Debug)]
pub struct Tracer {
    queue: Queue,
    /// Head sampling of requests without context: a random `u32` below
    /// this starts a trace (0: never).
    threshold: u64,
    scope: InstrumentationScope,
}

/// A sampled request's span while the request is in flight. Boxed: only
/// sampled requests carry one.
#[derive(Debug)]
pub struct Recording {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    kind: SpanKind,
    start: SystemTime,
    /// The endpoint (or address) the request went to, last attempt's.
    pub endpoint: Option<SocketAddr>,
    /// Attempts that were retried, as span events.
    pub events: Vec<Event>,
    /// The `weft-proxy-error` reason, when the proxy answered itself.
    pub error: Option<&'static str>,
    /// The server's mesh identity (outbound: the one the connection
    /// proved).
    pub server_id: Option<Arc<str>>,
}

/// What the proxy knows of a request once answered, for its span.
#[derive(Debug)]
pub struct Done<'a> {
    /// Route name, else `<service>.<ns>:<port>`.
    pub name: &'a str,
    pub method: &'a http::Method,
    pub route: Option<&'a str>,
    pub status: http::StatusCode,
    pub response: &'a HeaderMap,
    /// The client's mesh identity (inbound: the one its certificate proved;
    /// outbound: this proxy's).
    pub client_id: Option<&'a str>,
    pub authority: Option<&'a str>,
}

/// What a sampled request's span needs of the request, taken before the
/// request goes on (only for sampled requests).
#[derive(Debug)]
pub struct Traced {
    method: http::Method,
    /// `host:port` the client addressed (its `:authority` or `Host`), else
    /// the original destination.
    authority: String,
}

impl Traced {
    pub fn of<B>(req: &http::Request<B>, orig: SocketAddr) -> Self {
        // `orig` names a request without any authority (HTTP/1.0).
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok());
        let authority = match host {
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
        Self {
            method: req.method().clone(),
            authority,
        }
    }

    /// Ends `span` with the response, once its body has ended: the
    /// response goes on with the span in its body, which queues it. The
    /// span is named by its route when one matched, else by its Service
    /// (`service`, as discovery names it), else by the authority as
    /// addressed.
    pub fn finish<B: hyper::body::Body>(
        &self,
        tracer: &Tracer,
        span: Box<Recording>,
        route: Option<&str>,
        service: Option<&str>,
        rsp: http::Response<Spanned<B>>,
        client_id: Option<&str>,
    ) -> http::Response<Spanned<B>> {
        let name = match route.or(service) {
            Some(r) => Cow::Borrowed(r),
            None => service_name(&self.authority),
        };
        let open = tracer.finish(
            span,
            Done {
                name: &name,
                method: &self.method,
                route,
                status: rsp.status(),
                response: rsp.headers(),
                client_id,
                authority: Some(&self.authority),
            },
        );
        rsp.map(|body| body.traced(open))
    }
}

impl Tracer {
    /// A tracer that pushes its spans to `queue`, starting a trace for
    /// `sample_percent` of the requests that arrive without context.
    pub fn new(queue: Queue, sample_percent: f64) -> Self {
        let p = sample_percent.clamp(0.0, 100.0) / 100.0;
        Self {
            queue,
            threshold: (p * f64::from(u32::MAX)).round() as u64 + u64::from(p > 0.0),
            scope: InstrumentationScope::builder("weft-proxy")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }

    /// Reads the request's context, rewrites it with a new span of this
    /// proxy as the next hop's parent, and returns that span when it is
    /// sampled.
    pub fn start(&self, headers: &mut HeaderMap, kind: SpanKind) -> Option<Box<Recording>> {
        let carried = propagate::carries_context(headers);
        let ctx = match carried.then(|| propagate::extract(headers)).flatten() {
            Some(ctx) => ctx,
            None if self.threshold == 0 || (carried && propagate::denied(headers)) => return None,
            None if u64::from(rand::random::<u32>()) >= self.threshold => return None,
            None => {
                let own = span_id();
                let root = propagate::root(trace_id(), own);
                propagate::inject(headers, &root, own);
                return Some(Box::new(Recording::new(&root, own, None, kind)));
            }
        };
        let own = span_id();
        propagate::inject(headers, &ctx, own);
        ctx.sampling
            .sampled()
            .then(|| Box::new(Recording::new(&ctx, own, Some(ctx.span_id), kind)))
    }

    /// Fills in `span` with what `done` says: the span, to be queued for
    /// export when the response body ends ([`Spanned`]).
    // Boxed as the request carried it: unboxing at the caller would copy
    // it for nothing.
    #[allow(clippy::boxed_local)]
    pub fn finish(&self, span: Box<Recording>, done: Done<'_>) -> Box<Open> {
        let response = done.response;
        let data = (*span).into_data(done, &self.scope);
        Box::new(Open::new(data, self.queue.clone(), response))
    }
}

impl Recording {
    fn new(ctx: &Context, own: [u8; 8], parent: Option<[u8; 8]>, kind: SpanKind) -> Self {
        Self {
            trace_id: ctx.trace_id,
            span_id: own,
            parent,
            kind,
            start: SystemTime::now(),
            endpoint: None,
            events: Vec::new(),
            error: None,
            server_id: None,
        }
    }

    /// A retried attempt, `attempt` counting from 1, and what it got.
    pub fn retried(&mut self, attempt: u32, outcome: String) {
        self.events.push(Event::new(
            "retry",
            SystemTime::now(),
            vec![
                KeyValue::new("weft.attempt", i64::from(attempt)),
                KeyValue::new("weft.attempt.outcome", outcome),
            ],
            0,
        ));
    }

    fn into_data(self, done: Done<'_>, scope: &InstrumentationScope) -> SpanData {
        let mut attributes = Vec::with_capacity(12);
        attributes.push(KeyValue::new("http.request.method", method(done.method)));
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(done.status.as_u16()),
        ));
        if let Some(route) = done.route {
            attributes.push(KeyValue::new("http.route", route.to_owned()));
        }
        if let Some(authority) = done.authority {
            attributes.push(KeyValue::new("server.address", authority.to_owned()));
        }
        if let Some(ep) = self.endpoint {
            attributes.push(KeyValue::new("network.peer.address", ip(ep.ip())));
            attributes.push(KeyValue::new("network.peer.port", i64::from(ep.port())));
        }
        if let Some(id) = done.client_id {
            attributes.push(KeyValue::new("weft.client.id", id.to_owned()));
        }
        if let Some(id) = &self.server_id {
            attributes.push(KeyValue::new("weft.server.id", id.clone()));
        }
        if let Some(reason) = self.error {
            attributes.push(KeyValue::new("weft.proxy_error", reason));
        }
        let status = match self.error {
            Some(reason) => Status::error(reason),
            None if done.status.is_server_error() => Status::error(""),
            None if self.kind == SpanKind::Client && done.status.is_client_error() => {
                Status::error("")
            }
            None => Status::Unset,
        };
        let mut data = SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(self.trace_id),
                SpanId::from_bytes(self.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: self.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: self.parent.is_some(),
            span_kind: self.kind,
            name: Cow::Owned(done.name.to_owned()),
            start_time: self.start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: events(self.events),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        };
        // A trailers-only gRPC response (an error, typically) has its
        // status in its headers; others in their trailers (`body.rs`).
        if let Some(code) = body::grpc_status(done.response) {
            body::status_code(&mut data, code);
        }
        data
    }
}

/// A request method as an attribute value: the standard ones without an
/// allocation.
fn method(m: &http::Method) -> opentelemetry::Value {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    match KNOWN.iter().find(|k| **k == m.as_str()) {
        Some(k) => (*k).into(),
        None => m.as_str().to_owned().into(),
    }
}

/// An address as an attribute value. IPv4 written by hand: `to_string`
/// went through the formatting machinery, 1,340 instructions a span
/// (callgrind, `benches/trace.rs`), the most expensive attribute.
fn ip(ip: std::net::IpAddr) -> opentelemetry::Value {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string().into();
    };
    let mut s = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if octet >= 100 {
            s.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            s.push(char::from(b'0' + octet / 10 % 10));
        }
        s.push(char::from(b'0' + octet % 10));
    }
    s.into()
}

fn events(list: Vec<Event>) -> SpanEvents {
    let mut e = SpanEvents::default();
    e.events = list;
    e
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
pub fn told_service(headers: &mut HeaderMap) -> Option<String> {
    let v = headers.remove(&WEFT_DST)?;
    v.to_str().ok().map(str::to_owned)
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

/// `name` (a Service's `name.ns.svc.<domain>:port`) as operators read
/// it: `name.ns:port`.
pub fn service_name(authority: &str) -> Cow<'_, str> {
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
    match host.split_once(".svc.") {
        Some((short, _)) if !port.is_empty() => Cow::Owned(format!("{short}:{port}")),
        Some((short, _)) => Cow::Borrowed(short),
        None => Cow::Borrowed(authority),
    }
}

#[cfg(test)]
mod tests;
