//! The Event a skipped or denied admission leaves on the pod's owner, so
//! that `kubectl describe deployment` (through its ReplicaSet) says why
//! its pods are not meshed.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use serde_json::Value;

/// The Event about `pod` (as admitted, in `namespace`): on its controller
/// (the first owner reference marked `controller`, else the first), else
/// on the pod itself; `None` for a pod with neither an owner nor a name.
pub fn on_owner(pod: &Value, namespace: &str, reason: &str, message: &str) -> Option<Event> {
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array);
    let owner = owners.and_then(|o| {
        o.iter()
            .find(|r| r["controller"] == true)
            .or_else(|| o.first())
    });
    let text = |v: &Value, key: &str| v[key].as_str().map(str::to_owned);
    let involved = match owner {
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
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    Some(Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", involved.name.clone().unwrap_or_default())),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: involved,
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("weft-control".into()),
            host: None,
        }),
        reporting_component: Some("weft.dev/weft-control".into()),
        reporting_instance: Some(
            std::env::var("HOSTNAME").unwrap_or_else(|_| "weft-control".into()),
        ),
        action: Some("Admit".into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        ..Event::default()
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
        let e = on_owner(&owned, "shop", "R", "m").unwrap();
        assert_eq!(e.involved_object.kind.as_deref(), Some("ReplicaSet"));
        assert_eq!(e.metadata.generate_name.as_deref(), Some("web-1."));
        let named = json!({"metadata": {"name": "solo"}});
        let e = on_owner(&named, "shop", "R", "m").unwrap();
        assert_eq!(
            (
                e.involved_object.kind.as_deref(),
                e.involved_object.name.as_deref()
            ),
            (Some("Pod"), Some("solo"))
        );
        assert!(on_owner(
            &json!({"metadata": {"generateName": "x-"}}),
            "shop",
            "R",
            "m"
        )
        .is_none());
    }
}
