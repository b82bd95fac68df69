//! A batch of spans as an OTLP `ExportTraceServiceRequest`, written
//! straight from the [`Recording`]s with `prost::encoding`'s primitives.
//!
//! Why not the SDK's `SpanData` and opentelemetry-otlp's exporter: they
//! build each span's attributes as owned `KeyValue`s on the data path, then
//! the exporter clones the batch (to keep it for its retries), copies it
//! into opentelemetry-proto's structs (a `String` per key and value), and
//! prost encodes those while hyper sends the request. Measured end to end
//! (`weft-bench --callgrind`, HTTP/1.1, 100% sampled, per request in each
//! proxy), that was 5,500-6,900 instructions on the request path, 8,600
//! in the export task and 7,000-7,300 in the gRPC client's send, against
//! 32,000-33,500 for a whole request without tracing. Here a span's
//! attributes are never built: each is written once, into the request's
//! bytes, from what the proxy already held, and the bytes are sent as they
//! are: 2,800-3,900 on the request path, 3,200 in the export task, 500 in
//! the send. (A `prost::Message` tree built per batch would again copy
//! every string; the fixed schema is small enough to write directly, and
//! the tests compare every byte with what prost writes for the same
//! message.)
//!
//! The resource (`service.name`, pod, namespace, node, version) and the
//! instrumentation scope are encoded once, when the exporter starts. The
//! tests decode every field back with opentelemetry-proto's types.

use bytes::Bytes;
use prost::encoding::{encode_key, encoded_len_varint, WireType};
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{service_parts, Name, Recording, SpanKind};

/// Encodes batches for one exporter (its resource); the scratch buffers
/// are kept from batch to batch.
#[derive(Debug)]
pub struct Encoder {
    /// `ResourceSpans.resource`, encoded with its field key.
    resource: Vec<u8>,
    /// `ScopeSpans.scope`, encoded with its field key.
    scope: Vec<u8>,
    /// The batch's `ScopeSpans.spans`.
    spans: Vec<u8>,
}

// Field numbers, from opentelemetry-proto's `trace.proto`,
// `resource.proto` and `common.proto`.
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const RESOURCE_ATTRIBUTES: u32 = 1;
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;
const SCOPE_NAME: u32 = 1;
const SCOPE_VERSION: u32 = 2;
const SPAN_TRACE_ID: u32 = 1;
const SPAN_SPAN_ID: u32 = 2;
const SPAN_PARENT_SPAN_ID: u32 = 4;
const SPAN_NAME: u32 = 5;
const SPAN_KIND: u32 = 6;
const SPAN_START: u32 = 7;
const SPAN_END: u32 = 8;
const SPAN_ATTRIBUTES: u32 = 9;
const SPAN_EVENTS: u32 = 11;
const SPAN_STATUS: u32 = 15;
const SPAN_FLAGS: u32 = 16;
const EVENT_TIME: u32 = 1;
const EVENT_NAME: u32 = 2;
const EVENT_ATTRIBUTES: u32 = 3;
const STATUS_MESSAGE: u32 = 2;
const STATUS_CODE: u32 = 3;
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
const ANY_STRING: u32 = 1;
const ANY_BOOL: u32 = 2;
const ANY_INT: u32 = 3;

// Enum values.
const KIND_SERVER: u64 = 2;
const KIND_CLIENT: u64 = 3;
const STATUS_ERROR: u64 = 2;
/// `SpanFlags`: the W3C sampled flag (every exported span is sampled),
/// and whether the parent is remote is known.
const FLAGS_SAMPLED: u32 = 0x01;
const FLAGS_HAS_IS_REMOTE: u32 = 0x100;
const FLAGS_IS_REMOTE: u32 = 0x200;

/// A `KeyValue.key` as it goes on the wire: the field's key, its length
/// and the name, written with one copy. The span attributes' are
/// constants ([`key!`]), the resource's built once ([`runtime_key`]).
#[derive(Clone, Copy, Debug)]
struct Key<'a>(&'a [u8]);

/// The [`Key`] of a constant attribute name, built at compile time.
macro_rules! key {
    ($name:literal) => {{
        const NAME: &[u8] = $name.as_bytes();
        const FIELD: [u8; NAME.len() + 2] = {
            assert!(
                NAME.len() <= MAX_CONST_KEY,
                "an attribute name too long for key!"
            );
            let mut b = [0u8; NAME.len() + 2];
            b[0] = (KEY_VALUE_KEY << 3) as u8 | WireType::LengthDelimited as u8;
            b[1] = NAME.len() as u8;
            let mut i = 0;
            while i < NAME.len() {
                b[i + 2] = NAME[i];
                i += 1;
            }
            b
        };
        Key(&FIELD)
    }};
}

