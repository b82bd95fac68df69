//! Trace context in request headers: read in the three formats in use,
//! rewritten so that the next hop's parent is this proxy's span.
//!
//! - **W3C Trace Context** (`traceparent`, `tracestate`): as the
//!   specification's parsing rules say: lowercase hex only, all-zero trace
//!   or parent ids refused, version `ff` refused, a higher version parsed
//!   by its first four fields (and refused if what follows is not `-`),
//!   the sampled flag read by masking (other flag bits are not compared).
//!   `tracestate` is never touched.
//! - **B3 single** (`b3: {trace}-{span}[-{sampling}[-{parent}]]`, or only
//!   `b3: 0`). It wins over B3 multi-header.
//! - **B3 multi-header** (`x-b3-traceid`, `x-b3-spanid`,
//!   `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags`).
//!
//! When a request carries more than one, W3C wins, then B3 single, then B3
//! multi; only the winner is rewritten (a request rarely carries two, and
//! two that disagree cannot both be right).
//!
//! The sampling decision is the caller's: sampled, not sampled, or (B3
//! only) deferred, which this proxy treats as not sampled without saying
//! so downstream (it never makes a new decision in the middle of a trace).

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static B3: HeaderName = HeaderName::from_static("b3");
pub static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub static B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub static B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// The format a context came in, and goes on, in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    W3c,
    B3Single,
    B3Multi,
}

/// The caller's sampling decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    Sampled,
    NotSampled,
    /// B3 without a decision: left to a later hop.
    Deferred,
    /// B3 debug (`d`, `x-b3-flags: 1`): sampled, and said so downstream.
    Debug,
}

impl Sampling {
    pub fn sampled(self) -> bool {
        matches!(self, Sampling::Sampled | Sampling::Debug)
    }
}

/// A context read from a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    pub format: Format,
    /// 16 bytes; a 64-bit B3 id is the low half (its high half zero).
    pub trace_id: [u8; 16],
    /// Whether the B3 trace id was written with 16 hex digits (kept so).
    pub short_id: bool,
    /// The caller's span: this proxy's span's parent.
    pub span_id: [u8; 8],
    pub sampling: Sampling,
}

/// What one pass over a request's headers found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// None of the formats' headers (most requests).
    Nothing,
    /// One `traceparent`, valid: W3C wins over B3, so nothing else is
    /// looked up, and it can be rewritten in place ([`rewrite_traceparent`]).
    W3c(Context),
    /// Something else: [`extract`] decides.
    Other,
}

/// Looks for the formats' headers in one pass, reading a sole
/// `traceparent` on the way. Most requests carry none: one pass over a
/// request's few headers costs less than the lookups of `extract`
/// (callgrind: 489 instructions for the three lookups of a request without
/// context); one that carries `traceparent` then needs no lookup at all.
pub fn scan(headers: &HeaderMap) -> Seen {
    let mut traceparent = None;
    let mut others = false;
    for (name, value) in headers {
        let n = name.as_str().as_bytes();
        if n == b"traceparent" {
            others |= traceparent.is_some();
            traceparent = Some(value);
        } else if n == b"b3" || n.starts_with(b"x-b3-") {
            others = true;
        }
    }
    match (traceparent.map(|v| w3c(v.as_bytes())), others) {
        (Some(Some(ctx)), false) => Seen::W3c(ctx),
        (None, false) => Seen::Nothing,
        _ => Seen::Other,
    }
}

/// The context of `headers`, if any format carries a valid one.
pub fn extract(headers: &HeaderMap) -> Option<Context> {
    if let Some(v) = headers.get(&TRACEPARENT) {
        if let Some(c) = w3c(v.as_bytes()) {
            return Some(c);
        }
    }
    if let Some(v) = headers.get(&B3) {
        if let Some(c) = b3_single(v.as_bytes()) {
            return Some(c);
        }
    }
    b3_multi(headers)
}

