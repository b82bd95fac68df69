//! `weft-otlp-receiver` run in a harness pod, as Jaeger runs in a cluster:
//! proxies in other pods export to `POD_IP:4317`, and the test reads the
//! query API on `POD_IP:16686` with curl from inside a pod (the test
//! process cannot reach the node's network directly).

use anyhow::{Context, Result};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::query::{query_in, set_failing_in};
use crate::{bin, Pod, Proc, WAIT};

/// OTLP/gRPC's port, as Jaeger serves it.
pub const GRPC_PORT: u16 = 4317;
/// Jaeger's query port.
pub const QUERY_PORT: u16 = 16686;

/// A `weft-otlp-receiver` running in a pod; killed on drop.
#[derive(Debug)]
pub struct InPod {
    pub proc: Proc,
    /// `POD_IP:4317`.
    pub grpc_addr: SocketAddr,
    /// `POD_IP:16686`.
    pub query_addr: SocketAddr,
}

impl InPod {
    /// Starts it in `pod` on its default ports, as root, with `args`
    /// added (`--capacity=N`); returns once both ports listen. Started
    /// again after [`InPod::stop`], it comes back on the same addresses,
    /// empty.
    ///
    /// # Errors
    /// If it does not start or does not say it listens within [`WAIT`].
    pub fn start(pod: &Pod, args: &[&str]) -> Result<Self> {
        let proc = pod.spawn(None, &bin("weft-otlp-receiver"), args)?;
        proc.expect_line("LISTENING", WAIT)
            .context("weft-otlp-receiver listens")?;
        let ip = IpAddr::V4(pod.ip);
        Ok(InPod {
            proc,
            grpc_addr: SocketAddr::new(ip, GRPC_PORT),
            query_addr: SocketAddr::new(ip, QUERY_PORT),
        })
    }

    /// The OTLP endpoint URL an exporter is given: `http://POD_IP:4317`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// `GET path` on its query API, asked from inside `from` ([`query_in`]).
    ///
    /// # Errors
    /// As [`query_in`].
    pub fn query(&self, from: &Pod, path: &str) -> Result<Value> {
        query_in(from, self.query_addr, path)
    }

    /// Its counters (`GET /receiver/stats`): spans, exports, refused,
    /// dropped, failing.
    ///
    /// # Errors
    /// As [`query_in`].
    pub fn stats(&self, from: &Pod) -> Result<Value> {
        self.query(from, "/receiver/stats")
    }

    /// Sets its failing mode, from inside `from` ([`set_failing_in`]).
    ///
    /// # Errors
    /// As [`set_failing_in`].
    pub fn set_failing(&self, from: &Pod, failing: bool) -> Result<()> {
        set_failing_in(from, self.query_addr, failing)
    }

    /// SIGTERM, and its exit code once it has exited (within 5 s).
    ///
    /// # Errors
    /// If it does not exit in time.
    pub fn stop(mut self) -> Result<Option<i32>> {
        self.proc.terminate(Duration::from_secs(5))
    }
}
