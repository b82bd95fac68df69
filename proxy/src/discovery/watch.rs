//! The watch stream of each destination, reopened with jittered backoff
//! while the control plane is away, and the sweep that closes the streams
//! of destinations no longer used.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info};
use weft_proto::discovery::v1 as pb;

use super::view::View;
use super::{Dest, Resolver};
use crate::balance::ewma::now_ns;

/// Closes the streams of destinations idle for the idle timeout (and not
/// held by a connection).
pub(super) async fn sweep(resolver: std::sync::Weak<Resolver>) {
    loop {
        let period = match resolver.upgrade() {
            Some(r) => (r.config.idle_timeout / 2).max(Duration::from_millis(100)),
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(r) = resolver.upgrade() else { return };
        let idle = r.config.idle_timeout.as_nanos() as u64;
        let now = now_ns();
        let sweep = |label: String, d: &Arc<Dest>| {
            // The map and the stream's task hold it; anything more is a
            // connection (or, for a backend, a route).
            let held = Arc::strong_count(d) > 2;
            let keep = held || now.saturating_sub(d.used.load(Relaxed)) < idle;
            if !keep {
                debug!(dst = label, "destination idle: watch closed");
                r.forget(label);
                if let Some(task) = d.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    task.abort();
                }
            }
            keep
        };
        // Original destinations first: a swept one drops its routes, and
        // with them its hold on its backends.
        let gone: Vec<Arc<Dest>> = {
            let mut dests = r.dests.lock().unwrap_or_else(|e| e.into_inner());
            let mut gone = Vec::new();
            dests.retain(|_, d| {
                let keep = sweep(d.label(), d);
                if !keep {
                    gone.push(d.clone());
                }
                keep
            });
            gone
        };
        for d in gone {
            d.routes.store(None);
        }
        r.backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, d| sweep(d.label(), d));
    }
}

/// Connects to the control plane at start (with backoff, until it is
/// reached once), so that readiness does not wait for the app's first
/// outbound connection.
pub(super) async fn probe(
    resolver: std::sync::Weak<Resolver>,
    endpoint: tonic::transport::Endpoint,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match resolver.upgrade() {
            Some(r) if r.reached.load(Relaxed) => return,
            Some(_) => {}
            None => return,
        }
        match endpoint.connect().await {
            Ok(_) => {
                if let Some(r) = resolver.upgrade() {
                    r.reached.store(true, Relaxed);
                    info!(control = %r.config.control, "control plane reached");
                }
                return;
            }
            Err(error) => {
                debug!(%error, "control plane not reachable yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The watch of one destination, reopened with backoff until aborted.
pub(super) async fn follow(resolver: Arc<Resolver>, dest: Arc<Dest>) {
    let mut view = View::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        let destination = match &dest.name {
            Some(name) => pb::watch_request::Destination::Authority(name.to_string()),
            None => pb::watch_request::Destination::Addr(dest.addr.into()),
        };
        let request = pb::WatchRequest {
            destination: Some(destination),
            context: Some(resolver.config.context.clone()),
        };
        match resolver.client.clone().watch(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(update)) => {
                            resolver.reached.store(true, Relaxed);
                            if !dest.connected.swap(true, Relaxed) {
                                debug!(dst = dest.label(), "discovery stream up");
                            }
                            backoff = Duration::from_millis(100);
                            if let Some(kind) = update.kind {
                                view.apply(kind, &dest, &resolver);
                            }
                            // Counted once applied: tests wait on it.
                            resolver.updates.inc();
                        }
                        Ok(None) => {
                            debug!(dst = dest.label(), "the control plane ended the stream");
                            break;
                        }
                        Err(status) => {
                            info!(dst = dest.label(), error = %status.message(), "discovery stream failed; keeping the last endpoints");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                debug!(dst = dest.label(), error = %status.message(), "cannot open a discovery stream")
            }
        }
        resolver.stream_errors.inc();
        dest.connected.store(false, Relaxed);
        tokio::time::sleep(crate::time::jittered(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
