//! Finished spans leave the data path through a bounded queue and are
//! exported in batches by one task.
//!
//! A request never waits for the collector: a span is handed over with a
//! `try_send`, and when the queue is full (the collector down or slow for
//! longer than the queue lasts) it is dropped and counted. While a batch
//! is being exported (and retried by the exporter), new spans fill the
//! queue and then drop: memory stays bounded by the queue and one batch.

use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Spans held between the data path and the exporter.
pub const QUEUE: usize = 2048;
/// Spans per export call.
pub const BATCH: usize = 512;
/// How long a span waits for its batch to fill.
pub const FLUSH: Duration = Duration::from_secs(1);
/// An export call that takes longer counts as failed.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last spans to leave.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

type Results = Family<Vec<(&'static str, &'static str)>, Counter>;

/// The export metrics.
#[derive(Clone, Debug, Default)]
pub struct ExportMetrics {
    pub dropped: Counter,
    pub exported: Counter,
    pub exports: Results,
}

impl ExportMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let weft = registry.sub_registry_with_prefix("weft_trace");
        weft.register(
            "spans_dropped",
            "Spans dropped: the export queue was full or their batch failed every attempt",
            m.dropped.clone(),
        );
        weft.register(
            "spans_exported",
            "Spans the collector accepted",
            m.exported.clone(),
        );
        weft.register(
            "exports",
            "Export calls to the collector, by result (ok, error)",
            m.exports.clone(),
        );
        m
    }

    fn export(&self, result: &'static str) {
        self.exports.get_or_create(&vec![("result", result)]).inc();
    }
}

/// The data path's end of the queue.
///
/// The export task is not woken by each span: once a batch has begun it
/// sleeps until the batch is old ([`FLUSH`]) or until a push finds a full
/// batch waiting (`full`), then takes what is queued. A wake-up per span
/// (a receiver parked in `recv`) cost a cross-thread wake, most of a
/// sampled request's tracing cost in `benches/trace.rs`.
#[derive(Clone, Debug)]
pub struct Queue {
    tx: mpsc::Sender<SpanData>,
    dropped: Counter,
    full: std::sync::Arc<Notify>,
    batch: usize,
}

impl Queue {
    /// Hands `span` to the exporter, or drops and counts it: never waits.
    pub fn push(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        } else if self.tx.max_capacity() - self.tx.capacity() >= self.batch {
            self.full.notify_one();
        }
    }
}

/// Starts the export task: spans pushed to the returned queue go to
/// `exporter` until `stop`, when what is queued gets [`SHUTDOWN_FLUSH`] to
/// leave. The task ends once stopped and drained (its handle says when).
pub fn spawn<E>(
    exporter: E,
    metrics: ExportMetrics,
    stop: CancellationToken,
) -> (Queue, tokio::task::JoinHandle<()>)
where
    E: SpanExporter + 'static,
{
    spawn_with(exporter, metrics, stop, QUEUE, BATCH, FLUSH)
}

/// [`spawn`] with its sizes given (tests use small ones).
pub fn spawn_with<E>(
    exporter: E,
    metrics: ExportMetrics,
    stop: CancellationToken,
    queue: usize,
    batch: usize,
    flush: Duration,
) -> (Queue, tokio::task::JoinHandle<()>)
where
    E: SpanExporter + 'static,
{
    let (tx, rx) = mpsc::channel(queue);
    let full = std::sync::Arc::new(Notify::new());
    let q = Queue {
        tx,
        dropped: metrics.dropped.clone(),
        full: full.clone(),
        batch,
    };
    let task = tokio::spawn(run(exporter, metrics, (rx, full), stop, batch, flush));
    (q, task)
}

async fn run<E: SpanExporter>(
    exporter: E,
    metrics: ExportMetrics,
    (mut rx, full): (mpsc::Receiver<SpanData>, std::sync::Arc<Notify>),
    stop: CancellationToken,
    max: usize,
    flush: Duration,
) {
    let mut batch = Vec::with_capacity(max);
    loop {
        // The first span of a batch (the one wake-up a batch costs when the
        // queue was empty)...
        let first = tokio::select! {
            span = rx.recv() => span,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        batch.push(first);
        // ...then the rest, taken at once when the batch is old or full.
        if rx.len() + 1 < max {
            tokio::select! {
                () = tokio::time::sleep(flush) => {}
                () = full.notified() => {}
                () = stop.cancelled() => {}
            }
        }
        while batch.len() < max {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        if stop.is_cancelled() {
            // Exported below, within the shutdown bound.
            break;
        }
        export(&exporter, &metrics, &mut batch).await;
    }
    // Stopped: what is queued gets one bounded chance.
    rx.close();
    let last = async {
        // The batch in hand may already be full.
        loop {
            if batch.len() >= max {
                export(&exporter, &metrics, &mut batch).await;
            }
            match rx.recv().await {
                Some(span) => batch.push(span),
                None => break,
            }
        }
        if !batch.is_empty() {
            export(&exporter, &metrics, &mut batch).await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_FLUSH, last).await.is_err() {
        warn!("spans still queued at shutdown were not exported");
    }
    let _ = exporter.shutdown();
}

/// Exports `batch` (emptied: sent, or dropped and counted). The exporter
/// itself tries a batch again on the errors OTLP calls retryable, with
/// backoff, within [`EXPORT_TIMEOUT`]: a second loop here would only copy
/// every batch to keep it.
async fn export<E: SpanExporter>(exporter: &E, metrics: &ExportMetrics, batch: &mut Vec<SpanData>) {
    let spans = std::mem::take(batch);
    let n = spans.len() as u64;
    let error = match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(spans)).await {
        Ok(Ok(())) => {
            metrics.export("ok");
            metrics.exported.inc_by(n);
            return;
        }
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {EXPORT_TIMEOUT:?}"),
    };
    metrics.export("error");
    metrics.dropped.inc_by(n);
    warn!(spans = n, %error, "span export failed: spans dropped");
}

#[cfg(test)]
mod tests;
