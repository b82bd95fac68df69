//! Finished spans leave the data path through a bounded queue and are
//! exported in batches by one task.
//!
//! A request never waits for the collector: a span is handed over with a
//! `try_send`, and when the queue is full (the collector down or slow for
//! longer than the queue lasts) it is dropped and counted. While a batch
//! is being exported (and retried), new spans fill the
//! queue and then drop: memory stays bounded by the queue and one encoded
//! batch.

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::wire::Encoder;
use super::Recording;

/// Spans held between the data path and the exporter.
pub const QUEUE: usize = 2048;
/// Spans per export call.
pub const BATCH: usize = 512;
/// How long a span waits for its batch to fill.
pub const FLUSH: Duration = Duration::from_secs(1);
/// How long a batch is tried (each attempt, and the waits between them)
/// before it is dropped.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait after a batch's first retryable failure; it doubles up to
/// [`MAX_BACKOFF`], plus up to [`JITTER`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_millis(1600);
pub const JITTER: Duration = Duration::from_millis(100);
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
            "Spans dropped: the export queue was full, their batch failed every attempt, or the collector rejected them",
            m.dropped.clone(),
        );
        weft.register(
            "spans_exported",
            "Spans the collector accepted",
            m.exported.clone(),
        );
        weft.register(
            "exports",
            "Export calls to the collector, by result: ok, retried (a retryable error, the batch tried again), error (the batch dropped)",
            m.exports.clone(),
        );
        m
    }

    fn export(&self, result: &'static str) {
        self.exports.get_or_create(&vec![("result", result)]).inc();
    }
}

/// Where encoded batches go: the collector over OTLP/gRPC
/// (`collector::Otlp`), or a test's fake.
pub trait Export: Send + 'static {
    /// Sends one `ExportTraceServiceRequest`; `Ok`: how many of its spans
    /// the collector rejected (OTLP's partial success).
    fn send(&mut self, request: Bytes) -> impl Future<Output = Result<u64, tonic::Status>> + Send;
}

/// The data path's end of the queue.
///
/// The export task is not woken by each span: once a batch has begun it
/// sleeps until the batch is old ([`FLUSH`]) or until a push finds a full
/// batch waiting (`full`), then takes what is queued. A wake-up per span
/// (a receiver parked in `recv`) cost a cross-thread wake, most of a
/// sampled request's tracing cost in `benches/trace.rs`.
///
/// One `Arc`: each sampled span holds a clone.
#[derive(Clone, Debug)]
pub struct Queue(Arc<Sender>);

#[derive(Debug)]
struct Sender {
    tx: mpsc::Sender<Box<Recording>>,
    dropped: Counter,
    full: Notify,
    batch: usize,
}

impl Queue {
    /// Hands `span` to the exporter, or drops and counts it: never waits.
    pub(crate) fn push(&self, span: Box<Recording>) {
        let q = &*self.0;
        if q.tx.try_send(span).is_err() {
            q.dropped.inc();
        } else if q.tx.max_capacity() - q.tx.capacity() >= q.batch {
            q.full.notify_one();
        }
    }
}

#[cfg(test)]
impl Queue {
    /// A queue nobody reads, for tests that only build spans.
    pub(crate) fn detached() -> Self {
        let (tx, _) = mpsc::channel(1);
        Self(Arc::new(Sender {
            tx,
            dropped: Counter::default(),
            full: Notify::new(),
            batch: 1,
        }))
    }
}

/// Starts the export task: spans pushed to the returned queue are
/// encoded by `encoder` and sent to `exporter` until `stop`, when what is
/// queued gets [`SHUTDOWN_FLUSH`] to leave. The task ends once stopped and
/// drained (its handle says when).
pub fn spawn<E: Export>(
    exporter: E,
    encoder: Encoder,
    metrics: ExportMetrics,
    stop: CancellationToken,
) -> (Queue, tokio::task::JoinHandle<()>) {
    spawn_with((exporter, encoder), metrics, stop, QUEUE, BATCH, FLUSH)
}

/// [`spawn`] with its sizes given (tests use small ones).
pub fn spawn_with<E: Export>(
    (exporter, encoder): (E, Encoder),
    metrics: ExportMetrics,
    stop: CancellationToken,
    queue: usize,
    batch: usize,
    flush: Duration,
) -> (Queue, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(queue);
    let sender = Arc::new(Sender {
        tx,
        dropped: metrics.dropped.clone(),
        full: Notify::new(),
        batch,
    });
    let q = Queue(sender.clone());
    let out = Out {
        exporter,
        encoder,
        metrics,
        batch: Vec::with_capacity(batch),
    };
    let task = tokio::spawn(run(out, (rx, sender), stop, batch, flush));
    (q, task)
}

