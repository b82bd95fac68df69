//! The retry and timeout policy of a Service, as discovery sends it (from
//! the Service's `weft.dev/retry-*` and `weft.dev/timeout` annotations),
//! and the retry budget of a destination.
//!
//! A request is retried only when its response (or failure) matches the
//! policy's conditions, its body is known and small (at most
//! `http::replay::MAX_REPLAY_BODY`, so it can be sent again), its method is idempotent
//! (or the policy allows others), fewer than `limit` retries were made, and
//! the destination's [`Budget`] allows one more.
//!
//! Deadlines are in `http::deadline`.

use http::{Method, StatusCode};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use weft_proto::discovery::v1 as pb;

use crate::balance::ewma::now_ns;

/// The retry and timeout policy of one destination.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    pub timeout: Option<Duration>,
    pub per_try: Option<Duration>,
    pub retry: Option<Retry>,
    /// The least wait before each retry (a route's `retry.backoff`). None:
    /// retried at once.
    pub backoff: Option<Duration>,
    /// The Service as traces name it, `name.ns:port` (a profile's only).
    pub service: Option<std::sync::Arc<str>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Retry {
    pub server_error: bool,
    pub gateway_error: bool,
    pub connect_failure: bool,
    pub codes: Vec<u16>,
    pub grpc_codes: Vec<u32>,
    pub limit: u32,
    pub non_idempotent: bool,
    pub ratio: f64,
    pub min_per_second: u32,
}

/// What went wrong with one attempt, as the retry conditions see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer with this status (and gRPC status, if any in the headers).
    Status(StatusCode, Option<u32>),
    /// No connection could be made, or it broke before an answer.
    ConnectFailure,
    /// The attempt's own timeout passed.
    TryTimeout,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Status(status, None) => write!(f, "{}", status.as_u16()),
            Outcome::Status(status, Some(grpc)) => {
                write!(f, "{} grpc-status {grpc}", status.as_u16())
            }
            Outcome::ConnectFailure => f.write_str("connect failure"),
            Outcome::TryTimeout => f.write_str("per-try timeout"),
        }
    }
}

pub(crate) fn proto_duration(d: &prost_types::Duration) -> Option<Duration> {
    let d = Duration::new(u64::try_from(d.seconds).ok()?, u32::try_from(d.nanos).ok()?);
    (!d.is_zero()).then_some(d)
}

impl Policy {
    pub fn from_profile(p: &pb::Profile) -> Self {
        let mut policy = Self::from_parts(p.timeouts.as_ref(), p.retry.as_ref());
        if !p.service_name.is_empty() {
            let name = format!("{}.{}:{}", p.service_name, p.service_namespace, p.port);
            policy.service = Some(name.into());
        }
        policy
    }

    /// The policy of these timeouts and retry conditions (a profile's, or a
    /// route rule's).
    pub fn from_parts(t: Option<&pb::Timeouts>, retry: Option<&pb::RetryPolicy>) -> Self {
        let retry = retry.filter(|r| r.limit > 0).map(|r| {
            let http = r.http.clone().unwrap_or_default();
            let budget = r.budget.unwrap_or_default();
            Retry {
                server_error: http.server_error,
                gateway_error: http.gateway_error,
                connect_failure: http.connect_failure,
                codes: http
                    .status_codes
                    .iter()
                    .filter_map(|c| u16::try_from(*c).ok())
                    .collect(),
                grpc_codes: r
                    .grpc
                    .as_ref()
                    .map(|g| g.status_codes.clone())
                    .unwrap_or_default(),
                limit: r.limit,
                non_idempotent: r.non_idempotent,
                ratio: if budget.retry_ratio.is_finite() {
                    budget.retry_ratio.clamp(0.0, 1000.0)
                } else {
                    0.2
                },
                min_per_second: budget.min_retries_per_second,
            }
        });
        Self {
            timeout: t.and_then(|t| t.request.as_ref()).and_then(proto_duration),
            per_try: t.and_then(|t| t.per_try.as_ref()).and_then(proto_duration),
            retry,
            backoff: None,
            service: None,
        }
    }
}

impl Retry {
    /// Whether `outcome` is worth another attempt of a request with `method`.
    pub fn retryable(&self, outcome: Outcome, method: &Method) -> bool {
        let idempotent = matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        match outcome {
            Outcome::ConnectFailure => self.connect_failure,
            _ if !idempotent && !self.non_idempotent => false,
            Outcome::TryTimeout => self.gateway_error || self.server_error,
            Outcome::Status(status, grpc) => {
                let code = status.as_u16();
                (self.server_error && status.is_server_error())
                    || (self.gateway_error && matches!(code, 502..=504))
                    || self.codes.contains(&code)
                    || grpc.is_some_and(|g| self.grpc_codes.contains(&g))
            }
        }
    }
}

