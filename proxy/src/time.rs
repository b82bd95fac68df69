//! Wall-clock time and tokio time, converted into each other.
//!
//! Certificates say when they expire in wall-clock time ([`SystemTime`]);
//! the proxy waits for those moments on tokio's clock
//! ([`tokio::time::Instant`]), so that the logic that waits (renewal,
//! backoff, expiry) runs under `tokio::time::pause()` in tests, where a day
//! passes in a millisecond. A [`Converter`] reads both clocks once and
//! converts by their offset from then on.
//!
//! The offset is fixed when the converter is made: a later step of the wall
//! clock (NTP, an operator) moves no deadline computed through it. For
//! certificates that is what we want: renewal follows the lifetime the
//! control plane gave, measured on the monotonic clock.

use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// One reading of both clocks, from which either converts to the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Converter {
    system: SystemTime,
    instant: Instant,
}

impl Default for Converter {
    fn default() -> Self {
        Self::new()
    }
}

impl Converter {
    /// Reads both clocks now (tokio's clock: the paused one in a test that
    /// paused time).
    pub fn new() -> Self {
        Self::at(SystemTime::now(), Instant::now())
    }

    /// A converter for which `system` and `instant` are the same moment.
    pub fn at(system: SystemTime, instant: Instant) -> Self {
        Self { system, instant }
    }

    /// The wall-clock time now, as tokio's clock tells it.
    pub fn now(&self) -> SystemTime {
        self.system_time(Instant::now())
    }

    /// The tokio instant of a wall-clock time. A time before the reading
    /// that the monotonic clock cannot express (before boot) becomes the
    /// reading's instant: it has passed either way. A time too far ahead
    /// to express becomes about thirty years from the reading.
    pub fn instant(&self, t: SystemTime) -> Instant {
        match t.duration_since(self.system) {
            Ok(ahead) => self
                .instant
                .checked_add(ahead)
                .unwrap_or_else(|| self.instant + FAR),
            Err(behind) => self
                .instant
                .checked_sub(behind.duration())
                .unwrap_or(self.instant),
        }
    }

    /// The wall-clock time of a tokio instant.
    pub fn system_time(&self, t: Instant) -> SystemTime {
        if t >= self.instant {
            self.system + (t - self.instant)
        } else {
            self.system - (self.instant - t)
        }
    }
}

/// Far enough ahead that nothing the proxy waits for lies beyond it.
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// A reconnection wait: `backoff` scaled by a factor in [0.5, 1) read from
/// the clock's low digits, so that proxies that lost the control plane
/// together do not all come back at once.
pub fn jittered(backoff: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    backoff.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_by_the_offset() {
        let base = Instant::now();
        let c = Converter::at(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
            base,
        );
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_090);
        assert_eq!(c.instant(later), base + Duration::from_secs(90));
        assert_eq!(c.system_time(base + Duration::from_secs(90)), later);
        let earlier = SystemTime::UNIX_EPOCH + Duration::from_secs(999_999);
        let before = c.instant(earlier);
        assert!(before <= base);
        assert_eq!(c.system_time(before), earlier);
    }

    #[test]
    fn times_far_off_do_not_overflow() {
        let base = Instant::now();
        let c = Converter::at(SystemTime::now(), base);
        assert!(c.instant(SystemTime::UNIX_EPOCH) < base);
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 1000);
        assert!(c.instant(end) > base + Duration::from_secs(365 * 24 * 3600));
    }

    #[tokio::test(start_paused = true)]
    async fn paused_time_moves_the_wall_clock_it_reports() {
        let c = Converter::new();
        let start = c.now();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let hour = c.now().duration_since(start).unwrap();
        assert!(
            hour >= Duration::from_secs(3600) && hour < Duration::from_secs(3601),
            "{hour:?}"
        );
    }
}
