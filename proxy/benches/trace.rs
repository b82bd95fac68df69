//! What tracing costs a request in the proxy, in ns: `Tracer::start` on a
//! request without context, with an unsampled context (read and rewritten)
//! and with a sampled one, which also builds its span and hands it to the
//! export queue (`Traced::of` + `finish`). The queue is drained by an
//! exporter that drops the spans, so the figures are the data path's share
//! alone (the export task's encoding runs off the request path).
//!
//! ```text
//! cargo bench -p weft-proxy --bench trace
//! ```

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::Empty;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use std::hint::black_box;
use tokio_util::sync::CancellationToken;
use weft_proxy::trace::export::{spawn, ExportMetrics};
use weft_proxy::trace::{SpanKind, Spanned, Traced, Tracer};

#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        drop(batch);
        Ok(())
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

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let (queue, _task) =
        rt.block_on(async { spawn(Discard, ExportMetrics::default(), stop.clone()) });
    let tracer = Tracer::new(queue, 0.0);
    let orig = "10.96.0.10:80".parse().unwrap();

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
                let traced = Traced::of(req, orig);
                if let Some(mut span) = span {
                    span.endpoint = Some("10.244.0.7:8080".parse().unwrap());
                    // The span is queued when the (empty) body is dropped.
                    drop(traced.finish(
                        &tracer,
                        span,
                        None,
                        Some("web.shop:80"),
                        Response::new(Spanned::plain(Empty::<Bytes>::new())),
                        Some("spiffe://cluster.local/ns/shop/sa/client"),
                    ));
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    stop.cancel();
}

criterion_group!(benches, bench);
criterion_main!(benches);