/// A retry budget: over the last [`WINDOW`] seconds, retries may add
/// `ratio` × requests plus `min_per_second` for each of those seconds.
/// Lock-free: a ring of per-second counters.
#[derive(Debug)]
pub struct Budget {
    slots: [Slot; WINDOW as usize],
    /// The first second anything was counted (`u64::MAX`: not yet).
    since: AtomicU64,
}

/// Seconds a request counts towards the budget.
pub const WINDOW: u64 = 10;

#[derive(Debug, Default)]
struct Slot {
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            slots: Default::default(),
            since: AtomicU64::new(u64::MAX),
        }
    }
}

impl Budget {
    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % WINDOW) as usize];
        let seen = slot.second.load(Relaxed);
        if seen != second
            && slot
                .second
                .compare_exchange(seen, second, Relaxed, Relaxed)
                .is_ok()
        {
            slot.requests.store(0, Relaxed);
            slot.retries.store(0, Relaxed);
        }
        slot
    }

    fn second() -> u64 {
        // Offset by the window so that second 0 is never "in the future".
        now_ns() / 1_000_000_000 + WINDOW
    }

    /// One original request.
    pub fn deposit(&self) {
        let now = Self::second();
        // A plain load first: the compare-and-swap (a locked instruction on
        // a line every connection shares) happens once, not per request.
        if self.since.load(Relaxed) == u64::MAX {
            let _ = self.since.compare_exchange(u64::MAX, now, Relaxed, Relaxed);
        }
        self.slot(now).requests.fetch_add(1, Relaxed);
    }

    /// Takes one retry from the budget, if there is one.
    pub fn withdraw(&self, ratio: f64, min_per_second: u32) -> bool {
        let now = Self::second();
        let (mut requests, mut retries) = (0u64, 0u64);
        for s in &self.slots {
            let second = s.second.load(Relaxed);
            if second + WINDOW > now && second <= now {
                requests += s.requests.load(Relaxed);
                retries += s.retries.load(Relaxed);
            }
        }
        let since = self.since.load(Relaxed).min(now);
        let seconds = (now - since + 1).min(WINDOW);
        let allowed = ratio * requests as f64 + f64::from(min_per_second) * seconds as f64;
        if (retries + 1) as f64 > allowed {
            return false;
        }
        self.slot(now).retries.fetch_add(1, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        let r = Retry {
            gateway_error: true,
            connect_failure: true,
            codes: vec![429],
            grpc_codes: vec![14],
            limit: 2,
            ..Retry::default()
        };
        let st = |c: u16| Outcome::Status(StatusCode::from_u16(c).unwrap(), None);
        assert!(r.retryable(st(503), &Method::GET));
        assert!(r.retryable(st(429), &Method::GET));
        assert!(!r.retryable(st(500), &Method::GET));
        assert!(
            !r.retryable(st(503), &Method::POST),
            "POST only on connect failures"
        );
        assert!(r.retryable(Outcome::ConnectFailure, &Method::POST));
        assert!(r.retryable(Outcome::TryTimeout, &Method::GET));
        assert!(!r.retryable(Outcome::Status(StatusCode::OK, Some(14)), &Method::POST));
        assert!(r.retryable(Outcome::Status(StatusCode::OK, Some(14)), &Method::GET));
        let post_too = Retry {
            non_idempotent: true,
            ..r
        };
        assert!(post_too.retryable(st(503), &Method::POST));
    }

    #[test]
    fn the_budget_allows_the_ratio_plus_the_minimum() {
        let b = Budget::default();
        for _ in 0..100 {
            b.deposit();
        }
        // 20% of 100, plus 5 for the one second counted so far.
        let allowed = (0..1000).take_while(|_| b.withdraw(0.2, 5)).count();
        assert_eq!(allowed, 25);
        let none = Budget::default();
        assert_eq!((0..100).take_while(|_| none.withdraw(0.0, 0)).count(), 0);
    }

    #[test]
    fn policy_from_the_profile() {
        let p = pb::Profile {
            timeouts: Some(pb::Timeouts {
                request: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                per_try: None,
            }),
            retry: Some(pb::RetryPolicy {
                http: Some(pb::HttpRetryConditions {
                    gateway_error: true,
                    ..Default::default()
                }),
                grpc: None,
                limit: 3,
                budget: Some(pb::RetryBudget {
                    retry_ratio: 0.1,
                    min_retries_per_second: 2,
                    ttl: None,
                }),
                non_idempotent: false,
            }),
            ..pb::Profile::default()
        };
        let policy = Policy::from_profile(&p);
        assert_eq!(policy.timeout, Some(Duration::from_secs(1)));
        let r = policy.retry.unwrap();
        assert_eq!((r.limit, r.ratio, r.min_per_second), (3, 0.1, 2));
        assert!(Policy::from_profile(&pb::Profile::default())
            .retry
            .is_none());
    }
}
