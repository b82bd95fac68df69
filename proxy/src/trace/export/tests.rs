use super::*;
use crate::trace::{SpanKind, Tracer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::{Notify, Semaphore};

/// A collector in the test's hands: it records batches (as it decoded
/// them), fails with `failing` (a gRPC code; 0: OK) while told to, rejects
/// `rejecting` spans of each, and answers only as many calls as it is given
/// permits.
#[derive(Debug, Clone)]
struct Fake {
    batches: Arc<Mutex<Vec<usize>>>,
    calls: Arc<Mutex<Vec<tokio::time::Instant>>>,
    failing: Arc<AtomicI32>,
    rejecting: Arc<AtomicU64>,
    /// The failing status's details (`grpc-status-details-bin`).
    details: Arc<Mutex<Bytes>>,
    permits: Arc<Semaphore>,
    called: Arc<Notify>,
}

impl Fake {
    fn new(open: bool) -> Self {
        Self {
            batches: Arc::default(),
            calls: Arc::default(),
            failing: Arc::default(),
            rejecting: Arc::default(),
            details: Arc::default(),
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

    fn fail(&self, code: tonic::Code) {
        self.failing.store(code as i32, Ordering::SeqCst);
    }

    /// Waits for `failures` calls, then answers OK and waits for the
    /// batch to go through.
    async fn recover_after(&self, failures: usize) {
        while self.calls.lock().unwrap().len() < failures {
            self.called.notified().await;
        }
        self.fail(tonic::Code::Ok);
        while self.exported() == 0 {
            self.called.notified().await;
            tokio::task::yield_now().await;
        }
    }

    /// Fails with `code` and a `RetryInfo` asking for `delay`, as a
    /// collector that throttles does.
    fn throttle(&self, code: tonic::Code, delay: Duration) {
        let info = RetryInfo {
            retry_delay: Some(delay.try_into().unwrap()),
        };
        let status = RpcStatus {
            details: vec![
                // Another detail first: the RetryInfo is found among them.
                prost_types::Any {
                    type_url: "type.googleapis.com/google.rpc.DebugInfo".into(),
                    value: vec![1, 2, 3],
                },
                prost_types::Any {
                    type_url: RETRY_INFO.into(),
                    value: info.encode_to_vec(),
                },
            ],
        };
        *self.details.lock().unwrap() = status.encode_to_vec().into();
        self.fail(code);
    }
}

impl Export for Fake {
    async fn send(&mut self, request: Bytes) -> Result<u64, tonic::Status> {
        self.calls.lock().unwrap().push(tokio::time::Instant::now());
        self.called.notify_one();
        self.permits.acquire().await.unwrap().forget();
        let code = tonic::Code::from(self.failing.load(Ordering::SeqCst));
        if code != tonic::Code::Ok {
            let details = self.details.lock().unwrap().clone();
            return Err(tonic::Status::with_details(code, "collector down", details));
        }
        let req = ExportTraceServiceRequest::decode(request).expect("a valid request");
        let n = req.resource_spans[0].scope_spans[0].spans.len();
        self.batches.lock().unwrap().push(n);
        Ok(self.rejecting.load(Ordering::SeqCst))
    }
}

fn spawn_fake(
    fake: &Fake,
    metrics: &ExportMetrics,
    stop: &CancellationToken,
    queue: usize,
    batch: usize,
) -> (Queue, tokio::task::JoinHandle<()>) {
    let encoder = Encoder::new(&[("service.name", "test")]);
    spawn_with(
        (fake.clone(), encoder),
        metrics.clone(),
        stop.clone(),
        queue,
        batch,
        FLUSH,
    )
}

/// A sampled span, ready to be queued on `queue`.
fn span(queue: &Queue) -> Box<Recording> {
    let tracer = Tracer::new(queue.clone(), 100.0);
    tracer
        .start(&mut http::HeaderMap::new(), SpanKind::Client)
        .expect("100%: sampled")
}

fn result(m: &ExportMetrics, r: &'static str) -> u64 {
    m.exports.get_or_create(&vec![("result", r)]).get()
}

#[tokio::test(start_paused = true)]
async fn spans_leave_in_batches_of_at_most_the_batch_size() {
    let fake = Fake::new(true);
    let metrics = ExportMetrics::default();
    let stop = CancellationToken::new();
    let (queue, task) = spawn_fake(&fake, &metrics, &stop, 64, 4);
    for _ in 0..10 {
        queue.push(span(&queue));
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
    let (queue, _task) = spawn_fake(&fake, &metrics, &stop, 64, 100);
    let called = fake.called.notified();
    let at = tokio::time::Instant::now();
    queue.push(span(&queue));
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
    let (queue, task) = spawn_fake(&fake, &metrics, &stop, 8, 2);
    let called = fake.called.notified();
    queue.push(span(&queue));
    queue.push(span(&queue));
    called.await;
    // One batch (2) is in the collector's hands; the queue holds 8; the
    // rest is dropped, each push returning at once.
    for _ in 0..20 {
        queue.push(span(&queue));
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
    // Not a code OTLP retries: the batch is dropped at once.
    fake.fail(tonic::Code::Internal);
    let metrics = ExportMetrics::default();
    let stop = CancellationToken::new();
    let (queue, task) = spawn_fake(&fake, &metrics, &stop, 64, 3);
    let called = fake.called.notified();
    for _ in 0..3 {
        queue.push(span(&queue));
    }
    called.await;
    tokio::task::yield_now().await;
    // The failed batch is dropped and counted.
    while result(&metrics, "error") == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(metrics.dropped.get(), 3);
    fake.fail(tonic::Code::Ok);
    for _ in 0..3 {
        queue.push(span(&queue));
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
    let (queue, task) = spawn_fake(&fake, &metrics, &stop, 64, 100);
    queue.push(span(&queue));
    stop.cancel();
    // The collector never answers: shutdown still ends, after the bound.
    let at = tokio::time::Instant::now();
    task.await.unwrap();
    assert!(at.elapsed() <= SHUTDOWN_FLUSH + FLUSH, "{:?}", at.elapsed());
    assert_eq!(fake.exported(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_is_tried_again_with_backoff_and_then_goes_through() {
    let fake = Fake::new(true);
    fake.fail(tonic::Code::Unavailable);
    let metrics = ExportMetrics::default();
    let stop = CancellationToken::new();
    let (queue, task) = spawn_fake(&fake, &metrics, &stop, 64, 2);
    queue.push(span(&queue));
    queue.push(span(&queue));
    // Three failed attempts, then the collector is back.
    fake.recover_after(3).await;
    stop.cancel();
    task.await.unwrap();
    let calls = fake.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4, "{calls:?}");
    // Waits of 100, 200 and 400 ms, each with up to JITTER more.
    for (i, pair) in calls.windows(2).enumerate() {
        let wait = pair[1] - pair[0];
        let base = FIRST_BACKOFF * 2u32.pow(i as u32);
        assert!(wait >= base && wait <= base + JITTER, "wait {i}: {wait:?}");
    }
    assert_eq!(result(&metrics, "retried"), 3);
    assert_eq!((result(&metrics, "ok"), result(&metrics, "error")), (1, 0));
    assert_eq!((metrics.exported.get(), metrics.dropped.get()), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn a_batch_failing_for_the_whole_export_timeout_is_dropped_and_the_next_tried() {
    let fake = Fake::new(true);
    fake.fail(tonic::Code::Unavailable);
    let metrics = ExportMetrics::default();
    let stop = CancellationToken::new();
    let (queue, task) = spawn_fake(&fake, &metrics, &stop, 64, 1);
    let at = tokio::time::Instant::now();
    queue.push(span(&queue));
    while result(&metrics, "error") == 0 {
        fake.called.notified().await;
        tokio::task::yield_now().await;
    }
    let gave_up = at.elapsed();
    assert!(gave_up <= FLUSH + EXPORT_TIMEOUT, "{gave_up:?}");
    assert!(
        gave_up >= EXPORT_TIMEOUT - MAX_BACKOFF - JITTER,
        "{gave_up:?}"
    );
    assert_eq!(metrics.dropped.get(), 1);
    // Backoff capped: about 10 s of attempts, not 4.
    let calls = fake.calls.lock().unwrap().len();
    assert!((8..=12).contains(&calls), "{calls} attempts");
    // The collector is back: the next span goes through.
    fake.fail(tonic::Code::Ok);
    queue.push(span(&queue));
    stop.cancel();
    task.await.unwrap();
    assert_eq!((fake.exported(), metrics.exported.get()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_collector_that_never_answers_is_given_up_on_at_the_export_timeout() {
    let fake = Fake::new(false);
    let metrics = ExportMetrics::default();
    let stop = CancellationToken::new();
    let (queue, _task) = spawn_fake(&fake, &metrics, &stop, 64, 1);
    let called = fake.called.notified();
    queue.push(span(&queue));
    called.await;
    let at = tokio::time::Instant::now();
    while result(&metrics, "error") == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        at.elapsed() >= EXPORT_TIMEOUT - Duration::from_millis(100),
        "{:?}",
        at.elapsed()
    );
    assert_eq!(
        fake.calls.lock().unwrap().len(),
        1,
        "no retry past the deadline"
    );
    assert_eq!(metrics.dropped.get(), 1);
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn spans_the_collector_rejects_are_counted_as_dropped() {
    let fake = Fake::new(true);
    fake.rejecting.store(1, Ordering::SeqCst);
    let metrics = ExportMetrics::default();
    let stop = CancellationToken::new();
    let (queue, task) = spawn_fake(&fake, &metrics, &stop, 64, 3);
    for _ in 0..3 {
        queue.push(span(&queue));
    }
    stop.cancel();
    task.await.unwrap();
    assert_eq!((metrics.exported.get(), metrics.dropped.get()), (2, 1));
    assert_eq!(result(&metrics, "ok"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_collector_that_asks_for_a_wait_gets_it() {
    for code in [tonic::Code::Unavailable, tonic::Code::ResourceExhausted] {
        let fake = Fake::new(true);
        let asked = Duration::from_millis(2500);
        fake.throttle(code, asked);
        let metrics = ExportMetrics::default();
        let stop = CancellationToken::new();
        let (queue, task) = spawn_fake(&fake, &metrics, &stop, 64, 1);
        queue.push(span(&queue));
        fake.recover_after(2).await;
        stop.cancel();
        task.await.unwrap();
        let calls = fake.calls.lock().unwrap().clone();
        // The collector's wait each time, not the 100 ms backoff, and no
        // jitter added to it.
        for pair in calls.windows(2) {
            assert_eq!(pair[1] - pair[0], asked, "{code:?}: {calls:?}");
        }
        assert_eq!(calls.len(), 3, "{code:?}");
        assert_eq!(result(&metrics, "retried"), 2, "{code:?}");
        assert_eq!((metrics.exported.get(), metrics.dropped.get()), (1, 0));
    }
}

#[tokio::test(start_paused = true)]
async fn resource_exhausted_without_a_retry_info_is_not_tried_again() {
    let fake = Fake::new(true);
    fake.fail(tonic::Code::ResourceExhausted);
    let metrics = ExportMetrics::default();
    let stop = CancellationToken::new();
    let (queue, task) = spawn_fake(&fake, &metrics, &stop, 64, 1);
    queue.push(span(&queue));
    while result(&metrics, "error") == 0 {
        fake.called.notified().await;
        tokio::task::yield_now().await;
    }
    stop.cancel();
    task.await.unwrap();
    assert_eq!(fake.calls.lock().unwrap().len(), 1);
    assert_eq!(result(&metrics, "retried"), 0);
    assert_eq!(metrics.dropped.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_export_timeout_drops_the_batch_at_once() {
    let fake = Fake::new(true);
    fake.throttle(tonic::Code::Unavailable, EXPORT_TIMEOUT * 2);
    let metrics = ExportMetrics::default();
    let stop = CancellationToken::new();
    let (queue, task) = spawn_fake(&fake, &metrics, &stop, 64, 1);
    let called = fake.called.notified();
    queue.push(span(&queue));
    called.await;
    let at = tokio::time::Instant::now();
    // A bounded number of turns (a loop of yields would never let the
    // paused clock reach a wait, were there one).
    for _ in 0..100 {
        if result(&metrics, "error") == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(result(&metrics, "error"), 1, "dropped");
    assert_eq!(at.elapsed(), Duration::ZERO, "dropped without waiting");
    assert_eq!(fake.calls.lock().unwrap().len(), 1);
    assert_eq!(metrics.dropped.get(), 1);
    stop.cancel();
    task.await.unwrap();
}
