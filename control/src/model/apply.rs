//! The model task: the one owner of the [`Store`]. Sources send it changes;
//! it applies each, publishes the destinations the change touched (and
//! the inbound policies of the pods it touched), and reports refused
//! objects.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::routes::{ObjectKind, Problem};
use super::store::{Kind, Object, Store};
use super::ObjKey;
use crate::authz::PolicyHub;
use crate::events::{kind_named, Events};
use crate::hub::Hub;
use crate::metrics::Metrics;

/// A change from a source.
#[derive(Debug)]
pub enum Change {
    Apply {
        source: &'static str,
        /// Where the object came from, for error messages (a file path and
        /// document index, or the API path).
        origin: String,
        object: Object,
    },
    Delete {
        kind: Kind,
        key: ObjKey,
    },
    /// An object the source could not read as its kind (it does not fit
    /// the kind's schema): refused as the model refuses an invalid one, and
    /// what the model holds for `key` stays as it was.
    Refused {
        source: &'static str,
        origin: String,
        kind: Kind,
        key: ObjKey,
        reason: String,
    },
    /// The source finished its initial sync.
    Synced(&'static str),
}

/// The sources' end of the model's queue: each change is stamped with
/// when its source saw it, the start of its span (`crate::trace`).
#[derive(Clone, Debug)]
pub struct Changes(mpsc::Sender<Seen>);

/// A change and when its source handed it over.
#[derive(Debug)]
pub struct Seen {
    pub at: SystemTime,
    pub change: Change,
}

/// The model task is gone (shutting down).
#[derive(Debug)]
pub struct Closed;

impl Changes {
    /// A queue of at most `bound` changes and its receiving end, for [`run`].
    pub fn channel(bound: usize) -> (Self, mpsc::Receiver<Seen>) {
        let (tx, rx) = mpsc::channel(bound);
        (Self(tx), rx)
    }

    /// Queues `change` (waiting while the queue is full).
    pub async fn send(&self, change: Change) -> Result<(), Closed> {
        let at = SystemTime::now();
        self.0.send(Seen { at, change }).await.map_err(|_| Closed)
    }
}

/// Applies changes until every sender is gone. `synced` lists the sources
/// still syncing; it empties as they report.
///
/// Refused objects and problems are logged and counted and, with `events`
/// (the kube source), published as Warning Events on the object.
pub async fn run(
    mut store: Store,
    mut changes: mpsc::Receiver<Seen>,
    hub: Arc<Hub>,
    policies: Arc<PolicyHub>,
    metrics: Metrics,
    synced: watch::Sender<Vec<&'static str>>,
    events: Option<Events>,
) {
    let mut reported = Reported::default();
    let mut target_problems = TargetProblems::default();
    while let Some(Seen { at, change }) = changes.recv().await {
        let started = Instant::now();
        let mut span = Span::of(&change, at);
        let routing;
        let policy;
        let touched = match change {
            Change::Apply {
                source,
                origin,
                object,
            } => match store.apply(&object) {
                Ok(t) => {
                    routing = matches!(object.kind(), Kind::Route(_) | Kind::Service);
                    policy = (object.kind(), object.key());
                    t
                }
                Err(reason) => {
                    let (kind, key) = (object.kind(), object.key());
                    span.refused(&reason);
                    refuse(
                        source,
                        &origin,
                        kind,
                        &key,
                        &reason,
                        &metrics,
                        events.as_ref(),
                    );
                    continue;
                }
            },
            Change::Refused {
                source,
                origin,
                kind,
                key,
                reason,
            } => {
                span.refused(&reason);
                refuse(
                    source,
                    &origin,
                    kind,
                    &key,
                    &reason,
                    &metrics,
                    events.as_ref(),
                );
                continue;
            }
            Change::Delete { kind, key } => {
                routing = matches!(kind, Kind::Route(_) | Kind::Service);
                let touched = store.delete(kind, &key);
                policy = (kind, key);
                touched
            }
            Change::Synced(source) => {
                metrics.synced(source);
                synced.send_modify(|pending| pending.retain(|s| *s != source));
                continue;
            }
        };
        for svc in &touched.services {
            hub.publish(svc, store.destinations(svc), store.cluster_ips(svc));
        }
        for ip in &touched.pod_ips {
            hub.publish_pod(*ip, store.pod_at(*ip));
        }
        if routing {
            reported.update(&store, &touched.services, &metrics, events.as_ref());
        }
        if let Some(ns) = publish_policies(&store, &policies, policy.0, &policy.1) {
            target_problems.update(&store, &ns, &metrics, events.as_ref());
        }
        let route_kinds = ObjectKind::ALL.map(Kind::Route);
        for kind in [Kind::Service, Kind::Slice, Kind::Pod, Kind::Namespace]
            .into_iter()
            .chain(route_kinds)
            .chain([Kind::TrafficTarget])
        {
            metrics.objects(kind.as_str(), store.count(kind));
        }
        metrics
            .apply_seconds
            .observe(started.elapsed().as_secs_f64());
        span.published(touched.services.len(), touched.pod_ips.len());
    }
}

/// A change's span ([`crate::trace::change_span`]) while tracing is on:
/// from its source seeing it, through the model receiving it (an event),
/// to the publication of what it touched, or its refusal (status ERROR).
struct Span(Option<opentelemetry::global::BoxedSpan>);

impl Span {
    fn of(change: &Change, seen: SystemTime) -> Self {
        use opentelemetry::trace::Span as _;
        use opentelemetry::KeyValue;
        let kind = match change {
            Change::Apply { object, .. } => object.kind(),
            Change::Refused { kind, .. } | Change::Delete { kind, .. } => *kind,
            Change::Synced(_) => return Self(None),
        };
        let mut span = crate::trace::change_span(kind.as_str(), seen);
        if !crate::trace::recording(&span) {
            return Self(None);
        }
        let ((ns, name), op, source) = match change {
            Change::Apply { source, object, .. } => (object.key(), "apply", *source),
            Change::Refused { source, key, .. } => (key.clone(), "apply", *source),
            Change::Delete { key, .. } => (key.clone(), "delete", ""),
            Change::Synced(_) => return Self(None),
        };
        span.set_attribute(KeyValue::new("weft.change", op));
        if !source.is_empty() {
            span.set_attribute(KeyValue::new("weft.source", source));
        }
        if !ns.is_empty() {
            span.set_attribute(KeyValue::new("k8s.namespace.name", ns));
        }
        span.set_attribute(KeyValue::new("weft.object.name", name));
        span.add_event("model received", vec![]);
        Self(Some(span))
    }

