//! weft-control's own spans, exported over OTLP/gRPC to the collector the
//! proxies use (`--trace-collector-addr`; nothing is recorded when unset):
//!
//! - a SERVER span per `weft.identity.v1.Identity/Certify` call, a child of
//!   the caller's W3C `traceparent` when the call carries one
//!   ([`certify_span`]);
//! - an INTERNAL span per object change, from the moment its source saw it
//!   to the moment every destination and policy it touched was published
//!   ([`change_span`]): how long a new endpoint takes to reach the proxies.
//!
//! Both are rare next to requests (a Certify per proxy per day, a change
//! per object update), so every one is recorded and they go through the
//! opentelemetry SDK's batch processor and opentelemetry-otlp's tonic
//! exporter: the proxy's hand-written encoder (weft-proxy's
//! `trace::wire`) exists for the data path's cost, which does not apply
//! here. When tracing is off the global tracer is the API's no-op one, and
//! the call sites build no attribute ([`opentelemetry::trace::Span::is_recording`]).

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Tracer};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use std::time::{Duration, SystemTime};

/// The instrumentation scope of every span here.
pub const SCOPE: &str = "weft-control";
/// How long a span waits for its batch (the proxy's flush interval).
pub const FLUSH: Duration = Duration::from_secs(1);
/// Spans held for export at most; beyond, new ones are dropped (the SDK
/// logs it): a collector that is down costs bounded memory.
pub const QUEUE: usize = 2048;
/// How long one export call may take before it is abandoned.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last spans to leave.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// The collector's address as `--trace-collector-addr` takes it:
/// `host:port`, or `http://host:port` / `https://host:port`. Returned as the
/// URI the exporter dials.
pub fn collector_uri(addr: &str) -> Result<String, String> {
    weft_proto::grpc_uri(addr)
}

/// The tracer provider in use; [`Tracing::shutdown`] sends what is queued.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

/// Starts exporting to `uri` (from [`collector_uri`]) as `service_name`,
/// and makes this the global tracer provider. Call from within the Tokio
/// runtime: the exporter's gRPC channel runs on it.
pub fn init(uri: &str, service_name: &str) -> Result<Tracing, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(uri)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("the trace exporter to {uri}: {e}"))?;
    let mut attributes = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    // The chart sets these from the pod's own fields (the downward API).
    for (var, key) in [
        ("POD_NAME", "k8s.pod.name"),
        ("POD_NAMESPACE", "k8s.namespace.name"),
        ("NODE_NAME", "k8s.node.name"),
    ] {
        if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
            attributes.push(KeyValue::new(key, v));
        }
    }
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attributes(attributes)
        .build();
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(FLUSH)
                .with_max_queue_size(QUEUE)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(Tracing { provider })
}

impl Tracing {
    /// Sends the spans still queued (waiting at most [`SHUTDOWN_FLUSH`]);
    /// blocking: call it off the runtime's worker threads.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_FLUSH) {
            tracing::warn!(error = %e, "the last spans were not all exported");
        }
    }
}

/// The global tracer (the no-op one unless [`init`] ran).
pub fn tracer() -> opentelemetry::global::BoxedTracer {
    opentelemetry::global::tracer(SCOPE)
}

/// A gRPC request's metadata read for W3C trace context.
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The SERVER span of one `Certify` call, parented on the call's
/// `traceparent` (and `tracestate`) when it has a valid one.
pub fn certify_span(metadata: &tonic::metadata::MetadataMap) -> opentelemetry::global::BoxedSpan {
    let tracer = tracer();
    let parent = TraceContextPropagator::new().extract(&Metadata(metadata));
    tracer
        .span_builder("weft.identity.v1.Identity/Certify")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", "weft.identity.v1.Identity"),
            KeyValue::new("rpc.method", "Certify"),
        ])
        .start_with_context(&tracer, &parent)
}

/// The INTERNAL span of one change to `kind` (`Service`,
/// `EndpointSlice`, ...), begun when its source saw it (`seen`).
pub fn change_span(kind: &'static str, seen: SystemTime) -> opentelemetry::global::BoxedSpan {
    let tracer = tracer();
    tracer
        .span_builder(format!("apply {kind}"))
        .with_kind(SpanKind::Internal)
        .with_start_time(seen)
        .start_with_context(&tracer, &opentelemetry::Context::new())
}

/// Whether `span` is a real one (tracing on): the call sites build their
/// attributes only then.
pub fn recording(span: &opentelemetry::global::BoxedSpan) -> bool {
    use opentelemetry::trace::Span as _;
    span.is_recording()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn collector_addresses() {
        for (ok, uri) in [
            (
                "jaeger-collector.tracing:4317",
                "http://jaeger-collector.tracing:4317",
            ),
            ("127.0.0.1:4317", "http://127.0.0.1:4317"),
            ("https://[::1]:4317", "https://[::1]:4317"),
        ] {
            assert_eq!(collector_uri(ok).as_deref(), Ok(uri), "{ok}");
        }
        for (bad, says) in [
            ("jaeger", "not host:port"),
            ("jaeger:", "not host:port"),
            ("ftp://jaeger:21", "scheme"),
            ("a b:1", "not an address"),
        ] {
            let e = collector_uri(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    /// A call's metadata with a sampled W3C `traceparent`.
    fn traced() -> tonic::metadata::MetadataMap {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        metadata
    }

    #[test]
    fn without_init_spans_are_not_recorded() {
        let span = change_span("Service", SystemTime::now());
        assert!(!recording(&span));
        let span = certify_span(&traced());
        assert!(!recording(&span));
    }

    #[test]
    fn a_certify_call_is_a_child_of_its_traceparent() {
        let metadata = traced();
        let cx = TraceContextPropagator::new().extract(&Metadata(&metadata));
        let parent = cx.span().span_context().clone();
        assert_eq!(
            parent.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(parent.is_sampled() && parent.is_remote());
        let none =
            TraceContextPropagator::new().extract(&Metadata(&tonic::metadata::MetadataMap::new()));
        assert!(!none.span().span_context().is_valid());
    }
}