/// Whether `headers` say "not sampled" with no ids (`b3: 0`): nothing to
/// rewrite, and no trace may start here.
pub fn denied(headers: &HeaderMap) -> bool {
    headers.get(&B3).is_some_and(|v| v.as_bytes() == b"0")
        || (headers.get(&B3_TRACE_ID).is_none()
            && headers
                .get(&B3_SAMPLED)
                .is_some_and(|v| matches!(v.as_bytes(), b"0" | b"false")))
}

/// Parses a `traceparent` value.
pub fn w3c(v: &[u8]) -> Option<Context> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex_byte(&v[0..2])?;
    match version {
        0xff => return None,
        0 if v.len() != 55 => return None,
        0 => {}
        _ if v.len() > 55 && v[55] != b'-' => return None,
        _ => {}
    }
    let trace_id: [u8; 16] = hex_array(&v[3..35])?;
    let span_id: [u8; 8] = hex_array(&v[36..52])?;
    let flags = hex_byte(&v[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Context {
        format: Format::W3c,
        trace_id,
        short_id: false,
        span_id,
        sampling: if flags & 1 == 1 {
            Sampling::Sampled
        } else {
            Sampling::NotSampled
        },
    })
}

/// Parses a `b3` (single header) value with ids.
pub fn b3_single(v: &[u8]) -> Option<Context> {
    let mut parts = v.split(|&b| b == b'-');
    let trace = parts.next()?;
    let span = parts.next()?;
    let sampling = match parts.next() {
        None => Sampling::Deferred,
        Some(s) => b3_sampling(s)?,
    };
    if let Some(parent) = parts.next() {
        hex_array::<8>(parent).filter(|p| *p != [0; 8])?;
    }
    if parts.next().is_some() {
        return None;
    }
    let (trace_id, short_id) = b3_trace_id(trace)?;
    let span_id = b3_span_id(span)?;
    Some(Context {
        format: Format::B3Single,
        trace_id,
        short_id,
        span_id,
        sampling,
    })
}

/// Reads the B3 multi-header context.
pub fn b3_multi(headers: &HeaderMap) -> Option<Context> {
    let (trace_id, short_id) = b3_trace_id(headers.get(&B3_TRACE_ID)?.as_bytes())?;
    let span_id = b3_span_id(headers.get(&B3_SPAN_ID)?.as_bytes())?;
    let debug = headers.get(&B3_FLAGS).is_some_and(|v| v.as_bytes() == b"1");
    let sampling = if debug {
        Sampling::Debug
    } else {
        match headers.get(&B3_SAMPLED).map(|v| v.as_bytes()) {
            None => Sampling::Deferred,
            Some(b"1" | b"true") => Sampling::Sampled,
            Some(b"0" | b"false") => Sampling::NotSampled,
            Some(_) => return None,
        }
    };
    Some(Context {
        format: Format::B3Multi,
        trace_id,
        short_id,
        span_id,
        sampling,
    })
}

fn b3_sampling(s: &[u8]) -> Option<Sampling> {
    match s {
        b"1" => Some(Sampling::Sampled),
        b"0" => Some(Sampling::NotSampled),
        b"d" => Some(Sampling::Debug),
        _ => None,
    }
}

fn b3_trace_id(v: &[u8]) -> Option<([u8; 16], bool)> {
    let id = match v.len() {
        32 => (hex_array::<16>(v)?, false),
        16 => {
            let low = hex_array::<8>(v)?;
            let mut id = [0; 16];
            id[8..].copy_from_slice(&low);
            (id, true)
        }
        _ => return None,
    };
    (id.0 != [0; 16]).then_some(id)
}

fn b3_span_id(v: &[u8]) -> Option<[u8; 8]> {
    hex_array::<8>(v).filter(|s| *s != [0; 8])
}

