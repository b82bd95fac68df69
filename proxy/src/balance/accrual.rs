//! Failure accrual: an endpoint that fails `threshold` times in a row is
//! taken out of its balancer for a backoff that doubles on every ejection
//! (from `min` up to `max`). When the backoff is over it is eligible again
//! on probation: one success clears its record, one failure ejects it again
//! for longer.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// When to eject, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct AccrualPolicy {
    /// Consecutive failures that eject an endpoint; 0 never ejects.
    pub threshold: u32,
    pub min: Duration,
    pub max: Duration,
}

#[derive(Debug, Default)]
pub struct Accrual {
    consecutive: AtomicU32,
    /// Ejected until this time ([`super::ewma::now_ns`]); 0: never ejected.
    until: AtomicU64,
    ejections: AtomicU32,
    probation: AtomicBool,
}

impl Accrual {
    pub fn eligible(&self, now: u64) -> bool {
        now >= self.until.load(Relaxed)
    }

    pub fn success(&self) {
        self.consecutive.store(0, Relaxed);
        if self.probation.swap(false, Relaxed) {
            self.ejections.store(0, Relaxed);
        }
    }

    /// Records a failure at `now`; true when it ejected the endpoint. A
    /// failure while the endpoint is ejected (a request sent before the
    /// ejection, ending after it) changes nothing: the endpoint is out
    /// already, and counting it would eject it again, for twice as long.
    pub fn failure(&self, now: u64, policy: &AccrualPolicy) -> bool {
        if policy.threshold == 0 || !self.eligible(now) {
            return false;
        }
        let failures = self.consecutive.fetch_add(1, Relaxed) + 1;
        let on_probation = self.probation.load(Relaxed) && self.eligible(now);
        if failures < policy.threshold && !on_probation {
            return false;
        }
        let n = self.ejections.fetch_add(1, Relaxed).min(16);
        let backoff = policy.min.saturating_mul(1 << n).min(policy.max);
        self.until.store(now + backoff.as_nanos() as u64, Relaxed);
        self.consecutive.store(0, Relaxed);
        self.probation.store(true, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: AccrualPolicy = AccrualPolicy {
        threshold: 3,
        min: Duration::from_secs(1),
        max: Duration::from_secs(4),
    };
    const S: u64 = 1_000_000_000;

    #[test]
    fn ejects_after_consecutive_failures_and_backs_off() {
        let a = Accrual::default();
        assert!(!a.failure(0, &POLICY));
        a.success();
        assert!(!a.failure(0, &POLICY) && !a.failure(0, &POLICY));
        assert!(a.failure(0, &POLICY), "third failure in a row ejects");
        assert!(!a.eligible(S / 2) && a.eligible(S));
        // On probation: one failure ejects again, for twice as long.
        assert!(a.failure(S, &POLICY));
        assert!(!a.eligible(2 * S) && a.eligible(3 * S));
        assert!(a.failure(3 * S, &POLICY));
        assert!(a.failure(7 * S, &POLICY));
        assert!(!a.eligible(10 * S) && a.eligible(11 * S), "capped at max");
        // A success on probation clears the record.
        a.success();
        assert!(!a.failure(11 * S, &POLICY));
    }

    #[test]
    fn failures_of_requests_in_flight_at_the_ejection_do_not_eject_again() {
        let a = Accrual::default();
        let one = AccrualPolicy {
            threshold: 1,
            ..POLICY
        };
        assert!(a.failure(0, &one), "ejected");
        assert!(!a.failure(S / 10, &one), "already out");
        assert!(!a.eligible(S / 2) && a.eligible(S), "for the first backoff");
        // Back on probation, a failure ejects again, for twice as long.
        assert!(a.failure(S, &one));
        assert!(!a.eligible(2 * S) && a.eligible(3 * S));
    }

    #[test]
    fn threshold_zero_never_ejects() {
        let a = Accrual::default();
        let off = AccrualPolicy {
            threshold: 0,
            ..POLICY
        };
        assert!((0..100).all(|_| !a.failure(0, &off)));
        assert!(a.eligible(0));
    }
}
