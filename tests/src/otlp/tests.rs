//! The receiver in-process: spans exported with opentelemetry-proto's
//! generated client over 127.0.0.1, read back through the query API over
//! HTTP as Jaeger's UI reads it. Every wait is on the receiver's signal.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span};
use serde_json::{json, Value};
use std::time::Duration;
use tonic::transport::Channel;

use super::{edges, get, query, spans_of, Attr, Kind, Receiver, Status};

const WITHIN: Duration = Duration::from_secs(10);
/// 2023-11-14T22:13:20Z in nanoseconds.
const T0: u64 = 1_700_000_000_000_000_000;

fn local() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn start() -> Receiver {
    Receiver::start(local(), local()).expect("the receiver starts")
}

async fn client(r: &Receiver) -> TraceServiceClient<Channel> {
    TraceServiceClient::connect(r.endpoint())
        .await
        .expect("connects to the receiver")
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// A span of trace `[trace; 16]` with id `[id; 8]`, starting `start_ms`
/// after [`T0`] and lasting 5 ms.
fn sp(
    trace: u8,
    id: u8,
    parent: Option<u8>,
    name: &str,
    kind: span::SpanKind,
    start_ms: u64,
) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: T0 + start_ms * 1_000_000,
        end_time_unix_nano: T0 + start_ms * 1_000_000 + 5_000_000,
        flags: 1,
        ..Default::default()
    }
}

/// One export of `spans` under a resource naming `service` and the
/// scope `weft-proxy` 0.1.0.
fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s(service)),
                    kv("k8s.pod.name", s(&format!("{service}-0"))),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "weft-proxy".into(),
                    version: "0.1.0".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn hex(b: u8, n: usize) -> String {
    format!("{b:02x}").repeat(n)
}

/// The tag `key` of a Jaeger span: (type, value).
fn tag(span: &Value, key: &str) -> Option<(String, Value)> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| {
            (
                t["type"].as_str().unwrap_or("").to_owned(),
                t["value"].clone(),
            )
        })
}

