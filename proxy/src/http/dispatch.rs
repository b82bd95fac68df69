//! The deadline and the retries around one request.
//!
//! The deadline (the route's timeout or the caller's, whichever is sooner)
//! counts from the request's arrival and covers everything: every attempt,
//! the backoff between them, the wait for the response's headers.

use http::Request;
use hyper::body::Incoming;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tokio_util::either::Either as OneOf;
use tracing::debug;

use super::deadline::Deadline;
use super::forward::{Forward, Used};
use super::replay::Replay;
use super::{Body, Target};
use crate::discovery::policy::{Outcome, Policy};
use crate::errors::ProxyError;

impl Forward {
    /// One request to `target`, with its deadline and, for a Service with a
    /// retry policy, its retries.
    ///
    /// The common case (no deadline, no retries) is the one attempt's
    /// future itself. The other is boxed: its future (a body kept for
    /// replay, the loop, the timers) is several kilobytes that every
    /// request would otherwise carry, and move at every spawn.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dispatch<'a>(
        &'a self,
        target: Target<'a>,
        route_policy: Option<&'a Arc<Policy>>,
        req: Request<Incoming>,
        start: Instant,
        h2: bool,
        grpc: bool,
        used: &'a mut Used,
    ) -> impl Future<Output = Result<http::Response<Incoming>, ProxyError>> + Send + 'a {
        let dest = match target {
            Target::Balanced(dest) => Some(dest),
            Target::Addr(_) => None,
        };
        let policy = match route_policy {
            Some(p) => Some(Pol::Route(p)),
            None => dest.map(|d| Pol::Dest(d.policy.load())),
        };
        let deadline = Deadline::of(
            start,
            policy.as_ref().and_then(|p| p.timeout),
            req.headers(),
        );
        let retry = policy.as_ref().is_some_and(|p| p.retry.is_some());
        if let (Some(d), true) = (dest, retry) {
            d.budget.deposit();
        }
        if deadline.is_none() && !retry {
            return OneOf::Left(self.send(target, req.map(Body::Stream), h2, used, None));
        }
        let policy = policy.map(Pol::into_arc);
        OneOf::Right(Box::pin(
            self.dispatch_slow(target, req, deadline, policy, h2, grpc, used),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    async fn dispatch_slow(
        &self,
        target: Target<'_>,
        req: Request<Incoming>,
        deadline: Option<Deadline>,
        policy: Option<Arc<Policy>>,
        h2: bool,
        grpc: bool,
        used: &mut Used,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        let dest = match target {
            Target::Balanced(dest) => Some(dest),
            Target::Addr(_) => None,
        };
        let retry = policy.as_ref().and_then(|p| p.retry.as_ref());
        let dst = target.addr();
        let per_try = policy.as_ref().and_then(|p| p.per_try);
        let attempts = async {
            let replay = match (retry, dest) {
                (Some(_), Some(_)) => Replay::take(req),
                _ => Err(req),
            };
            let mut replay = match replay {
                Ok(replay) => replay,
                // Not retryable: one attempt, with the deadline passed on.
                Err(mut req) => {
                    if let Some(d) = &deadline {
                        d.propagate(req.headers_mut(), grpc);
                    }
                    let req = req.map(Body::Stream);
                    let cut = Cut::sooner(deadline, per_try);
                    return self.send(target, req, h2, used, cut).await;
                }
            };
            let (Some(retry), Some(dest)) = (retry, dest) else {
                unreachable!("a replay is taken only with a retry policy");
            };
            let mut tries = 0;
            loop {
                if let Some(d) = &deadline {
                    d.propagate(&mut replay.headers, grpc);
                }
                let Some(req) = replay.attempt() else {
                    unreachable!("checked replayable before the retry");
                };
                let cut = Cut::sooner(deadline, per_try);
                let result = match self.send(target, req, h2, used, cut).await {
                    Err(ProxyError::Upstream(_, e)) if replay.client_failed() => {
                        return Err(ProxyError::ClientBody(e));
                    }
                    result => result,
                };
                let outcome = match &result {
                    Ok(rsp) => Outcome::Status(rsp.status(), grpc_status(rsp.headers())),
                    Err(ProxyError::TryTimeout(..)) => Outcome::TryTimeout,
                    Err(e) if e.is_connect() || matches!(e, ProxyError::Upstream(..)) => {
                        Outcome::ConnectFailure
                    }
                    Err(_) => return result,
                };
                if tries >= retry.limit || !retry.retryable(outcome, &replay.method) {
                    return result;
                }
                if !replay.replayable() {
                    // Its body grew past what is kept, or the client failed it.
                    dest.retries_unreplayable.inc();
                    return result;
                }
                if !dest.budget.withdraw(retry.ratio, retry.min_per_second) {
                    dest.retries_skipped.inc();
                    return result;
                }
                dest.retries.inc();
                tries += 1;
                if let Some(span) = &mut used.span {
                    span.retried(tries, outcome.to_string());
                }
                debug!(?outcome, tries, "retrying");
                if let Some(backoff) = policy.as_ref().and_then(|p| p.backoff) {
                    tokio::time::sleep(backoff).await;
                }
            }
        };
        let result = match deadline {
            None => attempts.await,
            Some(d) => tokio::time::timeout_at(d.at, attempts)
                .await
                .unwrap_or(Err(ProxyError::Timeout(dst, d.timeout))),
        };
        if !h2
            && matches!(
                result,
                Err(ProxyError::Timeout(..) | ProxyError::TryTimeout(..))
            )
        {
            // The abandoned request may still be using the connection.
            self.session.discard();
        }
        result
    }
}

/// The policy of a request: its route rule's, or its destination's.
enum Pol<'a> {
    Route(&'a Arc<Policy>),
    Dest(arc_swap::Guard<Arc<Policy>>),
}

impl Pol<'_> {
    fn into_arc(self) -> Arc<Policy> {
        match self {
            Pol::Route(p) => p.clone(),
            Pol::Dest(g) => arc_swap::Guard::into_inner(g),
        }
    }
}

