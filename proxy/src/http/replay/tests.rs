use super::*;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Wake;
use tokio::sync::mpsc;

/// The client's body, fed frame by frame by the test.
#[derive(Debug)]
struct Client(mpsc::UnboundedReceiver<Result<Frame<Bytes>, Failed>>);

#[derive(Debug)]
struct Failed;

impl From<Failed> for BodyError {
    fn from(_: Failed) -> Self {
        BodyError::ClientFailed
    }
}

impl hyper::body::Body for Client {
    type Data = Bytes;
    type Error = Failed;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Failed>>> {
        self.0.poll_recv(cx)
    }
}

type Feed = mpsc::UnboundedSender<Result<Frame<Bytes>, Failed>>;

fn streaming() -> (Feed, Replay<Client>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let req = Request::post("/x").body(Client(rx)).unwrap();
    (tx, Replay::take(req).expect("no length: kept"))
}

fn data(s: &'static str) -> Result<Frame<Bytes>, Failed> {
    Ok(Frame::data(Bytes::from_static(s.as_bytes())))
}

/// Counts its wakes.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type Polled = Poll<Option<Result<Frame<Bytes>, BodyError>>>;

fn poll(body: &mut Attempt<Client>, waker: &Waker) -> Polled {
    Pin::new(body).poll_frame(&mut Context::from_waker(waker))
}

fn next_data(body: &mut Attempt<Client>) -> Bytes {
    match poll(body, Waker::noop()) {
        Poll::Ready(Some(Ok(f))) => f.into_data().expect("a data frame"),
        other => panic!("expected a data frame, got {other:?}"),
    }
}

#[test]
fn the_first_attempt_streams_frames_as_they_arrive() {
    let (tx, mut replay) = streaming();
    let mut first = replay.next_body().unwrap().unwrap();
    assert!(poll(&mut first, Waker::noop()).is_pending(), "nothing yet");
    tx.send(data("one")).unwrap();
    // Sent on before the body has ended: nothing waits for its end.
    assert_eq!(next_data(&mut first), "one");
    assert!(poll(&mut first, Waker::noop()).is_pending());
    tx.send(data("two")).unwrap();
    drop(tx);
    assert_eq!(next_data(&mut first), "two");
    assert!(matches!(poll(&mut first, Waker::noop()), Poll::Ready(None)));
    assert!(first.is_end_stream());
}

#[tokio::test]
async fn a_retry_sends_what_was_read_then_reads_on_from_the_client() {
    let (tx, mut replay) = streaming();
    let mut first = replay.next_body().unwrap().unwrap();
    tx.send(data("one")).unwrap();
    tx.send(data("two")).unwrap();
    assert_eq!(next_data(&mut first), "one");
    assert_eq!(next_data(&mut first), "two");

    let wakes = Arc::new(Wakes::default());
    let waker = Waker::from(wakes.clone());
    assert!(
        poll(&mut first, &waker).is_pending(),
        "waiting on the client"
    );
    assert!(replay.replayable());
    let second = replay.next_body().unwrap().unwrap();
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        1,
        "the superseded attempt is woken"
    );
    assert!(matches!(
        poll(&mut first, Waker::noop()),
        Poll::Ready(Some(Err(BodyError::Superseded)))
    ));

    let mut trailers = HeaderMap::new();
    trailers.insert("x-sum", "3".parse().unwrap());
    tx.send(data("three")).unwrap();
    tx.send(Ok(Frame::trailers(trailers.clone()))).unwrap();
    drop(tx);
    let whole = second.collect().await.unwrap();
    assert_eq!(whole.trailers(), Some(&trailers));
    assert_eq!(whole.to_bytes(), "onetwothree");

    // A third attempt replays everything from what was kept.
    let third = replay.next_body().unwrap().unwrap();
    let whole = third.collect().await.unwrap();
    assert_eq!(whole.trailers(), Some(&trailers));
    assert_eq!(whole.to_bytes(), "onetwothree");
}

#[tokio::test]
async fn a_body_past_the_bound_streams_through_and_is_not_sent_again() {
    let (tx, mut replay) = streaming();
    let first = replay.next_body().unwrap().unwrap();
    let chunk = Bytes::from(vec![7u8; 16 * 1024]);
    for _ in 0..5 {
        tx.send(Ok(Frame::data(chunk.clone()))).unwrap();
    }
    drop(tx);
    let whole = first.collect().await.unwrap().to_bytes();
    assert_eq!(whole.len(), 80 * 1024, "every byte went through");
    assert!(!replay.replayable());
    assert!(replay.next_body().is_none());
    let s = replay.body.as_ref().unwrap().lock();
    assert!(s.kept.is_empty(), "nothing is held once past the bound");
}

#[tokio::test]
async fn a_body_at_the_bound_is_kept() {
    let (tx, mut replay) = streaming();
    let first = replay.next_body().unwrap().unwrap();
    let chunk = Bytes::from(vec![7u8; 16 * 1024]);
    for _ in 0..4 {
        tx.send(Ok(Frame::data(chunk.clone()))).unwrap();
    }
    drop(tx);
    assert_eq!(first.collect().await.unwrap().to_bytes().len(), 64 * 1024);
    let again = replay.next_body().unwrap().unwrap();
    assert_eq!(again.collect().await.unwrap().to_bytes().len(), 64 * 1024);
}

#[test]
fn a_client_failure_fails_the_attempt_and_ends_the_retries() {
    let (tx, mut replay) = streaming();
    let mut first = replay.next_body().unwrap().unwrap();
    tx.send(data("one")).unwrap();
    tx.send(Err(Failed)).unwrap();
    assert_eq!(next_data(&mut first), "one");
    assert!(matches!(
        poll(&mut first, Waker::noop()),
        Poll::Ready(Some(Err(BodyError::ClientFailed)))
    ));
    assert!(!replay.replayable());
    assert!(replay.next_body().is_none());
}

#[test]
fn an_empty_body_needs_no_sharing_and_a_large_length_is_not_kept() {
    let req = Request::get("/").body(Full::<Bytes>::default()).unwrap();
    let mut replay = Replay::take(req).expect("empty: kept");
    assert!(replay.body.is_none());
    assert!(matches!(replay.next_body(), Some(None)));
    assert!(replay.replayable());

    let big = Bytes::from(vec![0u8; MAX_REPLAY_BODY as usize + 1]);
    let req = Request::post("/").body(Full::new(big)).unwrap();
    assert!(Replay::take(req).is_err(), "known too large: sent once");
}

impl From<std::convert::Infallible> for BodyError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}