#[tokio::test]
async fn a_trace_exported_in_two_batches_reads_as_jaeger_shows_it() {
    let r = start();
    let mut c = client(&r).await;
    // The app's server span, its client call through the proxy, and the
    // proxy's server span: exported by two services, in two batches.
    let root = sp(0xab, 1, None, "GET /checkout", span::SpanKind::Server, 0);
    let mut call = sp(0xab, 2, Some(1), "GET /cart", span::SpanKind::Client, 1);
    call.attributes = vec![
        kv("http.response.status_code", any_value::Value::IntValue(503)),
        kv("retried", any_value::Value::BoolValue(true)),
        kv("weight", any_value::Value::DoubleValue(0.5)),
        kv(
            "endpoints",
            any_value::Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(s("10.244.0.3:80")),
                }],
            }),
        ),
    ];
    call.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
        message: "upstream unavailable".into(),
        code: status::StatusCode::Error as i32,
    });
    call.events = vec![span::Event {
        time_unix_nano: T0 + 2_000_000,
        name: "retry".into(),
        attributes: vec![kv("attempt", any_value::Value::IntValue(2))],
        ..Default::default()
    }];
    let mut inbound = sp(0xab, 3, Some(2), "GET /cart", span::SpanKind::Server, 2);
    inbound.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
        message: String::new(),
        code: status::StatusCode::Ok as i32,
    });
    c.export(request("checkout", vec![root, call]))
        .await
        .unwrap();
    c.export(request("weft-proxy", vec![inbound]))
        .await
        .unwrap();
    let spans = r.until(|s| s.len() == 3, WITHIN).await;
    assert_eq!(r.exports(), 2);

    // What the Rust API keeps.
    let call = spans.iter().find(|s| s.span_id == hex(2, 8)).unwrap();
    assert_eq!(call.trace_id, hex(0xab, 16));
    assert_eq!(call.parent.as_deref(), Some(hex(1, 8).as_str()));
    assert_eq!(call.kind, Kind::Client);
    assert_eq!(call.service(), "checkout");
    assert_eq!(call.attributes["http.response.status_code"], Attr::Int(503));
    assert_eq!(
        call.attr("endpoints").as_deref(),
        Some(r#"["10.244.0.3:80"]"#)
    );
    assert_eq!(call.status, Status::Error("upstream unavailable".into()));
    assert_eq!(call.events[0].name, "retry");
    assert_eq!(
        call.resource["k8s.pod.name"],
        Attr::Str("checkout-0".into())
    );
    assert_eq!(call.scope, ("weft-proxy".into(), "0.1.0".into()));
    assert_eq!(spans.iter().filter(|s| s.parent.is_none()).count(), 1);

    // What the query API answers.
    let q = r.query_addr();
    assert_eq!(
        query(q, "/api/services").await.unwrap()["data"],
        json!(["checkout", "weft-proxy"])
    );
    assert_eq!(
        query(q, "/api/services/checkout/operations").await.unwrap()["data"],
        json!(["GET /cart", "GET /checkout"])
    );
    assert_eq!(
        query(q, "/api/operations?service=checkout&spanKind=client")
            .await
            .unwrap()["data"],
        json!([{"name": "GET /cart", "spanKind": "client"}])
    );
    let found = query(q, "/api/traces?service=weft-proxy").await.unwrap();
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    let by_id = query(q, &format!("/api/traces/{}", hex(0xab, 16)))
        .await
        .unwrap();
    assert_eq!(found["data"], by_id["data"]);
    let trace = &by_id["data"][0];
    assert_eq!(trace["traceID"], hex(0xab, 16));
    assert_eq!(
        edges(trace),
        vec![
            ("".into(), "checkout GET /checkout".into()),
            ("checkout GET /cart".into(), "weft-proxy GET /cart".into()),
            ("checkout GET /checkout".into(), "checkout GET /cart".into()),
        ]
    );
    let jspans = trace["spans"].as_array().unwrap();
    assert_eq!(jspans.len(), 3);
    // Sorted by start time: root, call, inbound.
    let (jroot, jcall, jinbound) = (&jspans[0], &jspans[1], &jspans[2]);
    assert_eq!(jroot["references"], json!([]));
    assert_eq!(
        jcall["references"],
        json!([{"refType": "CHILD_OF", "traceID": hex(0xab, 16), "spanID": hex(1, 8)}])
    );
    assert_eq!(jcall["spanID"], hex(2, 8));
    assert_eq!(jcall["startTime"], json!(T0 / 1000 + 1000));
    assert_eq!(jcall["duration"], json!(5000));
    assert_eq!(
        tag(jcall, "span.kind"),
        Some(("string".into(), json!("client")))
    );
    assert_eq!(
        tag(jinbound, "span.kind"),
        Some(("string".into(), json!("server")))
    );
    assert_eq!(tag(jcall, "error"), Some(("bool".into(), json!(true))));
    assert_eq!(
        tag(jcall, "otel.status_code"),
        Some(("string".into(), json!("ERROR")))
    );
    assert_eq!(
        tag(jcall, "otel.status_description"),
        Some(("string".into(), json!("upstream unavailable")))
    );
    assert_eq!(
        tag(jinbound, "otel.status_code"),
        Some(("string".into(), json!("OK")))
    );
    assert_eq!(tag(jinbound, "error"), None);
    assert_eq!(tag(jroot, "otel.status_code"), None);
    assert_eq!(
        tag(jcall, "http.response.status_code"),
        Some(("int64".into(), json!(503)))
    );
    assert_eq!(tag(jcall, "retried"), Some(("bool".into(), json!(true))));
    assert_eq!(tag(jcall, "weight"), Some(("float64".into(), json!(0.5))));
    assert_eq!(
        tag(jcall, "otel.scope.name"),
        Some(("string".into(), json!("weft-proxy")))
    );
    assert_eq!(
        jcall["logs"],
        json!([{"timestamp": T0 / 1000 + 2000, "fields": [
            {"key": "event", "type": "string", "value": "retry"},
            {"key": "attempt", "type": "int64", "value": 2},
        ]}])
    );
    // One process per service, the resource's other attributes its tags.
    let procs = trace["processes"].as_object().unwrap();
    assert_eq!(procs.len(), 2);
    assert_eq!(jroot["processID"], jcall["processID"]);
    let p = &procs[jinbound["processID"].as_str().unwrap()];
    assert_eq!(
        p,
        &json!({"serviceName": "weft-proxy", "tags": [
            {"key": "k8s.pod.name", "type": "string", "value": "weft-proxy-0"}
        ]})
    );
    // Jaeger's misses.
    let (code, missing) = get(q, &format!("/api/traces/{}", hex(0xcd, 16)))
        .await
        .unwrap();
    assert_eq!((code, &missing["errors"][0]["code"]), (404, &json!(404)));
    assert_eq!(get(q, "/api/traces").await.unwrap().0, 400);
}

