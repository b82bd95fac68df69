//! The answers of Jaeger's query API (the JSON `jaeger-query` serves on
//! 16686 under `/api`, which its UI reads), computed from recorded spans.
//! Pure: a path and query string in, a status and a JSON document out.
//!
//! Served, as Jaeger translates OTLP: `GET /api/services`,
//! `/api/services/{service}/operations`, `/api/operations?service=S[&spanKind=K]`,
//! `/api/traces?service=S[&operation=O][&tags={json}][&limit=N]` (the most
//! recent traces first, 100 at most by default; `start`, `end`, `lookback`,
//! `minDuration` and `maxDuration` are accepted and ignored) and
//! `/api/traces/{traceID}`.
//! A span's parent is a `CHILD_OF` reference, a link a `FOLLOWS_FROM`; its
//! kind is the tag `span.kind`; status ERROR is the tags `error`=true,
//! `otel.status_code`=ERROR and `otel.status_description`; events are logs
//! whose field `event` is the name; resource attributes other than
//! `service.name` are the process's tags (as the OpenTelemetry collector's
//! Jaeger translator maps them). Ids are lowercase hex (32 and
//! 16 digits), times and durations microseconds.

use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

use super::span::{Attr, Attrs, RecordedSpan, Status};

/// Jaeger's default `limit` of a trace search.
pub const DEFAULT_LIMIT: usize = 100;

/// The answer to `GET path?query` over the recorded `spans`.
pub fn answer<'a>(
    spans: impl IntoIterator<Item = &'a RecordedSpan> + Clone,
    path: &str,
    query: &str,
) -> (u16, Value) {
    let params = Params::parse(query);
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["api", "services"] => ok(services(spans).into_iter().map(Value::from).collect()),
        ["api", "services", service, "operations"] => ok(operations(spans, service)
            .into_iter()
            .map(|(name, _)| Value::from(name))
            .collect()),
        ["api", "operations"] => match params.get("service") {
            Some(service) => {
                let kind = params.get("spanKind").unwrap_or("");
                ok(operations(spans, service)
                    .into_iter()
                    .filter(|(_, k)| kind.is_empty() || k == kind)
                    .map(|(name, k)| json!({"name": name, "spanKind": k}))
                    .collect())
            }
            None => error(400, "parameter 'service' is required"),
        },
        ["api", "traces"] => search(spans, &params),
        ["api", "traces", id] => {
            let id = normalise_id(id);
            let trace: Vec<&RecordedSpan> =
                spans.into_iter().filter(|s| s.trace_id == id).collect();
            if trace.is_empty() {
                error(404, "trace not found")
            } else {
                ok(vec![trace_json(&id, trace)])
            }
        }
        _ => error(404, "404 page not found"),
    }
}

/// Every service name seen, sorted.
pub fn services<'a>(spans: impl IntoIterator<Item = &'a RecordedSpan>) -> Vec<String> {
    let names: BTreeSet<&str> = spans.into_iter().map(RecordedSpan::service).collect();
    names.into_iter().map(str::to_owned).collect()
}

/// The operations (span names) of `service` with the span kind of each
/// ("" for internal), sorted.
pub fn operations<'a>(
    spans: impl IntoIterator<Item = &'a RecordedSpan>,
    service: &str,
) -> Vec<(String, String)> {
    let ops: BTreeSet<(&str, &str)> = spans
        .into_iter()
        .filter(|s| s.service() == service)
        .map(|s| (s.name.as_str(), s.kind.jaeger_tag().unwrap_or("")))
        .collect();
    ops.into_iter()
        .map(|(n, k)| (n.to_owned(), k.to_owned()))
        .collect()
}