/// The longest name [`key!`] takes: its field and the value's head fit in
/// [`Head`].
const MAX_CONST_KEY: usize = 40;

/// The [`Key`] bytes of a name known only at run time (the resource's).
fn runtime_key(name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(name.len() + 11);
    string(&mut b, KEY_VALUE_KEY, name);
    b
}

/// An attribute's value (`AnyValue`).
#[derive(Clone, Copy, Debug)]
enum Value<'a> {
    /// A string, as its UTF-8 bytes (what the wire carries: the one value
    /// that is not a `&str` is a dotted-decimal address written here).
    Str(&'a [u8]),
    Int(i64),
    Bool(bool),
}

impl Encoder {
    /// An encoder of spans from the resource `resource` (its attributes),
    /// instrumented by `weft-proxy` at this version.
    pub fn new(resource: &[(&str, &str)]) -> Self {
        let mut attrs = Vec::new();
        for (k, v) in resource {
            let key = runtime_key(k);
            key_value(
                &mut attrs,
                RESOURCE_ATTRIBUTES,
                Key(&key),
                Value::Str(v.as_bytes()),
            );
        }
        let mut r = Vec::new();
        bytes(&mut r, RESOURCE_SPANS_RESOURCE, &attrs);
        let mut scope = Vec::new();
        string(&mut scope, SCOPE_NAME, "weft-proxy");
        string(&mut scope, SCOPE_VERSION, env!("CARGO_PKG_VERSION"));
        let mut s = Vec::new();
        bytes(&mut s, SCOPE_SPANS_SCOPE, &scope);
        Self {
            resource: r,
            scope: s,
            spans: Vec::new(),
        }
    }

    /// `batch` as one `ExportTraceServiceRequest`.
    pub fn encode(&mut self, batch: &[Box<Recording>]) -> Bytes {
        self.spans.clear();
        for s in batch {
            // Written in place after room for a two-byte length (a span of
            // 128 bytes to 16 KiB, nearly all), which is then filled in, or
            // made the size it needs: not a copy of every span.
            key_ld(&mut self.spans, SCOPE_SPANS_SPANS);
            let at = self.spans.len();
            self.spans.extend_from_slice(&[0, 0]);
            span(&mut self.spans, s);
            let mut len = Head::new();
            len.varint((self.spans.len() - at - 2) as u64);
            if len.n == 2 {
                self.spans[at..at + 2].copy_from_slice(len.bytes());
            } else {
                self.spans.splice(at..at + 2, len.bytes().iter().copied());
            }
        }
        let scope_spans = self.scope.len() + self.spans.len();
        let resource_spans = self.resource.len() + field_len(scope_spans);
        let mut out = Vec::with_capacity(field_len(resource_spans));
        key_ld(&mut out, REQUEST_RESOURCE_SPANS);
        encode_varint(resource_spans as u64, &mut out);
        out.extend_from_slice(&self.resource);
        key_ld(&mut out, RESOURCE_SPANS_SCOPE_SPANS);
        encode_varint(scope_spans as u64, &mut out);
        out.extend_from_slice(&self.scope);
        out.extend_from_slice(&self.spans);
        // A batch of 512 leaves a buffer of about 200 KB: kept for the
        // next batch, but not one a burst of long names made larger.
        self.spans.shrink_to(1 << 20);
        Bytes::from(out)
    }
}

