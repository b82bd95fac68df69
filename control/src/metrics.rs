//! The control plane's metrics (served on the admin port).
//!
//! | family | type | labels |
//! |---|---|---|
//! | `weft_control_watchers` | gauge | |
//! | `weft_control_watches_refused` | counter | |
//! | `weft_control_updates_sent_total` | counter | kind (snapshot, add, remove, no_endpoints, does_not_exist, profile) |
//! | `weft_control_objects` | gauge | kind |
//! | `weft_control_source_errors_total` | counter | source, kind |
//! | `weft_control_route_problems_total` | counter | kind (of the object reported: a TrafficSplit in conflict, a route naming a missing Service), counted once when it appears |
//! | `weft_control_events_dropped_total` | counter | Events on refused or reported objects not published (the queue to the API server was full) |
//! | `weft_control_source_synced` | gauge | source (1 once the initial sync finished) |
//! | `weft_control_model_apply_seconds` | histogram | time to apply one change and publish it (the sync lag inside the control plane) |
//! | `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`, `process_start_time_seconds` | | |

/// The proxy's `/proc` collector, shared as source (no crate of its own for
/// one file).
#[path = "../../proxy/src/telemetry/process.rs"]
mod process;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Clone, Debug)]
pub struct Metrics {
    pub watchers: Gauge,
    pub watches_refused: Counter,
    updates: Family<KindLabel, Counter>,
    objects: Family<KindLabel, Gauge>,
    errors: Family<SourceLabels, Counter>,
    synced: Family<SourceLabel, Gauge>,
    route_problems: Family<KindLabel, Counter>,
    pub apply_seconds: Histogram,
    /// Events not published because the queue to the API server was full.
    pub events_dropped: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            watchers: Gauge::default(),
            watches_refused: Counter::default(),
            updates: Family::default(),
            objects: Family::default(),
            errors: Family::default(),
            synced: Family::default(),
            route_problems: Family::default(),
            apply_seconds: Histogram::new(exponential_buckets(0.000_01, 4.0, 10)),
            events_dropped: Counter::default(),
        };
        registry.register_collector(Box::new(process::ProcessCollector::default()));
        let r = registry.sub_registry_with_prefix("weft_control");
        r.register(
            "watchers",
            "Open discovery watch streams",
            m.watchers.clone(),
        );
        r.register(
            "watches_refused",
            "Discovery watch streams refused: over --max-watches-per-connection",
            m.watches_refused.clone(),
        );
        r.register(
            "updates_sent",
            "Discovery updates sent, by kind",
            m.updates.clone(),
        );
        r.register(
            "objects",
            "Objects in the model, by kind",
            m.objects.clone(),
        );
        r.register(
            "source_errors",
            "Objects or files a source refused, by source and kind",
            m.errors.clone(),
        );
        r.register(
            "source_synced",
            "1 once a source's initial sync finished",
            m.synced.clone(),
        );
        r.register(
            "route_problems",
            "Route problems that appeared (an object in conflict or naming what does not exist), by the kind of the object reported",
            m.route_problems.clone(),
        );
        r.register(
            "events_dropped",
            "Kubernetes Events (on refused or reported objects) not published because the queue to the API server was full",
            m.events_dropped.clone(),
        );
        r.register(
            "model_apply_seconds",
            "Time to apply one source change to the model and publish it",
            m.apply_seconds.clone(),
        );
        m
    }

    /// One update sent to a watcher; `kind` as [`crate::encoded::kind_name`] says it.
    pub fn update_sent(&self, kind: &'static str) {
        self.updates.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn objects(&self, kind: &'static str, n: usize) {
        self.objects
            .get_or_create(&KindLabel { kind })
            .set(n as i64);
    }

    pub fn source_error(&self, source: &'static str, kind: &'static str) {
        self.errors
            .get_or_create(&SourceLabels { source, kind })
            .inc();
    }

    pub fn route_problem(&self, kind: &'static str) {
        self.route_problems.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn synced(&self, source: &'static str) {
        self.synced.get_or_create(&SourceLabel { source }).set(1);
    }
}
