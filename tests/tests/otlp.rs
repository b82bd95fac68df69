//! `weft-otlp-receiver`, the tests' Jaeger, as a process: on loopback with
//! the generated OTLP client, and in a pod of a test node, exported to
//! across the bridge and queried from another pod.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use serde_json::json;
use std::net::SocketAddr;
use std::process::Command;

use weft_tests::otlp::{edges, query, InPod};
use weft_tests::*;

/// A client span and the server span under it, exported by `service`.
fn request(service: &str) -> ExportTraceServiceRequest {
    let span = |id: u8, parent: Option<u8>, name: &str, kind: span::SpanKind| Span {
        trace_id: vec![0x4b; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(id) * 1000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + 9000,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(1, None, "GET /hello", span::SpanKind::Client),
                    span(2, Some(1), "GET /hello", span::SpanKind::Server),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The address after `key=` in a `LISTENING grpc=A query=B` line.
fn addr_of(line: &str, key: &str) -> SocketAddr {
    field(line, key).parse().unwrap()
}

/// A port on the host's loopback relayed into `pod`, which connects to
/// `target` (two `weft-netprobe relay`s joined by a Unix socket, the
/// reverse of `HostRelay`); the relays stop when dropped.
fn into_pod(pod: &Pod, target: SocketAddr) -> (SocketAddr, [Proc; 2]) {
    let socket = std::env::temp_dir().join(format!("weft-{}-otlp.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let unix = format!("unix:{}", socket.display());
    let mut cmd = pod.command(None, &bin("weft-netprobe"));
    cmd.args(["relay", &unix, &format!("tcp:{target}")]);
    let in_pod = Proc::spawn("relay in the pod", cmd).unwrap();
    in_pod.expect_line("LISTENING", WAIT).unwrap();
    // A free port (the relay prints the address it was given, not the one bound).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cmd = Command::new(bin("weft-netprobe"));
    cmd.args(["relay", &format!("tcp:{port}"), &unix]);
    let host = Proc::spawn("relay on the host", cmd).unwrap();
    host.expect_line("LISTENING", WAIT).unwrap();
    (port, [host, in_pod])
}

#[test]
fn the_binary_records_exports_answers_queries_and_exits_0_on_sigterm() {
    let mut cmd = Command::new(bin("weft-otlp-receiver"));
    cmd.args(["--grpc-addr=127.0.0.1:0", "--query-addr=127.0.0.1:0"]);
    let mut receiver = Proc::spawn("weft-otlp-receiver", cmd).unwrap();
    let line = receiver.expect_line("LISTENING", WAIT).unwrap();
    let (grpc, q) = (addr_of(&line, "grpc"), addr_of(&line, "query"));
    runtime().block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
        client.export(request("web")).await.unwrap();
        // Exports are recorded before they are answered: no wait needed.
        let trace = query(q, &format!("/api/traces/{}", "4b".repeat(16)))
            .await
            .unwrap();
        assert_eq!(
            edges(&trace["data"][0]),
            [
                ("".into(), "web GET /hello".into()),
                ("web GET /hello".into(), "web GET /hello".into())
            ]
        );
        let stats = query(q, "/receiver/stats").await.unwrap();
        assert_eq!(stats["exports"], 1);
        assert_eq!(stats["spans"], 2);
    });
    assert_eq!(receiver.terminate(WAIT).unwrap(), Some(0));
}

#[test]
fn the_binary_refuses_a_bad_flag_with_64_and_a_taken_port_with_1() {
    let out = Command::new(bin("weft-otlp-receiver"))
        .arg("--grpc-addr=nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("--grpc-addr"), "{}", stderr(&out));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(bin("weft-otlp-receiver"))
        .arg(format!("--grpc-addr={}", taken.local_addr().unwrap()))
        .arg("--query-addr=127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot bind --grpc-addr"),
        "{}",
        stderr(&out)
    );
    let help = Command::new(bin("weft-otlp-receiver"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--grpc-addr",
        "--query-addr",
        "--capacity",
        "/api/traces",
        "SIGTERM",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn in_a_pod_it_is_exported_to_across_the_bridge_and_queried_from_another_pod() {
    if netns_or_skip("otlp_in_a_pod") {
        return;
    }
    let node = Node::new().unwrap();
    let jaeger_pod = node.pod().unwrap();
    let client_pod = node.pod().unwrap();
    let jaeger = InPod::start(&jaeger_pod, &[]).unwrap();
    // The test's exports enter the client pod through a relay and cross
    // the bridge to the receiver, as a proxy's would.
    let (port, relay) = into_pod(&client_pod, jaeger.grpc_addr);
    runtime().block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://{port}"))
            .await
            .unwrap();
        client.export(request("shop")).await.unwrap();
    });
    drop(relay);
    assert_eq!(
        jaeger.query(&client_pod, "/api/services").unwrap()["data"],
        json!(["shop"])
    );
    let found = jaeger
        .query(
            &client_pod,
            "/api/traces?service=shop&operation=GET%20%2Fhello",
        )
        .unwrap();
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    jaeger.set_failing(&client_pod, true).unwrap();
    assert_eq!(jaeger.stats(&client_pod).unwrap()["failing"], true);
    assert_eq!(jaeger.stop().unwrap(), Some(0));
    // Brought back, on the same address, empty.
    let jaeger = InPod::start(&jaeger_pod, &[]).unwrap();
    assert_eq!(
        jaeger.query(&client_pod, "/api/services").unwrap()["data"],
        json!([])
    );
}

/// The opentelemetry SDK's provider with opentelemetry-otlp's tonic
/// exporter to `receiver`, as service weft-proxy; the exporter's channel
/// lives on the runtime returned, the batch processor's own thread drives
/// the exports.
fn sdk(
    receiver: &weft_tests::otlp::Receiver,
) -> (
    tokio::runtime::Runtime,
    opentelemetry_sdk::trace::SdkTracerProvider,
) {
    use opentelemetry_otlp::WithExportConfig;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let provider = rt.block_on(async {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(receiver.endpoint())
            .build()
            .unwrap();
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("weft-proxy")
                    .build(),
            )
            .build()
    });
    (rt, provider)
}

#[test]
fn the_sdk_exporter_reaches_the_receiver_again_once_it_is_back_on_its_port() {
    use opentelemetry::trace::{Span as _, Tracer, TracerProvider as _};
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut receiver = weft_tests::otlp::Receiver::start(local, local).unwrap();
    let (rt, provider) = sdk(&receiver);
    let tracer = provider.tracer("weft-proxy");
    tracer.start("before").end();
    provider.force_flush().unwrap();
    rt.block_on(receiver.until(|s| s.len() == 1, WAIT));
    receiver.stop();
    tracer.start("while stopped").end();
    assert!(provider.force_flush().is_err(), "nobody received it");
    receiver.restart().unwrap();
    tracer.start("after").end();
    provider.force_flush().unwrap();
    let spans = rt.block_on(receiver.until(|s| s.len() == 2, WAIT));
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["before", "after"]);
    let _ = provider.shutdown();
}

#[test]
fn spans_from_the_sdk_and_otlp_exporter_the_proxy_uses_read_back_as_their_tree() {
    use opentelemetry::trace::{
        Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
    };
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let receiver = weft_tests::otlp::Receiver::start(local, local).unwrap();
    let (rt, provider) = sdk(&receiver);
    let tracer = provider.tracer("weft-proxy");
    let server = tracer
        .span_builder("GET /hello")
        .with_kind(SpanKind::Server)
        .start(&tracer);
    let cx = opentelemetry::Context::current_with_span(server);
    let mut client = tracer
        .span_builder("GET /hello upstream")
        .with_kind(SpanKind::Client)
        .start_with_context(&tracer, &cx);
    client.set_status(Status::error("connection refused"));
    client.end();
    cx.span().end();
    provider.force_flush().unwrap();
    let spans = rt.block_on(receiver.until(|s| s.len() == 2, WAIT));
    let trace_id = &spans[0].trace_id;
    assert_eq!(trace_id.len(), 32);
    let (code, found) = receiver.answer(&format!("/api/traces/{trace_id}"));
    assert_eq!(code, 200);
    let trace = &found["data"][0];
    assert_eq!(
        edges(trace),
        [
            ("".into(), "weft-proxy GET /hello".into()),
            (
                "weft-proxy GET /hello".into(),
                "weft-proxy GET /hello upstream".into()
            ),
        ]
    );
    let client = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["operationName"] == "GET /hello upstream")
        .unwrap();
    let tags = &client["tags"];
    assert!(
        tags.as_array()
            .unwrap()
            .contains(&json!({"key": "span.kind", "type": "string", "value": "client"})),
        "{tags}"
    );
    assert!(
        tags.as_array()
            .unwrap()
            .contains(&json!({"key": "error", "type": "bool", "value": true})),
        "{tags}"
    );
    provider.shutdown().unwrap();
}
