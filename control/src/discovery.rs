//! The `weft.discovery.v1.Discovery` gRPC service: one stream per watched
//! destination, the current state first, then changes as they happen.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::debug;
use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::update::Kind as U;

use crate::hub::{DestState, Hub};
use crate::metrics::Metrics;
use crate::model::{parse_host, DestKey, DestView};
use crate::ready::Readiness;

/// What a watch asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A ClusterIP and port: which Service it is may change.
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
        let key = match target {
            Target::Name(key) => Some(key.clone()),
            Target::Addr(addr) => hub.by_addr(*addr),
        };
        let Some(key) = key else {
            if !said_missing && !out.send(U::DoesNotExist(pb::DoesNotExist {})).await {
                return;
            }
            said_missing = true;
            tokio::select! {
                r = generation.changed() => if r.is_err() { return },
                _ = out.tx.closed() => return,
            }
            continue;
        };
        let rx = hub.subscribe(&key);
        if !follow(rx, target, out, &mut said_missing).await {
            return;
        }
    }
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
                    // The address may belong to another Service next.
                    return true;
                }
                last = None;
            }
            (Some(view), None) => {
                *said_missing = false;
                let snapshot = pb::Snapshot {
                    profile: Some(view.profile.clone()),
                    endpoints: view.endpoints.values().cloned().collect(),
                };
                if !out.send(U::Snapshot(snapshot)).await {
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
                        computed = crate::hub::Delta::between(old, &view);
                        &computed
                    }
                };
                if delta.profile_changed && !out.send(U::Profile(view.profile.clone())).await {
                    return false;
                }
                if view.endpoints.is_empty() && !old.endpoints.is_empty() {
                    if !out.send(U::NoEndpoints(pb::NoEndpoints {})).await {
                        return false;
                    }
                } else {
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
