//! The inbound policy of each pod port in use: one
//! `weft.policy.v1.Policy/WatchInbound` stream per port, opened on the
//! port's first connection and kept for the proxy's lifetime, reopened
//! with jittered backoff while the control plane is away (the last policy
//! stays in force meanwhile).
//!
//! Until a port's first policy arrives, its connections wait for it (at
//! most `--inbound-policy-timeout`, counted from the port's first use);
//! after that they get the configured default, which fails closed (denies
//! everything) unless it is `all-unauthenticated`. Without a control plane
//! the configured default is every port's policy.
//!
//! The policy in force is read once per request from an `ArcSwap`: a
//! change reaches the requests of connections already open.

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, info};
use weft_proto::policy::v1 as pb;
use weft_proto::policy::v1::policy_client::PolicyClient;

use super::authorize::{PortPolicy, Scope};
use super::decisions::{AuthzMetrics, DenyLog};
use crate::config::InboundDefault;
use crate::time::jittered;

/// The most ports watched; a connection to one more port gets the
/// fail-closed stand-in (each port is a stream to the control plane).
pub const MAX_PORTS: usize = 256;

#[derive(Clone, Debug)]
pub struct PolicyConfig {
    pub default: InboundDefault,
    /// How long a port's first connections wait for its first policy.
    pub timeout: Duration,
    pub scope: Scope,
    pub pod_name: String,
}

/// Every watched port's policy.
#[derive(Debug)]
pub struct Policies {
    client: Option<PolicyClient<Channel>>,
    config: PolicyConfig,
    ports: Mutex<HashMap<u16, Arc<PortWatch>>>,
    /// Where there is no policy and never will be one (no control plane).
    fixed: Arc<PortWatch>,
    /// For ports beyond [`MAX_PORTS`].
    overflow: Arc<PortWatch>,
    pub metrics: AuthzMetrics,
    updates: Counter,
    stream_errors: Counter,
    stop: CancellationToken,
}

/// One port's policy in force.
#[derive(Debug)]
pub struct PortWatch {
    pub port: u16,
    policy: ArcSwap<PortPolicy>,
    /// Whether a policy from the control plane has arrived.
    arrived: watch::Sender<bool>,
    created: Instant,
    pub log: DenyLog,
}

impl PortWatch {
    fn new(port: u16, policy: PortPolicy) -> Arc<Self> {
        Arc::new(Self {
            port,
            policy: ArcSwap::from_pointee(policy),
            arrived: watch::Sender::new(false),
            created: Instant::now(),
            log: DenyLog::default(),
        })
    }

    /// The policy in force now (no allocation, no lock).
    pub fn current(&self) -> arc_swap::Guard<Arc<PortPolicy>> {
        self.policy.load()
    }
}

impl Policies {
    /// `control`: the control plane's channel (connected lazily), if any.
    /// Stream tasks end with `stop`.
    pub fn new(
        control: Option<Channel>,
        config: PolicyConfig,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let scope = &config.scope;
        // Neither ever gets a policy: nothing to wait for.
        let fixed = PortWatch::new(0, PortPolicy::fallback(config.default, scope, false));
        fixed.arrived.send_replace(true);
        let overflow = PortWatch::new(0, PortPolicy::fallback(InboundDefault::Deny, scope, true));
        overflow.arrived.send_replace(true);
        Arc::new(Self {
            client: control.map(PolicyClient::new),
            fixed,
            overflow,
            config,
            ports: Mutex::default(),
            metrics: AuthzMetrics::default(),
            updates: Counter::default(),
            stream_errors: Counter::default(),
            stop,
        })
    }

    pub fn register(&self, registry: &mut Registry) {
        self.metrics.register(registry);
        let weft = registry.sub_registry_with_prefix("weft");
        weft.register(
            "inbound_policy_updates",
            "Inbound policies received from the control plane",
            self.updates.clone(),
        );
        weft.register(
            "inbound_policy_stream_errors",
            "Inbound policy streams that failed or could not be opened (each is reopened with backoff)",
            self.stream_errors.clone(),
        );
    }

    /// The policy of `port`, its stream opened on its first use. The
    /// first policy may not have arrived yet: see [`Policies::arrived`].
    pub fn port(self: &Arc<Self>, port: u16) -> Arc<PortWatch> {
        let Some(client) = &self.client else {
            return self.fixed.clone();
        };
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        match ports.get(&port) {
            Some(w) => w.clone(),
            None if ports.len() >= MAX_PORTS => self.overflow.clone(),
            None => {
                let fallback = PortPolicy::fallback(self.config.default, &self.config.scope, true);
                let w = PortWatch::new(port, fallback);
                ports.insert(port, w.clone());
                tokio::spawn(follow(self.clone(), client.clone(), w.clone()));
                w
            }
        }
    }

    /// Waits (at most the timeout, counted from the port's first use) for
    /// the port's first policy. Called once a connection is ready to send
    /// its first request (after a TLS handshake, which must not wait).
    pub async fn arrived(&self, watch: &PortWatch) {
        let mut arrived = watch.arrived.subscribe();
        if !*arrived.borrow_and_update() {
            let left = self.config.timeout.saturating_sub(watch.created.elapsed());
            let _ = tokio::time::timeout(left, arrived.wait_for(|a| *a)).await;
        }
    }
}

/// The stream of one port, reopened with backoff until the proxy stops.
async fn follow(policies: Arc<Policies>, mut client: PolicyClient<Channel>, watch: Arc<PortWatch>) {
    let request = pb::InboundRequest {
        pod_namespace: policies.config.scope.pod_namespace.clone(),
        pod_name: policies.config.pod_name.clone(),
        port: watch.port.into(),
    };
    let port = watch.port;
    let mut backoff = Duration::from_millis(100);
    loop {
        let stream = async {
            let mut stream = match client.watch_inbound(request.clone()).await {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    debug!(port, error = %status.message(), "cannot open an inbound policy stream");
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(p)) => {
                        backoff = Duration::from_millis(100);
                        let compiled = PortPolicy::compile(&p, &policies.config.scope);
                        watch.policy.store(Arc::new(compiled));
                        if !watch.arrived.send_replace(true) {
                            debug!(port, source = %p.default_policy_source, "inbound policy in force");
                        }
                        // Counted once in force: tests wait on it.
                        policies.updates.inc();
                    }
                    Ok(None) => return debug!(port, "the control plane ended the policy stream"),
                    Err(status) => {
                        return info!(port, error = %status.message(), "inbound policy stream failed; keeping the last policy")
                    }
                }
            }
        };
        tokio::select! {
            _ = stream => {}
            _ = policies.stop.cancelled() => return,
        }
        policies.stream_errors.inc();
        tokio::select! {
            _ = tokio::time::sleep(jittered(backoff)) => {}
            _ = policies.stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
