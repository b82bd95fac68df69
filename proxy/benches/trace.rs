//! What tracing costs a request in the proxy, in ns: `Tracer::start` on a
//! request without context, with an unsampled context (read and rewritten)
//! and with a sampled one, which also builds its span and hands it to the
//! export queue (`Recording::request` + `Tracer::finish`). The queue is
//! drained by the real export task, which encodes each batch as OTLP and
//! hands it to an exporter that drops it: the wall-clock figures are the
//! data path's share alone (the encoding runs on the runtime's thread), and
//! under callgrind (which counts every thread) the whole cost of a span:
//!
//! ```text
//! valgrind --tool=callgrind target/release/deps/trace-* --bench --profile-time 3 "span built"
//! ```
//!
//! ```text
//! cargo bench -p weft-proxy --bench trace
//! ```
//!
//! The last, `encode`, is the export task's share alone: a batch of 512
//! such spans written as OTLP (per span: its time / 512).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::Empty;
use std::hint::black_box;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use weft_proxy::trace::export::{spawn, Export, ExportMetrics};
use weft_proxy::trace::wire::Encoder;
use weft_proxy::trace::{SpanKind, Spanned, Tracer};

#[derive(Debug)]
struct Discard;

impl Export for Discard {
    async fn send(&mut self, request: Bytes) -> Result<u64, tonic::Status> {
        drop(black_box(request));
        Ok(0)
    }
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "host",
        HeaderValue::from_static("web.shop.svc.cluster.local"),
    );
    h.insert("user-agent", HeaderValue::from_static("curl/8.5.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_static(v));
    }
    h
}

/// The resource both encoders write.
const RESOURCE: &[(&str, &str)] = &[
    ("service.name", "web"),
    ("k8s.pod.name", "web-7d4b9c8f6-x2x9q"),
    ("k8s.namespace.name", "shop"),
];

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let encoder = Encoder::new(RESOURCE);
    let (queue, _task) =
        rt.block_on(async { spawn(Discard, encoder, ExportMetrics::default(), stop.clone()) });
    let tracer = Tracer::new(queue, 0.0);
    let orig = "10.96.0.10:80".parse().unwrap();
    let service: Arc<str> = "web.shop:80".into();
    let client: Arc<str> = "spiffe://cluster.local/ns/shop/sa/client".into();

    let plain = headers(&[]);
    c.bench_function("trace/no context", |b| {
        b.iter_batched_ref(
            || plain.clone(),
            |h| black_box(tracer.start(h, SpanKind::Client)),
            criterion::BatchSize::SmallInput,
        )
    });
    let unsampled = headers(&[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    )]);
    c.bench_function("trace/unsampled context", |b| {
        b.iter_batched_ref(
            || unsampled.clone(),
            |h| black_box(tracer.start(h, SpanKind::Client)),
            criterion::BatchSize::SmallInput,
        )
    });
    let sampled = headers(&[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )]);
    c.bench_function("trace/sampled: span built and queued", |b| {
        b.iter_batched_ref(
            || {
                let mut req = Request::new(());
                *req.headers_mut() = sampled.clone();
                req
            },
            |req| {
                let span = tracer.start(req.headers_mut(), SpanKind::Client);
                if let Some(mut span) = span {
                    span.request(req, orig);
                    span.endpoint = Some("10.244.0.7:8080".parse().unwrap());
                    // The span is queued when the (empty) body is dropped.
                    drop(tracer.finish(
                        span,
                        None,
                        Some(&service),
                        Response::new(Spanned::plain(Empty::<Bytes>::new())),
                        Some(&client),
                    ));
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });

    // The export task's share: a batch of spans like the one above, as
    // OTLP (per span: the time / 512).
    let server: Arc<str> = "spiffe://cluster.local/ns/shop/sa/web".into();
    let batch: Vec<_> = (0..512)
        .map(|_| {
            let mut req = Request::new(());
            *req.headers_mut() = sampled.clone();
            let mut span = tracer
                .start(req.headers_mut(), SpanKind::Client)
                .expect("sampled");
            span.request(&req, orig);
            span.endpoint = Some("10.244.0.7:8080".parse().unwrap());
            span.server_id = Some(server.clone());
            span
        })
        .collect();
    let mut encoder = Encoder::new(RESOURCE);
    c.bench_function("trace/encode: a batch of 512 spans", |b| {
        b.iter(|| black_box(encoder.encode(&batch)))
    });
    stop.cancel();
}

criterion_group!(benches, bench);
criterion_main!(benches);
