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
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the [`Resolver`] and its destinations |
//! | `watch.rs` | one stream per destination, reopened with backoff; the idle sweep |
//! | `view.rs` | what a stream has said, applied to the destination's balancer |
//! | `policy.rs` | the retry and timeout policy, the retry budget |
//! | `metrics.rs` | discovery and balancer metrics |

pub mod metrics;
pub mod policy;
mod view;
mod watch;

use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch as state;
use tokio::task::AbortHandle;
use tonic::transport::Channel;
use tracing::debug;
use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::discovery_client::DiscoveryClient;

use crate::balance::ewma::now_ns;
use crate::balance::{BalanceConfig, Balancer};
use crate::outbound::table::{RouteMetrics, RouteTable};
use crate::telemetry::histogram::LatencyHistogram;
use metrics::{DstLabel, RouteLabels, RouteResponseLabels};
use policy::{Budget, Policy};

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

/// What the outbound chain knows about a connection's destination.
#[derive(Debug)]
pub enum Resolved {
    /// Not a Service (or not known in time): forwarded to its original address.
    Passthrough,
    /// A Service: its endpoints, balancer and policy.
    Service(Arc<Dest>),
}

/// One destination being watched: a connection's original destination, or
/// a backend Service of a route (watched by its authority).
#[derive(Debug)]
pub struct Dest {
    /// The address errors name: the original destination; for a backend,
    /// the one through which a route first reached it.
    pub addr: SocketAddr,
    /// A backend's authority (`name.ns.svc.<domain>:port`); None for an
    /// original destination.
    pub name: Option<Arc<str>>,
    pub balancer: Balancer,
    /// Its routes, compiled (an original destination's only: a backend's
    /// own routes are never applied).
    pub routes: ArcSwapOption<RouteTable>,
    /// Retries and timeouts, from the Service's profile.
    pub policy: ArcSwap<Policy>,
    pub budget: Budget,
    /// Retries sent, retries not sent because the budget was spent, and
    /// retries not sent because the request's body was not kept (it grew
    /// past what is kept for a retry, or the client failed it).
    pub retries: Counter,
    pub retries_skipped: Counter,
    pub retries_unreplayable: Counter,
    state: state::Sender<Resolution>,
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

    /// The `dst` label of its metrics: its address, or a backend's authority.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => name.to_string(),
            None => self.addr.to_string(),
        }
    }

    /// Waits, at most `timeout`, for its first answer from discovery.
    pub async fn resolved(&self, timeout: Duration) {
        let mut rx = self.state.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|r| *r != Resolution::Pending)).await;
    }

    /// A destination with no stream behind it, resolved as `resolution`
    /// (for tests and benchmarks: its endpoints are never set).
    pub fn detached(addr: SocketAddr, resolution: Resolution) -> Arc<Self> {
        let balance = BalanceConfig {
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
            accrual: crate::balance::accrual::AccrualPolicy {
                threshold: 5,
                min: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
            node: None,
            zone: None,
        };
        Arc::new(Self {
            addr,
            name: None,
            balancer: Balancer::new(Arc::new(balance), Counter::default()),
            routes: ArcSwapOption::empty(),
            policy: ArcSwap::from_pointee(Policy::default()),
            budget: Budget::default(),
            retries: Counter::default(),
            retries_skipped: Counter::default(),
            retries_unreplayable: Counter::default(),
            state: state::Sender::new(resolution),
            created: Instant::now(),
            used: AtomicU64::new(now_ns()),
            connected: AtomicBool::new(false),
            task: Mutex::default(),
        })
    }
}

/// The discovery client of the proxy.
#[derive(Debug)]
pub struct Resolver {
    client: DiscoveryClient<Channel>,
    config: DiscoveryConfig,
    balance: Arc<BalanceConfig>,
    dests: Mutex<HashMap<SocketAddr, Arc<Dest>>>,
    /// Route backends, by authority.
    backends: Mutex<HashMap<Arc<str>, Arc<Dest>>>,
    route_requests: Family<RouteLabels, Counter>,
    route_responses: Family<RouteResponseLabels, Counter>,
    route_latency: Family<RouteLabels, LatencyHistogram>,
    ejections: Family<DstLabel, Counter>,
    retries: Family<DstLabel, Counter>,
    retries_skipped: Family<DstLabel, Counter>,
    retries_unreplayable: Family<DstLabel, Counter>,
    updates: Counter,
    stream_errors: Counter,
    fallbacks: Counter,
    /// Whether the control plane has been reached since start (a stream
    /// answered, or the start-up probe connected).
    reached: AtomicBool,
}

