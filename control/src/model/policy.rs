//! Retry and timeout policy of a Service, from its annotations:
//!
//! | annotation | value | meaning |
//! |---|---|---|
//! | `weft.dev/retry-http` | `5xx`, `gateway-error`, `connect-failure`, status codes (e.g. `429`), comma separated | HTTP outcomes retried |
//! | `weft.dev/retry-grpc` | gRPC status names (`unavailable`, `cancelled`, `deadline-exceeded`, `resource-exhausted`, `internal`, ...) or numbers | gRPC outcomes retried |
//! | `weft.dev/retry-limit` | 0..=10 (default 2) | most retries of one request |
//! | `weft.dev/retry-timeout` | duration (`250ms`, `1.5s`, `1m30s`; above 0, at most `1h`) | deadline of each attempt |
//! | `weft.dev/retry-budget` | ratio 0..=1 (default `0.2`) | extra load retries may add |
//! | `weft.dev/retry-min-per-second` | count (default 10) | retries always allowed per second |
//! | `weft.dev/retry-non-idempotent` | `true`/`false` (default false) | retry POST/PATCH on every condition |
//! | `weft.dev/timeout` | duration, as above | deadline of the whole request, retries included |
//!
//! A value that does not parse refuses the whole Service, with a reason
//! naming the annotation, so that a typo never silently turns retries off.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::time::Duration;

pub const RETRY_HTTP: &str = "weft.dev/retry-http";
pub const RETRY_GRPC: &str = "weft.dev/retry-grpc";
pub const RETRY_LIMIT: &str = "weft.dev/retry-limit";
pub const RETRY_TIMEOUT: &str = "weft.dev/retry-timeout";
pub const RETRY_BUDGET: &str = "weft.dev/retry-budget";
pub const RETRY_MIN_PER_SECOND: &str = "weft.dev/retry-min-per-second";
pub const RETRY_NON_IDEMPOTENT: &str = "weft.dev/retry-non-idempotent";
pub const TIMEOUT: &str = "weft.dev/timeout";

/// The default most retries of one request.
pub const DEFAULT_LIMIT: u32 = 2;
/// The default budget: 20% extra load, plus 10 retries a second.
pub const DEFAULT_BUDGET_PERMILLE: u32 = 200;
pub const DEFAULT_MIN_PER_SECOND: u32 = 10;

/// What the annotations say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    pub retry: Option<Retry>,
    pub timeout: Option<Duration>,
    pub per_try: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retry {
    pub server_error: bool,
    pub gateway_error: bool,
    pub connect_failure: bool,
    pub status_codes: Vec<u32>,
    pub grpc_codes: Vec<u32>,
    pub limit: u32,
    /// The budget's ratio in thousandths (0.2 = 200).
    pub budget_permille: u32,
    pub min_per_second: u32,
    pub non_idempotent: bool,
}

const GRPC_CODES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid-argument",
    "deadline-exceeded",
    "not-found",
    "already-exists",
    "permission-denied",
    "resource-exhausted",
    "failed-precondition",
    "aborted",
    "out-of-range",
    "unimplemented",
    "internal",
    "unavailable",
    "data-loss",
    "unauthenticated",
];

impl RoutePolicy {
    pub fn from_meta(meta: &ObjectMeta) -> Result<Self, String> {
        let get = |k: &str| {
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let bad = |k: &str, v: &str, why: &str| format!("annotation {k}: '{v}' {why}");
        let mut policy = RoutePolicy {
            timeout: get(TIMEOUT).map(|v| duration(TIMEOUT, v)).transpose()?,
            per_try: get(RETRY_TIMEOUT)
                .map(|v| duration(RETRY_TIMEOUT, v))
                .transpose()?,
            retry: None,
        };
        let mut retry = Retry {
            limit: DEFAULT_LIMIT,
            budget_permille: DEFAULT_BUDGET_PERMILLE,
            min_per_second: DEFAULT_MIN_PER_SECOND,
            ..Retry::default()
        };
        if let Some(v) = get(RETRY_HTTP) {
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match item.to_ascii_lowercase().as_str() {
                    "5xx" => retry.server_error = true,
                    "gateway-error" => retry.gateway_error = true,
                    "connect-failure" | "reset" => retry.connect_failure = true,
                    code => match code.parse::<u32>() {
                        Ok(c) if (100..=599).contains(&c) => retry.status_codes.push(c),
                        _ => {
                            return Err(bad(
                                RETRY_HTTP,
                                item,
                                "is not 5xx, gateway-error, connect-failure or a status code",
                            ))
                        }
                    },
                }
            }
        }
        if let Some(v) = get(RETRY_GRPC) {
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let name = item.to_ascii_lowercase().replace('_', "-");
                let code = GRPC_CODES
                    .iter()
                    .position(|c| *c == name)
                    .map(|p| p as u32)
                    .or_else(|| item.parse::<u32>().ok().filter(|c| *c <= 16))
                    .ok_or_else(|| bad(RETRY_GRPC, item, "is not a gRPC status"))?;
                retry.grpc_codes.push(code);
            }
        }
        if let Some(v) = get(RETRY_LIMIT) {
            retry.limit = v
                .parse()
                .ok()
                .filter(|n| *n <= 10)
                .ok_or_else(|| bad(RETRY_LIMIT, v, "is not a number in 0..=10"))?;
        }
        if let Some(v) = get(RETRY_BUDGET) {
            let ratio: f64 = v
                .parse()
                .ok()
                .filter(|r: &f64| (0.0..=1.0).contains(r))
                .ok_or_else(|| bad(RETRY_BUDGET, v, "is not a ratio in 0..=1"))?;
            retry.budget_permille = (ratio * 1000.0).round() as u32;
        }
        if let Some(v) = get(RETRY_MIN_PER_SECOND) {
            retry.min_per_second = v
                .parse()
                .ok()
                .filter(|n| *n <= 100_000)
                .ok_or_else(|| bad(RETRY_MIN_PER_SECOND, v, "is not a count in 0..=100000"))?;
        }
        if let Some(v) = get(RETRY_NON_IDEMPOTENT) {
            retry.non_idempotent = match v {
                "true" => true,
                "false" => false,
                _ => return Err(bad(RETRY_NON_IDEMPOTENT, v, "is not true or false")),
            };
        }
        let any = retry.server_error
            || retry.gateway_error
            || retry.connect_failure
            || !retry.status_codes.is_empty()
            || !retry.grpc_codes.is_empty();
        if any {
            policy.retry = Some(retry);
        }
        Ok(policy)
    }
}

