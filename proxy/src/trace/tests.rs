use super::*;
use export::{spawn_with, ExportMetrics, FLUSH};
use http::{HeaderValue, Method, StatusCode};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::SpanExporter;
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Default)]
struct Keep(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Keep {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn tracer(percent: f64) -> (Tracer, Keep, CancellationToken, tokio::task::JoinHandle<()>) {
    let keep = Keep::default();
    let stop = CancellationToken::new();
    let (queue, task) = spawn_with(
        keep.clone(),
        ExportMetrics::default(),
        stop.clone(),
        64,
        64,
        FLUSH,
    );
    (Tracer::new(queue, percent), keep, stop, task)
}

fn done<'a>(headers: &'a HeaderMap, method: &'a Method, status: StatusCode) -> Done<'a> {
    Done {
        name: "web.shop:80",
        method,
        route: Some("httproute/shop/web"),
        status,
        response: headers,
        client_id: Some("spiffe://cluster.local/ns/shop/sa/client"),
        authority: Some("web.shop.svc.cluster.local:80"),
    }
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
    span.server_id = Some("spiffe://cluster.local/ns/shop/sa/web".into());
    span.retried(1, "503".into());
    let mut rsp = HeaderMap::new();
    rsp.insert("grpc-status", HeaderValue::from_static("14"));
    tracer
        .finish(span, done(&rsp, &Method::GET, StatusCode::OK))
        .end(true);
    stop.cancel();
    task.await.unwrap();

    let spans = keep.0.lock().unwrap();
    let [s] = &spans[..] else { panic!("{spans:?}") };
    assert_eq!(s.span_kind, SpanKind::Client);
    assert_eq!(s.name, "web.shop:80");
    assert_eq!(
        s.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(s.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(
        format!(
            "00-{}-{}-01",
            s.span_context.trace_id(),
            s.span_context.span_id()
        ),
        out,
        "the next hop's parent is this span"
    );
    let attr = |k: &str| {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attr("http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr("http.route").as_deref(), Some("httproute/shop/web"));
    assert_eq!(attr("network.peer.address").as_deref(), Some("10.244.0.7"));
    assert_eq!(attr("rpc.grpc.status_code").as_deref(), Some("14"));
    assert_eq!(
        attr("weft.server.id").as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/web")
    );
    assert_eq!(
        attr("weft.client.id").as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/client")
    );
    assert_eq!(s.events.events.len(), 1);
    // UNAVAILABLE (trailers-only, in the headers): a client span's error.
    assert!(matches!(s.status, Status::Error { .. }), "{:?}", s.status);
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
    all.finish(
        span,
        done(&HeaderMap::new(), &Method::POST, StatusCode::BAD_GATEWAY),
    )
    .end(true);
    stop.cancel();
    task.await.unwrap();
    let spans = keep.0.lock().unwrap();
    assert_eq!(spans[0].parent_span_id, SpanId::INVALID, "a root span");
    assert!(
        matches!(spans[0].status, Status::Error { .. }),
        "5xx: error"
    );

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

#[test]
fn addresses_and_methods_as_attribute_values() {
    for a in [
        "0.0.0.0",
        "10.244.0.7",
        "192.168.100.255",
        "1.20.3.99",
        "::1",
        "fd00:10:244::7",
    ] {
        let ip: std::net::IpAddr = a.parse().unwrap();
        assert_eq!(super::ip(ip).as_str(), a);
    }
    for m in ["GET", "POST", "PATCH", "PURGE"] {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        assert_eq!(super::method(&method).as_str(), m);
    }
}

#[test]
fn service_names_as_operators_read_them() {
    assert_eq!(service_name("web.shop.svc.cluster.local:80"), "web.shop:80");
    assert_eq!(service_name("10.96.0.10:80"), "10.96.0.10:80");
    assert_eq!(service_name("web.shop.svc.cluster.local"), "web.shop");
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
async fn span_of(kind: SpanKind, body: Frames, read: bool) -> SpanData {
    use http_body_util::BodyExt;
    let (tracer, keep, stop, task) = tracer(0.0);
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_static(PARENT));
    let span = tracer.start(&mut h, kind).expect("sampled");
    let mut rsp = http::Response::new(body);
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let req = http::Request::post("http://ratings.shop.svc.cluster.local:50051/x")
        .body(())
        .unwrap();
    let traced = Traced::of(&req, "10.96.0.9:50051".parse().unwrap());
    let rsp = traced.finish(&tracer, span, None, None, rsp.map(Spanned::plain), None);
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

fn attr(s: &SpanData, k: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == k)
        .map(|kv| kv.value.to_string())
}

#[tokio::test(start_paused = true)]
async fn the_grpc_status_comes_from_the_trailers_and_errs_as_the_conventions_say() {
    let s = span_of(SpanKind::Client, grpc_body(Some("14")), true).await;
    assert_eq!(attr(&s, "rpc.grpc.status_code").as_deref(), Some("14"));
    assert!(matches!(s.status, Status::Error { .. }), "{:?}", s.status);
    assert_eq!(attr(&s, "weft.response.incomplete"), None);

    let s = span_of(SpanKind::Client, grpc_body(Some("0")), true).await;
    assert_eq!(attr(&s, "rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(s.status, Status::Unset);

    // NOT_FOUND is the client's problem: an error on the client side only.
    let s = span_of(SpanKind::Server, grpc_body(Some("5")), true).await;
    assert_eq!(attr(&s, "rpc.grpc.status_code").as_deref(), Some("5"));
    assert_eq!(s.status, Status::Unset);
    let s = span_of(SpanKind::Server, grpc_body(Some("13")), true).await;
    assert!(matches!(s.status, Status::Error { .. }), "INTERNAL");

    // A gRPC response that ends without a status.
    let s = span_of(SpanKind::Client, grpc_body(None), true).await;
    assert_eq!(attr(&s, "rpc.grpc.status_code"), None);
    assert!(matches!(s.status, Status::Error { .. }), "{:?}", s.status);
}

#[tokio::test(start_paused = true)]
async fn a_response_dropped_mid_body_still_ends_its_span_marked_incomplete() {
    let s = span_of(SpanKind::Server, grpc_body(Some("0")), false).await;
    assert_eq!(
        attr(&s, "weft.response.incomplete").as_deref(),
        Some("true")
    );
    assert!(matches!(s.status, Status::Error { .. }), "{:?}", s.status);
    assert_eq!(
        attr(&s, "rpc.grpc.status_code"),
        None,
        "trailers never read"
    );
}
