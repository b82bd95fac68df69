//! Spans of an in-process proxy, received by an in-process OTLP/gRPC
//! collector (opentelemetry-proto's TraceService on tonic): a span ends
//! with its response body, so a gRPC status sent in trailers is on it, and
//! one sent trailers-only (in the headers) too. (The network-namespace
//! scenario `tests/tests/tracing.rs` covers the two-proxy trace tree.)

mod support;

use http::HeaderValue;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};
use std::sync::{Arc, Mutex};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// A collector that keeps what it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    arrived: Arc<Notify>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = req
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.spans.lock().unwrap().extend(spans);
        self.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start() -> (Self, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Self::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, addr)
    }

    /// The span of trace `trace_id` (hex), once it has arrived.
    async fn span(&self, trace_id: &str) -> Span {
        let want = hex(trace_id);
        tokio::time::timeout(WAIT * 2, async {
            loop {
                let arrived = self.arrived.notified();
                if let Some(s) = self
                    .spans
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|s| s.trace_id == want)
                {
                    return s.clone();
                }
                arrived.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no span of trace {trace_id}"))
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn attr(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

/// `GET path` over HTTP/2 through `proxy` to `backend`, in a sampled trace
/// `trace_id`; the whole response read.
async fn traced_get(proxy: &Proxy, backend: &Backend, path: &str, trace_id: &str) -> Reply {
    let mut req = get(path);
    let parent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    req.headers_mut()
        .insert("traceparent", HeaderValue::from_str(&parent).unwrap());
    proxy.h2(backend.addr).await.send(req).await.unwrap()
}

#[tokio::test]
async fn a_grpc_status_in_trailers_or_in_headers_is_on_the_span() {
    let (collector, addr) = Collector::start().await;
    let backend = Backend::start("app").await;
    let proxy = Proxy::start(&[&format!("--trace-collector-addr={addr}")]).await;

    // Trailers after a body (`grpc-status: 0`): read at the body's end.
    let trailers = "4bf92f3577b34da6a3ce929d0e0e4736";
    let rsp = traced_get(&proxy, &backend, "/trailers", trailers).await;
    assert_eq!(rsp.status, 200);
    let span = collector.span(trailers).await;
    assert_eq!(
        attr(&span, "rpc.grpc.status_code"),
        Some(Value::IntValue(0))
    );
    assert_eq!(attr(&span, "weft.response.incomplete"), None);
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);

    // Trailers-only INTERNAL: a client span's error.
    let only = "5bf92f3577b34da6a3ce929d0e0e4737";
    traced_get(&proxy, &backend, "/grpc?status=13", only).await;
    let span = collector.span(only).await;
    assert_eq!(
        attr(&span, "rpc.grpc.status_code"),
        Some(Value::IntValue(13))
    );
    let status = span.status.expect("a status");
    assert_eq!(status.code, StatusCode::Error as i32, "{status:?}");
}

#[tokio::test]
async fn spans_reach_a_meshed_collector_over_mesh_tls() {
    const OTEL: &str = "127.96.7.20:4317";
    let (collector, app) = Collector::start().await;
    let ca = Ca::new(&["client", "otel"]);
    let control = Control::with_identity(support::control::NOTHING, &ca).await;
    let orig = weft_proxy::test_util::OrigDst::default();
    // The collector's pod: its proxy in front of it.
    let mut server_args = ca.meshed_args("otel", &control);
    server_args.push("--pod-name=otel-0".into());
    let server = Proxy::start_with(orig.clone(), &server_args).await;
    orig.set_listener(server.inbound, app);
    let otel = Svc::new("otel", OTEL);
    control.apply(&otel.yaml(&[Ep::ready(server.inbound).meshed("otel-0", "otel")]));

    let mut client_args = ca.meshed_args("client", &control);
    client_args.push(format!("--trace-collector-addr={OTEL}"));
    let client = Proxy::start_with(orig, &client_args).await;
    let backend = Backend::start("app").await;
    let trace = "6bf92f3577b34da6a3ce929d0e0e4738";
    assert_eq!(
        traced_get(&client, &backend, "/hello", trace).await.status,
        200
    );
    collector.span(trace).await;

    // The export went to the collector's proxy over mesh TLS, as the
    // client's identity (a gRPC request inbound there).
    let series = format!(
        "weft_request_total{{direction=\"inbound\",tls=\"true\",client_id=\"{}\"}}",
        Ca::id("client")
    );
    eventually("the export counted inbound over mesh TLS", async || {
        let n = server.metric(&series).await;
        anyhow::ensure!(n >= 1.0, "{n}");
        Ok(())
    })
    .await;
    let plaintext = server
        .metric("weft_request_total{direction=\"inbound\",tls=\"false\"}")
        .await;
    assert_eq!(plaintext, 0.0, "nothing reached the collector in plaintext");
}
