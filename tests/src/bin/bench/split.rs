//! The split path: a second Service address in the discovery topology whose
//! SMI TrafficSplit shares every request between two backend Services made
//! of the discovery path's own servers (9 of them at weight 900, the 10th at
//! 100, so each server takes a tenth of the load, as on the discovery path).
//! The client is the discovery path's, through the same proxy: the two paths
//! differ by routing alone. The apex's own endpoints are those 10 servers
//! too, so a proxy that does not know routes (a baseline built before them)
//! balances it as it balances the discovery path.
//!
//! This module writes the manifests and reads back, from the client proxy's
//! `/metrics`, how many of the split's requests each backend took.

use anyhow::Result;
use weft_tests::Pod;

use crate::topology::service;

/// The apex Service's address (it exists only in the manifests weft-control reads).
pub const SPLIT_SERVICE: &str = "10.96.0.13:80";
const APEX: &str = "bench-split";

/// A backend Service of the split.
#[derive(Debug)]
pub struct Backend {
    pub name: &'static str,
    addr: &'static str,
    pub weight: u32,
    /// Its endpoints: this many of the discovery path's servers, after
    /// those of the backends before it.
    pub endpoints: usize,
}

/// 900/100 over 9 + 1 of the discovery path's 10 servers.
pub const BACKENDS: [Backend; 2] = [
    Backend {
        name: "bench-split-v1",
        addr: "10.96.0.14:80",
        weight: 900,
        endpoints: 9,
    },
    Backend {
        name: "bench-split-v2",
        addr: "10.96.0.15:80",
        weight: 100,
        endpoints: 1,
    },
];

/// The apex over all of `pods`, each backend over its share of them, and
/// the TrafficSplit (`split.smi-spec.io/v1alpha4`, no `matches`: every
/// request is split).
pub fn manifests(pods: &[Pod]) -> String {
    let mut out = service(APEX, SPLIT_SERVICE, pods);
    let mut first = 0;
    let mut backends = String::new();
    for b in &BACKENDS {
        let mine = &pods[first..(first + b.endpoints).min(pods.len())];
        first += b.endpoints;
        out += &service(b.name, b.addr, mine);
        backends += &format!("  - {{service: {}, weight: {}}}\n", b.name, b.weight);
    }
    out + &format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\n\
         metadata: {{name: {APEX}, namespace: bench}}\n\
         spec:\n  service: {APEX}\n  backends:\n{backends}---\n"
    )
}

/// One line on the split: weights, backends and their endpoints.
pub fn describe() -> String {
    let parts: Vec<String> = BACKENDS
        .iter()
        .map(|b| {
            let s = if b.endpoints == 1 { "" } else { "s" };
            format!("{} {} ({} endpoint{s})", b.name, b.weight, b.endpoints)
        })
        .collect();
    format!("a TrafficSplit over {}", parts.join(" / "))
}

/// How many of the split's requests each backend took so far, by the
/// client proxy's `weft_route_request_total`; all zero from a proxy that
/// does not apply routes.
pub fn routed(client: &Pod) -> Result<Vec<(&'static str, f64)>> {
    let text = weft_tests::mesh::admin_get(client, "/metrics")?;
    BACKENDS
        .iter()
        .map(|b| {
            let port = b.addr.rsplit_once(':').map_or("80", |(_, p)| p);
            let series = format!(
                "weft_route_request_total{{backend=\"{}.bench.svc.cluster.local:{port}\"}}",
                b.name
            );
            Ok((b.name, weft_tests::mesh::sum_samples(&text, &series)?))
        })
        .collect()
}
