//! The proxy's metric families, and the per-connection handles the data path
//! records into.
//!
//! Label lookups (a hash and a lock inside `Family`) happen once per
//! connection, when its handles are made; recording a request, a response or
//! bytes is then atomics only.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `weft_request_total` | counter | conn |
//! | `weft_response_total` | counter | conn, status_class |
//! | `weft_grpc_response_total` | counter | conn, grpc_status |
//! | `weft_response_latency_ms` | histogram | conn |
//! | `weft_proxy_error_total` | counter | conn, reason |
//! | `weft_tcp_open_connections` | gauge | conn |
//! | `weft_tcp_open_total` | counter | conn |
//! | `weft_tcp_read_bytes_total` | counter | conn |
//! | `weft_tcp_write_bytes_total` | counter | conn |
//! | `weft_tcp_refused_total` | counter | direction, reason |
//! | `weft_protocol_detect_total` | counter | direction, protocol |
//! | `process_*` | | CPU seconds, resident and virtual memory, open fds, start time |
//!
//! `conn` is the connection's labels: `direction`, `dst` (the original
//! destination), `tls` (`"true"` for mesh TLS), `client_id` and `server_id`
//! (the SPIFFE IDs of both ends of the mesh TLS; empty without it). They
//! describe the connection actually made: inbound, the accepted one;
//! outbound, the one to the endpoint (per connection for opaque TCP, per
//! request for HTTP, whose requests may go to meshed and unmeshed
//! endpoints of one Service). Mesh TLS families live in `tls` and `identity`.
//!
//! Bounded: every series keyed by `dst` is removed once no connection uses
//! it and it has been idle for the retention period
//! (`--metrics-retain-idle`), so an application that connects to ever new
//! addresses cannot grow the proxy's memory or its scrape without bound.

use http::HeaderValue;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use super::histogram::LatencyHistogram;
use super::process::ProcessCollector;
use super::series::{InUse, Series};

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// What protocol detection decided.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    /// Bytes that are neither HTTP/1 nor HTTP/2.
    Opaque,
    /// The client sent nothing within the detection timeout (server speaks first).
    OpaqueTimeout,
    /// The port is configured opaque: no detection.
    OpaquePort,
    /// A ClientHello offering a mesh ALPN protocol (inbound).
    MeshTls,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Opaque => "opaque",
            Protocol::OpaqueTimeout => "opaque_timeout",
            Protocol::OpaquePort => "opaque_port",
            Protocol::MeshTls => "mesh_tls",
        }
    }
}

