//! The `weft-data-plane` group: every meshed pod's proxy is ready, and
//! every pod in a namespace annotated `weft.dev/inject=enabled` is meshed,
//! or is listed with the reason it was not.
//!
//! A pod is meshed when it has a `weft-proxy` container (classic sidecar)
//! or init container (native sidecar), as discovery decides. Its proxy is
//! ready when that container's status is: the proxy's `/ready` is 200 only
//! with a valid certificate from Certify (with mTLS on), so a proxy without
//! one shows here as not ready. Pods that ended (Succeeded, Failed) are
//! left out.
//!
//! Why a pod was not injected is what the injector recorded: a Warning
//! Event `WeftNotInjected` on the pod's owner (its ReplicaSet, Job, ...;
//! else the pod), note `weft: not injected: <reason>`. Without one, the
//! reason is worked out with the injector's own function
//! ([`crate::inject::inject`]): a pod that asked and would be injected now
//! was created before the namespace was enabled, or while the webhook did
//! not answer (its `failurePolicy` is `Ignore`). Pods that opted out
//! (`weft.dev/inject: disabled`) are not listed. Skipped pods are a
//! warning: the mesh works, they are just outside it.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use std::collections::BTreeMap;

use super::kube::Kube;
use super::layout::PROXY;
use super::pods;
use super::report::{Check, Group};
use crate::inject::{self, OptIn, Outcome, Skip};

pub const GROUP: &str = "weft-data-plane";
pub const PROXIES: &str = "every meshed pod's proxy is ready";
pub const SKIPPED: &str = "every pod in an injected namespace is meshed";
pub const DESCRIPTIONS: &[&str] = &[PROXIES, SKIPPED];

/// The Event reason the injector writes on a pod it did not inject.
pub use crate::webhook::NOT_INJECTED;

/// At most this many pods are named in one check's detail.
const MAX_LISTED: usize = 20;

/// Whether `pod` carries weft's proxy.
pub fn is_meshed(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.containers.iter().any(|c| c.name == PROXY)
        || spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == PROXY && c.restart_policy.as_deref() == Some("Always"))
}

fn ended(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// `enabled` namespaces: those annotated `weft.dev/inject=enabled`.
pub fn injected(namespaces: &[Namespace]) -> Vec<String> {
    namespaces
        .iter()
        .filter(|n| {
            n.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(inject::annotations::INJECT))
                .is_some_and(|v| v == "enabled")
        })
        .filter_map(|n| n.metadata.name.clone())
        .collect()
}

/// `lines`, at most [`MAX_LISTED`], then how many more.
fn listed(mut lines: Vec<String>) -> String {
    let more = lines.len().saturating_sub(MAX_LISTED);
    lines.truncate(MAX_LISTED);
    if more > 0 {
        lines.push(format!("and {more} more"));
    }
    lines.join("\n")
}

pub async fn check(kube: &Kube, namespaces: &[Namespace]) -> Group {
    let mut g = Group::new(GROUP);
    let all = match kube.list_all::<Pod>("").await {
        Ok(p) => p,
        Err(e) => {
            g.push(Check::error(
                PROXIES,
                e.to_string(),
                "may you list pods in every namespace?",
            ));
            g.push(Check::skipped(SKIPPED, "the pods could not be listed"));
            return g;
        }
    };
    g.push(proxies(&all));
    let enabled = injected(namespaces);
    let mut events = BTreeMap::new();
    for ns in &enabled {
        let unmeshed = all
            .iter()
            .any(|p| namespace(p) == ns && !is_meshed(p) && !ended(p));
        if unmeshed {
            // Without Events the reasons are worked out instead.
            let found = kube.list_in::<Event>(ns, "").await.unwrap_or_default();
            events.insert(ns.clone(), found);
        }
    }
    g.push(skipped(&all, namespaces, &events));
    g
}

/// Whether every meshed, running pod's proxy is ready.
pub fn proxies(pods: &[Pod]) -> Check {
    let meshed: Vec<&Pod> = pods.iter().filter(|p| is_meshed(p) && !ended(p)).collect();
    let not_ready: Vec<String> = meshed
        .iter()
        .filter_map(|p| {
            pods::not_ready(p, Some(PROXY))
                .map(|why| format!("{}/{}: {why}", namespace(p), pods::name(p)))
        })
        .collect();
    if not_ready.is_empty() {
        return Check::success(PROXIES, Some(format!("{} meshed pod(s)", meshed.len())));
    }
    Check::error(
        PROXIES,
        format!(
            "{} of {} meshed pod(s) not ready:\n{}",
            not_ready.len(),
            meshed.len(),
            listed(not_ready)
        ),
        "kubectl -n NAMESPACE logs POD -c weft-proxy (no certificate: is weft-control ready, is the trust anchors ConfigMap there?)",
    )
}

