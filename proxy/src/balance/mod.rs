//! Load balancing over the endpoints discovery names for a destination:
//! power of two choices over Peak-EWMA load, weights respected, failing
//! endpoints ejected and probed back ([`accrual`]).
//!
//! A [`Balancer`] holds the endpoint set it chooses from, already filtered
//! (ready endpoints; terminating-but-serving ones only when nothing else is;
//! node-local or same-zone ones when the Service's policy says so). The set
//! is swapped whole when discovery changes it, so picking an endpoint takes
//! no lock and allocates nothing: an atomic load of the set, two random
//! indices, two cost reads.
//!
//! Each endpoint owns its upstream connections ([`Conns`]: its HTTP/2
//! connection, its idle HTTP/1 ones), kept across updates while discovery
//! names the endpoint with the same identity and closed when it does not.

pub mod accrual;
pub mod connect;
pub mod ewma;

use arc_swap::ArcSwap;

use crate::client::Conns;
use crate::errors::ProxyError;
use crate::transport::connect::Remote;
use prometheus_client::metrics::counter::Counter;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use accrual::{Accrual, AccrualPolicy};
use ewma::{now_ns, PeakEwma};

/// How every balancer of the proxy behaves, from the configuration.
#[derive(Clone, Debug)]
pub struct BalanceConfig {
    /// Time constant of the Peak-EWMA decay.
    pub decay: Duration,
    /// The estimate of an endpoint with no answer yet.
    pub default_rtt: Duration,
    pub accrual: AccrualPolicy,
    /// The proxy's own node and zone (topology, `internalTrafficPolicy: Local`).
    pub node: Option<String>,
    pub zone: Option<String>,
}

/// What discovery says about one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    pub addr: Option<SocketAddr>,
    pub weight: u32,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub zone: String,
    pub node: String,
    pub for_zones: Vec<String>,
    pub for_nodes: Vec<String>,
    /// The SPIFFE identity to expect (meshed endpoints).
    pub identity: Option<Arc<str>>,
    pub meshed: bool,
}

/// What discovery says about the Service as a whole that matters to choosing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Locality {
    /// `internalTrafficPolicy: Local`.
    pub node_local: bool,
    pub prefer: Prefer,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prefer {
    #[default]
    Any,
    SameZone,
    SameNode,
}

/// The state of one endpoint that outlives discovery updates.
#[derive(Debug)]
struct State {
    load: PeakEwma,
    accrual: Accrual,
}

/// One endpoint as the balancer sees it.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub info: EndpointInfo,
    /// Its connections (shared with the same endpoint in later sets).
    pub conns: Arc<Conns>,
    weight: f64,
    state: Arc<State>,
}

impl Endpoint {
    /// Where to connect, and the identity to expect there.
    pub fn remote(&self) -> Remote {
        Remote {
            addr: self.addr,
            identity: self.info.identity.clone(),
        }
    }

    /// Its latency estimate now (metrics).
    pub fn ewma(&self, decay: Duration) -> Duration {
        self.state.load.estimate(decay.as_nanos() as f64)
    }

    pub fn eligible(&self) -> bool {
        self.state.accrual.eligible(now_ns())
    }
}

/// The endpoints a balancer chooses from, and every endpoint known.
#[derive(Debug, Default)]
pub struct Set {
    pub all: Vec<Arc<Endpoint>>,
    pub chosen: Vec<Arc<Endpoint>>,
}

/// Why no endpoint could be picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Discovery names no usable endpoint.
    NoEndpoints,
    /// Every usable endpoint is ejected for failing.
    AllFailing,
}

impl Unavailable {
    /// The error a request to the Service at `dst` gets.
    pub fn error(self, dst: SocketAddr) -> ProxyError {
        match self {
            Unavailable::NoEndpoints => ProxyError::NoEndpoints(dst),
            Unavailable::AllFailing => ProxyError::AllFailing(dst),
        }
    }
}

#[derive(Debug)]
pub struct Balancer {
    set: ArcSwap<Set>,
    config: Arc<BalanceConfig>,
    decay_ns: f64,
    ejections: Counter,
}

impl Balancer {
    pub fn new(config: Arc<BalanceConfig>, ejections: Counter) -> Self {
        Self {
            set: ArcSwap::from_pointee(Set::default()),
            decay_ns: config.decay.as_nanos() as f64,
            config,
            ejections,
        }
    }

