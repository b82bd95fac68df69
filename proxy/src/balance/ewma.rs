//! Peak-EWMA load of one endpoint: an estimate of its round-trip time that
//! jumps to any slower observation at once and decays toward faster ones
//! (and toward zero while the endpoint is not used, so that an endpoint
//! once slow is tried again), multiplied by the requests in flight.
//!
//! Lock-free: the estimate, its time stamp and the in-flight count are
//! atomics. Two completions racing may lose one observation; a balancer
//! needs a good estimate, not an exact one.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Nanoseconds since the first call: the clock of every estimate.
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[derive(Debug)]
pub struct PeakEwma {
    /// The estimate in nanoseconds, as `f64` bits.
    rtt: AtomicU64,
    /// When the estimate was last updated ([`now_ns`]).
    stamp: AtomicU64,
    pending: AtomicU32,
    /// Whether the estimate is still the initial guess, which the first
    /// observation replaces outright.
    guess: AtomicBool,
}

impl PeakEwma {
    pub fn new(initial: Duration) -> Self {
        Self {
            rtt: AtomicU64::new((initial.as_nanos() as f64).to_bits()),
            stamp: AtomicU64::new(now_ns()),
            pending: AtomicU32::new(0),
            guess: AtomicBool::new(true),
        }
    }

    /// The estimate decayed to `now` by `decay` (the time constant).
    fn decayed(&self, now: u64, decay: f64) -> f64 {
        let rtt = f64::from_bits(self.rtt.load(Relaxed));
        let elapsed = now.saturating_sub(self.stamp.load(Relaxed)) as f64;
        rtt * (-elapsed / decay).exp()
    }

    /// The cost of sending one more request here: estimate × (in flight + 1).
    pub fn cost(&self, now: u64, decay: f64) -> f64 {
        self.decayed(now, decay) * f64::from(self.pending.load(Relaxed) + 1)
    }

    /// The current estimate, for metrics.
    pub fn estimate(&self, decay: f64) -> Duration {
        Duration::from_nanos(self.decayed(now_ns(), decay) as u64)
    }

    pub fn start(&self) {
        self.pending.fetch_add(1, Relaxed);
    }

    /// One request done after `rtt`: a slower observation becomes the
    /// estimate (the peak), a faster one is averaged in.
    /// One request done; true when it was the endpoint's first observation.
    pub fn finish(&self, rtt: Duration, decay: f64) -> bool {
        self.pending.fetch_sub(1, Relaxed);
        self.observe(rtt, decay)
    }

    /// Replaces the initial guess, if the estimate still is one.
    pub fn reguess(&self, rtt: Duration) {
        if self.guess.load(Relaxed) {
            self.rtt.store((rtt.as_nanos() as f64).to_bits(), Relaxed);
            self.stamp.store(now_ns(), Relaxed);
        }
    }

    /// Folds one round-trip time into the estimate; true when it replaced
    /// the initial guess.
    pub fn observe(&self, rtt: Duration, decay: f64) -> bool {
        let now = now_ns();
        let observed = rtt.as_nanos() as f64;
        let current = self.decayed(now, decay);
        let first = self.guess.swap(false, Relaxed);
        let next = if first || observed > current {
            observed
        } else {
            let elapsed = now.saturating_sub(self.stamp.load(Relaxed)) as f64;
            let w = (-elapsed / decay).exp();
            current * w + observed * (1.0 - w)
        };
        self.rtt.store(next.to_bits(), Relaxed);
        self.stamp.store(now, Relaxed);
        first
    }

    /// A request abandoned without a round-trip time (e.g. cancelled).
    pub fn cancel(&self) {
        self.pending.fetch_sub(1, Relaxed);
    }

    pub fn pending(&self) -> u32 {
        self.pending.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECAY: f64 = 10e9;

    #[test]
    fn the_first_observation_replaces_the_guess() {
        let e = PeakEwma::new(Duration::from_millis(30));
        e.start();
        e.finish(Duration::from_millis(1), DECAY);
        let est = e.estimate(DECAY);
        assert!(est <= Duration::from_millis(1), "{est:?}");
    }

    #[test]
    fn peaks_at_once_and_decays_slowly() {
        let e = PeakEwma::new(Duration::from_millis(1));
        e.start();
        e.finish(Duration::from_millis(100), DECAY);
        let after_peak = e.estimate(DECAY);
        assert!(after_peak > Duration::from_millis(99), "{after_peak:?}");
        e.start();
        e.finish(Duration::from_millis(1), DECAY);
        // A fast answer right after barely moves a 10 s average.
        assert!(e.estimate(DECAY) > Duration::from_millis(90));
    }

    #[test]
    fn in_flight_requests_raise_the_cost() {
        let e = PeakEwma::new(Duration::from_millis(10));
        let now = now_ns();
        let idle = e.cost(now, DECAY);
        e.start();
        e.start();
        assert!((e.cost(now, DECAY) / idle - 3.0).abs() < 0.01);
        e.cancel();
        e.cancel();
        assert_eq!(e.pending(), 0);
    }
}
