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

const SHOP_WEB: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [\"10.96.0.10\"]
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [\"10.244.0.2\"]
  conditions: {ready: true}
";

#[test]
fn weft_control_spans_each_certify_call_and_each_change_up_to_its_publication() {
    use weft_proto::identity::v1 as pb;
    let dir = std::env::temp_dir().join(format!("weft-control-spans-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    weft_tests::mesh::identity(&dir, &["web"]);
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("manifests/web.yaml"), SHOP_WEB).unwrap();
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let receiver = weft_tests::otlp::Receiver::start(local, local).unwrap();
    // weft-control logs the addresses it bound to stderr: through a shell
    // that execs it (the same pid, for SIGTERM), the log is what Proc reads.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "exec \"$0\" \"$@\" 2>&1"])
        .arg(bin("weft-control"))
        .arg("--source")
        .arg(dir.join("manifests"))
        .args(["--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0"])
        .arg("--poll-interval=100ms")
        .arg("--identity-dir")
        .arg(dir.join("ca"))
        .arg("--identity-tokens")
        .arg(dir.join("tokens.yaml"))
        .arg(format!("--trace-collector-addr={}", receiver.grpc_addr()))
        .env("POD_NAME", "weft-control-0")
        .env("WEFT_CONTROL_LOG", "info");
    let mut control = Proc::spawn("weft-control", cmd).unwrap();
    let serving = loop {
        let line = control.line(WAIT).unwrap();
        if line.contains("weft-control serving") {
            break line;
        }
    };
    let grpc: SocketAddr = field(&serving, "grpc").parse().unwrap();
    let rt = runtime();

    // A refused Certify (the token is nobody's), as a child of the caller's span.
    let status = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = pb::identity_client::IdentityClient::new(channel);
        let mut request = tonic::Request::new(pb::CertifyRequest {
            identity: mesh::shop_id("web"),
            token: "nobody's".into(),
            certificate_signing_request: vec![],
        });
        request.metadata_mut().insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        client.certify(request).await.unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let named = |name: &'static str| {
        move |s: &[weft_tests::otlp::RecordedSpan]| s.iter().any(|s| s.name == name)
    };
    let spans = rt.block_on(receiver.until(
        |s| named("weft.identity.v1.Identity/Certify")(s) && named("apply EndpointSlice")(s),
        WAIT,
    ));
    let certify = spans
        .iter()
        .find(|s| s.name == "weft.identity.v1.Identity/Certify")
        .unwrap();
    assert_eq!(certify.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(certify.parent.as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(certify.kind, weft_tests::otlp::Kind::Server);
    assert_eq!(certify.attr("rpc.grpc.status_code").as_deref(), Some("16"));
    assert_eq!(certify.attr("weft.identity"), Some(mesh::shop_id("web")));
    // The caller's error, not the server's: no ERROR status, a "refused" event.
    assert_eq!(certify.status, weft_tests::otlp::Status::Unset);
    assert!(
        certify.events.iter().any(|e| e.name == "refused"),
        "{:?}",
        certify.events
    );
    assert_eq!(certify.service(), "weft-control");
    assert_eq!(certify.attr("client.address").as_deref(), Some("127.0.0.1"));
    let resource = |key: &str| certify.resource.get(key).map(ToString::to_string);
    assert_eq!(resource("k8s.pod.name").as_deref(), Some("weft-control-0"));
    assert!(resource("service.version").is_some());

    let slice = spans
        .iter()
        .find(|s| s.name == "apply EndpointSlice")
        .unwrap();
    assert_eq!(slice.parent, None);
    assert_eq!(slice.attr("weft.change").as_deref(), Some("apply"));
    assert_eq!(slice.attr("weft.source").as_deref(), Some("files"));
    assert_eq!(slice.attr("k8s.namespace.name").as_deref(), Some("shop"));
    assert_eq!(slice.attr("weft.object.name").as_deref(), Some("web-1"));
    assert_eq!(slice.attr("weft.published.services").as_deref(), Some("1"));
    assert_eq!(slice.status, weft_tests::otlp::Status::Unset);
    let received = slice.events.iter().find(|e| e.name == "model received");
    let received = received.expect("the model's receipt is an event");
    assert!(slice.start_unix_nano <= received.time_unix_nano);
    assert!(received.time_unix_nano <= slice.end_unix_nano);

    // A refused object: its span says why, with status ERROR.
    std::fs::write(
        dir.join("manifests/bad.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: shop}\nspec:\n  ports: [{port: 70000}]\n",
    )
    .unwrap();
    let spans = rt.block_on(receiver.until(
        |s| {
            s.iter()
                .any(|s| s.attr("weft.object.name").as_deref() == Some("bad"))
        },
        WAIT,
    ));
    let bad = spans
        .iter()
        .find(|s| s.attr("weft.object.name").as_deref() == Some("bad"))
        .unwrap();
    assert_eq!(bad.name, "apply Service");
    assert!(
        matches!(&bad.status, weft_tests::otlp::Status::Error(m) if m.contains("70000")),
        "{:?}",
        bad.status
    );

    // Deleting the file: a delete span per object, sent before exit.
    std::fs::remove_file(dir.join("manifests/web.yaml")).unwrap();
    rt.block_on(receiver.until(
        |s| {
            s.iter()
                .any(|s| s.attr("weft.change").as_deref() == Some("delete"))
        },
        WAIT,
    ));
    assert_eq!(control.terminate(WAIT).unwrap(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn weft_control_refuses_a_collector_that_is_not_an_address_with_64() {
    let out = Command::new(bin("weft-control"))
        .args(["--source", ".", "--trace-collector-addr", "jaeger"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = stderr(&out);
    assert!(err.contains("--trace-collector-addr"), "{err}");
    assert!(err.contains("not host:port"), "{err}");
}
