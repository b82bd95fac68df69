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
//! (the SPIFFE IDs of both ends of the mesh TLS; empty without it). Mesh
//! TLS families live in `tls` and `identity`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use super::histogram::LatencyHistogram;
use super::process::ProcessCollector;

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
struct DstLabels {
    direction: Direction,
    dst: String,
    tls: &'static str,
    client_id: String,
    server_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    #[prometheus(flatten)]
    conn: DstLabels,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    #[prometheus(flatten)]
    conn: DstLabels,
    reason: &'static str,
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

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Every family, registered once at start-up. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Metrics(Arc<Families>);

#[derive(Debug, Default)]
struct Families {
    requests: Family<DstLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    latency: Family<DstLabels, LatencyHistogram>,
    errors: Family<ErrorLabels, Counter>,
    tcp_open: Family<DstLabels, Gauge>,
    tcp_total: Family<DstLabels, Counter>,
    tcp_read: Family<DstLabels, Counter>,
    tcp_write: Family<DstLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    detect: Family<DetectLabels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let m = &metrics.0;
        let weft = registry.sub_registry_with_prefix("weft");
        weft.register("request", "HTTP requests received", m.requests.clone());
        weft.register(
            "response",
            "HTTP responses sent, by status class (proxy-generated ones included)",
            m.responses.clone(),
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
            "Connections refused before any forwarding, by reason",
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
}

impl ConnMetrics {
    /// The HTTP handles of this connection (made when it is detected as HTTP).
    pub fn http(&self) -> HttpMetrics {
        let m = &self.metrics.0;
        let l = &self.labels;
        HttpMetrics {
            requests: m.requests.get_or_create(l).clone(),
            latency: m.latency.get_or_create(l).clone(),
            responses: STATUS_CLASSES.map(|status_class| {
                m.responses
                    .get_or_create(&ResponseLabels {
                        conn: l.clone(),
                        status_class,
                    })
                    .clone()
            }),
            metrics: self.metrics.clone(),
            labels: l.clone(),
        }
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
    pub requests: Counter,
    pub latency: LatencyHistogram,
    responses: [Counter; 5],
    metrics: Metrics,
    labels: DstLabels,
}

impl HttpMetrics {
    pub fn response(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[class].inc();
    }

    /// A response the proxy made itself (rare: the lookup is fine here).
    pub fn proxy_error(&self, reason: &'static str) {
        self.metrics
            .0
            .errors
            .get_or_create(&ErrorLabels {
                conn: self.labels.clone(),
                reason,
            })
            .inc();
    }
}
