//! RequestMirror: a copy of a share of a rule's requests sent to another
//! backend, its response read and dropped, off the request's path (a task
//! of its own, so the client never waits for the mirror).
//!
//! Only requests without a body are copied (a body streams once, to the
//! real backend; buffering it for a copy would cost every mirrored
//! request its size in memory). At most [`MAX_IN_FLIGHT`] copies per
//! mirror are in flight: beyond that, copies are skipped, so a slow mirror
//! backend never grows the proxy's memory. Copies are counted in the route
//! metrics under the mirror's backend label.

use http::Request;
use http_body_util::{BodyExt, Full};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::debug;

use super::table::RouteMetrics;
use crate::balance::{connect, random};
use crate::client::{Body, Client};
use crate::discovery::{Dest, Resolution};
use crate::errors::ProxyError;

/// Copies in flight per mirror, at most.
pub const MAX_IN_FLIGHT: usize = 64;
/// A mirror's response body is read up to this much (so that its
/// connection can be kept); a longer one closes the connection instead.
const MAX_DRAIN: usize = 64 * 1024;

/// One rule's mirror.
#[derive(Debug)]
pub struct Mirror {
    pub(super) target: Arc<Dest>,
    pub(super) numerator: u32,
    pub(super) denominator: u32,
    pub(super) in_flight: Arc<AtomicUsize>,
    pub(super) metrics: RouteMetrics,
}

impl Mirror {
    /// Sends a copy of `req` (its head; it has no body) if it falls in
    /// the mirrored share and the mirror has room; a mirror not resolved
    /// yet is waited for at most `resolve`.
    pub fn copy<B: hyper::body::Body>(
        &self,
        req: &Request<B>,
        client: &Arc<Client>,
        resolve: Duration,
    ) {
        if self.denominator == 0 || random(self.denominator as usize) as u32 >= self.numerator {
            return;
        }
        if !req.body().is_end_stream() {
            debug!("request with a body: not mirrored");
            return;
        }
        if self.in_flight.fetch_add(1, Relaxed) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Relaxed);
            debug!("mirror busy: copy skipped");
            return;
        }
        let mut copy = Request::new(Body::Whole(Full::default()));
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.headers_mut() = req.headers().clone();
        let (target, in_flight, metrics) = (
            self.target.clone(),
            self.in_flight.clone(),
            self.metrics.clone(),
        );
        let client = client.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            if target.resolution() == Resolution::Pending {
                target.resolved(resolve).await;
            }
            match send(&target, &client, copy).await {
                Ok(status) => metrics.done(status, start.elapsed().as_micros() as u64),
                Err(error) => {
                    debug!(%error, "mirrored copy failed");
                    metrics.done(error.status(), start.elapsed().as_micros() as u64);
                }
            }
            in_flight.fetch_sub(1, Relaxed);
        });
    }
}

/// Sends `req` over HTTP/1 to an endpoint of `dest`; its status.
async fn send(
    dest: &Dest,
    client: &Client,
    req: Request<Body>,
) -> Result<http::StatusCode, ProxyError> {
    let timeout = client.idle_timeout;
    let (picked, mut sender) = connect::connect(&dest.balancer, dest.addr, |ep| async move {
        match ep.conns.take_idle(timeout) {
            Some(sender) => Ok(sender),
            None => client.h1_connect(&ep.remote(), false).await,
        }
    })
    .await?;
    let addr = picked.addr();
    let conns = picked.endpoint.conns.clone();
    let result = sender.send_request(req).await;
    let rsp = match result {
        Ok(rsp) => rsp,
        Err(e) => {
            dest.balancer.finish(picked, false);
            return Err(ProxyError::Upstream(addr, e));
        }
    };
    let status = rsp.status();
    dest.balancer.finish(picked, true);
    let mut body = rsp.into_body();
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => read += f.data_ref().map_or(0, |d| d.len()),
            Err(_) => return Ok(status),
        }
        if read > MAX_DRAIN {
            return Ok(status);
        }
    }
    // Read whole: the connection can serve the next request.
    conns.release(sender, client.max_idle, timeout);
    Ok(status)
}