    fn refused(&mut self, reason: &str) {
        use opentelemetry::trace::{Span as _, Status};
        if let Some(mut span) = self.0.take() {
            span.set_status(Status::error(reason.to_owned()));
            span.end();
        }
    }

    fn published(&mut self, services: usize, pods: usize) {
        use opentelemetry::trace::Span as _;
        use opentelemetry::KeyValue;
        if let Some(mut span) = self.0.take() {
            span.set_attribute(KeyValue::new("weft.published.services", services as i64));
            span.set_attribute(KeyValue::new("weft.published.pods", pods as i64));
            span.end();
        }
    }
}

/// Says that object `key` (of `kind`, from `source` at `origin`) was
/// refused and why: a log line, `weft_control_source_errors_total` and,
/// with `events`, a `Refused` Warning Event on the object.
fn refuse(
    source: &'static str,
    origin: &str,
    kind: Kind,
    (ns, name): &ObjKey,
    reason: &str,
    metrics: &Metrics,
    events: Option<&Events>,
) {
    warn!(%origin, kind = kind.as_str(), %ns, %name, %reason, "object refused; the model keeps what it had");
    metrics.source_error(source, kind.as_str());
    if let Some(events) = events {
        let note = format!("refused, the last good version stays in force: {reason}");
        events.warn(kind, ns, name, "Refused", &note);
    }
}

/// Publishes the inbound policies an applied or deleted object may have
/// changed: a pod's own; every pod of a namespace for the Namespace, or a
/// TrafficTarget, HTTPRouteGroup or TCPRoute in it (that namespace is
/// returned).
fn publish_policies(
    store: &Store,
    policies: &PolicyHub,
    kind: Kind,
    key: &ObjKey,
) -> Option<String> {
    let ns = match kind {
        Kind::Pod => {
            policies.publish_pod(key, store.pod_policy(key));
            return None;
        }
        Kind::Namespace => {
            policies.publish_namespace(&key.1, store.unknown_pod_policy(&key.1));
            &key.1
        }
        Kind::TrafficTarget
        | Kind::Route(ObjectKind::HttpRouteGroup)
        | Kind::Route(ObjectKind::TcpRoute) => &key.0,
        _ => return None,
    };
    for (pod, policy) in store.pod_policies_in(ns) {
        policies.publish_pod(&pod, Some(policy));
    }
    Some(ns.clone())
}

/// The TrafficTargets' references to objects that do not exist, per
/// namespace (bounded by the TrafficTargets), so that each is said once,
/// when it appears.
#[derive(Debug, Default)]
struct TargetProblems(HashMap<String, BTreeSet<(ObjKey, String)>>);

impl TargetProblems {
    fn update(&mut self, store: &Store, ns: &str, metrics: &Metrics, events: Option<&Events>) {
        let now = store.target_problems(ns);
        let before = self.0.remove(ns).unwrap_or_default();
        for ((ns, name), reason) in now.difference(&before) {
            warn!(kind = "TrafficTarget", %ns, %name, %reason, "authorization problem");
            metrics.route_problem("TrafficTarget");
            if let Some(events) = events {
                events.warn(
                    Kind::TrafficTarget,
                    ns,
                    name,
                    "AuthorizationProblem",
                    reason,
                );
            }
        }
        if !now.is_empty() {
            self.0.insert(ns.to_owned(), now);
        }
    }
}

/// The route problems each Service's tables had when last looked at
/// (bounded by the Services that have one), so that each is said once,
/// when it appears.
#[derive(Debug, Default)]
struct Reported(HashMap<ObjKey, BTreeSet<Problem>>);

impl Reported {
    /// Logs and counts the problems of these Services' route tables that
    /// were not there before (a split not in force, a backend that does
    /// not exist): see [`super::routes`].
    fn update(
        &mut self,
        store: &Store,
        services: &BTreeSet<ObjKey>,
        metrics: &Metrics,
        events: Option<&Events>,
    ) {
        for svc in services {
            let now: BTreeSet<Problem> = store
                .route_tables(svc)
                .into_iter()
                .flat_map(|t| t.problems)
                .collect();
            let before = self.0.remove(svc).unwrap_or_default();
            for p in now.difference(&before) {
                let (ns, name) = &p.object;
                warn!(kind = p.kind, %ns, %name, reason = %p.reason, service = %svc.1, "route problem");
                metrics.route_problem(p.kind);
                if let (Some(events), Some(kind)) = (events, kind_named(p.kind)) {
                    events.warn(kind, ns, name, "RouteProblem", &p.reason);
                }
            }
            if !now.is_empty() {
                self.0.insert(svc.clone(), now);
            }
        }
    }
}