/// The longest duration annotation: a deadline longer than an hour is taken
/// for a typo.
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// A duration annotation, in the flags' syntax ([`crate::config::duration`]:
/// `250ms`, `1.5s`, `2m`, `1h`, `1m30s`), above zero and at most an hour.
fn duration(key: &str, v: &str) -> Result<Duration, String> {
    let d = crate::config::duration(v).map_err(|e| format!("annotation {key}: {e}"))?;
    if d.is_zero() || d > MAX_DURATION {
        return Err(format!(
            "annotation {key}: '{v}' is not a duration above 0 and at most 1h"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta(pairs: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            annotations: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn no_annotations_no_policy() {
        assert_eq!(
            RoutePolicy::from_meta(&meta(&[])),
            Ok(RoutePolicy::default())
        );
    }

    #[test]
    fn retries_timeouts_and_budget() {
        let p = RoutePolicy::from_meta(&meta(&[
            (RETRY_HTTP, "5xx, gateway-error,connect-failure,429"),
            (RETRY_GRPC, "unavailable,CANCELLED,4"),
            (RETRY_LIMIT, "3"),
            (RETRY_TIMEOUT, "250ms"),
            (RETRY_BUDGET, "0.1"),
            (RETRY_MIN_PER_SECOND, "5"),
            (TIMEOUT, "1.5s"),
        ]))
        .unwrap();
        let r = p.retry.unwrap();
        assert!(r.server_error && r.gateway_error && r.connect_failure);
        assert_eq!(r.status_codes, [429]);
        assert_eq!(r.grpc_codes, [14, 1, 4]);
        assert_eq!((r.limit, r.budget_permille, r.min_per_second), (3, 100, 5));
        assert!(!r.non_idempotent);
        assert_eq!(p.per_try, Some(Duration::from_millis(250)));
        assert_eq!(p.timeout, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn durations_take_the_flags_syntax() {
        for (text, secs) in [
            ("1h", 3600.0),
            ("1m30s", 90.0),
            ("500ms", 0.5),
            ("1.5s", 1.5),
        ] {
            let p =
                RoutePolicy::from_meta(&meta(&[(TIMEOUT, text), (RETRY_TIMEOUT, text)])).unwrap();
            let want = Some(Duration::from_secs_f64(secs));
            assert_eq!((p.timeout, p.per_try), (want, want), "{text}");
        }
    }

    #[test]
    fn defaults_when_only_conditions_are_given() {
        let r = RoutePolicy::from_meta(&meta(&[(RETRY_HTTP, "5xx")]))
            .unwrap()
            .retry
            .unwrap();
        assert_eq!((r.limit, r.budget_permille, r.min_per_second), (2, 200, 10));
    }

    #[test]
    fn bad_values_name_the_annotation() {
        let err = |pairs: &[(&str, &str)]| RoutePolicy::from_meta(&meta(pairs)).unwrap_err();
        assert_eq!(
            err(&[(RETRY_HTTP, "5xx,teapot")]),
            "annotation weft.dev/retry-http: 'teapot' is not 5xx, gateway-error, connect-failure or a status code"
        );
        assert!(err(&[(RETRY_GRPC, "sad")]).contains("weft.dev/retry-grpc: 'sad'"));
        assert!(err(&[(RETRY_LIMIT, "-1")]).contains("0..=10"));
        assert!(err(&[(RETRY_BUDGET, "1.5")]).contains("ratio"));
        assert!(err(&[(TIMEOUT, "10")]).contains("needs a unit"));
        assert!(err(&[(TIMEOUT, "0s")]).contains("above 0"));
        assert!(err(&[(TIMEOUT, "0")]).contains("above 0"));
        assert!(err(&[(TIMEOUT, "1h0m1s")]).contains("at most 1h"));
        assert_eq!(
            err(&[(TIMEOUT, "-1s")]),
            "annotation weft.dev/timeout: '-1s' is negative: a duration is 0 or more"
        );
        assert_eq!(
            err(&[(RETRY_TIMEOUT, "1x")]),
            "annotation weft.dev/retry-timeout: '1x' has an unknown unit 'x' (use ns, us, ms, s, m or h)"
        );
        assert!(err(&[(TIMEOUT, "1.5")]).contains("'1.5' needs a unit"));
        assert!(err(&[(TIMEOUT, "99999999999999999999h")]).contains("at most 2562047h"));
        assert!(err(&[(RETRY_NON_IDEMPOTENT, "yes")]).contains("true or false"));
    }
}
