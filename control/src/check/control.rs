//! The `weft-control` group: the SMI CRDs, the Deployment, and every one
//! of its replicas ready (the Deployment's status, and each of its pods'
//! Ready condition, so the one that is not is named with its reason).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;

use super::kube::Kube;
use super::layout::{CONTROL, CONTROL_SELECTOR};
use super::report::{Check, Group};
use super::{crds, pods};

pub const GROUP: &str = "weft-control";
pub const DEPLOYMENT: &str = "the weft-control Deployment exists";
pub const REPLICAS: &str = "every weft-control replica is ready";
pub const DESCRIPTIONS: &[&str] = &[crds::INSTALLED, crds::SERVED, DEPLOYMENT, REPLICAS];

/// The group, and the Deployment when there is one.
pub async fn check(kube: &Kube, namespace: &str) -> (Group, Option<Deployment>) {
    let mut g = Group::new(GROUP);
    match crds::installed(kube).await {
        Ok(ok) => {
            g.push(ok);
            g.push(crds::served(kube).await);
        }
        Err(failed) => {
            g.push(failed);
            g.push(Check::skipped(crds::SERVED, "the CRDs are not installed"));
        }
    }
    let deploy = match kube.get::<Deployment>(namespace, CONTROL).await {
        Ok(Some(d)) => {
            g.push(Check::success(
                DEPLOYMENT,
                Some(format!("{namespace}/{CONTROL}")),
            ));
            d
        }
        Ok(None) => {
            g.push(Check::error(
                DEPLOYMENT,
                format!("no Deployment {CONTROL} in {namespace}"),
                &format!("install weft (helm install weft charts/weft -n {namespace} --create-namespace ...), or name its namespace with --namespace"),
            ));
            g.push(Check::skipped(
                REPLICAS,
                "there is no weft-control Deployment",
            ));
            return (g, None);
        }
        Err(e) => {
            g.push(Check::error(
                DEPLOYMENT,
                e.to_string(),
                "may you read Deployments there?",
            ));
            g.push(Check::skipped(REPLICAS, "the Deployment could not be read"));
            return (g, None);
        }
    };
    let check = match kube.list_in::<Pod>(namespace, CONTROL_SELECTOR).await {
        Ok(pods) => replicas(&deploy, &pods, namespace),
        Err(e) => Check::error(REPLICAS, e.to_string(), "may you list pods there?"),
    };
    g.push(check);
    (g, Some(deploy))
}

/// Whether every replica `deploy` wants is ready, from its status and its
/// `pods`.
pub fn replicas(deploy: &Deployment, pods: &[Pod], namespace: &str) -> Check {
    let wanted = deploy.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = deploy.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let not_ready: Vec<String> = live
        .iter()
        .filter_map(|p| {
            pods::not_ready(p, None).map(|why| format!("{}/{}: {why}", namespace, pods::name(p)))
        })
        .collect();
    let hint = format!(
        "kubectl -n {namespace} describe pods -l {CONTROL_SELECTOR}; kubectl -n {namespace} logs deploy/{CONTROL}"
    );
    if wanted == 0 {
        return Check::error(
            REPLICAS,
            "the Deployment is scaled to 0 replicas: nothing serves discovery, Certify or the webhook".into(),
            &format!("kubectl -n {namespace} scale deploy/{CONTROL} --replicas=2"),
        );
    }
    if ready >= wanted && updated >= wanted && not_ready.is_empty() {
        return Check::success(REPLICAS, Some(format!("{ready} of {wanted} ready")));
    }
    let mut lines = vec![format!(
        "{ready} of {wanted} ready ({updated} up to date, {} pods)",
        live.len()
    )];
    lines.extend(not_ready);
    Check::error(REPLICAS, lines.join("\n"), &hint)
}
