//! A request that may be sent again: its head, and its body shared by its
//! attempts.
//!
//! Nothing waits for the whole body before the first attempt. That attempt
//! streams the client's body through as it arrives and keeps its frames
//! (shared `Bytes`, not copies) up to [`MAX_REPLAY_BODY`]. A retry sends
//! the kept frames, then reads on from the client where the earlier attempt
//! stopped. Store-and-forward would hold back a streaming request (a gRPC
//! client or bidi stream, whose client waits for the server's first
//! message before it sends more) until it deadlocks; and gRPC clients send
//! no `content-length`, so "small" cannot be known up front.
//!
//! A body that grows past the bound is no longer kept, and the request is
//! not sent again. A new attempt supersedes the one before: if that one is
//! still sending (its server answered before reading the whole body), its
//! body fails, which resets that stream or closes that connection.

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::Full;
use hyper::body::{Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::body::{Body, BodyError};

/// Largest request body kept to be sent again.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

#[derive(Debug)]
pub(super) struct Replay<B = Incoming> {
    pub method: http::Method,
    uri: http::Uri,
    version: http::Version,
    pub headers: http::HeaderMap,
    /// None: the request has no body.
    body: Option<Arc<Shared<B>>>,
    hint: SizeHint,
}

/// The body of a request, read once from the client for all its attempts.
#[derive(Debug)]
struct Shared<B>(Mutex<State<B>>);

#[derive(Debug)]
struct State<B> {
    /// The client's body, until it ends or fails.
    source: Option<B>,
    /// The data frames read so far, while their total is under the bound.
    kept: Vec<Bytes>,
    kept_len: u64,
    trailers: Option<HeaderMap>,
    /// The body grew past the bound: nothing is kept any more.
    spilled: bool,
    /// The client's body has been read to its end.
    ended: bool,
    failed: bool,
    /// The attempt that may read the body: the newest.
    current: u32,
    /// The waker of the attempt waiting on the client, woken when a newer
    /// attempt supersedes it (so that it fails instead of hanging).
    parked: Option<Waker>,
}

impl<B> Shared<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<B> Replay<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    /// Keeps `req` to be sent as many times as its retries need, unless its
    /// `content-length` already says it is too large: then it is given back
    /// untouched, to be sent once.
    // Not an error: the request itself, given back (moved once).
    #[allow(clippy::result_large_err)]
    pub fn take(req: Request<B>) -> Result<Self, Request<B>> {
        let hint = req.body().size_hint();
        if hint.lower() > MAX_REPLAY_BODY {
            return Err(req);
        }
        let (parts, incoming) = req.into_parts();
        let body = (!incoming.is_end_stream()).then(|| {
            Arc::new(Shared(Mutex::new(State {
                source: Some(incoming),
                kept: Vec::new(),
                kept_len: 0,
                trailers: None,
                spilled: false,
                ended: false,
                failed: false,
                current: 0,
                parked: None,
            })))
        });
        Ok(Self {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            body,
            hint,
        })
    }

    /// Whether the request can still be sent again: its body has stayed
    /// within the bound and the client has not failed it.
    pub fn replayable(&self) -> bool {
        self.body.as_ref().is_none_or(|b| {
            let s = b.lock();
            !s.spilled && !s.failed
        })
    }

    /// Whether the client's body failed (it went away mid-body): an
    /// attempt that failed then failed for the client, not the upstream.
    pub fn client_failed(&self) -> bool {
        self.body.as_ref().is_some_and(|b| b.lock().failed)
    }

    /// The body of the next attempt (the first, or a retry superseding the
    /// one before): `None` when the request can no longer be sent again,
    /// `Some(None)` when it has no body.
    fn next_body(&mut self) -> Option<Option<Attempt<B>>> {
        let Some(shared) = &self.body else {
            return Some(None);
        };
        let mut s = shared.lock();
        if s.spilled || s.failed {
            return None;
        }
        s.current += 1;
        if let Some(waker) = s.parked.take() {
            waker.wake();
        }
        Some(Some(Attempt {
            shared: Arc::clone(shared),
            n: s.current,
            next: 0,
            trailers_sent: false,
            hint: self.hint,
        }))
    }
}

impl Replay {
    /// The next attempt (the first, or a retry superseding the one before);
    /// none when the request can no longer be sent again.
    pub fn attempt(&mut self) -> Option<Request<Body>> {
        let body = match self.next_body()? {
            Some(attempt) => Body::Replay(attempt),
            None => Body::Whole(Full::default()),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        Some(req)
    }
}

/// The body of one attempt.
#[derive(Debug)]
pub struct Attempt<B = Incoming> {
    shared: Arc<Shared<B>>,
    /// Which attempt this is (1, 2, ...).
    n: u32,
    /// The next kept frame this attempt sends.
    next: usize,
    trailers_sent: bool,
    hint: SizeHint,
}

impl<B> hyper::body::Body for Attempt<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let mut s = this.shared.lock();
        if s.current != this.n {
            return Poll::Ready(Some(Err(BodyError::Superseded)));
        }
        if !s.spilled && this.next < s.kept.len() {
            // Only a retry gets here: what an earlier attempt read.
            let data = s.kept[this.next].clone();
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if s.ended {
            return Poll::Ready(match &s.trailers {
                Some(t) if !this.trailers_sent => {
                    this.trailers_sent = true;
                    Some(Ok(Frame::trailers(t.clone())))
                }
                _ => None,
            });
        }
        if s.failed {
            return Poll::Ready(Some(Err(BodyError::ClientFailed)));
        }
        let s = &mut *s;
        let Some(source) = s.source.as_mut() else {
            // Neither ended nor failed: the source is there.
            return Poll::Ready(None);
        };
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => {
                if !s.parked.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    s.parked = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                s.ended = true;
                s.source = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.failed = true;
                s.source = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if s.spilled {
                        // Streamed through, no longer kept.
                    } else if s.kept_len + len > MAX_REPLAY_BODY {
                        s.spilled = true;
                        s.kept = Vec::new();
                    } else {
                        s.kept.push(data.clone());
                        s.kept_len += len;
                        this.next += 1;
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    this.trailers_sent = true;
                    s.ended = true;
                }
                if s.source.as_ref().is_some_and(|b| b.is_end_stream()) {
                    s.ended = true;
                    s.source = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.lock();
        let kept_left = !s.spilled && self.next < s.kept.len();
        s.current == self.n && !kept_left && s.ended && (s.trailers.is_none() || self.trailers_sent)
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests;
