//! Which kinds of object the fake API server serves: a resource is named by
//! its API group, version and plural, as in its URL, plus its kind and
//! whether its objects live in a namespace. Nothing here knows a schema:
//! objects are plain JSON.

use std::borrow::Cow;
use std::fmt;

/// One kind of object the server lists and watches, e.g. core/v1 `services`.
///
/// The four the control plane watches are constants ([`SERVICES`], [`PODS`],
/// [`NAMESPACES`], [`ENDPOINT_SLICES`]), so are [`SECRETS`] and [`CONFIG_MAPS`] (served too) and
/// [`TOKEN_REVIEWS`] (POST only); a custom resource is made with
/// [`Resource::new`] and served once registered or applied to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resource {
    /// API group; empty for the core group (`/api/v1`).
    pub group: Cow<'static, str>,
    /// API version, e.g. `v1` or `v1alpha4`.
    pub version: Cow<'static, str>,
    /// Kind of one object, e.g. `Service`.
    pub kind: Cow<'static, str>,
    /// Plural in URLs, e.g. `services`.
    pub plural: Cow<'static, str>,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

const fn builtin(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Resource {
    Resource {
        group: Cow::Borrowed(group),
        version: Cow::Borrowed("v1"),
        kind: Cow::Borrowed(kind),
        plural: Cow::Borrowed(plural),
        namespaced,
    }
}

/// core/v1 `services`.
pub const SERVICES: Resource = builtin("", "Service", "services", true);
/// core/v1 `pods`.
pub const PODS: Resource = builtin("", "Pod", "pods", true);
/// core/v1 `namespaces` (cluster-scoped).
pub const NAMESPACES: Resource = builtin("", "Namespace", "namespaces", false);
/// discovery.k8s.io/v1 `endpointslices`.
pub const ENDPOINT_SLICES: Resource =
    builtin("discovery.k8s.io", "EndpointSlice", "endpointslices", true);
/// events.k8s.io/v1 `events`, what weft-control writes (kube-runtime's
/// `Recorder`); served once registered or applied to.
pub const EVENTS: Resource = builtin("events.k8s.io", "Event", "events", true);
/// core/v1 `secrets`.
pub const SECRETS: Resource = builtin("", "Secret", "secrets", true);
/// core/v1 `configmaps`.
pub const CONFIG_MAPS: Resource = builtin("", "ConfigMap", "configmaps", true);
/// authentication.k8s.io/v1 `tokenreviews`: not stored, only created
/// (POST), answered from the tokens the test added (`FakeKube::add_token`).
pub const TOKEN_REVIEWS: Resource = builtin(
    "authentication.k8s.io",
    "TokenReview",
    "tokenreviews",
    false,
);

/// authorization.k8s.io/v1 `selfsubjectaccessreviews`: not stored, only
/// created (POST), answered from the rules the test granted
/// (`FakeKube::allow`).
pub const SELF_SUBJECT_ACCESS_REVIEWS: Resource = builtin(
    "authorization.k8s.io",
    "SelfSubjectAccessReview",
    "selfsubjectaccessreviews",
    false,
);
/// apps/v1 `deployments`; served once registered or applied to.
pub const DEPLOYMENTS: Resource = builtin("apps", "Deployment", "deployments", true);
/// core/v1 `nodes` (cluster-scoped); served once registered or applied to.
pub const NODES: Resource = builtin("", "Node", "nodes", false);
/// apiextensions.k8s.io/v1 `customresourcedefinitions` (cluster-scoped):
/// stored as objects only; serving the resource a CRD defines is the
/// test's `FakeKube::register`.
pub const CUSTOM_RESOURCE_DEFINITIONS: Resource = builtin(
    "apiextensions.k8s.io",
    "CustomResourceDefinition",
    "customresourcedefinitions",
    false,
);

/// admissionregistration.k8s.io/v1 `mutatingwebhookconfigurations`
/// (cluster-scoped): consulted on every create (see `admission`).
pub const MUTATING_WEBHOOKS: Resource = Resource {
    group: Cow::Borrowed("admissionregistration.k8s.io"),
    version: Cow::Borrowed("v1"),
    kind: Cow::Borrowed("MutatingWebhookConfiguration"),
    plural: Cow::Borrowed("mutatingwebhookconfigurations"),
    namespaced: false,
};

const fn custom(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> Resource {
    Resource {
        group: Cow::Borrowed(group),
        version: Cow::Borrowed(version),
        kind: Cow::Borrowed(kind),
        plural: Cow::Borrowed(plural),
        namespaced: true,
    }
}

/// The routing CRDs the control plane watches (served once applied to,
/// as if installed; before that, 404 as from a cluster without them).
/// split.smi-spec.io/v1alpha4 `trafficsplits`.
pub const TRAFFIC_SPLITS: Resource = custom(
    "split.smi-spec.io",
    "v1alpha4",
    "TrafficSplit",
    "trafficsplits",
);
/// specs.smi-spec.io/v1alpha4 `httproutegroups`.
pub const HTTP_ROUTE_GROUPS: Resource = custom(
    "specs.smi-spec.io",
    "v1alpha4",
    "HTTPRouteGroup",
    "httproutegroups",
);
/// specs.smi-spec.io/v1alpha4 `tcproutes`.
pub const TCP_ROUTES: Resource = custom("specs.smi-spec.io", "v1alpha4", "TCPRoute", "tcproutes");
/// gateway.networking.k8s.io/v1 `httproutes`.
pub const HTTP_ROUTES: Resource =
    custom("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes");
/// gateway.networking.k8s.io/v1 `grpcroutes`.
pub const GRPC_ROUTES: Resource =
    custom("gateway.networking.k8s.io", "v1", "GRPCRoute", "grpcroutes");

impl Resource {
    /// A resource of any group, e.g. a CRD:
    /// `Resource::new("split.smi-spec.io", "v1alpha4", "TrafficSplit", "trafficsplits", true)`.
    pub fn new(
        group: impl Into<String>,
        version: impl Into<String>,
        kind: impl Into<String>,
        plural: impl Into<String>,
        namespaced: bool,
    ) -> Self {
        Resource {
            group: Cow::Owned(group.into()),
            version: Cow::Owned(version.into()),
            kind: Cow::Owned(kind.into()),
            plural: Cow::Owned(plural.into()),
            namespaced,
        }
    }

    /// `apiVersion` of its objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The URL of its collection, cluster-wide (`None`) or in a namespace.
    pub fn path(&self, namespace: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) => format!("{base}/namespaces/{ns}/{}", self.plural),
            None => format!("{base}/{}", self.plural),
        }
    }

    /// Whether this is the resource a URL names by group, version and plural.
    pub(crate) fn is(&self, group: &str, version: &str, plural: &str) -> bool {
        self.group == group && self.version == version && self.plural == plural
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}/{}", self.version, self.plural)
        } else {
            write!(f, "{}/{}/{}", self.group, self.version, self.plural)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_api_versions() {
        assert_eq!(SERVICES.path(None), "/api/v1/services");
        assert_eq!(SERVICES.path(Some("ns")), "/api/v1/namespaces/ns/services");
        assert_eq!(
            ENDPOINT_SLICES.path(Some("ns")),
            "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices"
        );
        assert_eq!(ENDPOINT_SLICES.api_version(), "discovery.k8s.io/v1");
        assert_eq!(NAMESPACES.api_version(), "v1");
        let split = Resource::new(
            "split.smi-spec.io",
            "v1alpha4",
            "TrafficSplit",
            "trafficsplits",
            true,
        );
        assert_eq!(
            split.path(Some("a")),
            "/apis/split.smi-spec.io/v1alpha4/namespaces/a/trafficsplits"
        );
    }
}