#[tokio::test]
async fn search_filters_by_service_operation_and_tags_most_recent_first() {
    let r = start();
    let mut c = client(&r).await;
    let mut spans = Vec::new();
    for i in 1..=5u8 {
        let name = if i % 2 == 0 { "GET /even" } else { "GET /odd" };
        let mut root = sp(i, i, None, name, span::SpanKind::Server, u64::from(i) * 10);
        root.attributes = vec![kv("n", any_value::Value::IntValue(i.into()))];
        spans.push(root);
    }
    c.export(request("web", spans)).await.unwrap();
    c.export(request(
        "db",
        vec![sp(9, 9, None, "SELECT", span::SpanKind::Server, 0)],
    ))
    .await
    .unwrap();
    r.until(|s| s.len() == 6, WITHIN).await;
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["traceID"].as_str().unwrap()[..2].to_owned())
            .collect()
    };
    let q = r.query_addr();
    let all = query(q, "/api/traces?service=web").await.unwrap();
    assert_eq!(ids(&all), ["05", "04", "03", "02", "01"]);
    let odd = query(q, "/api/traces?service=web&operation=GET%20%2Fodd&limit=2")
        .await
        .unwrap();
    assert_eq!(ids(&odd), ["05", "03"]);
    let tagged = query(q, "/api/traces?service=web&tags=%7B%22n%22%3A%224%22%7D")
        .await
        .unwrap();
    assert_eq!(ids(&tagged), ["04"]);
    let db = query(q, "/api/traces?service=db").await.unwrap();
    assert_eq!(ids(&db), ["09"]);
    assert_eq!(
        ids(&query(q, "/api/traces?service=nobody").await.unwrap()),
        Vec::<String>::new()
    );
    // An id without its leading zeros finds the trace too.
    let padded = query(q, &format!("/api/traces/{}", &hex(1, 16)[1..]))
        .await
        .unwrap();
    assert_eq!(ids(&padded), ["01"]);
}

