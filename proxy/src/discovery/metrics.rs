//! Discovery's metrics: counters kept by the [`Resolver`] and gauges read
//! from its destinations at scrape time. Every series is labelled by
//! destination and removed with the destination when it is swept.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{Dest, Resolution, Resolver};
pub(super) use crate::telemetry::metrics::STATUS_CLASSES;

/// The labels of the route families: the destination the request was
/// sent to, its route (`<kind>/<namespace>/<name>`, or `default`) and the
/// backend Service authority it went to (empty: the destination itself,
/// or none).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RouteLabels {
    pub(super) dst: String,
    pub(super) route: String,
    pub(super) backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RouteResponseLabels {
    #[prometheus(flatten)]
    pub(super) route: RouteLabels,
    pub(super) status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DstLabel {
    pub(super) dst: String,
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

impl Resolver {
    /// Removes the series of a destination no longer watched.
    pub(super) fn forget(&self, dst: String) {
        let label = DstLabel { dst };
        self.ejections.remove(&label);
        self.retries.remove(&label);
        self.retries_skipped.remove(&label);
        self.retries_unreplayable.remove(&label);
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
        r.register(
            "skipped_body",
            "Retries not sent because the request's body was not kept (larger than 64 KiB, or failed by the client)",
            self.retries_unreplayable.clone(),
        );
        let w = registry.sub_registry_with_prefix("weft_route");
        w.register(
            "request",
            "HTTP requests (and TCP connections) to a destination with routes, by route and backend, counted when answered",
            self.route_requests.clone(),
        );
        w.register(
            "response",
            "Responses to requests of a destination with routes, by route, backend and status class",
            self.route_responses.clone(),
        );
        w.register(
            "response_latency_ms",
            "Time from a routed request's arrival to its response's headers, in milliseconds, by route and backend",
            self.route_latency.clone(),
        );
        registry.register_collector(Box::new(Gauges(Arc::downgrade(self))));
    }
}

/// Per-destination gauges, read at scrape time.
#[derive(Debug)]
struct Gauges(std::sync::Weak<Resolver>);

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(resolver) = self.0.upgrade() else {
            return Ok(());
        };
        let mut dests: Vec<Arc<Dest>> = resolver
            .dests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        dests.extend(
            resolver
                .backends
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned(),
        );
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
            let labels = DstLabel { dst: d.label() };
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
                    dst: d.label(),
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
                    dst: d.label(),
                    endpoint: e.addr.to_string(),
                };
                let ms = e.ewma(decay).as_secs_f64() * 1e3;
                ConstGauge::new(ms).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