fn search<'a>(
    spans: impl IntoIterator<Item = &'a RecordedSpan> + Clone,
    params: &Params,
) -> (u16, Value) {
    let Some(service) = params.get("service") else {
        return error(400, "parameter 'service' is required");
    };
    let operation = params.get("operation");
    let tags: BTreeMap<String, String> = match params.get("tags") {
        None => BTreeMap::new(),
        Some(t) => match serde_json::from_str::<BTreeMap<String, Value>>(t) {
            Ok(m) => m
                .into_iter()
                .map(|(k, v)| {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    (k, v)
                })
                .collect(),
            Err(e) => return error(400, &format!("malformed 'tags' parameter: {e}")),
        },
    };
    let limit = match params.get("limit").map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        Some(Ok(0)) => DEFAULT_LIMIT,
        Some(Ok(n)) => n,
        Some(Err(_)) => return error(400, "malformed 'limit' parameter"),
    };
    let matches = |s: &RecordedSpan| {
        s.service() == service
            && operation.is_none_or(|o| s.name == o)
            && tags
                .iter()
                .all(|(k, v)| s.attr(k).as_deref() == Some(v.as_str()))
    };
    // Trace id → the latest start of its matching spans.
    let mut found: BTreeMap<&str, u64> = BTreeMap::new();
    for s in spans.clone().into_iter().filter(|s| matches(s)) {
        let latest = found.entry(&s.trace_id).or_default();
        *latest = (*latest).max(s.start_unix_nano);
    }
    let mut order: Vec<(&str, u64)> = found.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    order.truncate(limit);
    let traces = order
        .into_iter()
        .map(|(id, _)| {
            let trace: Vec<&RecordedSpan> = spans
                .clone()
                .into_iter()
                .filter(|s| s.trace_id == id)
                .collect();
            trace_json(id, trace)
        })
        .collect();
    ok(traces)
}

/// One trace: its spans by start time, each pointing at its process.
pub fn trace_json(trace_id: &str, mut spans: Vec<&RecordedSpan>) -> Value {
    spans.sort_by(|a, b| (a.start_unix_nano, &a.span_id).cmp(&(b.start_unix_nano, &b.span_id)));
    let mut processes: Vec<(&str, &Attrs)> = Vec::new();
    let mut span_json = Vec::new();
    for s in spans {
        let process = (s.service(), &s.resource);
        let i = processes
            .iter()
            .position(|p| *p == process)
            .unwrap_or_else(|| {
                processes.push(process);
                processes.len() - 1
            });
        span_json.push(span(s, &format!("p{}", i + 1)));
    }
    let processes: Map<String, Value> = processes
        .into_iter()
        .enumerate()
        .map(|(i, (service, resource))| {
            let tags = resource
                .iter()
                .filter(|(k, _)| k.as_str() != "service.name")
                .map(|(k, v)| tag(k, v))
                .collect::<Vec<_>>();
            (
                format!("p{}", i + 1),
                json!({"serviceName": service, "tags": tags}),
            )
        })
        .collect();
    json!({
        "traceID": trace_id,
        "spans": span_json,
        "processes": processes,
        "warnings": null,
    })
}

fn span(s: &RecordedSpan, process: &str) -> Value {
    let mut references = Vec::new();
    if let Some(parent) = &s.parent {
        references.push(json!({"refType": "CHILD_OF", "traceID": s.trace_id, "spanID": parent}));
    }
    for l in &s.links {
        references
            .push(json!({"refType": "FOLLOWS_FROM", "traceID": l.trace_id, "spanID": l.span_id}));
    }
    let mut tags: Vec<Value> = s.attributes.iter().map(|(k, v)| tag(k, v)).collect();
    let string = |k: &str, v: &str| tag(k, &Attr::Str(v.to_owned()));
    if let Some(kind) = s.kind.jaeger_tag() {
        tags.push(string("span.kind", kind));
    }
    match &s.status {
        Status::Unset => {}
        Status::Ok => tags.push(string("otel.status_code", "OK")),
        Status::Error(message) => {
            tags.push(string("otel.status_code", "ERROR"));
            // It overrides an attribute `error`.
            tags.retain(|t| t["key"] != "error");
            tags.push(tag("error", &Attr::Bool(true)));
            if !message.is_empty() {
                tags.push(string("otel.status_description", message));
            }
        }
    }
    let (scope, version) = &s.scope;
    if !scope.is_empty() {
        tags.push(string("otel.scope.name", scope));
    }
    if !version.is_empty() {
        tags.push(string("otel.scope.version", version));
    }
    let logs: Vec<Value> = s
        .events
        .iter()
        .map(|e| {
            // An attribute `event` takes precedence over the name.
            let mut fields = Vec::new();
            if !e.attributes.contains_key("event") {
                fields.push(string("event", &e.name));
            }
            fields.extend(e.attributes.iter().map(|(k, v)| tag(k, v)));
            json!({"timestamp": e.time_unix_nano / 1000, "fields": fields})
        })
        .collect();
    json!({
        "traceID": s.trace_id,
        "spanID": s.span_id,
        "flags": s.flags & 0xff,
        "operationName": s.name,
        "references": references,
        "startTime": s.start_unix_nano / 1000,
        "duration": s.end_unix_nano.saturating_sub(s.start_unix_nano) / 1000,
        "tags": tags,
        "logs": logs,
        "processID": process,
        "warnings": null,
    })
}

