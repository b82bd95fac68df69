//! Deadlines of HTTP requests: the caller's own timeout read from its
//! headers, and what is left of the deadline written for the next hop.
//!
//! A request's timeout is the smallest of its route's `timeout`, an incoming
//! `grpc-timeout` and an incoming `weft-timeout` (same syntax: `250m`, `2S`).
//! What is left of it when a request goes out is sent on as `grpc-timeout`
//! (gRPC) or `weft-timeout` (anything else), so the next hop never works
//! past its caller's deadline.

use http::{HeaderMap, HeaderValue};
use std::time::Duration;
use tokio::time::Instant;

/// The deadline header for non-gRPC requests (grpc-timeout syntax).
pub const WEFT_TIMEOUT: &str = "weft-timeout";
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// When a request must be answered by, and the timeout it came from (for the error).
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    pub at: Instant,
    pub timeout: Duration,
}

impl Deadline {
    /// The sooner of the route's `policy` timeout and the caller's own, counted
    /// from `start` (when the request arrived).
    pub fn of(start: Instant, policy: Option<Duration>, headers: &HeaderMap) -> Option<Self> {
        let timeout = match (policy, incoming_timeout(headers)) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(Self {
            at: start.checked_add(timeout)?,
            timeout,
        })
    }

    /// Writes what is left of the deadline into `headers`, for the next hop.
    pub fn propagate(&self, headers: &mut HeaderMap, grpc: bool) {
        let left = self.at.saturating_duration_since(Instant::now());
        let name = if grpc { GRPC_TIMEOUT } else { WEFT_TIMEOUT };
        headers.insert(name, format_timeout(left));
    }
}

/// A grpc-timeout value (`250m`, `2S`, `1H`; 1 to 8 ASCII digits and a
/// unit, as the gRPC spec writes it: no sign, no space) as a duration.
pub fn parse_timeout(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?;
    if s.len() < 2 || s.len() > 9 {
        return None;
    }
    let (num, unit) = s.split_at(s.len() - 1);
    // u64's parser also takes a leading `+`, which the spec does not.
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `d` in grpc-timeout syntax, in milliseconds (at least 1).
pub fn format_timeout(d: Duration) -> HeaderValue {
    let ms = d.as_millis().clamp(1, 99_999_999);
    HeaderValue::from_str(&format!("{ms}m")).expect("digits and a letter")
}

/// The request's own timeout, from its headers.
pub fn incoming_timeout(headers: &HeaderMap) -> Option<Duration> {
    let g = headers.get(GRPC_TIMEOUT).and_then(parse_timeout);
    let w = headers.get(WEFT_TIMEOUT).and_then(parse_timeout);
    match (g, w) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_and_format() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(parse_timeout(&v("200m")), Some(Duration::from_millis(200)));
        assert_eq!(parse_timeout(&v("2S")), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout(&v("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(&v("m")), None);
        assert_eq!(parse_timeout(&v("12x")), None);
        assert_eq!(parse_timeout(&v("123456789m")), None, "more than 8 digits");
        // Found by the grpc_timeout fuzz target: a sign is not a digit.
        assert_eq!(parse_timeout(&v("+250225u")), None);
        assert_eq!(parse_timeout(&v("+1m")), None);
        assert_eq!(parse_timeout(&v("-1m")), None);
        assert_eq!(format_timeout(Duration::from_micros(1500)), "1m");
        assert_eq!(format_timeout(Duration::ZERO), "1m");
        let mut h = HeaderMap::new();
        h.insert(GRPC_TIMEOUT, v("300m"));
        h.insert(WEFT_TIMEOUT, v("1S"));
        assert_eq!(incoming_timeout(&h), Some(Duration::from_millis(300)));
    }

    #[test]
    fn the_deadline_counts_from_the_request_and_takes_the_sooner() {
        let start = Instant::now();
        let mut h = HeaderMap::new();
        assert!(Deadline::of(start, None, &h).is_none());
        let d = Deadline::of(start, Some(Duration::from_secs(2)), &h).unwrap();
        assert_eq!(d.at, start + Duration::from_secs(2));
        h.insert(WEFT_TIMEOUT, HeaderValue::from_static("500m"));
        let d = Deadline::of(start, Some(Duration::from_secs(2)), &h).unwrap();
        assert_eq!(d.timeout, Duration::from_millis(500));
        assert_eq!(d.at, start + Duration::from_millis(500));
        let huge = Deadline::of(start, Some(Duration::MAX), &HeaderMap::new());
        assert!(
            huge.is_none(),
            "a deadline past the clock's range is no deadline"
        );
    }
}
