//! The `weft.discovery.v1.Discovery` gRPC service: one stream per watched
//! destination, the current state first, then changes as they happen.
//!
//! An address is a Service's ClusterIP:port, else a pod's own IP (any
//! port: that pod as the one endpoint, with its identity when meshed), else
//! unknown (`DoesNotExist`, and looked up again whenever destinations
//! appear). Before the sources synced, nothing is answered: UNAVAILABLE.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::debug;
use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::update::Kind as U;

use crate::hub::Delta;
use crate::hub::{DestState, Hub};
use crate::metrics::Metrics;
use crate::model::{parse_host, DestKey, DestView, PodView};
use crate::ready::Readiness;

/// What a watch asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A ClusterIP and port, or a pod's IP and port: which Service or pod
    /// it is may change.
    Addr(SocketAddr),
    /// A Service port by name.
    Name(DestKey),
}

#[derive(Debug, Clone)]
pub struct DiscoveryServer {
    hub: Arc<Hub>,
    metrics: Metrics,
    cluster_domain: String,
    /// Until the sources synced, watches are refused with UNAVAILABLE.
    ready: Readiness,
    /// Ends every watch (shutdown): a watch never ends by itself, and a
    /// graceful shutdown waits for the streams in flight.
    stop: CancellationToken,
}

impl DiscoveryServer {
    pub fn new(
        hub: Arc<Hub>,
        metrics: Metrics,
        cluster_domain: &str,
        ready: Readiness,
        stop: CancellationToken,
    ) -> Self {
        Self {
            hub,
            metrics,
            cluster_domain: cluster_domain.to_owned(),
            ready,
            stop,
        }
    }

    /// The watch's target, or why the request is not one.
    pub fn target(&self, req: &pb::WatchRequest) -> Result<Target, Status> {
        let default_ns = req
            .context
            .as_ref()
            .map(|c| c.pod_namespace.as_str())
            .filter(|ns| !ns.is_empty())
            .unwrap_or("default");
        match &req.destination {
            Some(pb::watch_request::Destination::Addr(addr)) => SocketAddr::try_from(addr)
                .map(Target::Addr)
                .map_err(|e| Status::invalid_argument(format!("destination address: {e}"))),
            Some(pb::watch_request::Destination::Authority(authority)) => {
                let (host, port) = authority.rsplit_once(':').ok_or_else(|| {
                    Status::invalid_argument(format!("authority '{authority}' has no port"))
                })?;
                let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                    Status::invalid_argument(format!("authority '{authority}': bad port"))
                })?;
                let service = parse_host(host, default_ns, &self.cluster_domain).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "authority '{authority}' is not a Service name (svc, svc.ns, svc.ns.svc[.{}])",
                        self.cluster_domain
                    ))
                })?;
                Ok(Target::Name(DestKey { service, port }))
            }
            None => Err(Status::invalid_argument("no destination in the request")),
        }
    }
}

