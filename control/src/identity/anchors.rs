//! Publishes the trust anchors as a ConfigMap (`--trust-anchors-configmap`,
//! key `ca.crt`) where injected proxies mount it from, their own namespace
//! (as istiod does with `istio-ca-root-cert`):
//!
//! - in every namespace annotated `weft.dev/inject: enabled`, so that it is
//!   there before the first pod;
//! - in the namespace of every pod the webhook injects ([`Publisher::ensure`]),
//!   for pods that opt in one by one. The admission is not held up: until the
//!   ConfigMap exists, the kubelet retries the pod's volume mount.
//!
//! Kept up to date when the anchors change (the issuer Secret's `ca.crt`),
//! and re-applied every 5 minutes. Server-side apply, field manager
//! `weft-control`: a ConfigMap of that name made by someone else has its
//! `ca.crt` and label taken over. A namespace that loses its opt-in keeps
//! its ConfigMap (running pods still mount it); nothing is ever deleted.
//!
//! Touches Namespaces (list, watch) and ConfigMaps (patch: a server-side
//! apply creates). Errors are logged with the namespace and retried with
//! backoff (0.5 s doubling to 60 s); they never stop weft-control nor change
//! readiness.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family};
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::issuer::Issuer;
use crate::inject::annotations::INJECT;

/// The field manager of the applied ConfigMaps.
pub const MANAGER: &str = "weft-control";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Whether `ns` opts in to injection (the namespace rule of the injector).
pub fn opted_in(ns: &Namespace) -> bool {
    ns.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INJECT))
        .map(String::as_str)
        == Some("enabled")
}

/// The ConfigMap `name` in `namespace` holding `anchors_pem`.
pub fn desired(name: &str, namespace: &str, anchors_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                MANAGER.to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "ca.crt".to_owned(),
            anchors_pem.to_owned(),
        )])),
        ..Default::default()
    }
}

/// Asks for the ConfigMap in namespaces where pods are injected; cheap to
/// clone. Without a publisher (no cluster, or `--publish-trust-anchors=false`)
/// nothing is asked.
#[derive(Clone, Debug, Default)]
pub struct Publisher {
    shared: Arc<Asked>,
}

#[derive(Debug, Default)]
struct Asked {
    /// Namespaces asked for; one entry per namespace, forgotten when the
    /// namespace is deleted, so bounded by the cluster's namespaces.
    namespaces: Mutex<BTreeSet<String>>,
    notify: Notify,
}

impl Publisher {
    /// Asks for the ConfigMap in `namespace` (a pod there was injected);
    /// returns at once, the publishing task applies it.
    pub fn ensure(&self, namespace: &str) {
        let mut asked = self.shared.namespaces.lock().expect("asked lock");
        if !asked.contains(namespace) {
            asked.insert(namespace.to_owned());
            drop(asked);
            self.shared.notify.notify_one();
        }
    }

    fn asked(&self) -> BTreeSet<String> {
        self.shared.namespaces.lock().expect("asked lock").clone()
    }

    fn forget(&self, namespace: &str) {
        self.shared
            .namespaces
            .lock()
            .expect("asked lock")
            .remove(namespace);
    }
}

/// Keeps the ConfigMap `name` in every opted-in namespace, and in those that
/// `publisher` asks for, while it runs.
pub fn spawn(
    client: Client,
    name: String,
    issuer: Issuer,
    publisher: Publisher,
    registry: &mut Registry,
) -> tokio::task::JoinHandle<()> {
    let published = Family::<ResultLabel, Counter>::default();
    registry.sub_registry_with_prefix("weft_control").register(
        "trust_anchors_published",
        "Trust anchors ConfigMaps applied, by result (applied, failed)",
        published.clone(),
    );
    tokio::spawn(run(client, name, issuer, publisher, published))
}

async fn run(
    client: Client,
    name: String,
    issuer: Issuer,
    publisher: Publisher,
    published: Family<ResultLabel, Counter>,
) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut events = watcher::watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut taken = issuer.taken();
    // Namespaces annotated for injection.
    let mut opted: BTreeSet<String> = BTreeSet::new();
    // Namespaces the webhook asked for (pods injected there).
    let mut asked: BTreeSet<String> = BTreeSet::new();
    // Namespaces to apply now (new, or the anchors changed).
    let mut due: BTreeSet<String> = BTreeSet::new();
    // Namespaces whose apply failed, retried after `backoff`.
    let mut retrying: BTreeSet<String> = BTreeSet::new();
    let mut backoff = Duration::from_millis(500);
    let mut resync = tokio::time::interval(Duration::from_secs(300));
    let retry = tokio::time::sleep(backoff);
    tokio::pin!(retry);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Apply(ns) | Event::InitApply(ns))) => {
                    let Some(n) = ns.metadata.name.clone() else { continue };
                    if opted_in(&ns) {
                        if opted.insert(n.clone()) {
                            due.insert(n);
                        }
                    } else {
                        opted.remove(&n);
                        if !asked.contains(&n) {
                            due.remove(&n);
                            retrying.remove(&n);
                        }
                    }
                }
                Some(Ok(Event::Delete(ns))) => {
                    if let Some(n) = &ns.metadata.name {
                        opted.remove(n);
                        asked.remove(n);
                        publisher.forget(n);
                        due.remove(n);
                        retrying.remove(n);
                    }
                }
                Some(Ok(Event::Init | Event::InitDone)) => {}
                Some(Err(error)) => warn!(%error, "watching Namespaces for the trust anchors; retrying"),
                None => return,
            },
            () = publisher.shared.notify.notified() => {
                for n in publisher.asked() {
                    if asked.insert(n.clone()) && !opted.contains(&n) {
                        due.insert(n);
                    }
                }
            }
            changed = taken.changed() => {
                if changed.is_err() { return }
                due.extend(opted.union(&asked).cloned());
            }
            _ = resync.tick() => due.extend(opted.union(&asked).cloned()),
            () = &mut retry, if !retrying.is_empty() => {
                due.append(&mut retrying);
            }
        }
        let Some(authority) = issuer.current() else {
            continue;
        };
        let mut failed = false;
        for namespace in std::mem::take(&mut due) {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
            let cm = desired(&name, &namespace, &authority.anchors_pem);
            let result = api
                .patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&cm),
                )
                .await;
            let label = match result {
                Ok(_) => {
                    debug!(namespace, configmap = name, "trust anchors published");
                    "applied"
                }
                Err(error) => {
                    warn!(namespace, configmap = name, %error, "publishing the trust anchors; retrying");
                    retrying.insert(namespace);
                    failed = true;
                    "failed"
                }
            };
            published
                .get_or_create(&ResultLabel { result: label })
                .inc();
        }
        if failed {
            retry.as_mut().reset(tokio::time::Instant::now() + backoff);
            backoff = (backoff * 2).min(Duration::from_secs(60));
        } else if retrying.is_empty() {
            backoff = Duration::from_millis(500);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(annotation: Option<&str>) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some("shop".into()),
                annotations: annotation
                    .map(|v| BTreeMap::from([(INJECT.to_owned(), v.to_owned())])),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_enabled_opts_in() {
        assert!(opted_in(&ns(Some("enabled"))));
        assert!(!opted_in(&ns(Some("disabled"))));
        assert!(!opted_in(&ns(None)));
    }

    #[test]
    fn desired_holds_the_anchors_and_the_label() {
        let cm = desired("weft-trust-anchors", "shop", "PEM");
        assert_eq!(cm.data.unwrap()["ca.crt"], "PEM");
        assert_eq!(cm.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(
            cm.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
            "weft-control"
        );
    }
}