/// The export task's side.
struct Out<E> {
    exporter: E,
    encoder: Encoder,
    metrics: ExportMetrics,
    // The spans stay boxed as the queue carried them: unboxing would copy
    // each one (a few hundred bytes) only to drop it after encoding.
    #[allow(clippy::vec_box)]
    batch: Vec<Box<Recording>>,
}

async fn run<E: Export>(
    mut out: Out<E>,
    (mut rx, sender): (mpsc::Receiver<Box<Recording>>, Arc<Sender>),
    stop: CancellationToken,
    max: usize,
    flush: Duration,
) {
    loop {
        // The first span of a batch (the one wake-up a batch costs when the
        // queue was empty)...
        let first = tokio::select! {
            span = rx.recv() => span,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        out.batch.push(first);
        // ...then the rest, taken at once when the batch is old or full.
        if rx.len() + 1 < max {
            tokio::select! {
                () = tokio::time::sleep(flush) => {}
                () = sender.full.notified() => {}
                () = stop.cancelled() => {}
            }
        }
        while out.batch.len() < max {
            match rx.try_recv() {
                Ok(s) => out.batch.push(s),
                Err(_) => break,
            }
        }
        if stop.is_cancelled() {
            // Exported below, within the shutdown bound.
            break;
        }
        out.export().await;
    }
    // Stopped: what is queued gets one bounded chance.
    rx.close();
    let last = async {
        // The batch in hand may already be full.
        loop {
            if out.batch.len() >= max {
                out.export().await;
            }
            match rx.recv().await {
                Some(span) => out.batch.push(span),
                None => break,
            }
        }
        if !out.batch.is_empty() {
            out.export().await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_FLUSH, last).await.is_err() {
        warn!("spans still queued at shutdown were not exported");
    }
}

impl<E: Export> Out<E> {
    /// Encodes and exports the batch (emptied: sent, or dropped and
    /// counted). A retryable failure is tried again with backoff (or after
    /// the wait the collector asked for in a `RetryInfo`), within
    /// [`EXPORT_TIMEOUT`]; the encoded request is kept for that, the spans
    /// freed at once.
    async fn export(&mut self) {
        let n = self.batch.len() as u64;
        let request = self.encoder.encode(&self.batch);
        self.batch.clear();
        let deadline = Instant::now() + EXPORT_TIMEOUT;
        let mut backoff = FIRST_BACKOFF;
        let m = &self.metrics;
        let error =
            loop {
                let status =
                    match tokio::time::timeout_at(deadline, self.exporter.send(request.clone()))
                        .await
                    {
                        Ok(Ok(rejected)) => {
                            m.export("ok");
                            let rejected = rejected.min(n);
                            m.exported.inc_by(n - rejected);
                            if rejected > 0 {
                                m.dropped.inc_by(rejected);
                                warn!(spans = rejected, "the collector rejected spans: dropped");
                            }
                            return;
                        }
                        Ok(Err(status)) => status,
                        Err(_) => break format!("no answer within {EXPORT_TIMEOUT:?}"),
                    };
                // The collector's own wait (OTLP's throttling), else ours.
                let asked = retry_delay(&status);
                let wait = asked.unwrap_or_else(|| backoff + JITTER.mul_f64(rand::random::<f64>()));
                if !retryable(status.code(), asked.is_some()) || Instant::now() + wait >= deadline {
                    break status.to_string();
                }
                m.export("retried");
                debug!(error = %status, ?wait, "span export failed: trying again");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            };
        m.export("error");
        m.dropped.inc_by(n);
        warn!(spans = n, %error, "span export failed: spans dropped");
    }
}

/// Whether OTLP says an export that failed with `code` may be tried
/// again: `RESOURCE_EXHAUSTED` only when the collector said when
/// (`throttled`: its status carried a `RetryInfo`), since without one it
/// may mean a batch that will never fit.
fn retryable(code: tonic::Code, throttled: bool) -> bool {
    use tonic::Code::*;
    match code {
        ResourceExhausted => throttled,
        Cancelled | DeadlineExceeded | Aborted | OutOfRange | Unavailable | DataLoss => true,
        _ => false,
    }
}

/// `google.rpc.Status`, which tonic hands over as the status's details
/// (the `grpc-status-details-bin` trailer): only its details.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// `google.rpc.RetryInfo`: how long the server asks the client to wait.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<prost_types::Duration>,
}

const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The wait a collector asked for with a `RetryInfo` in its status (OTLP's
/// throttling); `None` when it gave none, or one that does not decode or
/// is negative.
fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    use prost::Message;
    if status.details().is_empty() {
        return None;
    }
    let details = RpcStatus::decode(status.details()).ok()?.details;
    let info = details.iter().find(|any| any.type_url == RETRY_INFO)?;
    let delay = RetryInfo::decode(info.value.as_slice()).ok()?.retry_delay?;
    Duration::try_from(delay).ok()
}

#[cfg(test)]
mod tests;
