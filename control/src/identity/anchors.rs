//! Publishes the trust anchors as a ConfigMap (`--trust-anchors-configmap`,
//! key `ca.crt`) in every namespace annotated `weft.dev/inject: enabled`,
//! since an injected proxy mounts it from its own namespace (as istiod does
//! with `istio-ca-root-cert`). Server-side apply, field manager
//! `weft-control`: a ConfigMap of that name made by someone else has its
//! `ca.crt` and label taken over. A namespace that loses its opt-in keeps
//! its ConfigMap (running pods still mount it); nothing is ever deleted.
//!
//! Touches Namespaces (list, watch) and that one ConfigMap name (get,
//! create, patch). Errors are logged with the namespace and retried with
//! backoff; they never stop weft-control nor change readiness.

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
use std::time::Duration;
use tracing::warn;

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

/// Keeps the ConfigMap `name` in every opted-in namespace while it runs.
pub fn spawn(
    client: Client,
    name: String,
    issuer: Issuer,
    registry: &mut Registry,
) -> tokio::task::JoinHandle<()> {
    let published = Family::<ResultLabel, Counter>::default();
    registry.sub_registry_with_prefix("weft_control").register(
        "trust_anchors_published",
        "Trust anchors ConfigMaps applied, by result (applied, failed)",
        published.clone(),
    );
    tokio::spawn(run(client, name, issuer, published))
}

async fn run(
    client: Client,
    name: String,
    issuer: Issuer,
    published: Family<ResultLabel, Counter>,
) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut events = watcher::watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut taken = issuer.taken();
    let mut opted: BTreeSet<String> = BTreeSet::new();
    // Namespaces still to apply (new, changed, failed before).
    let mut due: BTreeSet<String> = BTreeSet::new();
    let mut backoff = Duration::from_millis(500);
    let mut resync = tokio::time::interval(Duration::from_secs(300));
    loop {
        let retry = tokio::time::sleep(backoff);
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Apply(ns) | Event::InitApply(ns))) => {
                    let Some(n) = ns.metadata.name.clone() else { continue };
                    if opted_in(&ns) {
                        opted.insert(n.clone());
                        due.insert(n);
                    } else {
                        opted.remove(&n);
                        due.remove(&n);
                    }
                }
                Some(Ok(Event::Delete(ns))) => {
                    if let Some(n) = &ns.metadata.name {
                        opted.remove(n);
                        due.remove(n);
                    }
                }
                Some(Ok(Event::Init | Event::InitDone)) => {}
                Some(Err(error)) => warn!(%error, "watching Namespaces for the trust anchors; retrying"),
                None => return,
            },
            changed = taken.changed() => {
                if changed.is_err() { return }
                due.extend(opted.iter().cloned());
            }
            _ = resync.tick() => due.extend(opted.iter().cloned()),
            _ = retry, if !due.is_empty() => {}
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
                Ok(_) => "applied",
                Err(error) => {
                    warn!(namespace, configmap = name, %error, "publishing the trust anchors; retrying");
                    due.insert(namespace);
                    failed = true;
                    "failed"
                }
            };
            published
                .get_or_create(&ResultLabel { result: label })
                .inc();
        }
        backoff = match failed {
            true => (backoff * 2).min(Duration::from_secs(60)),
            false => Duration::from_millis(500),
        };
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