#[tokio::test]
async fn the_store_keeps_the_newest_spans_within_its_bound_and_counts_the_rest() {
    let r = Receiver::start_with(local(), local(), 5).unwrap();
    let mut c = client(&r).await;
    let batch = |from: u8, to: u8| {
        (from..to)
            .map(|i| {
                sp(
                    1,
                    i,
                    None,
                    &format!("op{i}"),
                    span::SpanKind::Server,
                    i.into(),
                )
            })
            .collect()
    };
    c.export(request("web", batch(0, 4))).await.unwrap();
    c.export(request("web", batch(4, 8))).await.unwrap();
    let spans = r.until(|_| r.exports() == 2, WITHIN).await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["op3", "op4", "op5", "op6", "op7"]);
    assert_eq!(r.dropped(), 3);
    let ops = r.answer("/api/services/web/operations").1;
    assert_eq!(ops["data"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn stopped_it_is_gone_and_it_restarts_on_the_same_ports_keeping_its_spans() {
    let mut r = start();
    let (grpc, q) = (r.grpc_addr(), r.query_addr());
    let mut c = client(&r).await;
    c.export(request(
        "web",
        vec![sp(1, 1, None, "before", span::SpanKind::Server, 0)],
    ))
    .await
    .unwrap();
    r.stop();
    assert!(!r.is_running());
    // Both ports refuse, and the exporter's open connection is closed.
    assert!(tokio::net::TcpStream::connect(grpc).await.is_err());
    assert!(tokio::net::TcpStream::connect(q).await.is_err());
    let lost = c
        .export(request(
            "web",
            vec![sp(1, 2, None, "lost", span::SpanKind::Server, 1)],
        ))
        .await;
    assert!(lost.is_err(), "an export to a stopped receiver fails");

    r.restart().expect("binds the same ports again");
    assert_eq!((r.grpc_addr(), r.query_addr()), (grpc, q));
    let mut c = client(&r).await;
    c.export(request(
        "web",
        vec![sp(1, 3, None, "after", span::SpanKind::Server, 2)],
    ))
    .await
    .unwrap();
    let spans = r.until(|s| s.len() == 2, WITHIN).await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["before", "after"]);
    let trace = query(q, &format!("/api/traces/{}", hex(1, 16)))
        .await
        .unwrap();
    assert_eq!(trace["data"][0]["spans"].as_array().unwrap().len(), 2);

    // Dropped, the ports are free for a new receiver.
    drop(r);
    let again = Receiver::start(grpc, q).expect("a new receiver on the same ports");
    assert!(again.spans().is_empty());
}

#[tokio::test]
async fn failing_it_answers_unavailable_and_records_nothing() {
    let r = start();
    let mut c = client(&r).await;
    r.set_failing(true);
    let refused = c
        .export(request(
            "web",
            vec![sp(1, 1, None, "refused", span::SpanKind::Server, 0)],
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    r.until(|_| r.refused() == 1, WITHIN).await;
    assert!(r.spans().is_empty());
    assert_eq!(r.exports(), 0);

    r.set_failing(false);
    c.export(request(
        "web",
        vec![sp(1, 2, None, "accepted", span::SpanKind::Server, 1)],
    ))
    .await
    .unwrap();
    let spans = r.until(|s| !s.is_empty(), WITHIN).await;
    assert_eq!(spans[0].name, "accepted");
}

#[tokio::test]
async fn until_wakes_on_an_export_from_another_task() {
    let r = start();
    let mut c = client(&r).await;
    // The export may land before or after `until` starts waiting: either
    // way it returns on it, not on its deadline.
    let export = tokio::spawn(async move {
        c.export(request(
            "web",
            vec![sp(1, 1, None, "late", span::SpanKind::Server, 0)],
        ))
        .await
        .unwrap();
    });
    let started = std::time::Instant::now();
    let spans = r.until(|s| !s.is_empty(), Duration::from_secs(30)).await;
    assert_eq!(spans[0].name, "late");
    assert!(started.elapsed() < Duration::from_secs(30));
    export.await.unwrap();
}

#[tokio::test]
#[should_panic(expected = "not seen within")]
async fn until_gives_up_at_its_deadline() {
    let r = start();
    r.until(|s| !s.is_empty(), Duration::from_millis(50)).await;
}

#[test]
fn empty_and_zero_parents_are_roots_and_a_missing_service_is_unknown() {
    let mut zero = sp(1, 1, None, "a", span::SpanKind::Internal, 0);
    zero.parent_span_id = vec![0; 8];
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: vec![zero, sp(1, 2, None, "b", span::SpanKind::Unspecified, 0)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let spans = spans_of(req);
    assert!(spans.iter().all(|s| s.parent.is_none()));
    assert_eq!(spans[0].service(), "unknown_service");
    assert_eq!(
        (spans[0].kind, spans[1].kind),
        (Kind::Internal, Kind::Unspecified)
    );
    let trace = super::answer(&spans, &format!("/api/traces/{}", hex(1, 16)), "").1;
    assert_eq!(tag(&trace["data"][0]["spans"][0], "span.kind"), None);
}
