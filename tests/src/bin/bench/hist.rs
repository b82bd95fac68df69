//! Latency histograms (nanoseconds, 3 significant digits) and the two lines a
//! `load` run prints for the host to read back: `HIST` (every recorded bucket,
//! so rounds can be merged exactly) and `RESULT` (counts and percentiles, for
//! people and scripts).

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::time::Duration;

/// Latencies up to a minute, in nanoseconds.
pub fn new() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `d`, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    h.saturating_record(ns.max(1));
}

/// `HIST v:c,v:c,...`: each recorded bucket's value and count.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut line = String::from("HIST ");
    for (i, v) in h.iter_recorded().enumerate() {
        if i > 0 {
            line.push(',');
        }
        let _ = write!(line, "{}:{}", v.value_iterated_to(), v.count_at_value());
    }
    line
}

/// The histogram an [`encode`]d line describes.
pub fn decode(line: &str) -> Result<Histogram<u64>> {
    let body = line.strip_prefix("HIST").context("not a HIST line")?.trim();
    let mut h = new();
    for pair in body.split(',').filter(|p| !p.is_empty()) {
        let (v, c) = pair.split_once(':').context("bad HIST pair")?;
        let (v, c): (u64, u64) = (v.parse()?, c.parse()?);
        if h.record_n(v, c).is_err() {
            bail!("HIST value {v} out of range");
        }
    }
    Ok(h)
}

/// What one load run (or several merged) measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Latency of each successful request, from its intended send time.
    pub latency: Histogram<u64>,
    /// Successful requests.
    pub ok: u64,
    /// Failed, timed-out or never-sent requests.
    pub errors: u64,
    /// Wall time of the run(s).
    pub elapsed: Duration,
    /// The generator's own lateness in sending (p99, worst run), included in
    /// the latencies: a figure close to the direct p50 means the generator,
    /// not the path, is the bottleneck.
    pub lag_p99: Duration,
}

impl Outcome {
    pub fn empty() -> Self {
        Self {
            latency: new(),
            ok: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            lag_p99: Duration::ZERO,
        }
    }

    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// The latency at quantile `q` (0..=1), in nanoseconds.
    pub fn at(&self, q: f64) -> u64 {
        self.latency.value_at_quantile(q)
    }

    /// Adds another run's figures to these.
    pub fn merge(&mut self, other: &Self) {
        self.latency
            .add(&other.latency)
            .expect("same histogram bounds");
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.lag_p99 = self.lag_p99.max(other.lag_p99);
    }

    /// The `RESULT ...` line.
    pub fn result_line(&self) -> String {
        let us = |ns: u64| ns / 1000;
        format!(
            "RESULT ok={} errors={} elapsed_us={} rps={:.0} p50_us={} p99_us={} p999_us={} max_us={} lag_p99_us={}",
            self.ok,
            self.errors,
            self.elapsed.as_micros(),
            self.rps(),
            us(self.at(0.5)),
            us(self.at(0.99)),
            us(self.at(0.999)),
            us(self.latency.max()),
            self.lag_p99.as_micros(),
        )
    }

    /// An outcome from a `HIST` line and the `RESULT` line after it.
    pub fn parse(hist: &str, result: &str) -> Result<Self> {
        let field = |key: &str| -> Result<u64> {
            field(result, key)
                .with_context(|| format!("no {key}= in {result:?}"))?
                .parse()
                .with_context(|| format!("bad {key}= in {result:?}"))
        };
        Ok(Self {
            latency: decode(hist)?,
            ok: field("ok")?,
            errors: field("errors")?,
            elapsed: Duration::from_micros(field("elapsed_us")?),
            lag_p99: Duration::from_micros(field("lag_p99_us")?),
        })
    }
}

/// The `key=value` field of a line (like `weft_tests::field`, without the panic).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_merge() {
        let mut a = Outcome::empty();
        for us in [80, 90, 100, 110, 5_000] {
            record(&mut a.latency, Duration::from_micros(us));
        }
        a.ok = 5;
        a.errors = 1;
        a.elapsed = Duration::from_secs(1);
        a.lag_p99 = Duration::from_micros(40);

        let back = Outcome::parse(&encode(&a.latency), &a.result_line()).unwrap();
        assert_eq!(back.latency, a.latency);
        assert_eq!((back.ok, back.errors), (5, 1));
        assert_eq!(back.elapsed, Duration::from_secs(1));
        assert_eq!(back.lag_p99, Duration::from_micros(40));

        let mut merged = back.clone();
        merged.merge(&a);
        assert_eq!(merged.latency.len(), 10);
        assert_eq!(merged.ok, 10);
        assert!((merged.rps() - 5.0).abs() < 1e-9);
        assert!(
            a.result_line().contains("p50_us=100 "),
            "{}",
            a.result_line()
        );
    }

    #[test]
    fn empty_histogram_encodes() {
        assert_eq!(decode(&encode(&new())).unwrap().len(), 0);
        assert!(decode("RESULT ok=1").is_err());
    }
}
