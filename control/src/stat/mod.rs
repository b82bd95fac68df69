//! `weft stat`: the golden metrics of meshed workloads, read from their
//! proxies' `/metrics` (port 4191), as `linkerd viz stat` shows them.
//!
//! One implementation for every reader: the CLI (`weft stat`, [`cli`]) and
//! the demo's live view (`weft-demo`) both hand [`Scrape`]s to
//! [`aggregate::rows`]. A scrape is the text of one proxy's page parsed by
//! [`parse`], tagged with the pod it came from; two scrapes of the same
//! pods give rates and the latency distribution of what happened between
//! them.
//!
//! | column | from |
//! |---|---|
//! | success | inbound responses that are not 5xx, out of all inbound responses |
//! | rps | inbound responses per second between the two scrapes |
//! | p50/p95/p99 | `weft_response_latency_ms` buckets (inbound), interpolated within a bucket |
//! | mTLS | share of inbound responses on mesh-TLS connections (`tls="true"`) |
//! | retries | `weft_retry_requests_total` of the workload's own (outbound) calls |
//! | denied | `weft_inbound_authz_total{result="deny"}` |
//!
//! Routes (`weft stat route`) are the outbound side: the
//! `weft_route_*` families per route and backend, with each backend's share
//! of its route (a TrafficSplit's actual split).
//!
//! It touches nothing but the network (`scrape`) and, in a cluster, the API
//! server's pod list (read only).

pub mod aggregate;
pub mod cli;
pub mod parse;
pub mod scrape;

pub use aggregate::{rows, By, Row};
pub use parse::{parse, Sample};

/// The pod a scrape came from, as the tables name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    pub namespace: String,
    /// The workload: a Deployment (or other owner) name.
    pub workload: String,
    pub pod: String,
}

/// One proxy's `/metrics`, parsed, and when it was read.
#[derive(Clone, Debug)]
pub struct Scrape {
    pub pod: PodRef,
    pub samples: Vec<Sample>,
    pub at: std::time::Instant,
}

impl Scrape {
    /// Parses `text` (a proxy's `/metrics`) read from `pod` at `at`.
    pub fn new(pod: PodRef, text: &str, at: std::time::Instant) -> Result<Self, parse::Error> {
        Ok(Self {
            pod,
            samples: parse(text)?,
            at,
        })
    }
}
