//! What the API server itself writes into an object: apiVersion and kind,
//! namespace, uid, creationTimestamp, generation and resourceVersion; and
//! the shapes it answers in besides the full object (bookmarks, metadata
//! only, Status).

use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Resource;

/// `metadata.namespace` of an object, `""` when it has none.
pub(crate) fn namespace(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or("")
}

/// Where `obj` of `r` is stored: its namespace (`default` if a namespaced
/// object names none, `""` for a cluster-scoped one) and its name.
pub(crate) fn key(r: &Resource, obj: &Value) -> (String, String) {
    let ns = match namespace(obj) {
        _ if !r.namespaced => "",
        "" => "default",
        ns => ns,
    };
    (ns.to_owned(), name(obj).to_owned())
}

/// `metadata.name` of an object, `""` when it has none.
pub(crate) fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

/// The `metadata` map of `obj`, made if missing.
///
/// # Panics
/// If `obj` or its metadata is not a JSON object.
pub(crate) fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let map = obj
        .as_object_mut()
        .expect("a Kubernetes object is a JSON object");
    map.entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("metadata is a JSON object")
}

/// Fills in what a client need not send: apiVersion and kind from `r`, the
/// namespace (`default` if a namespaced object has none, removed from a
/// cluster-scoped one), and uid, creationTimestamp and generation, kept from
/// `previous` (the stored version) when there is one.
///
/// # Panics
/// If `obj` is not a JSON object or has no `metadata.name`.
pub(crate) fn complete(r: &Resource, mut obj: Value, previous: Option<&Value>, uid: u64) -> Value {
    assert!(obj.is_object(), "a {} must be a JSON object: {obj}", r.kind);
    obj["apiVersion"] = json!(r.api_version());
    obj["kind"] = json!(r.kind);
    let meta = metadata_mut(&mut obj);
    assert!(
        meta.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty()),
        "a {} needs metadata.name",
        r.kind
    );
    if r.namespaced {
        meta.entry("namespace").or_insert_with(|| json!("default"));
    } else {
        meta.remove("namespace");
    }
    let old = |field: &str| previous.and_then(|p| p["metadata"].get(field)).cloned();
    for field in ["uid", "creationTimestamp"] {
        if let Some(v) = old(field) {
            meta.insert(field.into(), v);
        }
    }
    meta.entry("uid").or_insert_with(|| json!(uid_string(uid)));
    meta.entry("creationTimestamp")
        .or_insert_with(|| json!(now_rfc3339()));
    let generation = match (previous, old("generation").and_then(|g| g.as_i64())) {
        (Some(p), Some(g)) if p.get("spec") == obj.get("spec") => g,
        (Some(_), Some(g)) => g + 1,
        _ => 1,
    };
    metadata_mut(&mut obj).insert("generation".into(), json!(generation));
    obj
}

/// Sets `metadata.resourceVersion`.
pub(crate) fn set_resource_version(obj: &mut Value, rv: u64) {
    metadata_mut(obj).insert("resourceVersion".into(), json!(rv.to_string()));
}

/// Whether two versions of an object differ in more than their resourceVersion.
pub(crate) fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        metadata_mut(&mut v).remove("resourceVersion");
        v
    };
    strip(a) == strip(b)
}

/// The object as a metadata-only client asks for it
/// (`Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`).
pub(crate) fn partial(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj["metadata"].clone(),
    })
}

/// The object of a BOOKMARK event: apiVersion, kind and
/// metadata.resourceVersion only, with `annotations` when given (the end of
/// a streaming list is marked with `k8s.io/initial-events-end`).
pub(crate) fn bookmark(
    api_version: &str,
    kind: &str,
    rv: u64,
    annotations: Option<Value>,
) -> Value {
    let mut obj = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": { "resourceVersion": rv.to_string() },
    });
    if let Some(a) = annotations {
        obj["metadata"]["annotations"] = a;
    }
    obj
}

/// A `Status` object as the API server sends for failures.
pub(crate) fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// A uid that looks like the API server's (a version 4 UUID), unique per server.
fn uid_string(n: u64) -> String {
    let salt = u64::from(std::process::id());
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        salt & 0xffff_ffff,
        n & 0xffff_ffff_ffff
    )
}

/// The current time as the API server writes it: `2024-05-01T12:00:00Z`.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakekube::{NAMESPACES, SERVICES};

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_714_564_800), "2024-05-01T12:00:00Z");
    }

    #[test]
    fn completes_what_the_server_fills_in() {
        let svc = complete(
            &SERVICES,
            json!({"metadata": {"name": "a"}, "spec": {}}),
            None,
            7,
        );
        assert_eq!(svc["apiVersion"], "v1");
        assert_eq!(svc["kind"], "Service");
        assert_eq!(svc["metadata"]["namespace"], "default");
        assert_eq!(svc["metadata"]["generation"], 1);
        assert!(svc["metadata"]["uid"]
            .as_str()
            .unwrap()
            .ends_with("000000000007"));

        let changed = json!({"metadata": {"name": "a"}, "spec": {"x": 1}});
        let again = complete(&SERVICES, changed, Some(&svc), 8);
        assert_eq!(again["metadata"]["uid"], svc["metadata"]["uid"]);
        assert_eq!(again["metadata"]["generation"], 2);

        let ns = complete(
            &NAMESPACES,
            json!({"metadata": {"name": "n", "namespace": "x"}}),
            None,
            9,
        );
        assert!(ns["metadata"].get("namespace").is_none());
    }
}