impl EncodeLabelValue for Protocol {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DstLabels {
    direction: Direction,
    dst: String,
    tls: &'static str,
    client_id: String,
    server_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResponseLabels {
    #[prometheus(flatten)]
    pub(super) conn: DstLabels,
    pub(super) status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct GrpcLabels {
    #[prometheus(flatten)]
    pub(super) conn: DstLabels,
    pub(super) grpc_status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ErrorLabels {
    #[prometheus(flatten)]
    pub(super) conn: DstLabels,
    pub(super) reason: &'static str,
}

/// The two ends of a mesh TLS connection.
#[derive(Clone, Debug)]
pub struct MeshIds {
    pub client: Arc<str>,
    pub server: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    direction: Direction,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DetectLabels {
    direction: Direction,
    protocol: Protocol,
}

pub(crate) const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The `grpc_status` label: a code of the gRPC spec (0 to 16), `other` (a
/// value that is not one), or `none` (the response ended, or its upstream
/// failed, without a status).
pub(super) const GRPC_STATUSES: [&str; 19] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "other", "none",
];
const GRPC_OTHER: usize = 17;
const GRPC_NONE: usize = 18;

/// Every family, registered once at start-up. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Metrics(pub(super) Arc<Families>);

#[derive(Debug, Default)]
pub(super) struct Families {
    /// The `conn` label sets in use or recently used, for eviction.
    pub(super) series: Mutex<HashMap<DstLabels, Series>>,
    pub(super) requests: Family<DstLabels, Counter>,
    pub(super) responses: Family<ResponseLabels, Counter>,
    pub(super) grpc: Family<GrpcLabels, Counter>,
    pub(super) latency: Family<DstLabels, LatencyHistogram>,
    pub(super) errors: Family<ErrorLabels, Counter>,
    pub(super) tcp_open: Family<DstLabels, Gauge>,
    pub(super) tcp_total: Family<DstLabels, Counter>,
    pub(super) tcp_read: Family<DstLabels, Counter>,
    pub(super) tcp_write: Family<DstLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    detect: Family<DetectLabels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let m = &metrics.0;
        let weft = registry.sub_registry_with_prefix("weft");
        weft.register(
            "request",
            "HTTP requests, counted when sent on (under the connection they went over) or answered by the proxy itself",
            m.requests.clone(),
        );
        weft.register(
            "response",
            "HTTP responses sent, by status class (proxy-generated ones included)",
            m.responses.clone(),
        );
        weft.register(
            "grpc_response",
            "gRPC responses sent (HTTP 200 with a gRPC content type), by the grpc-status of their trailers (or trailers-only headers)",
            m.grpc.clone(),
        );
        weft.register(
            "response_latency_ms",
            "Time from a request's arrival to its response's headers, in milliseconds",
            m.latency.clone(),
        );
        weft.register(
            "proxy_error",
            "Responses the proxy generated itself (or connections it reset), by reason",
            m.errors.clone(),
        );
        weft.register(
            "tcp_open_connections",
            "TCP connections open now",
            m.tcp_open.clone(),
        );
        weft.register("tcp_open", "TCP connections accepted", m.tcp_total.clone());
        weft.register(
            "tcp_read_bytes",
            "Bytes read from clients",
            m.tcp_read.clone(),
        );
        weft.register(
            "tcp_write_bytes",
            "Bytes written to clients",
            m.tcp_write.clone(),
        );
        weft.register(
            "tcp_refused",
            "Connections refused before any forwarding, or cut off for abuse (http2_flood), by reason",
            m.refused.clone(),
        );
        weft.register(
            "protocol_detect",
            "Protocol detection outcomes",
            m.detect.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector::default()));
        metrics
    }

    /// Handles for one accepted connection to `dst`, over mesh TLS
    /// between `mesh` when it is.
    pub fn conn(
        &self,
        direction: Direction,
        dst: SocketAddr,
        mesh: Option<&MeshIds>,
    ) -> ConnMetrics {
        let labels = DstLabels {
            direction,
            dst: dst.to_string(),
            tls: if mesh.is_some() { "true" } else { "false" },
            client_id: mesh.map(|m| m.client.to_string()).unwrap_or_default(),
            server_id: mesh.map(|m| m.server.to_string()).unwrap_or_default(),
        };
        let in_use = Arc::new(self.in_use(&labels));
        let m = &self.0;
        m.tcp_total.get_or_create(&labels).inc();
        let open = m.tcp_open.get_or_create(&labels).clone();
        open.inc();
        ConnMetrics {
            read: m.tcp_read.get_or_create(&labels).clone(),
            write: m.tcp_write.get_or_create(&labels).clone(),
            open,
            labels,
            metrics: self.clone(),
            _in_use: in_use,
        }
    }

    pub fn refused(&self, direction: Direction, reason: &'static str) {
        self.0
            .refused
            .get_or_create(&RefusedLabels { direction, reason })
            .inc();
    }

    pub fn detected(&self, direction: Direction, protocol: Protocol) {
        self.0
            .detect
            .get_or_create(&DetectLabels {
                direction,
                protocol,
            })
            .inc();
    }
}

/// One connection's handles; dropping it closes the connection in the gauge.
#[derive(Debug)]
pub struct ConnMetrics {
    pub read: Counter,
    pub write: Counter,
    open: Gauge,
    labels: DstLabels,
    metrics: Metrics,
    _in_use: Arc<InUse>,
}

impl ConnMetrics {
    /// The HTTP handles of this connection (made when it is detected as HTTP).
    pub fn http(&self) -> HttpMetrics {
        HttpMetrics::new(&self.metrics, self.labels.clone(), self._in_use.clone())
    }

    /// The connection failed before anything was forwarded (opaque TCP:
    /// closing it is all the proxy can say).
    pub fn proxy_error(&self, reason: &'static str) {
        self.metrics.error(&self.labels, reason);
    }
}

impl Drop for ConnMetrics {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Request and response handles of one HTTP connection.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Counter,
    latency: LatencyHistogram,
    responses: [Counter; 5],
    grpc: Arc<GrpcStatuses>,
    metrics: Metrics,
    labels: DstLabels,
    _in_use: Arc<InUse>,
}

/// The gRPC statuses of one connection's responses. A code's counter is
/// made the first time the code is seen: most connections see one or two
/// codes, and making all nineteen would be nineteen label lookups per
/// connection.
#[derive(Debug)]
pub struct GrpcStatuses {
    family: Family<GrpcLabels, Counter>,
    labels: DstLabels,
    codes: [OnceLock<Counter>; GRPC_STATUSES.len()],
}

impl GrpcStatuses {
    /// A response whose `grpc-status` is `value` (none: it ended, or its
    /// upstream failed, without one).
    pub fn record(&self, value: Option<&HeaderValue>) {
        let i = match value {
            None => GRPC_NONE,
            Some(v) => match std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
            {
                Some(code) if code < GRPC_OTHER && v.len() <= 2 => code,
                _ => GRPC_OTHER,
            },
        };
        self.codes[i]
            .get_or_init(|| {
                self.family
                    .get_or_create(&GrpcLabels {
                        conn: self.labels.clone(),
                        grpc_status: GRPC_STATUSES[i],
                    })
                    .clone()
            })
            .inc();
    }
}

impl HttpMetrics {
    fn new(metrics: &Metrics, labels: DstLabels, in_use: Arc<InUse>) -> Self {
        let m = &metrics.0;
        Self {
            requests: m.requests.get_or_create(&labels).clone(),
            latency: m.latency.get_or_create(&labels).clone(),
            responses: STATUS_CLASSES.map(|status_class| {
                m.responses
                    .get_or_create(&ResponseLabels {
                        conn: labels.clone(),
                        status_class,
                    })
                    .clone()
            }),
            grpc: Arc::new(GrpcStatuses {
                family: m.grpc.clone(),
                labels: labels.clone(),
                codes: Default::default(),
            }),
            metrics: metrics.clone(),
            labels,
            _in_use: in_use,
        }
    }

    /// The handles of requests from this connection that went over mesh TLS
    /// from `client` to `server` (outbound, to a meshed endpoint).
    pub fn meshed(&self, client: &Arc<str>, server: &Arc<str>) -> HttpMetrics {
        let labels = DstLabels {
            tls: "true",
            client_id: client.to_string(),
            server_id: server.to_string(),
            ..self.labels.clone()
        };
        let in_use = Arc::new(self.metrics.in_use(&labels));
        HttpMetrics::new(&self.metrics, labels, in_use)
    }

    /// A request sent on (or answered by the proxy without going anywhere).
    pub fn request(&self) {
        self.requests.inc();
    }

    /// A request answered (by the upstream or the proxy) with `status`,
    /// `micros` after it arrived.
    pub fn done(&self, status: http::StatusCode, micros: u64) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[class].inc();
        self.latency.observe_us(micros);
    }

    /// The gRPC statuses of this connection's responses.
    pub fn grpc(&self) -> &Arc<GrpcStatuses> {
        &self.grpc
    }

    /// A response the proxy made itself (rare: the lookup is fine here).
    pub fn proxy_error(&self, reason: &'static str) {
        self.metrics.error(&self.labels, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scrape(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[tokio::test(start_paused = true)]
    async fn idle_series_are_evicted_and_used_ones_kept() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let old: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let busy: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let conn = metrics.conn(Direction::Outbound, old, None);
        let http = conn.http();
        http.request();
        http.done(http::StatusCode::OK, 10);
        http.proxy_error("connect refused");
        let client: Arc<str> = "spiffe://cluster.local/ns/a/sa/a".into();
        let server: Arc<str> = "spiffe://cluster.local/ns/b/sa/b".into();
        http.meshed(&client, &server).done(http::StatusCode::OK, 10);
        drop((conn, http));
        let held = metrics.conn(Direction::Outbound, busy, None);
        assert!(scrape(&registry).contains("10.0.0.1:80"));

        let retain = Duration::from_secs(600);
        tokio::time::advance(Duration::from_secs(599)).await;
        assert_eq!(metrics.evict_idle(retain), 0, "not idle long enough");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            metrics.evict_idle(retain),
            2,
            "plain and meshed series of 10.0.0.1"
        );
        let text = scrape(&registry);
        assert!(!text.contains("10.0.0.1:80"), "{text}");
        assert!(
            text.contains("10.0.0.2:80"),
            "a connection still uses it: {text}"
        );
        drop(held);
        tokio::time::advance(retain).await;
        assert_eq!(metrics.evict_idle(retain), 1);
        assert!(metrics.0.series.lock().unwrap().is_empty());
    }

    #[test]
    fn a_request_counts_under_the_connection_it_went_over() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let conn = metrics.conn(Direction::Outbound, "10.0.0.1:80".parse().unwrap(), None);
        let client: Arc<str> = "spiffe://td/ns/a/sa/a".into();
        let server: Arc<str> = "spiffe://td/ns/b/sa/b".into();
        conn.http().meshed(&client, &server).request();
        conn.http().request();
        let text = scrape(&registry);
        assert!(text.contains(r#"weft_request_total{direction="outbound",dst="10.0.0.1:80",tls="true",client_id="spiffe://td/ns/a/sa/a",server_id="spiffe://td/ns/b/sa/b"} 1"#), "{text}");
        assert!(text.contains(r#"weft_request_total{direction="outbound",dst="10.0.0.1:80",tls="false",client_id="",server_id=""} 1"#), "{text}");
    }
}
