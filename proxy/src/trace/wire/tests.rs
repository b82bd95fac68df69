use super::*;
use crate::trace::export::Queue;
use crate::trace::Tracer;
use http::HeaderValue;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;

const TRACE: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
const PARENT: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];

fn recording(kind: SpanKind, sampled_parent: bool) -> Box<Recording> {
    let tracer = Tracer::new(Queue::detached(), 100.0);
    let mut h = http::HeaderMap::new();
    if sampled_parent {
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
    }
    let mut s = tracer.start(&mut h, kind).expect("sampled");
    s.start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
    s.end = s.start + Duration::from_micros(250);
    s
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn str_kv(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn int_kv(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    str_kv("service.name", "web"),
                    str_kv("k8s.namespace.name", "shop"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "weft-proxy".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Encodes `batch`, checks that it decodes to `want` field for field and
/// that its bytes are the ones prost writes for `want`.
fn check(batch: &[Box<Recording>], want: Vec<Span>) {
    let mut enc = Encoder::new(&[("service.name", "web"), ("k8s.namespace.name", "shop")]);
    // Twice: the buffers kept from one batch do not leak into the next.
    for _ in 0..2 {
        let bytes = enc.encode(batch);
        let got = ExportTraceServiceRequest::decode(bytes.clone()).expect("decodes");
        let want = request(want.clone());
        assert_eq!(got, want);
        let prost = want.encode_to_vec();
        let differ = bytes.iter().zip(&prost).position(|(a, b)| a != b);
        assert!(
            bytes.len() == prost.len() && differ.is_none(),
            "not prost's bytes: {} against {} long, first difference at {differ:?}",
            bytes.len(),
            prost.len()
        );
    }
}

#[test]
fn a_span_with_every_field_decodes_as_written() {
    let mut s = recording(SpanKind::Client, true);
    let req = http::Request::post("http://web.shop.svc.cluster.local:8080/cart")
        .body(())
        .unwrap();
    s.request(&req, "10.96.0.9:8080".parse().unwrap());
    s.name = Name::Shared(Arc::from("httproute/shop/web"));
    s.routed = true;
    s.status = 503;
    s.client_id = Some("spiffe://cluster.local/ns/shop/sa/client".into());
    s.server_id = Some("spiffe://cluster.local/ns/shop/sa/web".into());
    s.endpoint = Some("10.244.0.7:8080".parse().unwrap());
    s.error = Some("upstream_unavailable");
    s.grpc = Some(14);
    s.grpc_response = true;
    s.incomplete = true;
    s.retried(1, "503 Service Unavailable".into());
    s.retries[0].at = s.start + Duration::from_micros(100);
    s.retried(2, "connection refused".into());
    s.retries[1].at = s.start + Duration::from_micros(200);
    let (span_id, start) = (s.span_id, super::nanos(s.start));
    let event = |at: u64, n: i64, outcome: &str| span::Event {
        time_unix_nano: start + at,
        name: "retry".into(),
        attributes: vec![
            int_kv("weft.attempt", n),
            str_kv("weft.attempt.outcome", outcome),
        ],
        dropped_attributes_count: 0,
    };
    let want = Span {
        trace_id: TRACE.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: PARENT.to_vec(),
        name: "httproute/shop/web".into(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 250_000,
        attributes: vec![
            str_kv("http.request.method", "POST"),
            int_kv("http.response.status_code", 503),
            str_kv("http.route", "httproute/shop/web"),
            str_kv("server.address", "web.shop.svc.cluster.local:8080"),
            str_kv("network.peer.address", "10.244.0.7"),
            int_kv("network.peer.port", 8080),
            str_kv("weft.client.id", "spiffe://cluster.local/ns/shop/sa/client"),
            str_kv("weft.server.id", "spiffe://cluster.local/ns/shop/sa/web"),
            str_kv("weft.proxy_error", "upstream_unavailable"),
            int_kv("rpc.grpc.status_code", 14),
            kv(
                "weft.response.incomplete",
                any_value::Value::BoolValue(true),
            ),
        ],
        events: vec![
            event(100_000, 1, "503 Service Unavailable"),
            event(200_000, 2, "connection refused"),
        ],
        status: Some(Status {
            message: "upstream_unavailable".into(),
            code: status::StatusCode::Error as i32,
        }),
        flags: 0x301,
        ..Default::default()
    };
    check(&[s], vec![want]);
}

#[test]
fn a_plain_root_server_span_has_only_what_it_knows() {
    let mut s = recording(SpanKind::Server, false);
    s.status = 200;
    let want = Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        name: String::new(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: super::nanos(s.start),
        end_time_unix_nano: super::nanos(s.end),
        attributes: vec![
            str_kv("http.request.method", "GET"),
            int_kv("http.response.status_code", 200),
        ],
        flags: 0x101,
        ..Default::default()
    };
    check(&[s], vec![want]);
}

#[test]
fn a_batch_of_many_spans_and_long_values() {
    // Lengths past one varint byte (128) and two (16,384).
    let mut batch = Vec::new();
    let mut want = Vec::new();
    for n in 0..300usize {
        let mut s = recording(SpanKind::Server, true);
        let name: Arc<str> = "x".repeat(n * 70).into();
        s.name = Name::Shared(name.clone());
        s.status = 404;
        s.endpoint = Some(if n % 2 == 0 {
            "[fd00:10:244::7]:443".parse().unwrap()
        } else {
            std::net::SocketAddr::from(([n as u8, 0, 10, 255], 1))
        });
        let address = s.endpoint.unwrap().ip().to_string();
        want.push(Span {
            trace_id: TRACE.to_vec(),
            span_id: s.span_id.to_vec(),
            parent_span_id: PARENT.to_vec(),
            name: name.to_string(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: super::nanos(s.start),
            end_time_unix_nano: super::nanos(s.end),
            attributes: vec![
                str_kv("http.request.method", "GET"),
                int_kv("http.response.status_code", 404),
                str_kv("network.peer.address", &address),
                int_kv("network.peer.port", i64::from(s.endpoint.unwrap().port())),
            ],
            // A 4xx is the client's fault: not a server span's error.
            flags: 0x301,
            ..Default::default()
        });
        batch.push(s);
    }
    check(&batch, want);
}

#[test]
fn statuses_follow_the_order_of_precedence() {
    let status = |f: &dyn Fn(&mut Recording), kind| {
        let mut s = recording(kind, true);
        s.status = 200;
        f(&mut s);
        s.error_status().map(|m| m.into_owned())
    };
    use SpanKind::{Client, Server};
    assert_eq!(status(&|_| {}, Client), None);
    assert_eq!(status(&|s| s.status = 404, Client).as_deref(), Some(""));
    assert_eq!(status(&|s| s.status = 404, Server), None);
    assert_eq!(status(&|s| s.status = 500, Server).as_deref(), Some(""));
    let grpc = |code| move |s: &mut Recording| s.grpc = Some(code);
    assert_eq!(status(&grpc(5), Client).as_deref(), Some("grpc-status 5"));
    assert_eq!(status(&grpc(5), Server), None, "NOT_FOUND: the client's");
    assert_eq!(status(&grpc(13), Server).as_deref(), Some("grpc-status 13"));
    assert_eq!(status(&grpc(0), Client), None);
    let both = |s: &mut Recording| {
        s.error = Some("forbidden");
        s.status = 403;
        s.grpc = Some(7);
        s.incomplete = true;
    };
    assert_eq!(status(&both, Server).as_deref(), Some("forbidden"));
    let cut = |s: &mut Recording| {
        s.grpc_response = true;
        s.incomplete = true;
    };
    assert_eq!(
        status(&cut, Server).as_deref(),
        Some("response body not finished")
    );
    let no_grpc_status = |s: &mut Recording| s.grpc_response = true;
    assert_eq!(
        status(&no_grpc_status, Client).as_deref(),
        Some("gRPC response without grpc-status")
    );
}

#[test]
fn ipv4_addresses_in_dotted_decimal() {
    for a in [
        "0.0.0.0",
        "10.244.0.7",
        "192.168.100.255",
        "1.20.3.99",
        "255.255.255.255",
    ] {
        let ip: std::net::Ipv4Addr = a.parse().unwrap();
        assert_eq!(ipv4(ip, &mut [0; 15]), a.as_bytes());
    }
}

#[test]
fn resource_names_of_any_length_and_long_values() {
    // Past the constant keys' limit, and values past one varint byte.
    let long_name = "k8s.deployment.annotation.an-operators-very-long-key";
    assert!(long_name.len() > MAX_CONST_KEY + 2);
    let long_value = "v".repeat(300);
    let mut enc = Encoder::new(&[("service.name", "web"), (long_name, &long_value)]);
    let bytes = enc.encode(&[recording(SpanKind::Client, false)]);
    let got = ExportTraceServiceRequest::decode(bytes.clone()).expect("decodes");
    let resource = got.resource_spans[0].resource.clone().expect("a resource");
    assert_eq!(
        resource.attributes,
        vec![
            str_kv("service.name", "web"),
            str_kv(long_name, &long_value)
        ]
    );
    assert_eq!(&got.encode_to_vec()[..], &bytes[..], "prost's bytes");
}

#[test]
fn a_span_named_by_its_address_is_named_as_operators_read_it() {
    let cases = [
        ("web.shop.svc.cluster.local:8080", "web.shop:8080"),
        ("web.shop.svc.cluster.local", "web.shop"),
        ("10.96.0.10:80", "10.96.0.10:80"),
        ("web.svcx.example:80", "web.svcx.example:80"),
    ];
    let mut batch = Vec::new();
    let mut want = Vec::new();
    for (authority, name) in cases {
        let mut s = recording(SpanKind::Client, false);
        s.status = 200;
        s.authority = authority.into();
        want.push(Span {
            trace_id: s.trace_id.to_vec(),
            span_id: s.span_id.to_vec(),
            name: name.into(),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: super::nanos(s.start),
            end_time_unix_nano: super::nanos(s.end),
            attributes: vec![
                str_kv("http.request.method", "GET"),
                int_kv("http.response.status_code", 200),
                str_kv("server.address", authority),
            ],
            flags: 0x101,
            ..Default::default()
        });
        batch.push(s);
    }
    check(&batch, want);
}
