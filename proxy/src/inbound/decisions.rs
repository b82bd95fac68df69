//! What inbound authorization decided, counted and (denials) logged:
//! `weft_inbound_authz_total{result, reason, client_id, route, port}`.
//!
//! Cardinality is bounded: `reason` is one of a fixed set, `route` a name
//! from the port's policy, `port` one of the ports watched
//! ([`super::watch::MAX_PORTS`]), and `client_id` one of the first
//! [`MAX_CLIENT_IDS`] identities seen (later ones are `other`).
//!
//! Each connection resolves its counters once per (result, reason, route)
//! it meets, in a small cache of its own; a request then costs an
//! uncontended lock and a short scan of that cache, not a lookup in the
//! family's map.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tracing::warn;

use super::authorize::{Allowed, Denied};
use crate::balance::ewma::now_ns;

/// Distinct client identities labelled; others are counted as `other`.
pub const MAX_CLIENT_IDS: usize = 100;
/// At most one denial log line per port per second (the others counted in
/// the next line's `suppressed`).
const LOG_EVERY_NS: u64 = 1_000_000_000;
/// Counters a connection keeps resolved.
const CONN_CACHE: usize = 32;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthzLabels {
    result: &'static str,
    reason: &'static str,
    client_id: String,
    route: String,
    port: u16,
}

/// The family, and the identities labelled so far.
#[derive(Clone, Debug, Default)]
pub struct AuthzMetrics {
    family: Family<AuthzLabels, Counter>,
    clients: Arc<Mutex<HashSet<Arc<str>>>>,
}

impl AuthzMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.sub_registry_with_prefix("weft").register(
            "inbound_authz",
            "Inbound authorization decisions, by result (allow, deny), reason, client identity, HTTP route and port",
            self.family.clone(),
        );
    }

    /// The label of a client identity (empty without mesh TLS).
    fn client_label(&self, client: Option<&Arc<str>>) -> String {
        let Some(id) = client else {
            return String::new();
        };
        let mut seen = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(id) || seen.len() < MAX_CLIENT_IDS && seen.insert(id.clone()) {
            id.to_string()
        } else {
            "other".into()
        }
    }

    /// The counters of one connection from `client` to `port`.
    pub fn conn(&self, client: Option<&Arc<str>>, port: u16) -> ConnDecisions {
        ConnDecisions {
            family: self.family.clone(),
            client_id: self.client_label(client),
            port,
            cache: Mutex::default(),
        }
    }
}

/// One connection's decisions.
#[derive(Debug)]
pub struct ConnDecisions {
    family: Family<AuthzLabels, Counter>,
    client_id: String,
    port: u16,
    cache: Mutex<Vec<Resolved>>,
}

/// A counter resolved for (result, reason, route).
type Resolved = (&'static str, &'static str, Box<str>, Counter);

impl ConnDecisions {
    /// The connection's original destination port.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn allowed(&self, a: &Allowed<'_>) {
        let reason = if a.by == "default" {
            "default"
        } else {
            "authorized"
        };
        self.count("allow", reason, a.route);
    }

    pub fn denied(&self, d: Denied) {
        self.count("deny", d.0, "");
    }

    fn count(&self, result: &'static str, reason: &'static str, route: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let hit = cache
            .iter()
            .find(|(r, why, rt, _)| *r == result && *why == reason && **rt == *route);
        if let Some((.., counter)) = hit {
            counter.inc();
            return;
        }
        let counter = self
            .family
            .get_or_create(&AuthzLabels {
                result,
                reason,
                client_id: self.client_id.clone(),
                route: route.to_owned(),
                port: self.port,
            })
            .clone();
        counter.inc();
        if cache.len() < CONN_CACHE {
            cache.push((result, reason, route.into(), counter));
        }
    }
}

/// Rate-limits the denial log of one port.
#[derive(Debug, Default)]
pub struct DenyLog {
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl DenyLog {
    /// Logs a denial unless one was logged less than a second ago.
    /// `missing` says what rule would have allowed it.
    pub fn denied(
        &self,
        port: u16,
        client: Option<&str>,
        d: Denied,
        missing: impl FnOnce() -> String,
    ) {
        let now = now_ns().max(1);
        let last = self.last.load(Relaxed);
        if last != 0 && now.saturating_sub(last) < LOG_EVERY_NS
            || self
                .last
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Relaxed);
        warn!(
            port,
            client = client.unwrap_or("(no mesh identity)"),
            reason = d.0,
            missing = %missing(),
            suppressed,
            "inbound authorization denied"
        );
    }
}