impl std::ops::Deref for Pol<'_> {
    type Target = Policy;

    fn deref(&self) -> &Policy {
        match self {
            Pol::Route(p) => p,
            Pol::Dest(g) => g,
        }
    }
}

/// When an attempt is cut short: at its per-try timeout or the request's
/// deadline, whichever comes first. The attempt is cut where it runs, so
/// that the endpoint it was waiting for is told of the failure.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cut {
    at: Instant,
    timeout: Duration,
    per_try: bool,
}

impl Cut {
    fn sooner(deadline: Option<Deadline>, per_try: Option<Duration>) -> Option<Self> {
        let try_at = per_try.and_then(|t| Some((Instant::now().checked_add(t)?, t)));
        match (deadline, try_at) {
            (Some(d), Some((at, t))) if at < d.at => Some(Cut {
                at,
                timeout: t,
                per_try: true,
            }),
            (Some(d), _) => Some(Cut {
                at: d.at,
                timeout: d.timeout,
                per_try: false,
            }),
            (None, Some((at, t))) => Some(Cut {
                at,
                timeout: t,
                per_try: true,
            }),
            (None, None) => None,
        }
    }

    /// Runs `step` of an attempt to `dst` until the cut.
    pub(super) fn within<F>(cut: Option<Cut>, dst: SocketAddr, step: F) -> Within<F> {
        Within {
            step,
            sleep: cut.map(|c| tokio::time::sleep_until(c.at)),
            cut,
            dst,
        }
    }

    fn error(&self, dst: SocketAddr) -> ProxyError {
        if self.per_try {
            ProxyError::TryTimeout(dst, self.timeout)
        } else {
            ProxyError::Timeout(dst, self.timeout)
        }
    }
}

pin_project_lite::pin_project! {
    /// A step of an attempt, cut short at its [`Cut`]. A plain future
    /// rather than an `async` block around `timeout_at`, which would hold
    /// the step twice (once as the block's capture, once in the timeout).
    pub(super) struct Within<F> {
        #[pin]
        step: F,
        #[pin]
        sleep: Option<Sleep>,
        cut: Option<Cut>,
        dst: SocketAddr,
    }
}

impl<F, T> Future for Within<F>
where
    F: Future<Output = Result<T, ProxyError>>,
{
    type Output = Result<T, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.step.poll(cx) {
            return Poll::Ready(result);
        }
        if let (Some(sleep), Some(cut)) = (this.sleep.as_pin_mut(), this.cut) {
            if sleep.poll(cx).is_ready() {
                return Poll::Ready(Err(cut.error(*this.dst)));
            }
        }
        Poll::Pending
    }
}

/// The gRPC status in a response's headers (trailers-only responses).
fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}
