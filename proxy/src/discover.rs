//! Discovery in the proxy: one `weft.discovery.v1.Discovery/Watch` stream
//! per outbound destination (ip:port) in use, opened on first use, kept
//! while the destination is used and dropped after it has been idle for a
//! while.
//!
//! Each stream feeds the destination's [`Balancer`]. When the control plane
//! is away, a destination keeps its last endpoints (and says so in
//! `weft_discovery_stale`) while its stream reconnects with jittered
//! exponential backoff. A destination the control plane does not know (an
//! IP outside every Service), or one that has had no answer within the
//! resolve timeout, is forwarded to its original address: the mesh then
//! behaves as plain Kubernetes would.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tonic::transport::{Channel, Endpoint as GrpcEndpoint};
use tracing::{debug, info, warn};
use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::discovery_client::DiscoveryClient;
use weft_proto::discovery::v1::update::Kind as U;

use crate::balance::ewma::now_ns;
use crate::balance::{BalanceConfig, Balancer, EndpointInfo, Locality, Prefer};
use crate::http::retry::{Budget, Policy};
use arc_swap::ArcSwap;

/// How discovery is reached and how long its answers are waited for.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// The control plane's gRPC address (`http://host:8086` or `host:8086`).
    pub control: String,
    /// How long a connection to a destination never resolved waits for the
    /// first answer before it is forwarded to its original address.
    pub resolve_timeout: Duration,
    /// A destination unused for this long has its stream closed.
    pub idle_timeout: Duration,
    /// Who is asking: sent with every watch.
    pub context: pb::ProxyContext,
}

/// What discovery said about a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// No answer yet.
    Pending,
    /// Not a Service the control plane knows: forwarded as is.
    NotAService,
    /// A Service port; `opaque` when its traffic skips protocol detection.
    Service { opaque: bool },
}

/// Where a connection goes.
#[derive(Debug)]
pub enum Route {
    /// To its original destination.
    Passthrough,
    /// To an endpoint of a Service, chosen by the destination's balancer.
    Balanced(Arc<Dest>),
}

/// One destination being watched.
#[derive(Debug)]
pub struct Dest {
    pub addr: SocketAddr,
    pub balancer: Balancer,
    /// Retries and timeouts, from the Service's profile.
    pub policy: ArcSwap<Policy>,
    pub budget: Budget,
    /// Retries sent, and retries not sent because the budget was spent.
    pub retries: Counter,
    pub retries_skipped: Counter,
    state: watch::Sender<Resolution>,
    created: Instant,
    /// Last use ([`now_ns`]).
    used: AtomicU64,
    /// Whether its stream is up (false while reconnecting).
    connected: AtomicBool,
    task: Mutex<Option<AbortHandle>>,
}

