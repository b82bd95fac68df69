//! `GET collection` (list) and `GET collection/name` (get).
//!
//! A list is served at one resourceVersion: the current one, or the one the
//! request names (`resourceVersion` + `resourceVersionMatch`). With `limit`
//! it is cut into pages; the `continue` token carries the resourceVersion of
//! the first page and the last key sent, so every page shows the same
//! snapshot and every object comes exactly once. A token (or an `Exact`
//! resourceVersion) older than the store's history gets 410 Expired, as the
//! API server answers when etcd has compacted it.

use serde_json::{json, Value};

use super::object;
use super::request::Query;
use super::selector::Filter;
use super::server::{json_response, status_response, Response};
use super::shared::Shared;
use super::store::{Expired, Key};

/// Answers a list of `table` in `namespace` (or all namespaces).
pub(crate) fn list(
    shared: &Shared,
    table: usize,
    namespace: Option<String>,
    query: &Query,
    partial: bool,
) -> Response {
    let filter = match Filter::new(namespace, query) {
        Ok(f) => f,
        Err(e) => return status_response(400, "BadRequest", &e),
    };
    let limit = match query.str("limit") {
        "" => 0,
        l => match l.parse::<usize>() {
            Ok(l) => l,
            Err(_) => return status_response(400, "BadRequest", &format!("invalid limit {l:?}")),
        },
    };
    let store = shared.store();
    let current = store.rv();
    let (rv, after) = match at(query, current) {
        Ok(at) => at,
        Err(status) => {
            let code = status["code"].as_u64().and_then(|c| u16::try_from(c).ok());
            return json_response(code.unwrap_or(400), &status);
        }
    };
    let objects = match store.snapshot(table, rv) {
        Ok(objects) => objects,
        Err(Expired { oldest }) => return expired(query, rv, oldest),
    };
    let resource = &store.tables[table].resource;
    let mut selected = objects
        .iter()
        .filter(|(key, _)| after.as_ref().is_none_or(|a| *key > a))
        .filter(|(_, obj)| filter.matches(obj));
    let page: Vec<(&Key, &Value)> = selected
        .by_ref()
        .take(if limit == 0 { usize::MAX } else { limit })
        .collect();
    let remaining = selected.count();
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if remaining > 0 {
        let (last, _) = page.last().expect("a page with more after it is not empty");
        metadata["continue"] = json!(token(rv, last));
        metadata["remainingItemCount"] = json!(remaining);
    }
    let items: Vec<Value> = page
        .into_iter()
        .map(|(_, obj)| {
            if partial {
                object::partial(obj)
            } else {
                obj.clone()
            }
        })
        .collect();
    let (api_version, kind) = if partial {
        (
            "meta.k8s.io/v1".to_owned(),
            "PartialObjectMetadataList".to_owned(),
        )
    } else {
        (resource.api_version(), format!("{}List", resource.kind))
    };
    json_response(
        200,
        &json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": metadata,
            "items": items,
        }),
    )
}

/// Answers a get of one object.
pub(crate) fn get(
    shared: &Shared,
    table: usize,
    namespace: Option<String>,
    name: &str,
    partial: bool,
) -> Response {
    let store = shared.store();
    let resource = &store.tables[table].resource;
    let key = (namespace.unwrap_or_default(), name.to_owned());
    match store.tables[table].objects.get(&key) {
        Some(obj) if partial => json_response(200, &object::partial(obj)),
        Some(obj) => json_response(200, obj),
        None => {
            let mut status = object::status(
                404,
                "NotFound",
                &format!("{} {name:?} not found", resource.plural),
            );
            status["details"] = json!({ "name": name, "kind": resource.plural });
            json_response(404, &status)
        }
    }
}

/// The resourceVersion to serve and the key to continue after, or the
/// `Status` of a request that names them wrongly.
fn at(query: &Query, current: u64) -> Result<(u64, Option<Key>), Value> {
    if let Some(token) = query.get("continue").filter(|t| !t.is_empty()) {
        return untoken(token)
            .map(|(rv, key)| (rv, Some(key)))
            .ok_or_else(|| object::status(400, "BadRequest", "continue key is not valid"));
    }
    let rv = query.str("resourceVersion");
    let exact = match (rv, query.str("resourceVersionMatch")) {
        ("", "") | ("0", _) => return Ok((current, None)),
        ("", _) => {
            let msg = "resourceVersionMatch: Forbidden: \
                       resourceVersionMatch is forbidden unless resourceVersion is provided";
            return Err(object::status(422, "Invalid", msg));
        }
        (_, "" | "NotOlderThan") => false,
        (_, "Exact") => true,
        (_, other) => {
            let msg = format!("resourceVersionMatch: Unsupported value: {other:?}");
            return Err(object::status(422, "Invalid", &msg));
        }
    };
    let rv: u64 = rv.parse().map_err(|_| {
        let msg = "resourceVersion: Invalid value: must be an integer";
        object::status(400, "BadRequest", msg)
    })?;
    if rv > current {
        let msg = format!("Too large resource version: {rv}, current: {current}");
        let mut status = object::status(504, "Timeout", &msg);
        status["details"] = json!({
            "causes": [{
                "reason": "ResourceVersionTooLarge",
                "message": "Too large resource version",
            }],
            "retryAfterSeconds": 1,
        });
        return Err(status);
    }
    // An exact resourceVersion older than the history is 410 (`snapshot`);
    // "not older than" is served at the current one.
    Ok((if exact { rv } else { current }, None))
}

/// 410 Expired, in the words of the API server.
fn expired(query: &Query, rv: u64, oldest: u64) -> Response {
    let msg = if query.get("continue").is_some() {
        "The provided continue parameter is too old to display a consistent list result. \
         You can start a new list without the continue parameter."
            .to_owned()
    } else {
        format!("too old resource version: {rv} ({oldest})")
    };
    status_response(410, "Expired", &msg)
}

/// An opaque continue token: hex of `rv/namespace/name`.
fn token(rv: u64, (ns, name): &Key) -> String {
    format!("{rv}/{ns}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn untoken(token: &str) -> Option<(u64, Key)> {
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(3, '/');
    let rv = parts.next()?.parse().ok()?;
    Some((rv, (parts.next()?.to_owned(), parts.next()?.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let key = ("ns".to_owned(), "a-b.c".to_owned());
        assert_eq!(untoken(&token(42, &key)), Some((42, key)));
        assert_eq!(untoken("zz"), None);
        assert_eq!(untoken("abc"), None);
    }
}
