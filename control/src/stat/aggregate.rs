//! From scrapes to rows: per workload, pod or route, what happened between
//! two scrapes of the same pods (or, with no earlier scrape, since each
//! proxy started: then there is no rate).

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

use super::{PodRef, Sample, Scrape};

/// What a row is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    /// Per workload (Deployment), from its pods' inbound side.
    #[value(alias = "deployment", alias = "deployments")]
    Deploy,
    /// Per pod, from its inbound side.
    #[value(alias = "pods")]
    Pod,
    /// Per calling workload, route and backend, from the outbound side.
    #[value(alias = "routes")]
    Route,
}

/// One line of the table.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Row {
    pub namespace: String,
    /// The workload, the pod, or (routes) the route's name.
    pub name: String,
    /// Routes: the workload whose proxies sent the requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Routes: the backend Service the requests went to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Routes: this backend's share of its route's requests (0..=1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    /// Proxies scraped for this row.
    pub pods: usize,
    /// Responses counted between the scrapes.
    pub requests: f64,
    /// Share of them that are neither 5xx nor a gRPC status other than OK
    /// (0..=1); none without requests.
    pub success: Option<f64>,
    /// Responses per second; none without an earlier scrape.
    pub rps: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Share of responses on mesh-TLS connections (0..=1); none for routes
    /// (their families carry no TLS label) and without requests.
    pub mtls: Option<f64>,
    /// Retries this workload's proxies sent.
    pub retries: f64,
    /// Retries the retry budget refused.
    pub retries_skipped: f64,
    /// Requests and connections this workload's proxies refused (authorization).
    pub denied: f64,
    /// The workload's own calls: responses its proxies got (outbound).
    pub outbound_requests: f64,
    /// Share of those that are not 5xx.
    pub outbound_success: Option<f64>,
    /// Share of those on mesh-TLS connections.
    pub outbound_mtls: Option<f64>,
}

#[derive(Default)]
struct Acc {
    pods: usize,
    total: f64,
    ok: f64,
    tls: f64,
    rps: Option<f64>,
    buckets: BTreeMap<Bound, f64>,
    retries: f64,
    skipped: f64,
    denied: f64,
    out_total: f64,
    out_ok: f64,
    out_tls: f64,
}