/// Writes `ctx` onward with `own` (this proxy's span) as the next hop's
/// parent, in the format it came in; the B3 formats also say that the
/// parent of `own` is the caller's span.
pub fn inject(headers: &mut HeaderMap, ctx: &Context, own: [u8; 8]) {
    match ctx.format {
        Format::W3c => {
            headers.insert(TRACEPARENT.clone(), traceparent(ctx, own));
        }
        Format::B3Single => {
            // trace(32) - span(16) - sampling(1) - parent(16)
            let mut v = [0u8; 68];
            let mut n = trace_hex(ctx, &mut v);
            v[n] = b'-';
            hex_into(&own, &mut v[n + 1..n + 17]);
            n += 17;
            let sampling = match ctx.sampling {
                Sampling::Sampled => Some(b'1'),
                Sampling::NotSampled => Some(b'0'),
                Sampling::Debug => Some(b'd'),
                Sampling::Deferred => None,
            };
            if let Some(s) = sampling {
                v[n] = b'-';
                v[n + 1] = s;
                v[n + 2] = b'-';
                hex_into(&ctx.span_id, &mut v[n + 3..n + 19]);
                n += 19;
            }
            headers.insert(B3.clone(), value(&v[..n]));
        }
        Format::B3Multi => {
            let mut span = [0u8; 16];
            hex_into(&own, &mut span);
            headers.insert(B3_SPAN_ID.clone(), value(&span));
            hex_into(&ctx.span_id, &mut span);
            headers.insert(B3_PARENT.clone(), value(&span));
        }
    }
}

/// [`inject`] for a context [`scan`] read from the request's sole
/// `traceparent`: its value is replaced where it is, with no lookup (the
/// insert's hashing and probing were most of a rewrite's cost).
pub fn rewrite_traceparent(headers: &mut HeaderMap, ctx: &Context, own: [u8; 8]) {
    let v = traceparent(ctx, own);
    match headers.iter_mut().find(|(name, _)| *name == TRACEPARENT) {
        Some((_, old)) => *old = v,
        None => {
            headers.insert(TRACEPARENT.clone(), v);
        }
    }
}

/// The `traceparent` naming `own` as the parent in `ctx`'s trace.
fn traceparent(ctx: &Context, own: [u8; 8]) -> HeaderValue {
    let mut v = [0u8; 55];
    v[..3].copy_from_slice(b"00-");
    hex_into(&ctx.trace_id, &mut v[3..35]);
    v[35] = b'-';
    hex_into(&own, &mut v[36..52]);
    v[52] = b'-';
    v[53] = b'0';
    v[54] = if ctx.sampling.sampled() { b'1' } else { b'0' };
    value(&v)
}

/// A new trace's `traceparent` (head sampling at the mesh edge).
pub fn root(trace_id: [u8; 16], own: [u8; 8]) -> Context {
    Context {
        format: Format::W3c,
        trace_id,
        short_id: false,
        span_id: own,
        sampling: Sampling::Sampled,
    }
}

fn trace_hex(ctx: &Context, out: &mut [u8]) -> usize {
    if ctx.short_id {
        hex_into(&ctx.trace_id[8..], &mut out[..16]);
        16
    } else {
        hex_into(&ctx.trace_id, &mut out[..32]);
        32
    }
}

fn value(v: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(v).expect("hex and '-' are valid header bytes")
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes` into `out` (twice as long).
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// Each byte's value as a lowercase hex digit; the others have the high
/// bit set.
const UNHEX: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut i = 0;
    while i < 16 {
        t[HEX[i] as usize] = i as u8;
        i += 1;
    }
    t
};

fn hex_byte(v: &[u8]) -> Option<u8> {
    let (hi, lo) = (UNHEX[usize::from(v[0])], UNHEX[usize::from(v[1])]);
    ((hi | lo) < 16).then_some(hi << 4 | lo)
}

/// `v` (exactly `2 * N` lowercase hex digits) as bytes. Without a branch
/// per digit: one table lookup each, checked once at the end (a `match`
/// per digit and a check per byte were 19 instructions a digit, a sampled
/// `traceparent`'s read 540 of them; callgrind, `benches/trace.rs`).
fn hex_array<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    if v.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    let mut seen = 0;
    for (o, pair) in out.iter_mut().zip(v.chunks_exact(2)) {
        let (hi, lo) = (UNHEX[usize::from(pair[0])], UNHEX[usize::from(pair[1])]);
        seen |= hi | lo;
        *o = hi << 4 | lo;
    }
    (seen < 16).then_some(out)
}

#[cfg(test)]
mod tests;