#[tonic::async_trait]
impl pb::discovery_server::Discovery for DiscoveryServer {
    type WatchStream = ReceiverStream<Result<pb::Update, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let target = self.target(request.get_ref())?;
        if let Some(why) = self.ready.discovery() {
            // The model holds part of the cluster: an answer from it could
            // say DoesNotExist for a Service that exists (discovery.proto).
            return Err(Status::unavailable(why));
        }
        let (tx, rx) = mpsc::channel(8);
        let hub = self.hub.clone();
        let metrics = self.metrics.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            metrics.watchers.inc();
            let mut out = Sender {
                tx,
                metrics: metrics.clone(),
            };
            let stopped = tokio::select! {
                _ = serve_watch(&hub, &target, &mut out) => false,
                _ = stop.cancelled() => true,
            };
            if stopped {
                // The proxy keeps its endpoints and reconnects (elsewhere).
                let _ = out
                    .tx
                    .try_send(Err(Status::unavailable("weft-control is shutting down")));
            }
            metrics.watchers.dec();
            debug!(?target, "watch ended");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Sender {
    tx: mpsc::Sender<Result<pb::Update, Status>>,
    metrics: Metrics,
}

impl Sender {
    /// Sends one update; `false` once the client has gone.
    async fn send(&mut self, kind: U) -> bool {
        self.metrics.update_sent(&kind);
        self.tx
            .send(Ok(pb::Update { kind: Some(kind) }))
            .await
            .is_ok()
    }
}

/// Runs one watch until the client goes away.
async fn serve_watch(hub: &Hub, target: &Target, out: &mut Sender) {
    let mut said_missing = false;
    loop {
        let mut generation = hub.generation();
        let found = match target {
            Target::Name(key) => Some(Found::Service(key.clone())),
            Target::Addr(addr) => hub
                .by_addr(*addr)
                .map(Found::Service)
                .or_else(|| hub.pod(addr.ip()).map(Found::Pod)),
        };
        let again = match found {
            Some(Found::Service(key)) => {
                follow(hub.subscribe(&key), target, out, &mut said_missing).await
            }
            Some(Found::Pod(rx)) => {
                let Target::Addr(addr) = target else {
                    unreachable!("pods are found by address")
                };
                follow_pod(rx, *addr, out, &mut said_missing).await
            }
            None => {
                if !said_missing && !out.send(U::DoesNotExist(pb::DoesNotExist {})).await {
                    return;
                }
                said_missing = true;
                tokio::select! {
                    r = generation.changed() => r.is_ok(),
                    _ = out.tx.closed() => false,
                }
            }
        };
        if !again {
            return;
        }
    }
}

/// What an address or name resolved to.
enum Found {
    Service(DestKey),
    Pod(watch::Receiver<Option<Arc<PodView>>>),
}

/// Streams one destination's states; returns `true` when the target should
/// be resolved again (it stopped existing), `false` when the client is gone.
async fn follow(
    mut rx: watch::Receiver<DestState>,
    target: &Target,
    out: &mut Sender,
    said_missing: &mut bool,
) -> bool {
    let mut last: Option<(u64, Arc<DestView>)> = None;
    loop {
        let state = rx.borrow_and_update().clone();
        match (state.view, &last) {
            (None, _) => {
                if !*said_missing && !out.send(U::DoesNotExist(pb::DoesNotExist {})).await {
                    return false;
                }
                *said_missing = true;
                if matches!(target, Target::Addr(_)) {
                    // The address may belong to another Service (or a pod) next.
                    return true;
                }
                last = None;
            }
            (Some(view), None) => {
                *said_missing = false;
                if !send_snapshot(out, &view).await {
                    return false;
                }
                last = Some((state.version, view));
            }
            (Some(view), Some((version, old))) => {
                // Kept up: the delta computed once by the hub. Fell behind:
                // diff the latest state against what this client has.
                let computed;
                let delta = match &state.delta {
                    Some(d) if state.version == version + 1 => d.as_ref(),
                    _ => {
                        computed = Delta::between(old, &view);
                        &computed
                    }
                };
                if !send_changes(out, old, &view, delta).await {
                    return false;
                }
                last = Some((state.version, view));
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return true },
            _ = out.tx.closed() => return false,
        }
    }
}

/// Streams a pod as the destination `addr` (its IP, the watched port);
/// returns `true` when the address should be resolved again (the pod
/// went), `false` when the client is gone.
async fn follow_pod(
    mut rx: watch::Receiver<Option<Arc<PodView>>>,
    addr: SocketAddr,
    out: &mut Sender,
    said_missing: &mut bool,
) -> bool {
    let mut last: Option<DestView> = None;
    loop {
        let pod = rx.borrow_and_update().clone();
        let Some(pod) = pod else {
            if !*said_missing && !out.send(U::DoesNotExist(pb::DoesNotExist {})).await {
                return false;
            }
            *said_missing = true;
            return true;
        };
        let view = pod.at(addr);
        let sent = match &last {
            None => send_snapshot(out, &view).await,
            Some(old) => send_changes(out, old, &view, &Delta::between(old, &view)).await,
        };
        if !sent {
            return false;
        }
        *said_missing = false;
        last = Some(view);
        tokio::select! {
            r = rx.changed() => if r.is_err() { return true },
            _ = out.tx.closed() => return false,
        }
    }
}

/// Sends the whole state; `false` once the client has gone.
async fn send_snapshot(out: &mut Sender, view: &DestView) -> bool {
    let snapshot = pb::Snapshot {
        profile: Some(view.profile.clone()),
        endpoints: view.endpoints.values().cloned().collect(),
    };
    out.send(U::Snapshot(snapshot)).await
}

/// Sends what `delta` changed from `old` to `new`; `false` once the client
/// has gone.
async fn send_changes(out: &mut Sender, old: &DestView, new: &DestView, delta: &Delta) -> bool {
    if delta.profile_changed && !out.send(U::Profile(new.profile.clone())).await {
        return false;
    }
    if new.endpoints.is_empty() && !old.endpoints.is_empty() {
        return out.send(U::NoEndpoints(pb::NoEndpoints {})).await;
    }
    if !delta.removed.is_empty() {
        let addrs = delta.removed.iter().map(|a| (*a).into()).collect();
        if !out.send(U::Remove(pb::Remove { addrs })).await {
            return false;
        }
    }
    if !delta.added.is_empty()
        && !out
            .send(U::Add(pb::Add {
                endpoints: delta.added.clone(),
            }))
            .await
    {
        return false;
    }
    true
}
