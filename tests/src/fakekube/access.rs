//! `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: "may I do
//! this?", answered from the rules the test granted ([`FakeKube::allow`]),
//! as the API server answers from the caller's RBAC.
//!
//! A rule names a verb, an API group, a resource and optionally a
//! namespace, each `*` for any; a review is allowed when one rule covers its
//! `spec.resourceAttributes` (a rule without a namespace covers every
//! namespace and cluster-scoped resources, as a ClusterRole's binding does;
//! one with a namespace covers only that namespace, as a RoleBinding does).
//! No rule: nothing is allowed. A review asking about a non-resource URL is
//! denied. The answer is `201 Created` with `status.allowed` and, when
//! denied, `status.reason`.
//!
//! [`FakeKube::allow`]: super::FakeKube::allow

use serde_json::{json, Value};

use super::server::{json_response, status_response, Response};
use super::SELF_SUBJECT_ACCESS_REVIEWS;

/// What a test grants: see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub verb: String,
    /// The API group, `""` for the core group.
    pub group: String,
    /// The resource's plural (`deployments`).
    pub resource: String,
    /// `None`: every namespace and the cluster scope.
    pub namespace: Option<String>,
}

impl Access {
    /// `verb` on `resource` of `group` everywhere (`*` for any).
    pub fn everywhere(verb: &str, group: &str, resource: &str) -> Self {
        Access {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: None,
        }
    }

    /// `verb` on `resource` of `group` in `namespace` only.
    pub fn in_namespace(verb: &str, group: &str, resource: &str, namespace: &str) -> Self {
        Access {
            namespace: Some(namespace.to_owned()),
            ..Self::everywhere(verb, group, resource)
        }
    }

    /// Everything, as cluster-admin.
    pub fn all() -> Self {
        Self::everywhere("*", "*", "*")
    }

    fn covers(&self, verb: &str, group: &str, resource: &str, namespace: &str) -> bool {
        let fits = |rule: &str, asked: &str| rule == "*" || rule == asked;
        fits(&self.verb, verb)
            && fits(&self.group, group)
            && fits(&self.resource, resource)
            && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }
}

/// The discovery entry of `selfsubjectaccessreviews`.
pub(crate) fn discovery_entry() -> Value {
    json!({
        "name": SELF_SUBJECT_ACCESS_REVIEWS.plural,
        "singularName": "",
        "namespaced": false,
        "kind": SELF_SUBJECT_ACCESS_REVIEWS.kind,
        "verbs": ["create"],
    })
}

/// Answers a POSTed SelfSubjectAccessReview (`body`, JSON).
pub(crate) fn review(granted: &[Access], body: &[u8]) -> Response {
    let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
        return status_response(
            400,
            "BadRequest",
            "the body is not a JSON SelfSubjectAccessReview",
        );
    };
    let r = &SELF_SUBJECT_ACCESS_REVIEWS;
    if review["kind"] != r.kind.as_ref() || review["apiVersion"] != r.api_version() {
        let msg = format!(
            "expected a {} of {}, got kind {} apiVersion {}",
            r.kind,
            r.api_version(),
            review["kind"],
            review["apiVersion"]
        );
        return status_response(400, "BadRequest", &msg);
    }
    let attrs = &review["spec"]["resourceAttributes"];
    let text = |key: &str| attrs[key].as_str().unwrap_or("");
    let status = if attrs.is_object() {
        let (verb, group, resource, ns) = (
            text("verb"),
            text("group"),
            text("resource"),
            text("namespace"),
        );
        if verb.is_empty() || resource.is_empty() {
            return status_response(
                422,
                "Invalid",
                "SelfSubjectAccessReview: spec.resourceAttributes needs a verb and a resource",
            );
        }
        if granted.iter().any(|a| a.covers(verb, group, resource, ns)) {
            json!({"allowed": true, "reason": "fakekube: granted by the test"})
        } else {
            json!({"allowed": false, "reason": "fakekube: no rule the test granted covers it"})
        }
    } else {
        json!({"allowed": false, "reason": "fakekube: non-resource URLs are not granted"})
    };
    review["status"] = status;
    review["metadata"] = json!({"creationTimestamp": null});
    json_response(201, &review)
}

#[cfg(test)]
mod tests {
    use super::Access;

    #[test]
    fn rules_cover_what_they_name() {
        let deploy = Access::in_namespace("create", "apps", "deployments", "weft-system");
        assert!(deploy.covers("create", "apps", "deployments", "weft-system"));
        assert!(!deploy.covers("create", "apps", "deployments", "other"));
        assert!(!deploy.covers("create", "apps", "deployments", ""));
        assert!(!deploy.covers("delete", "apps", "deployments", "weft-system"));
        let crds = Access::everywhere("create", "apiextensions.k8s.io", "*");
        assert!(crds.covers(
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            ""
        ));
        assert!(!crds.covers("create", "", "customresourcedefinitions", ""));
        assert!(Access::all().covers("patch", "", "pods", "x"));
    }
}
