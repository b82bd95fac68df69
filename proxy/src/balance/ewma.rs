//! Peak-EWMA load of one endpoint: an estimate of its round-trip time that
//! jumps to any slower observation at once and decays toward faster ones
//! (and toward zero while the endpoint is not used, so that an endpoint
//! once slow is tried again), multiplied by the requests in flight.
//!
//! The average is over time, not over answers: an estimate `e` made `t` ago
//! is worth `e·w` now, with `w = exp(-t/decay)`, and an answer after `r`
//! makes it `e·w + r·(1 - w)`. So a used endpoint's estimate is always
//! above that of one left unused since the same estimate, which is only
//! ever `e·w`: p2c tries an endpoint that has not answered yet (its guess
//! set from another's first answer) as soon as a measured one answers again.
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
    /// The estimate in nanoseconds at `stamp`, as `f64` bits.
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
        Self::new_at(now_ns(), initial)
    }

    fn new_at(now: u64, initial: Duration) -> Self {
        Self {
            rtt: AtomicU64::new((initial.as_nanos() as f64).to_bits()),
            stamp: AtomicU64::new(now),
            pending: AtomicU32::new(0),
            guess: AtomicBool::new(true),
        }
    }

    /// The weight left at `now` to the estimate made at its stamp.
    fn weight(&self, now: u64, decay: f64) -> f64 {
        let elapsed = now.saturating_sub(self.stamp.load(Relaxed)) as f64;
        (-elapsed / decay).exp()
    }

    /// The estimate decayed to `now` by `decay` (the time constant).
    fn decayed(&self, now: u64, decay: f64) -> f64 {
        f64::from_bits(self.rtt.load(Relaxed)) * self.weight(now, decay)
    }

    /// The cost of sending one more request here: estimate × (in flight + 1).
    pub fn cost(&self, now: u64, decay: f64) -> f64 {
        self.decayed(now, decay) * f64::from(self.pending.load(Relaxed) + 1)
    }

    /// The current estimate, for metrics.
    pub fn estimate(&self, decay: f64) -> Duration {
        self.estimate_at(now_ns(), decay)
    }

    fn estimate_at(&self, now: u64, decay: f64) -> Duration {
        Duration::from_nanos(self.decayed(now, decay) as u64)
    }

    pub fn start(&self) {
        self.pending.fetch_add(1, Relaxed);
    }

    /// One request done after `rtt` (see [`PeakEwma::observe`]); true when
    /// it was the endpoint's first observation.
    pub fn finish(&self, rtt: Duration, decay: f64) -> bool {
        self.pending.fetch_sub(1, Relaxed);
        self.observe(rtt, decay)
    }

    /// Replaces the initial guess, if the estimate still is one.
    pub fn reguess(&self, rtt: Duration) {
        self.reguess_at(now_ns(), rtt);
    }

    fn reguess_at(&self, now: u64, rtt: Duration) {
        if self.guess.load(Relaxed) {
            self.rtt.store((rtt.as_nanos() as f64).to_bits(), Relaxed);
            self.stamp.store(now, Relaxed);
        }
    }

    /// Folds one round-trip time into the estimate: a slower observation
    /// becomes the estimate (the peak), a faster one is averaged in. True
    /// when it replaced the initial guess.
    pub fn observe(&self, rtt: Duration, decay: f64) -> bool {
        self.observe_at(now_ns(), rtt, decay)
    }

    fn observe_at(&self, now: u64, rtt: Duration, decay: f64) -> bool {
        let observed = rtt.as_nanos() as f64;
        let w = self.weight(now, decay);
        // Already weighted by `w`. Weighting it again made an estimate
        // above the answers fall at twice the rate of the decay: a used
        // endpoint ended below one left unused since the same estimate,
        // which p2c then did not try for 10 s × ln(estimate / answers).
        let current = f64::from_bits(self.rtt.load(Relaxed)) * w;
        let first = self.guess.swap(false, Relaxed);
        let next = if first || observed > current {
            observed
        } else {
            current + observed * (1.0 - w)
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

    const MS: u64 = 1_000_000;

    #[test]
    fn faster_answers_are_averaged_in_over_the_decay_time() {
        // 10 ms, then 100 answers a second of 1 ms: after one time constant
        // (10 s) the estimate is 1 + 9/e = 4.31 ms. Weighting the old
        // estimate twice made it 0.5 + 9.5/e² = 1.79 ms.
        let e = PeakEwma::new_at(0, Duration::from_millis(30));
        e.observe_at(0, Duration::from_millis(10), DECAY);
        let mut now = 0;
        for _ in 0..1000 {
            now += 10 * MS;
            e.observe_at(now, Duration::from_millis(1), DECAY);
        }
        let est = e.estimate_at(now, DECAY).as_secs_f64() * 1e3;
        let want = 1.0 + 9.0 / std::f64::consts::E;
        assert!((est - want).abs() < 0.01, "{est} ms, not {want} ms");
    }

    #[test]
    fn a_used_endpoint_stays_above_an_unused_one_that_started_level() {
        // What p2c over two endpoints sees when one has answered once and
        // the other has not answered yet (its guess set from that answer):
        // figures like a failing run of the balance scenario, 0.94 ms then
        // answers of 0.5 ms every 10 ms for 2 s. The unused one must be
        // cheaper from the used one's next answer on, or it is not tried.
        // With the old estimate weighted twice the used one fell at twice
        // the rate of the decay, to its answers, and the unused one got
        // below it only after 10 s × ln(0.94 / 0.5) = 6.3 s.
        let used = PeakEwma::new_at(0, Duration::from_millis(30));
        let unused = PeakEwma::new_at(0, Duration::from_millis(30));
        used.observe_at(0, Duration::from_micros(940), DECAY);
        unused.reguess_at(0, Duration::from_micros(940));
        let mut now = 0;
        for i in 0..200 {
            now += 10 * MS;
            used.observe_at(now, Duration::from_micros(500), DECAY);
            let (u, n) = (used.cost(now, DECAY), unused.cost(now, DECAY));
            assert!(n < u, "answer {i} at {now} ns: unused {n} ns, used {u} ns");
        }
        // And the used one's estimate moves toward its answers, no further.
        let est = used.estimate_at(now, DECAY).as_secs_f64() * 1e3;
        assert!((0.5..0.94).contains(&est), "{est} ms");
    }

    #[test]
    fn an_unused_estimate_decays_toward_zero() {
        let e = PeakEwma::new_at(0, Duration::from_millis(100));
        e.observe_at(0, Duration::from_millis(100), DECAY);
        let after = |s: u64| e.estimate_at(s * 1_000 * MS, DECAY).as_secs_f64() * 1e3;
        assert!((after(10) - 100.0 / std::f64::consts::E).abs() < 0.01);
        assert!((after(60) - 100.0 * (-6f64).exp()).abs() < 0.001);
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