impl Resolver {
    /// A resolver whose channel connects on first use (so the proxy starts
    /// without the control plane). Must be called within the runtime.
    pub fn new(config: DiscoveryConfig, balance: BalanceConfig) -> Result<Arc<Self>, String> {
        let endpoint = crate::transport::connect::grpc_endpoint(&config.control)
            .map_err(|e| format!("--control-addr {e}"))?;
        let probe = endpoint.clone().connect_timeout(Duration::from_secs(2));
        let channel = endpoint
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
            backends: Mutex::default(),
            route_requests: Family::default(),
            route_responses: Family::default(),
            route_latency: Family::default(),
            ejections: Family::default(),
            retries: Family::default(),
            retries_skipped: Family::default(),
            retries_unreplayable: Family::default(),
            updates: Counter::default(),
            stream_errors: Counter::default(),
            fallbacks: Counter::default(),
            reached: AtomicBool::new(false),
        });
        tokio::spawn(watch::sweep(Arc::downgrade(&resolver)));
        tokio::spawn(watch::probe(Arc::downgrade(&resolver), probe));
        Ok(resolver)
    }

    /// Whether the control plane has been reached since start: until then
    /// the proxy is not ready (every Service would be passed through).
    pub fn reached(&self) -> bool {
        self.reached.load(Relaxed)
    }

    /// Where a connection to `orig` goes: waits (at most the resolve
    /// timeout, counted from the destination's first use) for the first
    /// answer about a destination not seen before.
    pub async fn resolve(self: &Arc<Self>, orig: SocketAddr) -> Resolved {
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
            Resolution::Service { .. } => Resolved::Service(dest),
            Resolution::NotAService => Resolved::Passthrough,
            Resolution::Pending => {
                self.fallbacks.inc();
                debug!(%orig, "no answer from discovery in time: forwarded to the original destination");
                Resolved::Passthrough
            }
        }
    }

    /// How long a connection waits for a destination's first answer.
    pub fn resolve_timeout(&self) -> Duration {
        self.config.resolve_timeout
    }

    fn dest(self: &Arc<Self>, addr: SocketAddr) -> Arc<Dest> {
        let mut dests = self.dests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = dests.get(&addr) {
            return d.clone();
        }
        let dest = self.watch(addr, None);
        dests.insert(addr, dest.clone());
        dest
    }

    /// The destination of route backend `authority` (first reached through
    /// `addr`), watched from now on while a route holds it.
    pub(crate) fn backend(self: &Arc<Self>, authority: &str, addr: SocketAddr) -> Arc<Dest> {
        let mut backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = backends.get(authority) {
            return d.clone();
        }
        let name: Arc<str> = authority.into();
        let dest = self.watch(addr, Some(name.clone()));
        backends.insert(name, dest.clone());
        dest
    }

    /// A new destination, its stream started.
    fn watch(self: &Arc<Self>, addr: SocketAddr, name: Option<Arc<str>>) -> Arc<Dest> {
        let label = DstLabel {
            dst: match &name {
                Some(n) => n.to_string(),
                None => addr.to_string(),
            },
        };
        let ejections = self.ejections.get_or_create(&label).clone();
        let dest = Arc::new(Dest {
            addr,
            name,
            balancer: Balancer::new(self.balance.clone(), ejections),
            routes: ArcSwapOption::empty(),
            policy: ArcSwap::from_pointee(Policy::default()),
            budget: Budget::default(),
            retries: self.retries.get_or_create(&label).clone(),
            retries_skipped: self.retries_skipped.get_or_create(&label).clone(),
            retries_unreplayable: self.retries_unreplayable.get_or_create(&label).clone(),
            state: state::Sender::new(Resolution::Pending),
            created: Instant::now(),
            used: AtomicU64::new(now_ns()),
            connected: AtomicBool::new(false),
            task: Mutex::default(),
        });
        let task = tokio::spawn(watch::follow(self.clone(), dest.clone()));
        *dest.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        dest
    }

    /// The route metrics handles of `route` and `backend` to `dst`.
    pub(crate) fn route_metrics(&self, dst: &str, route: &str, backend: &str) -> RouteMetrics {
        let labels = RouteLabels {
            dst: dst.to_string(),
            route: route.to_string(),
            backend: backend.to_string(),
        };
        RouteMetrics {
            requests: self.route_requests.get_or_create(&labels).clone(),
            responses: metrics::STATUS_CLASSES.map(|status_class| {
                self.route_responses
                    .get_or_create(&RouteResponseLabels {
                        route: labels.clone(),
                        status_class,
                    })
                    .clone()
            }),
            latency: self.route_latency.get_or_create(&labels).clone(),
        }
    }
}
