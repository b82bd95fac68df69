//! The Kubernetes source: kube-runtime watchers of Services,
//! EndpointSlices, Pods (cluster-wide or per namespace) and Namespaces, and
//! of the routing resources (TrafficSplit `split.smi-spec.io/v1alpha4`,
//! HTTPRouteGroup and TCPRoute `specs.smi-spec.io/v1alpha4`, HTTPRoute and
//! GRPCRoute `gateway.networking.k8s.io/v1`; the API server converts other
//! served versions), and of TrafficTarget `access.smi-spec.io/v1alpha3`.
//!
//! A cluster need not have the routing CRDs: a routing watcher whose list
//! is answered 404 (the CRD is not installed) or 403 (weft may not read
//! it) counts as synced with no objects, says so once in the log, and
//! keeps retrying with backoff, so that a CRD installed later is picked up.
//!
//! kube-runtime lists, then watches from the list's resourceVersion; on a
//! broken watch it resumes, on 410 Gone it relists. Each relist (`Init` …
//! `InitDone`) is reconciled against what this source had reported, so an
//! object deleted while the API server was away is deleted here too, and
//! nothing is lost or reported twice. Errors are retried with kube-runtime's
//! default backoff; the model keeps its state meanwhile.
//!
//! A routing object (or TrafficTarget) that does not fit its schema is read
//! on its own ([`super::decode`]) and refused as the model refuses an
//! invalid one, by [`Change::Refused`]: logged and counted, a `Refused`
//! Event on it, and its last good version stays in force; the rest of the
//! list is applied and the source syncs. A v1alpha1 TrafficSplit, which
//! the API server serves at v1alpha4 as written, is read with its
//! quantity weights.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::NamespaceResourceScope;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tracing::{info, warn};

use super::decode::{Decode, Decoded};
use crate::metrics::Metrics;
use crate::model::apply::Changes;
use crate::model::authz::smi::TrafficTarget;
use crate::model::routes::{gateway, smi, ObjectKind, RouteObject};
use crate::model::{Change, Kind, ObjKey, Object};

pub const SOURCE: &str = "kube";

/// Builds the client: an explicit API server URL (for development and
/// tests), else in-cluster configuration or the kubeconfig.
pub async fn client(api_server: Option<&str>) -> anyhow::Result<Client> {
    match api_server {
        Some(url) => {
            let config = kube::Config::new(url.parse()?);
            Ok(Client::try_from(config)?)
        }
        None => Ok(Client::try_default().await?),
    }
}

/// Starts one watcher per kind (and per namespace when `namespaces` is not
/// empty); reports `Synced` once every one of them listed once.
pub fn spawn(client: Client, namespaces: &[String], changes: Changes, metrics: Metrics) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let pending = Arc::new(AtomicUsize::new(1 + 9 * scopes.len()));
    let ctx = Ctx {
        changes,
        metrics,
        pending,
    };
    tokio::spawn(watch(
        Api::<Decoded<Namespace>>::all(client.clone()),
        Kind::Namespace,
        |o| Object::Namespace(Box::new(o)),
        ctx.clone(),
    ));
    for ns in scopes {
        let c = &client;
        tokio::spawn(watch(
            scoped::<Service>(c, &ns),
            Kind::Service,
            |o| Object::Service(Box::new(o)),
            ctx.clone(),
        ));
        tokio::spawn(watch(
            scoped::<EndpointSlice>(c, &ns),
            Kind::Slice,
            |o| Object::Slice(Box::new(o)),
            ctx.clone(),
        ));
        tokio::spawn(watch(
            scoped::<Pod>(c, &ns),
            Kind::Pod,
            |o| Object::Pod(Box::new(o)),
            ctx.clone(),
        ));
        let route = |k| Kind::Route(k);
        tokio::spawn(watch(
            scoped::<smi::TrafficSplit>(c, &ns),
            route(ObjectKind::TrafficSplit),
            |o| Object::Route(RouteObject::TrafficSplit(Box::new(o))),
            ctx.clone(),
        ));
        tokio::spawn(watch(
            scoped::<smi::HTTPRouteGroup>(c, &ns),
            route(ObjectKind::HttpRouteGroup),
            |o| Object::Route(RouteObject::HttpRouteGroup(Box::new(o))),
            ctx.clone(),
        ));
        tokio::spawn(watch(
            scoped::<smi::TCPRoute>(c, &ns),
            route(ObjectKind::TcpRoute),
            |o| Object::Route(RouteObject::TcpRoute(Box::new(o))),
            ctx.clone(),
        ));
        tokio::spawn(watch(
            scoped::<TrafficTarget>(c, &ns),
            Kind::TrafficTarget,
            |o| Object::TrafficTarget(Box::new(o)),
            ctx.clone(),
        ));
        tokio::spawn(watch(
            scoped::<gateway::HTTPRoute>(c, &ns),
            route(ObjectKind::HttpRoute),
            |o| Object::Route(RouteObject::HttpRoute(Box::new(o))),
            ctx.clone(),
        ));
        tokio::spawn(watch(
            scoped::<gateway::GRPCRoute>(c, &ns),
            route(ObjectKind::GrpcRoute),
            |o| Object::Route(RouteObject::GrpcRoute(Box::new(o))),
            ctx.clone(),
        ));
    }
}