/// A bucket bound, ordered as numbers (`+Inf` last).
#[derive(Clone, Copy, Debug)]
struct Bound(f64);
impl PartialEq for Bound {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Bound {}
impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The rows of `after`, each over what changed since the same pod's scrape
/// in `before` (a pod missing there counts from its proxy's start, without
/// a rate). Sorted by namespace and name.
pub fn rows(by: By, before: &[Scrape], after: &[Scrape]) -> Vec<Row> {
    let earlier: HashMap<&PodRef, &Scrape> = before.iter().map(|s| (&s.pod, s)).collect();
    let mut accs: BTreeMap<(String, String, String, String), Acc> = BTreeMap::new();
    for scrape in after {
        let prev = earlier.get(&scrape.pod).copied();
        let secs = prev.map(|p| scrape.at.saturating_duration_since(p.at).as_secs_f64());
        let samples = delta(prev, scrape);
        match by {
            By::Deploy | By::Pod => {
                let name = if by == By::Deploy {
                    &scrape.pod.workload
                } else {
                    &scrape.pod.pod
                };
                let key = (
                    scrape.pod.namespace.clone(),
                    name.clone(),
                    String::new(),
                    String::new(),
                );
                let acc = accs.entry(key).or_default();
                acc.pods += 1;
                let before_total = acc.total;
                for s in &samples {
                    workload_sample(acc, s);
                }
                add_rate(acc, acc.total - before_total, secs);
            }
            By::Route => {
                let mut seen = Vec::new();
                for s in &samples {
                    if !s.name.starts_with("weft_route_response") {
                        continue;
                    }
                    let key = (
                        scrape.pod.namespace.clone(),
                        s.label("route").to_owned(),
                        scrape.pod.workload.clone(),
                        s.label("backend").to_owned(),
                    );
                    let acc = accs.entry(key.clone()).or_default();
                    if !seen.contains(&key) {
                        acc.pods += 1;
                        seen.push(key);
                    }
                    if s.name == "weft_route_response_total" {
                        acc.total += s.value;
                        if s.label("status_class") != "5xx" {
                            acc.ok += s.value;
                        }
                        add_rate(acc, s.value, secs);
                    } else if s.name == "weft_route_response_latency_ms_bucket" {
                        bucket(acc, s);
                    }
                }
            }
        }
    }
    let route_totals = route_totals(&accs);
    accs.into_iter()
        .map(|((namespace, name, from, backend), acc)| {
            let known = acc.total > 0.0;
            let share = (by == By::Route).then(|| {
                let all = route_totals[&(namespace.clone(), name.clone(), from.clone())];
                if all > 0.0 {
                    acc.total / all
                } else {
                    0.0
                }
            });
            Row {
                namespace,
                name,
                from: (by == By::Route).then_some(from),
                backend: (by == By::Route).then_some(backend),
                share,
                pods: acc.pods,
                requests: acc.total,
                success: known.then(|| acc.ok.clamp(0.0, acc.total) / acc.total),
                rps: acc.rps,
                p50_ms: quantile(&acc.buckets, 0.50),
                p95_ms: quantile(&acc.buckets, 0.95),
                p99_ms: quantile(&acc.buckets, 0.99),
                mtls: (known && by != By::Route).then(|| acc.tls / acc.total),
                retries: acc.retries,
                retries_skipped: acc.skipped,
                denied: acc.denied,
                outbound_requests: acc.out_total,
                outbound_success: (acc.out_total > 0.0)
                    .then(|| acc.out_ok.clamp(0.0, acc.out_total) / acc.out_total),
                outbound_mtls: (acc.out_total > 0.0).then(|| acc.out_tls / acc.out_total),
            }
        })
        .collect()
}

fn workload_sample(acc: &mut Acc, s: &Sample) {
    let inbound = s.label("direction") == "inbound";
    match s.name.as_str() {
        "weft_response_total" if inbound => {
            acc.total += s.value;
            if s.label("status_class") != "5xx" {
                acc.ok += s.value;
            }
            if s.label("tls") == "true" {
                acc.tls += s.value;
            }
        }
        "weft_response_total" if s.label("direction") == "outbound" => {
            acc.out_total += s.value;
            if s.label("status_class") != "5xx" {
                acc.out_ok += s.value;
            }
            if s.label("tls") == "true" {
                acc.out_tls += s.value;
            }
        }
        // A gRPC failure is an HTTP 200: taken back from the successes.
        "weft_grpc_response_total" if s.label("grpc_status") != "0" => {
            if inbound {
                acc.ok -= s.value;
            } else if s.label("direction") == "outbound" {
                acc.out_ok -= s.value;
            }
        }
        "weft_response_latency_ms_bucket" if inbound => bucket(acc, s),
        "weft_retry_requests_total" => acc.retries += s.value,
        "weft_retry_skipped_budget_total" => acc.skipped += s.value,
        "weft_inbound_authz_total" if s.label("result") == "deny" => acc.denied += s.value,
        _ => {}
    }
}

fn bucket(acc: &mut Acc, s: &Sample) {
    let le = match s.label("le") {
        "+Inf" => f64::INFINITY,
        le => match le.parse() {
            Ok(v) => v,
            Err(_) => return,
        },
    };
    *acc.buckets.entry(Bound(le)).or_default() += s.value;
}

fn add_rate(acc: &mut Acc, n: f64, secs: Option<f64>) {
    if let Some(secs) = secs.filter(|s| *s > 0.0) {
        *acc.rps.get_or_insert(0.0) += n / secs;
    }
}

fn route_totals(
    accs: &BTreeMap<(String, String, String, String), Acc>,
) -> HashMap<(String, String, String), f64> {
    let mut out: HashMap<(String, String, String), f64> = HashMap::new();
    for ((ns, route, from, _), acc) in accs {
        *out.entry((ns.clone(), route.clone(), from.clone()))
            .or_default() += acc.total;
    }
    out
}

/// `after`'s samples less `before`'s (a counter that went down restarted:
/// its whole value counts).
fn delta(before: Option<&Scrape>, after: &Scrape) -> Vec<Sample> {
    let Some(before) = before else {
        return after.samples.clone();
    };
    let old: HashMap<(&str, &BTreeMap<String, String>), f64> = before
        .samples
        .iter()
        .map(|s| ((s.name.as_str(), &s.labels), s.value))
        .collect();
    after
        .samples
        .iter()
        .map(|s| {
            let was = old
                .get(&(s.name.as_str(), &s.labels))
                .copied()
                .unwrap_or(0.0);
            let value = if s.value >= was {
                s.value - was
            } else {
                s.value
            };
            Sample { value, ..s.clone() }
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated linearly within
/// the bucket it falls in (as Prometheus's `histogram_quantile`); the
/// highest finite bound when it falls in `+Inf`.
fn quantile(buckets: &BTreeMap<Bound, f64>, q: f64) -> Option<f64> {
    let total = buckets.values().copied().fold(0.0, f64::max);
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (Bound(le), cum) in buckets {
        if *cum >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let width = cum - below;
            let within = if width > 0.0 {
                (rank - below) / width
            } else {
                1.0
            };
            return Some(lower + (le - lower) * within);
        }
        lower = *le;
        below = *cum;
    }
    Some(lower)
}

#[cfg(test)]
mod tests;