    pub fn set(&self) -> Arc<Set> {
        self.set.load_full()
    }

    pub fn config(&self) -> &BalanceConfig {
        &self.config
    }

    /// Replaces the endpoints; endpoints already known keep their load
    /// estimate and failure record.
    pub fn update(&self, endpoints: &[EndpointInfo], locality: Locality) {
        let old = self.set.load();
        let known: HashMap<SocketAddr, &Arc<Endpoint>> =
            old.all.iter().map(|e| (e.addr, e)).collect();
        // A new endpoint starts as loaded as the average known one: with
        // the default estimate instead, it would get no traffic until the
        // others' estimates decayed past it.
        let initial = if old.all.is_empty() {
            self.config.default_rtt
        } else {
            let sum: Duration = old
                .all
                .iter()
                .map(|e| e.state.load.estimate(self.decay_ns))
                .sum();
            sum / old.all.len() as u32
        };
        let all: Vec<Arc<Endpoint>> = endpoints
            .iter()
            .filter_map(|info| {
                let addr = info.addr?;
                let before = known.get(&addr);
                let state = before.map_or_else(
                    || {
                        Arc::new(State {
                            load: PeakEwma::new(initial),
                            accrual: Accrual::default(),
                        })
                    },
                    |e| Arc::clone(&e.state),
                );
                // Connections proved the identity they were made with.
                let conns = before
                    .filter(|e| e.info.identity == info.identity)
                    .map_or_else(Arc::default, |e| Arc::clone(&e.conns));
                Some(Arc::new(Endpoint {
                    addr,
                    weight: f64::from(info.weight.max(1)),
                    info: info.clone(),
                    conns,
                    state,
                }))
            })
            .collect();
        let chosen = choose(&all, locality, &self.config);
        // Endpoints gone (or now another identity) close their connections.
        let kept: HashSet<*const Conns> = all.iter().map(|e| Arc::as_ptr(&e.conns)).collect();
        for e in &old.all {
            if !kept.contains(&Arc::as_ptr(&e.conns)) {
                e.conns.retire();
            }
        }
        drop(known);
        self.set.store(Arc::new(Set { all, chosen }));
    }

    /// Picks an endpoint for one request or connection: the cheaper of two
    /// chosen at random among those not ejected.
    pub fn pick(&self) -> Result<Picked, Unavailable> {
        let set = self.set.load();
        let eps = &set.chosen;
        let now = now_ns();
        let ok = |i: usize| eps[i].state.accrual.eligible(now);
        let picked = match eps.len() {
            0 => return Err(Unavailable::NoEndpoints),
            1 => ok(0).then_some(0),
            n => {
                let a = random(n);
                let b = (a + 1 + random(n - 1)) % n;
                match (ok(a), ok(b)) {
                    (true, true) => {
                        let cost =
                            |i: usize| eps[i].state.load.cost(now, self.decay_ns) / eps[i].weight;
                        Some(if cost(a) <= cost(b) { a } else { b })
                    }
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    // Both out: the first eligible one after a.
                    (false, false) => (1..n).map(|k| (a + k) % n).find(|i| ok(*i)),
                }
            }
        };
        let Some(i) = picked else {
            return Err(Unavailable::AllFailing);
        };
        let endpoint = Arc::clone(&eps[i]);
        endpoint.state.load.start();
        Ok(Picked {
            endpoint,
            start: Instant::now(),
            decay_ns: self.decay_ns,
            done: false,
        })
    }

    /// Records the outcome of a picked endpoint's request.
    pub fn finish(&self, picked: Picked, success: bool) {
        let rtt = picked.start.elapsed();
        self.record(picked, rtt, success);
    }

    /// A connection to the picked endpoint is established after `rtt`: the
    /// estimate learns it, and the endpoint stays loaded while `picked`
    /// lives (opaque TCP: one pick per connection).
    pub fn established(&self, picked: &Picked, rtt: Duration) {
        if picked.endpoint.state.load.observe(rtt, picked.decay_ns) {
            for e in &self.set.load().all {
                e.state.load.reguess(rtt);
            }
        }
        picked.endpoint.state.accrual.success();
    }

