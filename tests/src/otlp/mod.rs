//! The tests' stand-in for Jaeger: an OTLP/gRPC receiver the proxies export
//! spans to, which records them and answers Jaeger's query API, so that a
//! scenario asserts what an operator would see in Jaeger.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use weft_tests::otlp::Receiver;
//!
//! let mut jaeger = Receiver::start(
//!     "127.0.0.1:0".parse().unwrap(), // OTLP/gRPC (Jaeger's 4317)
//!     "127.0.0.1:0".parse().unwrap(), // query API (Jaeger's 16686)
//! ).unwrap();
//! // The code under test exports to jaeger.endpoint() ("http://127.0.0.1:PORT").
//! let spans = jaeger
//!     .until(|s| s.iter().any(|s| s.name == "GET /hello"), Duration::from_secs(5))
//!     .await;
//! let services = weft_tests::otlp::query(jaeger.query_addr(), "/api/services").await.unwrap();
//! jaeger.set_failing(true); // exports answered UNAVAILABLE, nothing recorded
//! jaeger.stop();            // the collector goes away...
//! jaeger.restart().unwrap(); // ...and comes back on the same ports, spans kept
//! # }
//! ```
//!
//! A [`Receiver`] runs on its own thread with its own tokio runtime (usable
//! from plain and async tests alike) and stops when stopped or dropped. The
//! binary `weft-otlp-receiver` runs the same servers in a pod ([`InPod`]);
//! [`query_in`] reads its query API from inside a pod. All it touches is its thread and
//! two TCP ports.
//!
//! Files: `span` (what is kept of a span, converted from OTLP), `store`
//! (bounded, with a signal per export), `jaeger` (the query API's JSON),
//! `serve` (the gRPC and HTTP servers), `query` (reading the query API),
//! `pod` (the binary in a harness pod).

mod jaeger;
mod pod;
mod query;
mod serve;
mod span;
mod store;

#[cfg(test)]
mod tests;

pub use jaeger::{answer, DEFAULT_LIMIT};
pub use pod::{InPod, GRPC_PORT, QUERY_PORT};
pub use query::{edges, get, query, query_in, set_failing_in};
pub use serve::{serve, serve_query};
pub use span::{hex, spans_of, Attr, Attrs, Event, Kind, Link, RecordedSpan, Status};
pub use store::{InFlight, Store, CAPACITY};

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

/// How long a stopping receiver lets exports in flight finish before it
/// closes their connections.
const GRACE: Duration = Duration::from_secs(1);

/// A running (or stopped) receiver and the spans it has recorded.
#[derive(Debug)]
pub struct Receiver {
    store: Arc<Store>,
    grpc_addr: SocketAddr,
    query_addr: SocketAddr,
    running: Option<Running>,
}

/// The servers' thread, told to stop through `stop` and joined.
#[derive(Debug)]
struct Running {
    stop: watch::Sender<bool>,
    thread: JoinHandle<()>,
}

impl Receiver {
    /// Binds both addresses (port 0 picks a free one) and serves them,
    /// keeping at most [`CAPACITY`] spans.
    ///
    /// # Errors
    /// If an address cannot be bound or the thread not started.
    pub fn start(grpc_addr: SocketAddr, query_addr: SocketAddr) -> io::Result<Self> {
        Self::start_with(grpc_addr, query_addr, CAPACITY)
    }

    /// As [`Receiver::start`], keeping at most `capacity` spans.
    ///
    /// # Errors
    /// If an address cannot be bound or the thread not started.
    pub fn start_with(
        grpc_addr: SocketAddr,
        query_addr: SocketAddr,
        capacity: usize,
    ) -> io::Result<Self> {
        let mut receiver = Receiver {
            store: Arc::new(Store::new(capacity)),
            grpc_addr,
            query_addr,
            running: None,
        };
        receiver.restart()?;
        Ok(receiver)
    }

