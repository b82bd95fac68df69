//! Writes from clients, as the API server takes them: `POST` creates an
//! object in a collection (a name from `generateName` when it has none;
//! 409 when the name is taken) after the mutating admission webhooks
//! (`admission`) have seen it; `PATCH` changes a stored object with a JSON
//! patch (`application/json-patch+json`, `test` operations included: a
//! failed test is 422), a JSON merge patch
//! (`application/merge-patch+json`) or a server-side apply
//! (`application/apply-patch+yaml`, JSON body as kube-rs sends it; a
//! `fieldManager` is required, and the object is created when missing).
//! The fake keeps no field ownership: an apply merges the applied
//! configuration into the stored object like a merge patch, which is what a
//! single field manager sees. Watchers see the result as ADDED or MODIFIED.

use serde_json::{json, Value};
use std::sync::Arc;

use super::admission;
use super::server::{json_response, status_response, Response};
use super::shared::Shared;

/// Answers a create of `body` into table `table` (in `namespace` for a
/// namespaced resource).
pub(crate) async fn create(
    shared: &Arc<Shared>,
    table: usize,
    namespace: Option<String>,
    body: &[u8],
) -> Response {
    let resource = shared.store().tables[table].resource.clone();
    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
        return status_response(400, "BadRequest", "the body is not a JSON object");
    };
    if !obj.is_object() {
        return status_response(400, "BadRequest", "the body is not a JSON object");
    }
    let namespace = match (resource.namespaced, namespace) {
        (true, Some(ns)) => ns,
        (true, None) => {
            return status_response(
                400,
                "BadRequest",
                "a namespaced object is created in a namespace's collection",
            )
        }
        (false, _) => String::new(),
    };
    let meta = &mut obj["metadata"];
    if !meta.is_object() {
        *meta = json!({});
    }
    match meta["namespace"].as_str() {
        Some(ns) if resource.namespaced && ns != namespace => {
            let msg = format!("the namespace of the object ({ns}) does not match the namespace of the request ({namespace})");
            return status_response(400, "BadRequest", &msg);
        }
        _ if resource.namespaced => meta["namespace"] = json!(namespace),
        _ => {}
    }
    if meta["name"].as_str().is_none_or(str::is_empty) {
        match meta["generateName"].as_str() {
            Some(prefix) if !prefix.is_empty() => {
                meta["name"] = json!(format!("{prefix}{}", shared.generated_suffix()));
            }
            _ => {
                return status_response(
                    422,
                    "Invalid",
                    "metadata.name or metadata.generateName is required",
                )
            }
        }
    }
    let name = meta["name"].as_str().unwrap_or_default().to_owned();
    let obj = match admission::admit(shared, &resource, &namespace, obj).await {
        Ok(obj) => obj,
        Err(refused) => return status_response(refused.code, refused.reason, &refused.message),
    };
    let taken = shared.store().tables[table]
        .objects
        .contains_key(&(namespace.clone(), name.clone()));
    if taken {
        let msg = format!("{} \"{name}\" already exists", resource.plural);
        return status_response(409, "AlreadyExists", &msg);
    }
    let stored = shared.change(|s| s.apply(&resource, obj));
    json_response(201, &stored)
}

/// Answers a patch of the stored object `name`.
pub(crate) fn patch(
    shared: &Arc<Shared>,
    table: usize,
    namespace: Option<String>,
    name: &str,
    content_type: &str,
    field_manager: Option<&str>,
    body: &[u8],
) -> Response {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let apply = media == "application/apply-patch+yaml";
    if apply && field_manager.is_none_or(str::is_empty) {
        return status_response(
            400,
            "BadRequest",
            "fieldManager is required for apply requests",
        );
    }
    let key = (namespace.unwrap_or_default(), name.to_owned());
    let (resource, current) = {
        let store = shared.store();
        let t = &store.tables[table];
        (t.resource.clone(), t.objects.get(&key).cloned())
    };
    let created = apply && current.is_none();
    let current = match current {
        None if apply && resource.namespaced => {
            Some(json!({"metadata": {"name": name, "namespace": key.0}}))
        }
        None if apply => Some(json!({"metadata": {"name": name}})),
        current => current,
    };
    let Some(mut obj) = current else {
        return status_response(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", resource.plural),
        );
    };
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status_response(400, "BadRequest", "the patch is not JSON");
    };
    match media {
        "application/json-patch+json" => {
            let ops: json_patch::Patch = match serde_json::from_value(patch) {
                Ok(ops) => ops,
                Err(e) => {
                    return status_response(400, "BadRequest", &format!("not a JSON patch: {e}"))
                }
            };
            if let Err(e) = json_patch::patch(&mut obj, &ops) {
                return status_response(422, "Invalid", &format!("the patch does not apply: {e}"));
            }
        }
        "application/merge-patch+json" => json_patch::merge(&mut obj, &patch),
        "application/apply-patch+yaml" if !patch.is_object() => {
            return status_response(400, "BadRequest", "an apply body is an object");
        }
        "application/apply-patch+yaml" => json_patch::merge(&mut obj, &patch),
        other => {
            let msg = format!(
                "the fake API server takes JSON patches, merge patches and applies, not {other:?}"
            );
            return status_response(415, "UnsupportedMediaType", &msg);
        }
    }
    if obj["metadata"]["name"] != name {
        return status_response(422, "Invalid", "a patch may not change metadata.name");
    }
    let stored = shared.change(|s| s.apply(&resource, obj));
    json_response(if created { 201 } else { 200 }, &stored)
}
