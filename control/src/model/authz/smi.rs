//! SMI TrafficTarget `access.smi-spec.io/v1alpha3`, as written.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// Who (`sources`) may call the pods of a ServiceAccount (`destination`),
/// with which requests (`rules`).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[kube(
    group = "access.smi-spec.io",
    version = "v1alpha3",
    kind = "TrafficTarget",
    namespaced,
    schema = "disabled"
)]
pub struct TrafficTargetSpec {
    #[serde(default)]
    pub destination: IdentityBinding,
    #[serde(default)]
    pub sources: Vec<IdentityBinding>,
    #[serde(default)]
    pub rules: Vec<TrafficTargetRule>,
}

/// `{kind: ServiceAccount, name, namespace}`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct IdentityBinding {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `{kind: HTTPRouteGroup | TCPRoute, name, matches}`: `matches` names
/// matches of an HTTPRouteGroup (omitted: all of them).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct TrafficTargetRule {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<String>>,
}
