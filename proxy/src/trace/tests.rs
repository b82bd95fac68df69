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
    tracer.finish(span, done(&rsp, &Method::GET, StatusCode::OK));
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
    assert_eq!(s.status, Status::Unset);
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
    );
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
fn service_names_as_operators_read_them() {
    assert_eq!(service_name("web.shop.svc.cluster.local:80"), "web.shop:80");
    assert_eq!(service_name("10.96.0.10:80"), "10.96.0.10:80");
    assert_eq!(service_name("web.shop.svc.cluster.local"), "web.shop");
}