/// One span's fields, in field order.
fn span(buf: &mut Vec<u8>, s: &Recording) {
    // The ids, put together and copied at once.
    let mut head = Head::new();
    head.field(SPAN_TRACE_ID, &s.trace_id);
    head.field(SPAN_SPAN_ID, &s.span_id);
    if let Some(parent) = &s.parent {
        head.field(SPAN_PARENT_SPAN_ID, parent);
    }
    buf.extend_from_slice(head.bytes());
    let (name, port) = match &s.name {
        Name::Shared(name) => (&**name, ""),
        Name::Addressed => service_parts(&s.authority),
    };
    // Proto3 leaves an empty string out (a request the proxy refused
    // before reading its authority).
    if port.is_empty() && !name.is_empty() {
        string(buf, SPAN_NAME, name);
    } else if !port.is_empty() {
        // `name:port`, written as its parts.
        key_ld(buf, SPAN_NAME);
        encode_varint((name.len() + 1 + port.len()) as u64, buf);
        buf.extend_from_slice(name.as_bytes());
        buf.push(b':');
        buf.extend_from_slice(port.as_bytes());
    }
    let kind = match s.kind {
        SpanKind::Client => KIND_CLIENT,
        SpanKind::Server => KIND_SERVER,
    };
    let mut head = Head::new();
    head.push((SPAN_KIND << 3) as u8 | WireType::Varint as u8);
    head.varint(kind);
    for (tag, t) in [(SPAN_START, s.start), (SPAN_END, s.end)] {
        head.push((tag << 3) as u8 | WireType::SixtyFourBit as u8);
        head.extend(&nanos(t).to_le_bytes());
    }
    buf.extend_from_slice(head.bytes());

    let attr = |buf: &mut Vec<u8>, key, value| key_value(buf, SPAN_ATTRIBUTES, key, value);
    attr(
        buf,
        key!("http.request.method"),
        Value::Str(s.method.as_str().as_bytes()),
    );
    attr(
        buf,
        key!("http.response.status_code"),
        Value::Int(i64::from(s.status)),
    );
    if let (true, Name::Shared(route)) = (s.routed, &s.name) {
        attr(buf, key!("http.route"), Value::Str(route.as_bytes()));
    }
    if !s.authority.is_empty() {
        attr(
            buf,
            key!("server.address"),
            Value::Str(s.authority.as_bytes()),
        );
    }
    if let Some(ep) = s.endpoint {
        peer(buf, ep);
    }
    if let Some(id) = &s.client_id {
        attr(buf, key!("weft.client.id"), Value::Str(id.as_bytes()));
    }
    if let Some(id) = &s.server_id {
        attr(buf, key!("weft.server.id"), Value::Str(id.as_bytes()));
    }
    if let Some(reason) = s.error {
        attr(buf, key!("weft.proxy_error"), Value::Str(reason.as_bytes()));
    }
    if let Some(code) = s.grpc {
        attr(buf, key!("rpc.grpc.status_code"), Value::Int(code));
    }
    if s.incomplete {
        attr(buf, key!("weft.response.incomplete"), Value::Bool(true));
    }

    for r in &s.retries {
        let attempt = (key!("weft.attempt"), Value::Int(i64::from(r.attempt)));
        let outcome = (
            key!("weft.attempt.outcome"),
            Value::Str(r.outcome.as_bytes()),
        );
        let len = 1 + 8 + field_len("retry".len()) + kv_len(attempt) + kv_len(outcome);
        key_ld(buf, SPAN_EVENTS);
        encode_varint(len as u64, buf);
        fixed64(buf, EVENT_TIME, nanos(r.at));
        string(buf, EVENT_NAME, "retry");
        key_value(buf, EVENT_ATTRIBUTES, attempt.0, attempt.1);
        key_value(buf, EVENT_ATTRIBUTES, outcome.0, outcome.1);
    }

    if let Some(message) = s.error_status() {
        let len = if message.is_empty() {
            0
        } else {
            field_len(message.len())
        } + 2;
        key_ld(buf, SPAN_STATUS);
        encode_varint(len as u64, buf);
        if !message.is_empty() {
            string(buf, STATUS_MESSAGE, &message);
        }
        varint(buf, STATUS_CODE, STATUS_ERROR);
    }
    let mut flags = FLAGS_SAMPLED | FLAGS_HAS_IS_REMOTE;
    if s.parent.is_some() {
        flags |= FLAGS_IS_REMOTE;
    }
    key(buf, SPAN_FLAGS, WireType::ThirtyTwoBit);
    buf.extend_from_slice(&flags.to_le_bytes());
}

/// `network.peer.address` and `network.peer.port`. An IPv4 address is
/// written by hand: `to_string` went through the formatting machinery,
/// 1,340 instructions a span (callgrind, `benches/trace.rs`).
fn peer(buf: &mut Vec<u8>, ep: SocketAddr) {
    let mut v4 = [0u8; 15];
    let text;
    let addr = match ep.ip() {
        IpAddr::V4(ip) => ipv4(ip, &mut v4),
        ip @ IpAddr::V6(_) => {
            text = ip.to_string();
            text.as_bytes()
        }
    };
    key_value(
        buf,
        SPAN_ATTRIBUTES,
        key!("network.peer.address"),
        Value::Str(addr),
    );
    key_value(
        buf,
        SPAN_ATTRIBUTES,
        key!("network.peer.port"),
        Value::Int(i64::from(ep.port())),
    );
}

