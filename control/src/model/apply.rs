//! The model task: the one owner of the [`Store`]. Sources send it changes;
//! it applies each, publishes the destinations the change touched, and
//! reports refused objects.

use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::routes::ObjectKind;
use super::store::{Kind, Object, Store};
use super::ObjKey;
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
    /// The source finished its initial sync.
    Synced(&'static str),
}

/// Applies changes until every sender is gone. `synced` lists the sources
/// still syncing; it empties as they report.
pub async fn run(
    mut store: Store,
    mut changes: mpsc::Receiver<Change>,
    hub: Arc<Hub>,
    metrics: Metrics,
    synced: watch::Sender<Vec<&'static str>>,
) {
    while let Some(change) = changes.recv().await {
        let started = Instant::now();
        let routing;
        let touched = match change {
            Change::Apply {
                source,
                origin,
                object,
            } => match store.apply(&object) {
                Ok(t) => {
                    routing = matches!(object.kind(), Kind::Route(_) | Kind::Service);
                    t
                }
                Err(reason) => {
                    let (ns, name) = object.key();
                    warn!(%origin, kind = object.kind().as_str(), %ns, %name, %reason, "object refused; the model keeps what it had");
                    metrics.source_error(source, object.kind().as_str());
                    continue;
                }
            },
            Change::Delete { kind, key } => {
                routing = matches!(kind, Kind::Route(_) | Kind::Service);
                store.delete(kind, &key)
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
            report_problems(&store, &touched.services, &metrics);
        }
        let route_kinds = ObjectKind::ALL.map(Kind::Route);
        for kind in [Kind::Service, Kind::Slice, Kind::Pod, Kind::Namespace]
            .into_iter()
            .chain(route_kinds)
        {
            metrics.objects(kind.as_str(), store.count(kind));
        }
        metrics
            .apply_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Logs and counts what the route tables of these Services report (a
/// split not in force, a backend that does not exist): see
/// [`super::routes`].
fn report_problems(
    store: &Store,
    services: &std::collections::BTreeSet<ObjKey>,
    metrics: &Metrics,
) {
    for table in services.iter().flat_map(|s| store.route_tables(s)) {
        let dest = &table.dest;
        for p in table.problems {
            let (ns, name) = &p.object;
            warn!(kind = p.kind, %ns, %name, reason = %p.reason, service = %dest.service.1, port = dest.port, "route problem");
            metrics.route_problem(p.kind);
        }
    }
}
