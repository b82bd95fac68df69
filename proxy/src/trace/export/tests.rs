use super::*;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::{Notify, Semaphore};

/// A collector in the test's hands: it records batches, fails while told
/// to, and answers only as many calls as it is given permits.
#[derive(Debug, Clone)]
struct Fake {
    batches: Arc<Mutex<Vec<usize>>>,
    failing: Arc<AtomicBool>,
    permits: Arc<Semaphore>,
    called: Arc<Notify>,
}

impl Fake {
    fn new(open: bool) -> Self {
        Self {
            batches: Arc::default(),
            failing: Arc::default(),
            permits: Arc::new(Semaphore::new(if open {
                Semaphore::MAX_PERMITS
            } else {
                0
            })),
            called: Arc::default(),
        }
    }

    fn exported(&self) -> usize {
        self.batches.lock().unwrap().iter().sum()
    }
}

impl SpanExporter for Fake {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.called.notify_one();
        self.permits.acquire().await.unwrap().forget();
        if self.failing.load(Ordering::SeqCst) {
            return Err(OTelSdkError::InternalFailure("collector down".into()));
        }
        self.batches.lock().unwrap().push(batch.len());
        Ok(())
    }
}

fn span(n: u8) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes([1; 16]),
            SpanId::from_bytes([n.max(1); 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Client,
        name: "web.shop:80".into(),
        start_time: SystemTime::UNIX_EPOCH,
        end_time: SystemTime::UNIX_EPOCH,
        attributes: vec![],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("test").build(),
    }
}

fn result(m: &ExportMetrics, r: &'static str) -> u64 {
    m.exports.get_or_create(&vec![("result", r)]).get()
}

#[tokio::test(start_paused = true)]
async fn spans_leave_in_batches_of_at_most_the_batch_size() {
    let fake = Fake::new(true);
    let metrics = ExportMetrics::default();
    let stop = CancellationToken::new();
    let (queue, task) = spawn_with(fake.clone(), metrics.clone(), stop.clone(), 64, 4, FLUSH);
    for n in 0..10 {
        queue.push(span(n));
    }
    // Two full batches at once; the last two after the flush interval
    // (the paused clock advances to it).
    stop.cancel();
    task.await.unwrap();
    let batches = fake.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 10);
    assert!(batches.iter().all(|&b| b <= 4), "{batches:?}");
    assert_eq!((metrics.exported.get(), metrics.dropped.get()), (10, 0));
    assert_eq!(result(&metrics, "ok"), batches.len() as u64);
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_leaves_after_the_flush_interval() {
    let fake = Fake::new(true);
    let metrics = ExportMetrics::default();
    let stop = CancellationToken::new();
    let (queue, _task) = spawn_with(fake.clone(), metrics.clone(), stop.clone(), 64, 100, FLUSH);
    let called = fake.called.notified();
    let at = tokio::time::Instant::now();
    queue.push(span(1));
    called.await;
    assert!(at.elapsed() >= FLUSH, "waited {:?}", at.elapsed());
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_stuck_collector_never_blocks_a_push_and_the_overflow_is_counted() {
    // The collector takes the first call and never answers it.
    let fake = Fake::new(false);
    let metrics = ExportMetrics::default();
    let stop = CancellationToken::new();
    let (queue, task) = spawn_with(fake.clone(), metrics.clone(), stop.clone(), 8, 2, FLUSH);
    let called = fake.called.notified();
    queue.push(span(1));
    queue.push(span(2));
    called.await;
    // One batch (2) is in the collector's hands; the queue holds 8; the
    // rest is dropped, each push returning at once.
    for n in 0..20 {
        queue.push(span(n));
    }
    assert_eq!(metrics.dropped.get(), 12);
    // Once the collector answers, the held batch and the queue go through.
    fake.permits.add_permits(Semaphore::MAX_PERMITS - 1);
    stop.cancel();
    task.await.unwrap();
    assert_eq!(fake.exported(), 8 + 2, "the stuck batch went through late");
    assert_eq!(metrics.dropped.get(), 12);
}

#[tokio::test(start_paused = true)]
async fn a_failing_collector_drops_its_batches_and_export_resumes_when_it_returns() {
    let fake = Fake::new(true);
    fake.failing.store(true, Ordering::SeqCst);
    let metrics = ExportMetrics::default();
    let stop = CancellationToken::new();
    let (queue, task) = spawn_with(fake.clone(), metrics.clone(), stop.clone(), 64, 3, FLUSH);
    let called = fake.called.notified();
    for n in 0..3 {
        queue.push(span(n));
    }
    called.await;
    tokio::task::yield_now().await;
    // The failed batch is dropped and counted.
    while result(&metrics, "error") == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(metrics.dropped.get(), 3);
    fake.failing.store(false, Ordering::SeqCst);
    for n in 0..3 {
        queue.push(span(n));
    }
    stop.cancel();
    task.await.unwrap();
    assert_eq!((fake.exported(), metrics.exported.get()), (3, 3));
    assert_eq!(result(&metrics, "ok"), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_what_is_queued_within_a_bound() {
    let fake = Fake::new(false);
    let metrics = ExportMetrics::default();
    let stop = CancellationToken::new();
    let (queue, task) = spawn_with(fake.clone(), metrics.clone(), stop.clone(), 64, 100, FLUSH);
    queue.push(span(1));
    stop.cancel();
    // The collector never answers: shutdown still ends, after the bound.
    let at = tokio::time::Instant::now();
    task.await.unwrap();
    assert!(at.elapsed() <= SHUTDOWN_FLUSH + FLUSH, "{:?}", at.elapsed());
    assert_eq!(fake.exported(), 0);
}