/// `ip` in dotted decimal, written into `out` (its bytes: an attribute's
/// string value is bytes on the wire, and `from_utf8` was a tenth of this).
fn ipv4(ip: std::net::Ipv4Addr, out: &mut [u8; 15]) -> &[u8] {
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            out[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            out[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        out[n] = b'0' + octet % 10;
        n += 1;
    }
    &out[..n]
}

/// Nanoseconds since the Unix epoch (0 for a clock set before it).
fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The length of a length-delimited field (one-byte key) of `len` bytes.
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// The length of an `AnyValue`'s fields.
fn value_len(v: Value<'_>) -> usize {
    match v {
        Value::Str(s) => field_len(s.len()),
        Value::Int(i) => 1 + encoded_len_varint(i as u64),
        Value::Bool(_) => 2,
    }
}

/// The length of a `KeyValue` field (one-byte key), key and length
/// included.
fn kv_len((key, value): (Key<'_>, Value<'_>)) -> usize {
    field_len(key.0.len() + field_len(value_len(value)))
}

/// A `KeyValue` as field `tag`: what precedes a string value's bytes is
/// put together in [`Head`] and copied once, the value's bytes after it.
/// Written field by field with `Vec::push`, an attribute took 210
/// instructions; this way 149 (callgrind, `benches/trace.rs` "encode").
fn key_value(buf: &mut Vec<u8>, tag: u32, key: Key<'_>, value: Value<'_>) {
    let any = value_len(value);
    let mut head = Head::new();
    head.push((tag << 3) as u8 | WireType::LengthDelimited as u8);
    head.varint((key.0.len() + field_len(any)) as u64);
    if key.0.len() <= MAX_CONST_KEY + 2 {
        head.extend(key.0);
    } else {
        // A long resource name (encoded once).
        buf.extend_from_slice(head.bytes());
        buf.extend_from_slice(key.0);
        head = Head::new();
    }
    head.push((KEY_VALUE_VALUE << 3) as u8 | WireType::LengthDelimited as u8);
    head.varint(any as u64);
    match value {
        Value::Str(s) => {
            head.push((ANY_STRING << 3) as u8 | WireType::LengthDelimited as u8);
            head.varint(s.len() as u64);
            buf.reserve(head.n + s.len());
            buf.extend_from_slice(head.bytes());
            buf.extend_from_slice(s);
        }
        Value::Bool(b) => {
            head.push((ANY_BOOL << 3) as u8 | WireType::Varint as u8);
            head.push(u8::from(b));
            buf.extend_from_slice(head.bytes());
        }
        Value::Int(i) => {
            head.push((ANY_INT << 3) as u8 | WireType::Varint as u8);
            // Two's complement, as protobuf writes an `int64`.
            head.varint(i as u64);
            buf.extend_from_slice(head.bytes());
        }
    }
}

/// A few bytes put together on the stack before one copy into the
/// request: an attribute's keys, lengths and constant name.
struct Head {
    b: [u8; 3 * 11 + MAX_CONST_KEY + 2 + 3],
    n: usize,
}

impl Head {
    fn new() -> Self {
        Self {
            b: [0; 3 * 11 + MAX_CONST_KEY + 2 + 3],
            n: 0,
        }
    }

    fn push(&mut self, byte: u8) {
        self.b[self.n] = byte;
        self.n += 1;
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.push(v as u8);
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.b[self.n..self.n + bytes.len()].copy_from_slice(bytes);
        self.n += bytes.len();
    }

    /// A length-delimited field of a few bytes (an id), one-byte key.
    fn field(&mut self, tag: u32, bytes: &[u8]) {
        self.push((tag << 3) as u8 | WireType::LengthDelimited as u8);
        self.varint(bytes.len() as u64);
        self.extend(bytes);
    }

    fn bytes(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

fn bytes(buf: &mut Vec<u8>, tag: u32, b: &[u8]) {
    key_ld(buf, tag);
    encode_varint(b.len() as u64, buf);
    buf.extend_from_slice(b);
}

fn string(buf: &mut Vec<u8>, tag: u32, s: &str) {
    bytes(buf, tag, s.as_bytes());
}

fn varint(buf: &mut Vec<u8>, tag: u32, v: u64) {
    key(buf, tag, WireType::Varint);
    encode_varint(v, buf);
}

fn fixed64(buf: &mut Vec<u8>, tag: u32, v: u64) {
    key(buf, tag, WireType::SixtyFourBit);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// The key of a length-delimited field.
fn key_ld(buf: &mut Vec<u8>, tag: u32) {
    key(buf, tag, WireType::LengthDelimited);
}

/// A field's key: one byte below field 16, as all but `flags` are.
fn key(buf: &mut Vec<u8>, tag: u32, wire: WireType) {
    if tag < 16 {
        buf.push((tag << 3) as u8 | wire as u8);
    } else {
        encode_key(tag, wire, buf);
    }
}

/// A varint, pushed byte by byte. prost's `encode_varint` writes through
/// `BufMut::put_u8`, which on a `Vec` is a one-byte `extend`: it was a
/// third of the encoding's instructions (callgrind, `benches/trace.rs`).
fn encode_varint(mut v: u64, buf: &mut Vec<u8>) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[cfg(test)]
mod tests;