/// A Jaeger key-value: `{"key","type","value"}`, type one of string, bool,
/// int64, float64, binary (base64).
fn tag(key: &str, value: &Attr) -> Value {
    let (kind, value) = match value {
        Attr::Str(s) | Attr::Json(s) => ("string", Value::from(s.as_str())),
        Attr::Bool(b) => ("bool", Value::from(*b)),
        Attr::Int(i) => ("int64", Value::from(*i)),
        Attr::Double(d) => ("float64", Value::from(*d)),
        Attr::Bytes(b) => (
            "binary",
            Value::from(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
    };
    json!({"key": key, "type": kind, "value": value})
}

fn ok(data: Vec<Value>) -> (u16, Value) {
    let total = data.len();
    (
        200,
        json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null}),
    )
}

fn error(code: u16, msg: &str) -> (u16, Value) {
    (
        code,
        json!({"data": null, "total": 0, "limit": 0, "offset": 0,
               "errors": [{"code": code, "msg": msg}]}),
    )
}

/// A trace id as stored: lowercase, left-padded to 32 digits (Jaeger
/// accepts ids without their leading zeros).
fn normalise_id(id: &str) -> String {
    format!("{:0>32}", id.to_ascii_lowercase())
}

/// Query parameters, percent-decoded; the first of a repeated name wins.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: &str) -> Self {
        Params(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// Percent-decoding (and `+` as a space), bad escapes kept as they are.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let digit = |b: u8| (b as char).to_digit(16);
                match (digit(bytes[i + 1]), digit(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded_and_ids_padded() {
        assert_eq!(decode("a%20b+c%2Fd%zz%4"), "a b c/d%zz%4");
        let p = Params::parse("service=web%2Dapp&limit=&tags=%7B%22a%22%3A1%7D");
        assert_eq!(p.get("service"), Some("web-app"));
        assert_eq!(p.get("limit"), None);
        assert_eq!(p.get("tags"), Some("{\"a\":1}"));
        assert_eq!(normalise_id("ABC"), format!("{}abc", "0".repeat(29)));
    }

    #[test]
    fn status_error_overrides_an_error_attribute_and_an_event_attribute_its_name() {
        use super::super::span::{Event, Kind, UNKNOWN_SERVICE};
        let mut attrs = Attrs::new();
        attrs.insert("error".into(), Attr::Str("no".into()));
        let mut event = Attrs::new();
        event.insert("event".into(), Attr::Str("named".into()));
        let s = RecordedSpan {
            trace_id: "1".repeat(32),
            span_id: "2".repeat(16),
            parent: None,
            name: "op".into(),
            kind: Kind::Internal,
            start_unix_nano: 3_000,
            end_unix_nano: 10_999,
            attributes: attrs,
            events: vec![Event {
                time_unix_nano: 5_000,
                name: "ignored".into(),
                attributes: event,
            }],
            links: vec![],
            status: Status::Error(String::new()),
            flags: 0,
            resource: Attrs::new(),
            scope: Default::default(),
        };
        let j = span(&s, "p1");
        let errors: Vec<&Value> = j["tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["key"] == "error")
            .collect();
        assert_eq!(
            errors,
            [&json!({"key": "error", "type": "bool", "value": true})]
        );
        assert_eq!(
            j["logs"],
            json!([{"timestamp": 5, "fields": [{"key": "event", "type": "string", "value": "named"}]}])
        );
        assert_eq!(
            (j["startTime"].clone(), j["duration"].clone()),
            (json!(3), json!(7))
        );
        assert_eq!(s.service(), UNKNOWN_SERVICE);
    }

    #[test]
    fn unknown_paths_and_missing_parameters_are_errors() {
        let none: Vec<RecordedSpan> = Vec::new();
        assert_eq!(answer(&none, "/api/nope", "").0, 404);
        assert_eq!(answer(&none, "/api/traces", "").0, 400);
        assert_eq!(answer(&none, "/api/traces", "service=a&limit=x").0, 400);
        let (code, body) = answer(&none, "/api/traces/00ff", "");
        assert_eq!(code, 404);
        assert_eq!(body["errors"][0]["msg"], "trace not found");
        assert_eq!(answer(&none, "/api/services", "").1["data"], json!([]));
    }
}
