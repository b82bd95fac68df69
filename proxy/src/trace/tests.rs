use super::*;
use export::{spawn_with, Export, ExportMetrics, FLUSH};
use http::{HeaderValue, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{span, status::StatusCode as Code, Span};
use prost::Message;
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// A collector that keeps every span it is sent, decoded.
#[derive(Debug, Clone, Default)]
pub(super) struct Keep(pub Arc<Mutex<Vec<Span>>>);

impl Export for Keep {
    async fn send(&mut self, request: bytes::Bytes) -> Result<u64, tonic::Status> {
        let req = ExportTraceServiceRequest::decode(request).expect("a valid request");
        let mut spans = self.0.lock().unwrap();
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(0)
    }
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn tracer(percent: f64) -> (Tracer, Keep, CancellationToken, tokio::task::JoinHandle<()>) {
    let keep = Keep::default();
    let stop = CancellationToken::new();
    let (queue, task) = spawn_with(
        (keep.clone(), wire::Encoder::new(&[])),
        ExportMetrics::default(),
        stop.clone(),
        64,
        64,
        FLUSH,
    );
    (Tracer::new(queue, percent), keep, stop, task)
}

fn id(s: &str) -> Arc<str> {
    s.into()
}

/// Ends `span` as a response with `status` and `headers` (an empty body,
/// ended at once).
fn finish(tracer: &Tracer, mut span: Box<Recording>, headers: HeaderMap, status: StatusCode) {
    let req = http::Request::get("http://web.shop.svc.cluster.local/x")
        .body(())
        .unwrap();
    span.request(&req, "10.96.0.9:80".parse().unwrap());
    let mut rsp = http::Response::new(Spanned::plain(http_body_util::Empty::<bytes::Bytes>::new()));
    *rsp.status_mut() = status;
    *rsp.headers_mut() = headers;
    drop(tracer.finish(
        span,
        Some(&id("httproute/shop/web")),
        Some(&id("web.shop:80")),
        rsp,
        Some(&id("spiffe://cluster.local/ns/shop/sa/client")),
    ));
}

fn attr(s: &Span, k: &str) -> Option<String> {
    let kv = s.attributes.iter().find(|kv| kv.key == k)?;
    Some(match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(v) => v.clone(),
        Value::IntValue(v) => v.to_string(),
        Value::BoolValue(v) => v.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn failed(s: &Span) -> bool {
    s.status
        .as_ref()
        .is_some_and(|st| st.code == Code::Error as i32)
}

#[tokio::test(start_paused = true)]
async fn a_sampled_request_gets_a_span_parented_on_the_caller_and_forwards_its_own_id() {
    let (tracer, keep, stop, task) = tracer(0.0);
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_static(PARENT));
    let mut span = tracer.start(&mut h, SpanKind::Client).expect("sampled");
    let out = h.get("traceparent").unwrap().to_str().unwrap().to_owned();
    assert!(
        out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{out}"
    );
    assert!(
        out.ends_with("-01") && !out.contains("00f067aa0ba902b7"),
        "{out}"
    );
    span.endpoint = Some("10.244.0.7:8080".parse().unwrap());
    span.server_id = Some(id("spiffe://cluster.local/ns/shop/sa/web"));
    span.retried(1, "503".into());
    let mut rsp = HeaderMap::new();
    rsp.insert("grpc-status", HeaderValue::from_static("14"));
    finish(&tracer, span, rsp, StatusCode::OK);
    stop.cancel();
    task.await.unwrap();

    let spans = keep.0.lock().unwrap();
    let [s] = &spans[..] else { panic!("{spans:?}") };
    assert_eq!(s.kind, span::SpanKind::Client as i32);
    assert_eq!(s.name, "httproute/shop/web", "named after its route");
    assert_eq!(hex(&s.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&s.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        format!("00-{}-{}-01", hex(&s.trace_id), hex(&s.span_id)),
        out,
        "the next hop's parent is this span"
    );
    assert_eq!(s.flags, 0x301, "sampled, with a remote parent");
    assert!(s.start_time_unix_nano > 0 && s.end_time_unix_nano >= s.start_time_unix_nano);
    assert_eq!(attr(s, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr(s, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(s, "http.route").as_deref(), Some("httproute/shop/web"));
    assert_eq!(
        attr(s, "server.address").as_deref(),
        Some("web.shop.svc.cluster.local:80")
    );
    assert_eq!(
        attr(s, "network.peer.address").as_deref(),
        Some("10.244.0.7")
    );
    assert_eq!(attr(s, "network.peer.port").as_deref(), Some("8080"));
    assert_eq!(attr(s, "rpc.grpc.status_code").as_deref(), Some("14"));
    assert_eq!(
        attr(s, "weft.server.id").as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/web")
    );
    assert_eq!(
        attr(s, "weft.client.id").as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/client")
    );
    let [retry] = &s.events[..] else {
        panic!("{:?}", s.events)
    };
    assert_eq!(retry.name, "retry");
    let event_attrs: Vec<_> = retry
        .attributes
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.clone().and_then(|v| v.value)))
        .collect();
    assert_eq!(
        event_attrs,
        [
            ("weft.attempt", Some(Value::IntValue(1))),
            (
                "weft.attempt.outcome",
                Some(Value::StringValue("503".into()))
            )
        ]
    );
    // UNAVAILABLE (trailers-only, in the headers): a client span's error.
    let status = s.status.as_ref().expect("a status");
    assert_eq!(
        (status.code, status.message.as_str()),
        (Code::Error as i32, "grpc-status 14")
    );
}

#[tokio::test(start_paused = true)]
async fn an_unsampled_request_is_rewritten_and_records_nothing() {
    let (tracer, keep, stop, task) = tracer(100.0);
    let mut h = HeaderMap::new();
    let unsampled = PARENT.replace("-01", "-00");
    h.insert("traceparent", HeaderValue::from_str(&unsampled).unwrap());
    assert!(
        tracer.start(&mut h, SpanKind::Server).is_none(),
        "not sampled"
    );
    let out = h.get("traceparent").unwrap().to_str().unwrap();
    assert!(
        !out.contains("00f067aa0ba902b7") && out.ends_with("-00"),
        "{out}"
    );
    // `b3: 0` forbids a trace even at 100%.
    let mut h = HeaderMap::new();
    h.insert("b3", HeaderValue::from_static("0"));
    assert!(tracer.start(&mut h, SpanKind::Client).is_none());
    assert_eq!(h.len(), 1);
    stop.cancel();
    task.await.unwrap();
    assert!(keep.0.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn head_sampling_starts_traces_only_when_asked() {
    let (off, _, stop_off, _t) = tracer(0.0);
    let mut h = HeaderMap::new();
    assert!(off.start(&mut h, SpanKind::Client).is_none());
    assert!(h.is_empty(), "no context, no sampling: untouched");
    stop_off.cancel();

    let (all, keep, stop, task) = tracer(100.0);
    let mut h = HeaderMap::new();
    let span = all.start(&mut h, SpanKind::Client).expect("100%: sampled");
    let root = h.get("traceparent").unwrap().to_str().unwrap().to_owned();
    assert!(root.ends_with("-01"), "{root}");
    finish(&all, span, HeaderMap::new(), StatusCode::BAD_GATEWAY);
    stop.cancel();
    task.await.unwrap();
    let spans = keep.0.lock().unwrap();
    assert!(spans[0].parent_span_id.is_empty(), "a root span");
    assert_eq!(spans[0].flags, 0x101, "sampled, no remote parent");
    assert!(failed(&spans[0]), "5xx: error");

    // Half: some of many, bounds that hold for any fair coin.
    let (half, _, stop_half, _t2) = tracer(50.0);
    let sampled = (0..2000)
        .filter(|_| {
            half.start(&mut HeaderMap::new(), SpanKind::Client)
                .is_some()
        })
        .count();
    assert!((800..1200).contains(&sampled), "{sampled} of 2000");
    stop_half.cancel();
}

/// The span name [`service_parts`] makes of `authority`, as the encoder
/// writes it.
fn service_name(authority: &str) -> String {
    match service_parts(authority) {
        (name, "") => name.to_owned(),
        (name, port) => format!("{name}:{port}"),
    }
}

#[test]
fn service_names_as_operators_read_them() {
    assert_eq!(service_name("web.shop.svc.cluster.local:80"), "web.shop:80");
    assert_eq!(service_name("10.96.0.10:80"), "10.96.0.10:80");
    assert_eq!(service_name("web.shop.svc.cluster.local"), "web.shop");
    assert_eq!(
        service_name("svc.shop.svc.cluster.local:8080"),
        "svc.shop:8080"
    );
    assert_eq!(service_name("web.svcx.example:80"), "web.svcx.example:80");
    assert_eq!(service_name(".svc.:1"), ":1");
    assert_eq!(service_name(""), "");
}

/// A response body of fixed frames, for the span's end.
struct Frames(std::collections::VecDeque<hyper::body::Frame<bytes::Bytes>>);

impl hyper::body::Body for Frames {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn grpc_body(status: Option<&'static str>) -> Frames {
    let mut frames = std::collections::VecDeque::new();
    frames.push_back(hyper::body::Frame::data(bytes::Bytes::from_static(
        b"\0\0\0\0\x02hi",
    )));
    if let Some(code) = status {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static(code));
        frames.push_back(hyper::body::Frame::trailers(t));
    }
    Frames(frames)
}

/// The one span exported for a response with `body`, read to its end or
/// (`read: false`) dropped after its first frame.
async fn span_of(kind: SpanKind, body: Frames, read: bool) -> Span {
    use http_body_util::BodyExt;
    let (tracer, keep, stop, task) = tracer(0.0);
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_static(PARENT));
    let mut span = tracer.start(&mut h, kind).expect("sampled");
    let mut rsp = http::Response::new(body);
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let req = http::Request::post("http://ratings.shop.svc.cluster.local:50051/x")
        .body(())
        .unwrap();
    span.request(&req, "10.96.0.9:50051".parse().unwrap());
    let rsp = tracer.finish(span, None, None, rsp.map(Spanned::plain), None);
    let mut body = rsp.into_body();
    body.frame().await.unwrap().unwrap();
    assert!(
        keep.0.lock().unwrap().is_empty(),
        "not queued before the body ended"
    );
    if read {
        body.collect().await.unwrap();
    } else {
        drop(body);
    }
    stop.cancel();
    task.await.unwrap();
    let spans = keep.0.lock().unwrap();
    let [s] = &spans[..] else { panic!("{spans:?}") };
    s.clone()
}

#[tokio::test(start_paused = true)]
async fn the_grpc_status_comes_from_the_trailers_and_errs_as_the_conventions_say() {
    let s = span_of(SpanKind::Client, grpc_body(Some("14")), true).await;
    assert_eq!(
        s.name, "ratings.shop:50051",
        "no route, no Service: the authority, shortened"
    );
    assert_eq!(attr(&s, "rpc.grpc.status_code").as_deref(), Some("14"));
    assert!(failed(&s), "{:?}", s.status);
    assert_eq!(attr(&s, "weft.response.incomplete"), None);

    let s = span_of(SpanKind::Client, grpc_body(Some("0")), true).await;
    assert_eq!(attr(&s, "rpc.grpc.status_code").as_deref(), Some("0"));
    assert!(!failed(&s), "{:?}", s.status);

    // NOT_FOUND is the client's problem: an error on the client side only.
    let s = span_of(SpanKind::Server, grpc_body(Some("5")), true).await;
    assert_eq!(attr(&s, "rpc.grpc.status_code").as_deref(), Some("5"));
    assert!(!failed(&s), "{:?}", s.status);
    let s = span_of(SpanKind::Server, grpc_body(Some("13")), true).await;
    assert!(failed(&s), "INTERNAL");

    // A gRPC response that ends without a status.
    let s = span_of(SpanKind::Client, grpc_body(None), true).await;
    assert_eq!(attr(&s, "rpc.grpc.status_code"), None);
    assert!(failed(&s), "{:?}", s.status);
}

#[tokio::test(start_paused = true)]
async fn a_response_dropped_mid_body_still_ends_its_span_marked_incomplete() {
    let s = span_of(SpanKind::Server, grpc_body(Some("0")), false).await;
    assert_eq!(
        attr(&s, "weft.response.incomplete").as_deref(),
        Some("true")
    );
    assert!(failed(&s), "{:?}", s.status);
    assert_eq!(
        attr(&s, "rpc.grpc.status_code"),
        None,
        "trailers never read"
    );
}