/// A namespaced resource's API, cluster-wide or in one namespace.
fn scoped<K>(client: &Client, ns: &Option<String>) -> Api<Decoded<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The list of a routing CRD was refused as not there (404: not installed)
/// or not allowed (403).
fn crd_unavailable(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => {
            matches!(status.code, 403 | 404)
        }
        _ => false,
    }
}

#[derive(Clone, Debug)]
struct Ctx {
    changes: Changes,
    metrics: Metrics,
    /// Watchers that have not finished their first list.
    pending: Arc<AtomicUsize>,
}

async fn watch<K: Decode>(api: Api<Decoded<K>>, kind: Kind, wrap: fn(K) -> Object, ctx: Ctx) {
    let origin = format!("kube {}", kind.as_str());
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // What this watcher reported and has not deleted, and what the current
    // relist has seen.
    let mut known: BTreeSet<ObjKey> = BTreeSet::new();
    let mut listing: BTreeSet<ObjKey> = BTreeSet::new();
    let mut synced = false;
    let optional = matches!(kind, Kind::Route(_) | Kind::TrafficTarget);
    let mut said_unavailable = false;
    let send = |change| ctx.changes.send(change);
    // The key of an object, and the change it makes.
    let read = |obj: Decoded<K>| match obj {
        Decoded::Fits(k) => {
            let object = wrap(k);
            let key = object.key();
            let change = Change::Apply {
                source: SOURCE,
                origin: origin.clone(),
                object,
            };
            (key, change)
        }
        Decoded::Refused { metadata, reason } => {
            let key = kind.key(&metadata);
            let change = Change::Refused {
                source: SOURCE,
                origin: origin.clone(),
                kind,
                key: key.clone(),
                reason,
            };
            (key, change)
        }
    };
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(error) if optional && crd_unavailable(&error) => {
                if !said_unavailable {
                    said_unavailable = true;
                    warn!(kind = kind.as_str(), %error, "routing resource not served or not readable; going on without it, retrying with backoff");
                    ctx.metrics.source_error(SOURCE, kind.as_str());
                }
                if !synced {
                    synced = true;
                    if ctx.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                        let _ = send(Change::Synced(SOURCE)).await;
                    }
                }
                continue;
            }
            Err(error) => {
                warn!(kind = kind.as_str(), %error, "watch failed; retrying with backoff");
                ctx.metrics.source_error(SOURCE, kind.as_str());
                continue;
            }
        };
        let result = match event {
            Event::Init => {
                listing.clear();
                Ok(())
            }
            Event::InitApply(obj) => {
                let (key, change) = read(obj);
                if matches!(change, Change::Apply { .. }) {
                    known.insert(key.clone());
                }
                // Refused: what the model holds for it stays.
                listing.insert(key);
                send(change).await
            }
            Event::InitDone => {
                // Listed: should it go away again, say so again.
                said_unavailable = false;
                let stale: Vec<ObjKey> = known.difference(&listing).cloned().collect();
                for key in stale {
                    known.remove(&key);
                    if send(Change::Delete { kind, key }).await.is_err() {
                        return;
                    }
                }
                if !synced {
                    synced = true;
                    info!(
                        kind = kind.as_str(),
                        objects = known.len(),
                        "initial list done"
                    );
                    if ctx.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                        let _ = send(Change::Synced(SOURCE)).await;
                    }
                }
                Ok(())
            }
            Event::Apply(obj) => {
                let (key, change) = read(obj);
                if matches!(change, Change::Apply { .. }) {
                    known.insert(key);
                }
                send(change).await
            }
            Event::Delete(obj) => {
                let key = kind.key(obj.meta());
                known.remove(&key);
                send(Change::Delete { kind, key }).await
            }
        };
        if result.is_err() {
            return; // the model is gone: shutting down
        }
    }
}
