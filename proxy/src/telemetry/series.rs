//! Bounded metrics: which `conn` label sets are in use, and the eviction of
//! those no connection has used for the retention period (linkerd2-proxy's
//! `METRICS_RETAIN_IDLE` is the model). The map is touched once per
//! connection (and once per mesh identity an HTTP connection meets), never
//! per request.

use std::time::Duration;
use tokio::time::Instant;

use super::metrics::{
    DstLabels, ErrorLabels, GrpcLabels, Metrics, ResponseLabels, GRPC_STATUSES, STATUS_CLASSES,
};

/// The use of one `conn` label set.
#[derive(Debug)]
pub(super) struct Series {
    /// Handles alive (connections open).
    users: usize,
    /// When the last handle was dropped.
    last: Instant,
    /// The error reasons recorded under it, to remove them too.
    reasons: Vec<&'static str>,
}

/// Keeps a `conn` label set from being evicted while it lives.
#[derive(Debug)]
pub(super) struct InUse {
    metrics: Metrics,
    labels: DstLabels,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut series = self
            .metrics
            .0
            .series
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(s) = series.get_mut(&self.labels) {
            s.users -= 1;
            s.last = Instant::now();
        }
    }
}

impl Metrics {
    /// Marks `labels` in use until the guard is dropped.
    pub(super) fn in_use(&self, labels: &DstLabels) -> InUse {
        let mut series = self.0.series.lock().unwrap_or_else(|e| e.into_inner());
        series
            .entry(labels.clone())
            .or_insert_with(|| Series {
                users: 0,
                last: Instant::now(),
                reasons: Vec::new(),
            })
            .users += 1;
        InUse {
            metrics: self.clone(),
            labels: labels.clone(),
        }
    }

    /// Records an error reason under `labels` (and remembers it for eviction).
    pub(super) fn error(&self, labels: &DstLabels, reason: &'static str) {
        {
            let mut series = self.0.series.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = series.get_mut(labels) {
                if !s.reasons.contains(&reason) {
                    s.reasons.push(reason);
                }
            }
        }
        self.0
            .errors
            .get_or_create(&ErrorLabels {
                conn: labels.clone(),
                reason,
            })
            .inc();
    }

    /// Removes the series of every `conn` label set that no connection
    /// uses and that has been idle for `retain`; returns how many.
    pub fn evict_idle(&self, retain: Duration) -> usize {
        let m = &self.0;
        let mut series = m.series.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let before = series.len();
        series.retain(|labels, s| {
            let keep = s.users > 0 || now.saturating_duration_since(s.last) < retain;
            if !keep {
                m.requests.remove(labels);
                m.latency.remove(labels);
                m.tcp_open.remove(labels);
                m.tcp_total.remove(labels);
                m.tcp_read.remove(labels);
                m.tcp_write.remove(labels);
                for status_class in STATUS_CLASSES {
                    m.responses.remove(&ResponseLabels {
                        conn: labels.clone(),
                        status_class,
                    });
                }
                for grpc_status in GRPC_STATUSES {
                    m.grpc.remove(&GrpcLabels {
                        conn: labels.clone(),
                        grpc_status,
                    });
                }
                for reason in &s.reasons {
                    m.errors.remove(&ErrorLabels {
                        conn: labels.clone(),
                        reason,
                    });
                }
            }
            keep
        });
        before - series.len()
    }
}