    /// Serves again on the addresses it had (the ports first picked, when
    /// started on port 0), keeping what it recorded; nothing when running.
    ///
    /// # Errors
    /// If an address cannot be bound (now taken by another process).
    pub fn restart(&mut self) -> io::Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let grpc = bind(self.grpc_addr)?;
        let query = bind(self.query_addr)?;
        self.grpc_addr = grpc.local_addr()?;
        self.query_addr = query.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let store = self.store.clone();
        let thread = std::thread::Builder::new()
            .name(format!("otlp-{}", self.grpc_addr.port()))
            .spawn(move || run(grpc, query, store, stopped))?;
        self.running = Some(Running { stop, thread });
        Ok(())
    }

    /// Stops serving: no new connection is accepted, exports in flight get
    /// up to [`GRACE`] to finish, then every connection is closed (the
    /// exporter sees its connection go) and both ports are free. Returns once that is done; nothing when already stopped.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(true);
            let _ = running.thread.join();
        }
    }

    /// Whether it serves (not stopped).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The OTLP/gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The query API's address.
    pub fn query_addr(&self) -> SocketAddr {
        self.query_addr
    }

    /// The OTLP endpoint URL an exporter is given: `http://ADDR`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// Every recorded span, oldest first.
    pub fn spans(&self) -> Vec<RecordedSpan> {
        self.store.lock().iter().cloned().collect()
    }

    /// The recorded spans of one trace (`trace_id` in lowercase hex).
    pub fn trace(&self, trace_id: &str) -> Vec<RecordedSpan> {
        let spans = self.store.lock();
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Waits until `pred` holds for the recorded spans (oldest first),
    /// checking now and after every export (accepted or refused), at most
    /// `within`; returns the spans it held for. It waits on a signal, not
    /// by polling. `pred` runs under the store's lock: it may read the
    /// counters ([`Receiver::exports`], ...) but not [`Receiver::spans`].
    ///
    /// # Panics
    /// When `within` passes first, saying what was recorded.
    pub async fn until(
        &self,
        mut pred: impl FnMut(&[RecordedSpan]) -> bool,
        within: Duration,
    ) -> Vec<RecordedSpan> {
        let deadline = tokio::time::Instant::now() + within;
        let mut exports = self.store.subscribe();
        loop {
            exports.borrow_and_update();
            {
                let mut spans = self.store.lock();
                if pred(spans.make_contiguous()) {
                    return spans.iter().cloned().collect();
                }
            }
            if tokio::time::timeout_at(deadline, exports.changed())
                .await
                .is_err()
            {
                let names: Vec<String> = self
                    .spans()
                    .iter()
                    .map(|s| format!("{}:{}", s.service(), s.name))
                    .collect();
                panic!(
                    "not seen within {within:?}; {} exports accepted, {} refused, spans: {names:?}",
                    self.exports(),
                    self.refused()
                );
            }
        }
    }

    /// The query API's answer to `GET path_and_query`, without HTTP.
    pub fn answer(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        answer(&*self.store.lock(), path, query)
    }

    /// While `failing`, exports are answered UNAVAILABLE and nothing is recorded.
    pub fn set_failing(&self, failing: bool) {
        self.store.set_failing(failing);
    }

    /// How many spans were dropped to stay within the bound.
    pub fn dropped(&self) -> u64 {
        self.store.dropped()
    }

    /// How many exports were accepted.
    pub fn exports(&self) -> u64 {
        self.store.exports()
    }

    /// How many exports were refused (failing mode).
    pub fn refused(&self) -> u64 {
        self.store.refused()
    }

    /// The shared store (what [`serve`] takes).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A non-blocking std listener (std sets SO_REUSEADDR, so a port just
/// released by [`Receiver::stop`] binds again at once).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The servers' thread: serves until told to stop, grants [`GRACE`], then
/// drops its runtime, which closes every connection left.
fn run(grpc: TcpListener, query: TcpListener, store: Arc<Store>, stopped: watch::Receiver<bool>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("otlp receiver runtime");
    rt.block_on(async move {
        let (grpc, query) = match (
            tokio::net::TcpListener::from_std(grpc),
            tokio::net::TcpListener::from_std(query),
        ) {
            (Ok(g), Ok(q)) => (g, q),
            _ => return,
        };
        let mut on_stop = stopped.clone();
        let shutdown = async move {
            let _ = on_stop.wait_for(|s| *s).await;
        };
        let mut on_grace = stopped;
        let grace = async move {
            let _ = on_grace.wait_for(|s| *s).await;
            tokio::time::sleep(GRACE).await;
        };
        tokio::select! {
            _ = serve(grpc, query, store, shutdown) => {}
            () = grace => {}
        }
    });
}
