//! The Event a skipped or denied admission leaves on the pod's owner, so
//! that `kubectl describe deployment` (through its ReplicaSet) says why
//! its pods are not meshed.

use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::Value;

/// What the Event about `pod` (as admitted, in `namespace`) is on: its
/// controller (the first owner reference marked `controller`, else the
/// first), else the pod itself; `None` for a pod with neither an owner nor
/// a name. Published through [`crate::events::Events`].
pub fn on_owner(pod: &Value, namespace: &str) -> Option<ObjectReference> {
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array);
    let owner = owners.and_then(|o| {
        o.iter()
            .find(|r| r["controller"] == true)
            .or_else(|| o.first())
    });
    let text = |v: &Value, key: &str| v[key].as_str().map(str::to_owned);
    Some(match owner {
        Some(o) => ObjectReference {
            api_version: text(o, "apiVersion"),
            kind: text(o, "kind"),
            name: text(o, "name"),
            uid: text(o, "uid"),
            namespace: Some(namespace.to_owned()),
            ..ObjectReference::default()
        },
        None => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(text(&pod["metadata"], "name").filter(|n| !n.is_empty())?),
            namespace: Some(namespace.to_owned()),
            ..ObjectReference::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::on_owner;
    use serde_json::json;

    #[test]
    fn the_event_is_on_the_controller_else_the_pod() {
        let owned = json!({"metadata": {"generateName": "web-", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Thing", "name": "t"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "controller": true},
        ]}});
        let e = on_owner(&owned, "shop").unwrap();
        assert_eq!(
            (e.kind.as_deref(), e.name.as_deref(), e.namespace.as_deref()),
            (Some("ReplicaSet"), Some("web-1"), Some("shop"))
        );
        let named = json!({"metadata": {"name": "solo"}});
        let e = on_owner(&named, "shop").unwrap();
        assert_eq!(
            (e.kind.as_deref(), e.name.as_deref()),
            (Some("Pod"), Some("solo"))
        );
        assert!(on_owner(&json!({"metadata": {"generateName": "x-"}}), "shop").is_none());
    }
}