/// Every pod of an injected namespace meshed; else each one with its
/// reason (`events`: the Events of those namespaces).
pub fn skipped(
    pods: &[Pod],
    namespaces: &[Namespace],
    events: &BTreeMap<String, Vec<Event>>,
) -> Check {
    let enabled = injected(namespaces);
    let ns_annotations = |name: &str| -> BTreeMap<String, String> {
        namespaces
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .and_then(|n| n.metadata.annotations.clone())
            .unwrap_or_default()
    };
    let mut lines = Vec::new();
    for pod in pods
        .iter()
        .filter(|p| enabled.iter().any(|n| n == namespace(p)))
    {
        if is_meshed(pod) || ended(pod) {
            continue;
        }
        let ns = namespace(pod);
        let recorded = events.get(ns).and_then(|e| recorded_reason(pod, e));
        let reason = match recorded {
            Some(note) => note,
            None => match derived_reason(pod, &ns_annotations(ns)) {
                Some(r) => r,
                None => continue,
            },
        };
        lines.push(format!("{ns}/{}: {reason}", pods::name(pod)));
    }
    if lines.is_empty() {
        let count = enabled.len();
        return Check::success(SKIPPED, Some(format!("{count} injected namespace(s)")));
    }
    Check::warning(
        SKIPPED,
        format!("{} pod(s) without a proxy:\n{}", lines.len(), listed(lines)),
        "fix what the reason says, then restart the workload (kubectl -n NAMESPACE rollout restart deploy/NAME); weft.dev/inject: disabled on a pod opts it out",
    )
}

/// The injector's reason for `pod`, from the latest `WeftNotInjected`
/// Event on its owner (or itself).
fn recorded_reason(pod: &Pod, events: &[Event]) -> Option<String> {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.iter().find(|r| r.controller == Some(true)).or(o.first()));
    let (kind, name) = match owner {
        Some(o) => (o.kind.as_str(), o.name.as_str()),
        None => ("Pod", pods::name(pod)),
    };
    events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(NOT_INJECTED))
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
        })
        .max_by_key(|e| {
            e.event_time.as_ref().map(|t| t.0).or(e
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0))
        })
        .and_then(|e| e.note.clone())
        .map(|n| n.strip_prefix("weft: ").unwrap_or(&n).to_owned())
}

/// Why the injector would leave `pod` alone today; `None` for a pod that
/// opted out.
fn derived_reason(pod: &Pod, ns_annotations: &BTreeMap<String, String>) -> Option<String> {
    let value = serde_json::to_value(pod).ok()?;
    let settings = inject::Settings::default();
    match inject::inject(&value, ns_annotations, &settings, OptIn::Required) {
        Ok(Outcome::Skipped(Skip::Disabled { .. })) => None,
        Ok(Outcome::Skipped(skip)) => Some(format!("not injected: {skip}")),
        Ok(Outcome::Injected(_)) => Some(
            "not injected at admission: created before weft.dev/inject was enabled, or while the webhook did not answer (failurePolicy: Ignore)".into(),
        ),
        Err(denied) => Some(format!("would be denied: {denied}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::Outcome as Result_;
    use serde_json::json;

    fn pod(ns: &str, name: &str, spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
            "status": {"phase": "Running"},
        }))
        .unwrap()
    }

    fn shop() -> Vec<Namespace> {
        vec![serde_json::from_value(json!({"metadata": {"name": "shop",
            "annotations": {"weft.dev/inject": "enabled"}}}))
        .unwrap()]
    }

    #[test]
    fn meshed_means_a_proxy_container_or_native_sidecar() {
        let classic = pod(
            "a",
            "c",
            json!({"containers": [{"name": "app"}, {"name": "weft-proxy"}]}),
        );
        let native = pod(
            "a",
            "n",
            json!({"containers": [{"name": "app"}],
            "initContainers": [{"name": "weft-proxy", "restartPolicy": "Always"}]}),
        );
        let plain_init = pod(
            "a",
            "i",
            json!({"containers": [{"name": "app"}],
            "initContainers": [{"name": "weft-proxy"}]}),
        );
        assert!(is_meshed(&classic) && is_meshed(&native) && !is_meshed(&plain_init));
    }

    #[test]
    fn skipped_pods_are_listed_with_a_reason_opted_out_ones_are_not() {
        let host = pod(
            "shop",
            "host",
            json!({"hostNetwork": true, "containers": [{"name": "app"}]}),
        );
        let late = pod("shop", "late", json!({"containers": [{"name": "app"}]}));
        let mut out = pod("shop", "out", json!({"containers": [{"name": "app"}]}));
        out.metadata.annotations =
            Some([("weft.dev/inject".to_owned(), "disabled".to_owned())].into());
        let elsewhere = pod("other", "x", json!({"containers": [{"name": "app"}]}));
        let c = skipped(&[host, late, out, elsewhere], &shop(), &BTreeMap::new());
        assert_eq!(c.result, Result_::Warning);
        let detail = c.detail.unwrap();
        assert!(
            detail.starts_with("2 pod(s) without a proxy:\n"),
            "{detail}"
        );
        assert!(
            detail.contains("shop/host: not injected: the pod uses hostNetwork"),
            "{detail}"
        );
        assert!(
            detail.contains("shop/late: not injected at admission"),
            "{detail}"
        );
        assert!(
            !detail.contains("shop/out") && !detail.contains("other/x"),
            "{detail}"
        );
    }
}