impl Dest {
    pub fn resolution(&self) -> Resolution {
        *self.state.borrow()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DstLabel {
    dst: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    dst: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    dst: String,
    state: &'static str,
}

/// The discovery client of the proxy.
#[derive(Debug)]
pub struct Resolver {
    client: DiscoveryClient<Channel>,
    config: DiscoveryConfig,
    balance: Arc<BalanceConfig>,
    dests: Mutex<HashMap<SocketAddr, Arc<Dest>>>,
    ejections: Family<DstLabel, Counter>,
    retries: Family<DstLabel, Counter>,
    retries_skipped: Family<DstLabel, Counter>,
    updates: Counter,
    stream_errors: Counter,
    fallbacks: Counter,
}

impl Resolver {
    /// A resolver whose channel connects on first use (so the proxy starts
    /// without the control plane). Must be called within the runtime.
    pub fn new(config: DiscoveryConfig, balance: BalanceConfig) -> Result<Arc<Self>, String> {
        let uri = if config.control.contains("://") {
            config.control.clone()
        } else {
            format!("http://{}", config.control)
        };
        let channel = GrpcEndpoint::from_shared(uri.clone())
            .map_err(|e| format!("control plane address {uri:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let resolver = Arc::new(Self {
            client: DiscoveryClient::new(channel),
            config,
            balance: Arc::new(balance),
            dests: Mutex::default(),
            ejections: Family::default(),
            retries: Family::default(),
            retries_skipped: Family::default(),
            updates: Counter::default(),
            stream_errors: Counter::default(),
            fallbacks: Counter::default(),
        });
        tokio::spawn(sweep(Arc::downgrade(&resolver)));
        Ok(resolver)
    }

    /// Where a connection to `orig` goes: waits (at most the resolve
    /// timeout, counted from the destination's first use) for the first
    /// answer about a destination not seen before.
    pub async fn resolve(self: &Arc<Self>, orig: SocketAddr) -> Route {
        let dest = self.dest(orig);
        dest.used.store(now_ns(), Relaxed);
        let mut rx = dest.state.subscribe();
        if *rx.borrow_and_update() == Resolution::Pending {
            let left = self
                .config
                .resolve_timeout
                .saturating_sub(dest.created.elapsed());
            let _ = tokio::time::timeout(left, rx.wait_for(|r| *r != Resolution::Pending)).await;
        }
        let resolution = *rx.borrow();
        match resolution {
            Resolution::Service { .. } => Route::Balanced(dest),
            Resolution::NotAService => Route::Passthrough,
            Resolution::Pending => {
                self.fallbacks.inc();
                debug!(%orig, "no answer from discovery in time: forwarded to the original destination");
                Route::Passthrough
            }
        }
    }

    fn dest(self: &Arc<Self>, addr: SocketAddr) -> Arc<Dest> {
        let mut dests = self.dests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = dests.get(&addr) {
            return d.clone();
        }
        let label = DstLabel {
            dst: addr.to_string(),
        };
        let ejections = self.ejections.get_or_create(&label).clone();
        let dest = Arc::new(Dest {
            addr,
            balancer: Balancer::new(self.balance.clone(), ejections),
            policy: ArcSwap::from_pointee(Policy::default()),
            budget: Budget::default(),
            retries: self.retries.get_or_create(&label).clone(),
            retries_skipped: self.retries_skipped.get_or_create(&label).clone(),
            state: watch::Sender::new(Resolution::Pending),
            created: Instant::now(),
            used: AtomicU64::new(now_ns()),
            connected: AtomicBool::new(false),
            task: Mutex::default(),
        });
        let task = tokio::spawn(follow(self.clone(), dest.clone()));
        *dest.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        dests.insert(addr, dest.clone());
        dest
    }

    /// Registers the counters with `registry` (prefix `weft_discovery`,
    /// `weft_balancer`) and the per-destination gauges as a collector.
    pub fn register(self: &Arc<Self>, registry: &mut prometheus_client::registry::Registry) {
        let d = registry.sub_registry_with_prefix("weft_discovery");
        d.register(
            "updates",
            "Discovery updates received",
            self.updates.clone(),
        );
        d.register(
            "stream_errors",
            "Discovery streams that failed or could not be opened",
            self.stream_errors.clone(),
        );
        d.register(
            "fallbacks",
            "Connections forwarded to their original destination because discovery had not answered in time",
            self.fallbacks.clone(),
        );
        let b = registry.sub_registry_with_prefix("weft_balancer");
        b.register(
            "endpoint_ejections",
            "Endpoints taken out of a balancer after consecutive failures",
            self.ejections.clone(),
        );
        let r = registry.sub_registry_with_prefix("weft_retry");
        r.register("requests", "Retries sent", self.retries.clone());
        r.register(
            "skipped_budget",
            "Retries not sent because the destination's retry budget was spent",
            self.retries_skipped.clone(),
        );
        registry.register_collector(Box::new(Gauges(Arc::downgrade(self))));
    }
}

/// Closes the streams of destinations idle for the idle timeout (and not
/// held by a connection).
async fn sweep(resolver: std::sync::Weak<Resolver>) {
    loop {
        let period = match resolver.upgrade() {
            Some(r) => (r.config.idle_timeout / 2).max(Duration::from_millis(100)),
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(r) = resolver.upgrade() else { return };
        let idle = r.config.idle_timeout.as_nanos() as u64;
        let now = now_ns();
        let mut dests = r.dests.lock().unwrap_or_else(|e| e.into_inner());
        dests.retain(|addr, d| {
            // The map and the stream's task hold it; anything more is a connection.
            let held = Arc::strong_count(d) > 2;
            let keep = held || now.saturating_sub(d.used.load(Relaxed)) < idle;
            if !keep {
                debug!(%addr, "destination idle: watch closed");
                if let Some(task) = d.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    task.abort();
                }
            }
            keep
        });
    }
}

/// The watch of one destination, reopened with backoff until aborted.
async fn follow(resolver: Arc<Resolver>, dest: Arc<Dest>) {
    let mut view = View::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        let request = pb::WatchRequest {
            destination: Some(pb::watch_request::Destination::Addr(dest.addr.into())),
            context: Some(resolver.config.context.clone()),
        };
        match resolver.client.clone().watch(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(update)) => {
                            if !dest.connected.swap(true, Relaxed) {
                                debug!(dst = %dest.addr, "discovery stream up");
                            }
                            backoff = Duration::from_millis(100);
                            resolver.updates.inc();
                            if let Some(kind) = update.kind {
                                view.apply(kind, &dest);
                            }
                        }
                        Ok(None) => {
                            debug!(dst = %dest.addr, "the control plane ended the stream");
                            break;
                        }
                        Err(status) => {
                            info!(dst = %dest.addr, error = %status.message(), "discovery stream failed; keeping the last endpoints");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                debug!(dst = %dest.addr, error = %status.message(), "cannot open a discovery stream")
            }
        }
        resolver.stream_errors.inc();
        dest.connected.store(false, Relaxed);
        // Full jitter over the backoff's upper half.
        let jitter = 0.5 + (now_ns() % 1000) as f64 / 2000.0;
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// What a stream has said so far about its destination.
#[derive(Debug, Default)]
struct View {
    endpoints: HashMap<SocketAddr, EndpointInfo>,
    locality: Locality,
    opaque: bool,
}

impl View {
    fn apply(&mut self, kind: U, dest: &Dest) {
        let resolution = match kind {
            U::Snapshot(s) => {
                if let Some(p) = &s.profile {
                    self.profile(p, dest);
                }
                self.endpoints = s.endpoints.iter().filter_map(endpoint).collect();
                Resolution::Service {
                    opaque: self.opaque,
                }
            }
            U::Add(a) => {
                self.endpoints
                    .extend(a.endpoints.iter().filter_map(endpoint));
                Resolution::Service {
                    opaque: self.opaque,
                }
            }
            U::Remove(r) => {
                for addr in &r.addrs {
                    if let Ok(addr) = SocketAddr::try_from(addr) {
                        self.endpoints.remove(&addr);
                    }
                }
                Resolution::Service {
                    opaque: self.opaque,
                }
            }
            U::NoEndpoints(_) => {
                self.endpoints.clear();
                Resolution::Service {
                    opaque: self.opaque,
                }
            }
            U::DoesNotExist(_) => {
                self.endpoints.clear();
                Resolution::NotAService
            }
            U::Profile(p) => {
                self.profile(&p, dest);
                Resolution::Service {
                    opaque: self.opaque,
                }
            }
        };
        let list: Vec<EndpointInfo> = self.endpoints.values().cloned().collect();
        dest.balancer.update(&list, self.locality);
        dest.state.send_if_modified(|r| {
            let changed = *r != resolution;
            *r = resolution;
            changed
        });
    }

    fn profile(&mut self, p: &pb::Profile, dest: &Dest) {
        let policy = Policy::from_profile(p);
        if **dest.policy.load() != policy {
            dest.policy.store(Arc::new(policy));
        }
        self.opaque = p.protocol() == pb::Protocol::Opaque;
        self.locality = Locality {
            node_local: p.internal_traffic_policy() == pb::InternalTrafficPolicy::Local,
            prefer: match p.traffic_distribution() {
                pb::TrafficDistribution::PreferClose | pb::TrafficDistribution::PreferSameZone => {
                    Prefer::SameZone
                }
                pb::TrafficDistribution::PreferSameNode => Prefer::SameNode,
                pb::TrafficDistribution::Unspecified => Prefer::Any,
            },
        };
    }
}

/// An endpoint message as the balancer wants it; one without a valid
/// address is skipped (and logged).
fn endpoint(e: &pb::Endpoint) -> Option<(SocketAddr, EndpointInfo)> {
    let addr = match e.addr.as_ref().map(SocketAddr::try_from) {
        Some(Ok(a)) => a,
        Some(Err(error)) => {
            warn!(%error, "discovery sent an endpoint with a bad address: skipped");
            return None;
        }
        None => {
            warn!("discovery sent an endpoint without an address: skipped");
            return None;
        }
    };
    let conditions = e.conditions.unwrap_or_default();
    let hints = e.hints.clone().unwrap_or_default();
    Some((
        addr,
        EndpointInfo {
            addr: Some(addr),
            weight: e.weight,
            ready: conditions.ready,
            serving: conditions.serving,
            terminating: conditions.terminating,
            zone: e.zone.clone(),
            node: e.node_name.clone(),
            for_zones: hints.for_zones,
            for_nodes: hints.for_nodes,
            // Only a meshed endpoint's proxy can prove an identity.
            identity: e
                .tls_identity
                .as_ref()
                .filter(|_| e.meshed)
                .map(|t| Arc::from(t.spiffe_id.as_str())),
            meshed: e.meshed,
        },
    ))
}

/// Per-destination gauges, read at scrape time.
#[derive(Debug)]
struct Gauges(std::sync::Weak<Resolver>);

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(resolver) = self.0.upgrade() else {
            return Ok(());
        };
        let dests: Vec<Arc<Dest>> = resolver
            .dests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let decay = resolver.balance.decay;

        let total = ConstGauge::new(dests.len() as i64);
        total.encode(encoder.encode_descriptor(
            "weft_discovery_destinations",
            "Destinations with a discovery stream",
            None,
            MetricType::Gauge,
        )?)?;

        let mut family = encoder.encode_descriptor(
            "weft_discovery_stale",
            "1 while a resolved destination's stream is down (its last endpoints are used)",
            None,
            MetricType::Gauge,
        )?;
        for d in &dests {
            let stale = d.resolution() != Resolution::Pending && !d.connected.load(Relaxed);
            let labels = DstLabel {
                dst: d.addr.to_string(),
            };
            ConstGauge::new(i64::from(stale)).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "weft_balancer_endpoints",
            "Endpoints of a destination: ready (balanced over), ejected (failing), other (known, not used)",
            None,
            MetricType::Gauge,
        )?;
        for d in dests
            .iter()
            .filter(|d| matches!(d.resolution(), Resolution::Service { .. }))
        {
            let set = d.balancer.set();
            let ejected = set.chosen.iter().filter(|e| !e.eligible()).count();
            let counts = [
                ("ready", set.chosen.len() - ejected),
                ("ejected", ejected),
                ("other", set.all.len() - set.chosen.len()),
            ];
            for (state, n) in counts {
                let labels = StateLabels {
                    dst: d.addr.to_string(),
                    state,
                };
                ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "weft_balancer_endpoint_latency_ewma_ms",
            "Peak-EWMA latency estimate of each endpoint, in milliseconds",
            None,
            MetricType::Gauge,
        )?;
        for d in &dests {
            for e in &d.balancer.set().all {
                let labels = EndpointLabels {
                    dst: d.addr.to_string(),
                    endpoint: e.addr.to_string(),
                };
                let ms = e.ewma(decay).as_secs_f64() * 1e3;
                ConstGauge::new(ms).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