    /// A connection to the picked endpoint failed.
    pub fn failed(&self, picked: Picked) {
        let rtt = picked.start.elapsed();
        self.record(picked, rtt, false);
    }

    fn record(&self, mut picked: Picked, rtt: Duration, success: bool) {
        picked.done = true;
        let state = &picked.endpoint.state;
        // A failure is fast but no good: it counts as twice the estimate,
        // so that failing endpoints draw less traffic even before ejection.
        let rtt = if success {
            rtt
        } else {
            rtt.max(state.load.estimate(picked.decay_ns) * 2)
                .max(self.config.default_rtt)
        };
        if state.load.finish(rtt, picked.decay_ns) && success {
            // The balancer's first answer: endpoints not yet measured are
            // assumed as fast, rather than as slow as the default guess
            // (which would keep them unused until it decayed).
            for e in &self.set.load().all {
                e.state.load.reguess(rtt);
            }
        }
        if success {
            state.accrual.success();
        } else if state.accrual.failure(now_ns(), &self.config.accrual) {
            self.ejections.inc();
            tracing::info!(endpoint = %picked.endpoint.addr, "endpoint ejected after consecutive failures");
        }
    }
}

/// An endpoint picked for a request: counted in flight until
/// [`Balancer::finish`] or drop (a request given up).
#[derive(Debug)]
pub struct Picked {
    pub endpoint: Arc<Endpoint>,
    start: Instant,
    decay_ns: f64,
    done: bool,
}

impl Picked {
    /// The request is being sent now, on a connection ready for it: its
    /// latency counts from here. A connection made for it (TCP, the mesh
    /// TLS handshake) is not the endpoint's answer time, and counted in it
    /// would make an endpoint look slow for the decay time after each new
    /// connection, so that p2c kept away from it.
    pub fn sent(&mut self) {
        self.start = Instant::now();
    }

    pub fn addr(&self) -> SocketAddr {
        self.endpoint.addr
    }

    /// Where to connect, and the identity to expect there.
    pub fn remote(&self) -> Remote {
        self.endpoint.remote()
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        if !self.done {
            self.endpoint.state.load.cancel();
        }
    }
}

/// The endpoints to balance over: ready ones (terminating-but-serving ones
/// only when none is ready), narrowed to the node or zone when the Service
/// asks for it and such endpoints exist.
fn choose(all: &[Arc<Endpoint>], locality: Locality, config: &BalanceConfig) -> Vec<Arc<Endpoint>> {
    let mut eps: Vec<Arc<Endpoint>> = all.iter().filter(|e| e.info.ready).cloned().collect();
    if eps.is_empty() {
        eps = all
            .iter()
            .filter(|e| e.info.serving && e.info.terminating)
            .cloned()
            .collect();
    }
    let narrow = |eps: &[Arc<Endpoint>], keep: &dyn Fn(&EndpointInfo) -> bool| {
        eps.iter()
            .filter(|e| keep(&e.info))
            .cloned()
            .collect::<Vec<_>>()
    };
    if locality.node_local {
        // As kube-proxy: only endpoints on this node, none if there is none.
        if let Some(node) = &config.node {
            return narrow(&eps, &|i| &i.node == node);
        }
        return eps;
    }
    if let (Prefer::SameNode, Some(node)) = (locality.prefer, &config.node) {
        let local = narrow(&eps, &|i| &i.node == node);
        if !local.is_empty() {
            return local;
        }
    }
    let Some(zone) = &config.zone else {
        return eps;
    };
    // Topology hints, when every endpoint has them (as kube-proxy).
    if !eps.is_empty() && eps.iter().all(|e| !e.info.for_zones.is_empty()) {
        let hinted = narrow(&eps, &|i| i.for_zones.contains(zone));
        if !hinted.is_empty() {
            return hinted;
        }
    } else if locality.prefer != Prefer::Any {
        let same = narrow(&eps, &|i| &i.zone == zone);
        if !same.is_empty() {
            return same;
        }
    }
    eps
}

/// A random number below `n` (xorshift, per thread: no lock, no syscall).
pub(crate) fn random(n: usize) -> usize {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = now_ns() ^ 0x9E37_79B9_7F4A_7C15;
            let local = 0u8;
            t ^ ((&raw const local as usize as u64) << 16) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (((x >> 32) * n as u64) >> 32) as usize
    })
}

#[cfg(test)]
mod tests;
