//! Request headers the proxy reads from anyone: the deadline headers
//! (`grpc-timeout`, `weft-timeout`) and trace context (`traceparent`, B3).

use http::{HeaderMap, HeaderValue};
use std::time::Duration;
use weft_proxy::http::deadline::{self, Deadline};
use weft_proxy::trace::propagate::{self, Format, Sampling};

/// The input as a `grpc-timeout` value. An accepted value is what the
/// gRPC spec allows (1 to 8 ASCII digits and a unit); what the proxy
/// writes for the next hop parses again, and to the same milliseconds
/// (within the 8 digits the syntax allows); the deadline of a request
/// carrying both headers is the sooner.
pub fn grpc_timeout(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let Some(timeout) = deadline::parse_timeout(&value) else {
        return;
    };
    let (digits, unit) = data.split_at(data.len() - 1);
    assert!(
        (1..=8).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit),
        "accepted {:?}: not 1-8 digits",
        String::from_utf8_lossy(data)
    );
    assert!(b"HMSmun".contains(&unit[0]));
    let written = deadline::format_timeout(timeout);
    let again = deadline::parse_timeout(&written).expect("the proxy's own value parses");
    let ms = timeout.as_millis().clamp(1, 99_999_999);
    assert_eq!(again.as_millis(), ms, "{timeout:?} written as {written:?}");

    let mut headers = HeaderMap::new();
    headers.insert(deadline::GRPC_TIMEOUT, value);
    headers.insert(deadline::WEFT_TIMEOUT, HeaderValue::from_static("1S"));
    let start = tokio::time::Instant::now();
    let d = Deadline::of(start, Some(Duration::from_secs(30)), &headers)
        .expect("a timeout of at most 30s is in the clock's range");
    assert_eq!(d.timeout, timeout.min(Duration::from_secs(1)));
}

/// The trace headers, one value per line in this order: `traceparent`,
/// `b3`, `x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`,
/// `x-b3-sampled`, `x-b3-flags` (an empty line: no such header). A
/// context that parses, rewritten with this proxy's span as parent, parses
/// again: same format, trace id and sampling, the new parent; the formats
/// that say so name the caller's span as the new span's parent.
pub fn trace_context(data: &[u8]) {
    let names = [
        &propagate::TRACEPARENT,
        &propagate::B3,
        &propagate::B3_TRACE_ID,
        &propagate::B3_SPAN_ID,
        &propagate::B3_PARENT,
        &propagate::B3_SAMPLED,
        &propagate::B3_FLAGS,
    ];
    let mut headers = HeaderMap::new();
    for (name, line) in names.iter().zip(data.split(|b| *b == b'\n')) {
        if line.is_empty() {
            continue;
        }
        let Ok(value) = HeaderValue::from_bytes(line) else {
            return;
        };
        headers.insert((*name).clone(), value);
    }
    // Each format's parser alone agrees with what extract picked.
    if let Some(v) = headers.get(&propagate::TRACEPARENT) {
        if let Some(c) = propagate::w3c(v.as_bytes()) {
            assert_eq!(propagate::extract(&headers), Some(c), "W3C wins");
        }
    }
    let Some(ctx) = propagate::extract(&headers) else {
        return;
    };
    if headers
        .get(&propagate::B3)
        .is_some_and(|v| v.as_bytes() == b"0")
    {
        // `b3: 0` names no ids, so a context came from another header.
        // (Not `denied()`: `x-b3-sampled: 0` without ids denies too, yet a
        // `b3` header with ids wins over the multi headers, as it should.)
        assert_ne!(ctx.format, Format::B3Single);
    }
    let own = [0xa5, 1, 2, 3, 4, 5, 6, 0x7f];
    let mut out = headers.clone();
    propagate::inject(&mut out, &ctx, own);
    let next = propagate::extract(&out).expect("a rewritten context parses again");
    assert_eq!(next.format, ctx.format);
    assert_eq!(next.trace_id, ctx.trace_id);
    assert_eq!(next.short_id, ctx.short_id);
    assert_eq!(
        next.span_id, own,
        "the next hop's parent is this proxy's span"
    );
    let want = match (ctx.format, ctx.sampling) {
        // W3C carries one bit: debug is sampled, deferred cannot occur.
        (Format::W3c, s) if s.sampled() => Sampling::Sampled,
        (Format::W3c, _) => Sampling::NotSampled,
        (_, s) => s,
    };
    assert_eq!(next.sampling, want);
    let parent = match ctx.format {
        Format::W3c => None,
        Format::B3Single if ctx.sampling == Sampling::Deferred => None,
        Format::B3Single => {
            let v = out.get(&propagate::B3).expect("b3 written");
            let parent = v.as_bytes().rsplit(|b| *b == b'-').next().expect("a part");
            Some(parent.to_vec())
        }
        Format::B3Multi => Some(out[&propagate::B3_PARENT].as_bytes().to_vec()),
    };
    if let Some(parent) = parent {
        let mut want = [0u8; 16];
        propagate::hex_into(&ctx.span_id, &mut want);
        assert_eq!(parent, want, "the new span's parent is the caller's span");
    }
}
