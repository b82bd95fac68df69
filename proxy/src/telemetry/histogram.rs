//! A latency histogram that records with atomics only.
//!
//! prometheus-client's own histogram takes a mutex on every observation; on
//! the request path that is a lock per request, shared by every connection
//! to the same destination. This one has fixed bucket bounds and an atomic
//! counter per bucket, and encodes in the same Prometheus format.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Upper bounds of the latency buckets, in milliseconds (as linkerd's).
pub const LATENCY_MS_BOUNDS: [u64; 19] = [
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 5000, 10000,
];

#[derive(Debug)]
struct Inner {
    /// One counter per bound, plus the +Inf bucket.
    buckets: [AtomicU64; LATENCY_MS_BOUNDS.len() + 1],
    /// Sum of observations in microseconds, to keep sub-millisecond sums.
    sum_us: AtomicU64,
}

/// Cheap to clone: clones share the counts.
#[derive(Clone, Debug)]
pub struct LatencyHistogram(Arc<Inner>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self(Arc::new(Inner {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }))
    }
}

impl LatencyHistogram {
    pub fn observe_us(&self, us: u64) {
        let ms_ceil = us.div_ceil(1000);
        let i = LATENCY_MS_BOUNDS.partition_point(|b| *b < ms_ceil);
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Counts per bucket (each under its upper bound; the last is +Inf), and the total.
    fn snapshot(&self) -> (Vec<(f64, u64)>, u64) {
        let buckets: Vec<(f64, u64)> = self
            .0
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let bound = LATENCY_MS_BOUNDS
                    .get(i)
                    .map_or(f64::INFINITY, |b| *b as f64);
                (bound, n.load(Ordering::Relaxed))
            })
            .collect();
        let total = buckets.iter().map(|(_, n)| n).sum();
        (buckets, total)
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        // prometheus-client takes per-bucket counts and accumulates them.
        let (per_bucket, count) = self.snapshot();
        let sum_ms = self.0.sum_us.load(Ordering::Relaxed) as f64 / 1000.0;
        encoder.encode_histogram::<NoLabelSet>(sum_ms, count, &per_bucket, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    #[test]
    fn buckets_are_cumulative_in_the_text_format() {
        let h = LatencyHistogram::default();
        h.observe_us(300); // 1 ms bucket
        h.observe_us(1000); // 1 ms bucket (upper bound inclusive)
        h.observe_us(7_500); // 10 ms bucket
        h.observe_us(60_000_000); // +Inf
        let mut reg = Registry::default();
        reg.register("response_latency_ms", "latency", h);
        let mut out = String::new();
        encode(&mut out, &reg).unwrap();
        assert!(
            out.contains("response_latency_ms_bucket{le=\"1.0\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("response_latency_ms_bucket{le=\"5.0\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("response_latency_ms_bucket{le=\"10.0\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("response_latency_ms_bucket{le=\"10000.0\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("response_latency_ms_bucket{le=\"+Inf\"} 4\n"),
            "{out}"
        );
        assert!(out.contains("response_latency_ms_count 4\n"), "{out}");
        assert!(out.contains("response_latency_ms_sum 60008.8\n"), "{out}");
    }
}
