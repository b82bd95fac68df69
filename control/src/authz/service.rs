//! `weft.policy.v1.Policy/WatchInbound`: one stream per pod port, the
//! port's current policy first, then each new one.
//!
//! The pod's policy is computed by the model task once per change and
//! shared ([`super::PolicyHub`]); a stream projects it onto its port and
//! sends only what changed for that port. A port is watched by one proxy
//! (its pod's), so the message is encoded by tonic once per stream, which
//! is once per change.

use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use weft_proto::policy::v1 as pb;
use weft_proto::policy::v1::policy_server::Policy;

use super::hub::{PodWatch, PolicyHub};
use crate::ready::Readiness;

#[derive(Debug, Clone)]
pub struct PolicyService {
    hub: Arc<PolicyHub>,
    /// Until the sources synced, watches are refused with UNAVAILABLE.
    ready: Readiness,
    /// Ends every stream (shutdown).
    stop: CancellationToken,
}

impl PolicyService {
    pub fn new(hub: Arc<PolicyHub>, ready: Readiness, stop: CancellationToken) -> Self {
        Self { hub, ready, stop }
    }
}

type Policies = Pin<Box<dyn Stream<Item = Result<pb::InboundPolicy, Status>> + Send>>;

/// One stream's state.
struct Watching {
    watch: PodWatch,
    port: u16,
    last: Option<pb::InboundPolicy>,
    stop: CancellationToken,
    ended: bool,
}

#[tonic::async_trait]
impl Policy for PolicyService {
    type WatchInboundStream = Policies;

    async fn watch_inbound(
        &self,
        request: Request<pb::InboundRequest>,
    ) -> Result<Response<Policies>, Status> {
        let req = request.into_inner();
        if req.pod_namespace.is_empty() || req.pod_name.is_empty() {
            return Err(Status::invalid_argument(
                "pod_namespace and pod_name must be set",
            ));
        }
        let port = u16::try_from(req.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                Status::invalid_argument(format!("port {} is not in 1..=65535", req.port))
            })?;
        if let Some(why) = self.ready.discovery() {
            // A policy from part of the cluster could allow what a
            // TrafficTarget not read yet denies.
            return Err(Status::unavailable(why));
        }
        let watch = self
            .hub
            .subscribe((req.pod_namespace, req.pod_name))
            .ok_or_else(|| {
                Status::resource_exhausted(format!(
                    "{} pods that weft-control does not know are watched already",
                    super::hub::MAX_UNKNOWN
                ))
            })?;
        let state = Watching {
            watch,
            port,
            last: None,
            stop: self.stop.clone(),
            ended: false,
        };
        Ok(Response::new(Box::pin(futures_util::stream::unfold(
            state, next,
        ))))
    }
}

/// The port's next policy: when it differs from the last one sent.
async fn next(mut st: Watching) -> Option<(Result<pb::InboundPolicy, Status>, Watching)> {
    if st.ended {
        return None;
    }
    loop {
        let policy = st.watch.rx.borrow_and_update().port(st.port);
        if st.last.as_ref() != Some(&policy) {
            st.last = Some(policy.clone());
            return Some((Ok(policy), st));
        }
        tokio::select! {
            changed = st.watch.rx.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            _ = st.stop.cancelled() => {
                st.ended = true;
                // The proxy keeps the last policy and reconnects.
                return Some((Err(Status::unavailable("weft-control is shutting down")), st));
            }
        }
    }
}
