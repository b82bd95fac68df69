//! What the receiver keeps of one exported span: a plain struct, ids as
//! lowercase hex, attribute values typed as OTLP sends them, and the
//! resource (service.name etc.) and scope it came under. Pure conversion
//! from opentelemetry-proto's `ExportTraceServiceRequest`; no I/O.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span};
use std::collections::BTreeMap;
use std::fmt;

/// The service name OpenTelemetry SDKs report when none is configured.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// One attribute value, as OTLP typed it.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
    /// An array or key-value list, rendered as JSON (as Jaeger shows it).
    Json(String),
}

impl fmt::Display for Attr {
    /// The value as Jaeger prints it: strings bare, bytes as hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Str(s) | Attr::Json(s) => f.write_str(s),
            Attr::Bool(b) => write!(f, "{b}"),
            Attr::Int(i) => write!(f, "{i}"),
            Attr::Double(d) => write!(f, "{d}"),
            Attr::Bytes(b) => f.write_str(&hex(b)),
        }
    }
}

/// Attributes by key (a key sent twice keeps its last value).
pub type Attrs = BTreeMap<String, Attr>;

/// The span's kind (OTLP `SpanKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl Kind {
    /// The `span.kind` tag Jaeger shows; none for internal or unspecified.
    pub fn jaeger_tag(self) -> Option<&'static str> {
        match self {
            Kind::Server => Some("server"),
            Kind::Client => Some("client"),
            Kind::Producer => Some("producer"),
            Kind::Consumer => Some("consumer"),
            Kind::Internal | Kind::Unspecified => None,
        }
    }
}

/// The span's status (OTLP `Status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Unset,
    Ok,
    /// An error, with the status message (often empty).
    Error(String),
}

/// A timed event on a span (a Jaeger "log").
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub time_unix_nano: u64,
    pub name: String,
    pub attributes: Attrs,
}

/// A link to another span (a Jaeger `FOLLOWS_FROM` reference).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub trace_id: String,
    pub span_id: String,
}

/// One span as it was exported.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedSpan {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id (16 hex digits); `None` for a root span.
    pub parent: Option<String>,
    pub name: String,
    pub kind: Kind,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: Attrs,
    pub events: Vec<Event>,
    pub links: Vec<Link>,
    pub status: Status,
    /// The W3C trace flags (bit 0: sampled).
    pub flags: u32,
    /// The attributes of the resource it was exported under.
    pub resource: Attrs,
    /// The instrumentation scope's name and version.
    pub scope: (String, String),
}

impl RecordedSpan {
    /// The resource's `service.name`, or [`UNKNOWN_SERVICE`].
    pub fn service(&self) -> &str {
        match self.resource.get("service.name") {
            Some(Attr::Str(s)) => s,
            _ => UNKNOWN_SERVICE,
        }
    }

    /// The attribute `key` rendered as a string (see [`Attr`]'s `Display`).
    pub fn attr(&self, key: &str) -> Option<String> {
        self.attributes.get(key).map(Attr::to_string)
    }
}

/// Every span of an export request, in the order sent.
pub fn spans_of(request: ExportTraceServiceRequest) -> Vec<RecordedSpan> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let resource = rs.resource.map(|r| attrs(r.attributes)).unwrap_or_default();
        for ss in rs.scope_spans {
            let scope = ss.scope.map(|s| (s.name, s.version)).unwrap_or_default();
            for s in ss.spans {
                out.push(recorded(s, &resource, &scope));
            }
        }
    }
    out
}

fn recorded(s: Span, resource: &Attrs, scope: &(String, String)) -> RecordedSpan {
    let kind = match span::SpanKind::try_from(s.kind) {
        Ok(span::SpanKind::Internal) => Kind::Internal,
        Ok(span::SpanKind::Server) => Kind::Server,
        Ok(span::SpanKind::Client) => Kind::Client,
        Ok(span::SpanKind::Producer) => Kind::Producer,
        Ok(span::SpanKind::Consumer) => Kind::Consumer,
        _ => Kind::Unspecified,
    };
    let status = match s.status {
        Some(st) if st.code == status::StatusCode::Error as i32 => Status::Error(st.message),
        Some(st) if st.code == status::StatusCode::Ok as i32 => Status::Ok,
        _ => Status::Unset,
    };
    // An all-zero or empty parent id means "no parent".
    let parent = (!s.parent_span_id.iter().all(|b| *b == 0)).then(|| hex(&s.parent_span_id));
    RecordedSpan {
        trace_id: hex(&s.trace_id),
        span_id: hex(&s.span_id),
        parent,
        name: s.name,
        kind,
        start_unix_nano: s.start_time_unix_nano,
        end_unix_nano: s.end_time_unix_nano,
        attributes: attrs(s.attributes),
        events: s
            .events
            .into_iter()
            .map(|e| Event {
                time_unix_nano: e.time_unix_nano,
                name: e.name,
                attributes: attrs(e.attributes),
            })
            .collect(),
        links: s
            .links
            .into_iter()
            .map(|l| Link {
                trace_id: hex(&l.trace_id),
                span_id: hex(&l.span_id),
            })
            .collect(),
        status,
        flags: s.flags,
        resource: resource.clone(),
        scope: scope.clone(),
    }
}

/// OTLP key-values as [`Attrs`]; a key without a value is left out.
pub fn attrs(kvs: Vec<KeyValue>) -> Attrs {
    kvs.into_iter()
        .filter_map(|kv| Some((kv.key, attr(kv.value?)?)))
        .collect()
}

fn attr(v: AnyValue) -> Option<Attr> {
    Some(match v.value? {
        any_value::Value::StringValue(s) => Attr::Str(s),
        any_value::Value::BoolValue(b) => Attr::Bool(b),
        any_value::Value::IntValue(i) => Attr::Int(i),
        any_value::Value::DoubleValue(d) => Attr::Double(d),
        any_value::Value::BytesValue(b) => Attr::Bytes(b),
        other => Attr::Json(json(Some(other)).to_string()),
    })
}

/// An array or list (and anything in it) as JSON.
fn json(v: Option<any_value::Value>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Some(any_value::Value::StringValue(s)) => J::from(s),
        Some(any_value::Value::BoolValue(b)) => J::from(b),
        Some(any_value::Value::IntValue(i)) => J::from(i),
        Some(any_value::Value::DoubleValue(d)) => J::from(d),
        Some(any_value::Value::BytesValue(b)) => J::from(hex(&b)),
        Some(any_value::Value::ArrayValue(a)) => {
            J::Array(a.values.into_iter().map(|v| json(v.value)).collect())
        }
        Some(any_value::Value::KvlistValue(l)) => J::Object(
            l.values
                .into_iter()
                .map(|kv| (kv.key, json(kv.value.and_then(|v| v.value))))
                .collect(),
        ),
        // Dictionary references of the profiles signal: never in traces.
        Some(any_value::Value::StringValueStrindex(_)) | None => J::Null,
    }
}

/// Lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
