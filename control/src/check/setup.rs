//! The `pre-kubernetes-setup` group of `weft check --pre`: the caller may
//! create what the chart installs (SelfSubjectAccessReviews, one per kind:
//! what `helm install` needs, not the get/patch/delete an upgrade also
//! needs), and no SMI CRD is installed at versions other than weft's (Helm
//! neither upgrades nor replaces CRDs in `crds/`, so an old one would stay).

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::Api;

use super::crds::SMI;
use super::kube::Kube;
use super::report::{Check, Group};

pub const GROUP: &str = "pre-kubernetes-setup";
pub const CLUSTER: &str = "can create the cluster-wide resources";
pub const NAMESPACED: &str = "can create the control plane's resources";
pub const CRDS: &str = "no SMI CRDs of other versions are installed";

/// Cluster-scoped kinds the chart creates: (group, plural).
const CLUSTER_KINDS: &[(&str, &str)] = &[
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
    ),
];

/// Kinds the chart creates in the control plane's namespace.
const NAMESPACED_KINDS: &[(&str, &str)] = &[
    ("apps", "deployments"),
    ("", "services"),
    ("", "serviceaccounts"),
    ("", "secrets"),
    ("", "configmaps"),
    ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("policy", "poddisruptionbudgets"),
];

pub async fn check(kube: &Kube, namespace: &str) -> Group {
    let mut g = Group::new(GROUP);
    let mut cluster: Vec<(&str, &str)> = CLUSTER_KINDS.to_vec();
    // `helm install --create-namespace` creates it when it is not there.
    let exists = kube.get_cluster::<Namespace>(namespace).await;
    if matches!(exists, Ok(None)) {
        cluster.push(("", "namespaces"));
    }
    g.push(may_create(kube, CLUSTER, None, &cluster).await);
    g.push(may_create(kube, NAMESPACED, Some(namespace), NAMESPACED_KINDS).await);
    g.push(leftover_crds(kube).await);
    g
}

/// One check: `create` on each of `kinds` (in `namespace`).
async fn may_create(
    kube: &Kube,
    description: &str,
    namespace: Option<&str>,
    kinds: &[(&str, &str)],
) -> Check {
    let api = Api::<SelfSubjectAccessReview>::all(kube.client.clone());
    let mut denied = Vec::new();
    for (group, resource) in kinds {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some("create".into()),
                    group: Some((*group).into()),
                    resource: Some((*resource).into()),
                    namespace: namespace.map(str::to_owned),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let kind = if group.is_empty() {
            (*resource).to_owned()
        } else {
            format!("{resource}.{group}")
        };
        let what = format!("SelfSubjectAccessReview of create {kind}");
        match kube
            .call(&what, api.create(&PostParams::default(), &review))
            .await
        {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(r) => {
                let reason = r.status.and_then(|s| s.reason).unwrap_or_default();
                denied.push(if reason.is_empty() {
                    format!("create {kind}: not allowed")
                } else {
                    format!("create {kind}: not allowed ({reason})")
                });
            }
            Err(e) => denied.push(e.to_string()),
        }
    }
    let scope = match namespace {
        Some(ns) => format!("in {ns}: "),
        None => String::new(),
    };
    let names: Vec<&str> = kinds.iter().map(|(_, r)| *r).collect();
    if denied.is_empty() {
        Check::success(description, Some(format!("{scope}{}", names.join(", "))))
    } else {
        Check::error(
            description,
            denied.join("\n"),
            "install as a user with these permissions (cluster-admin, or a role granting them)",
        )
    }
}

/// The SMI CRDs already there hold the versions weft reads.
async fn leftover_crds(kube: &Kube) -> Check {
    let mut wrong = Vec::new();
    let mut present = Vec::new();
    for crd in SMI {
        match kube.get_cluster::<CustomResourceDefinition>(crd.name).await {
            Ok(None) => {}
            Ok(Some(found)) => match crd.versions_problem(&found) {
                None => present.push(crd.name),
                Some(p) => wrong.push(p),
            },
            Err(e) => wrong.push(e.to_string()),
        }
    }
    if !wrong.is_empty() {
        return Check::error(
            CRDS,
            wrong.join("\n"),
            "Helm does not upgrade CRDs: kubectl apply -f charts/weft/crds/ (or delete the old CRD, which deletes its objects)",
        );
    }
    Check::success(
        CRDS,
        (!present.is_empty()).then(|| {
            format!(
                "already installed at weft's versions: {}",
                present.join(", ")
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kinds_are_those_the_chart_renders() {
        let chart = concat!(
            include_str!("../../../charts/weft/templates/rbac.yaml"),
            include_str!("../../../charts/weft/templates/deployment.yaml"),
            include_str!("../../../charts/weft/templates/service.yaml"),
            include_str!("../../../charts/weft/templates/serviceaccount.yaml"),
            include_str!("../../../charts/weft/templates/identity.yaml"),
            include_str!("../../../charts/weft/templates/poddisruptionbudget.yaml"),
            include_str!("../../../charts/weft/templates/webhook.yaml"),
        );
        for kind in [
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
            "ServiceAccount",
            "Secret",
            "ConfigMap",
            "PodDisruptionBudget",
            "MutatingWebhookConfiguration",
        ] {
            assert!(chart.contains(&format!("kind: {kind}\n")), "{kind}");
            let plural = format!("{}s", kind.to_lowercase());
            assert!(
                CLUSTER_KINDS
                    .iter()
                    .chain(NAMESPACED_KINDS)
                    .any(|(_, r)| *r == plural),
                "{plural} is checked"
            );
        }
    }
}
