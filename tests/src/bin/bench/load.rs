//! `weft-bench load ADDR ...`: the load generator, run inside the client pod.
//!
//! Two modes:
//! - **open loop** (`--rate R`): request `i` is *intended* to start at
//!   `t0 + i/R`; a dispatcher thread (`nanosleep` and a short spin, not
//!   tokio's 1 ms timer) hands intended times to the first free worker (a
//!   busy pool queues them), and latency is measured from the intended
//!   time, not from when the request actually left. A stall therefore shows in every request it delayed, not just in
//!   the one that hit it (coordinated-omission correction, as in wrk2).
//! - **closed loop** (no `--rate`): each worker sends the next request as soon
//!   as the last one is answered, for the duration: the maximum throughput.
//!
//! HTTP/1.1 workers each own a keep-alive connection; HTTP/2 workers share one
//! connection. Prints a `HIST` line and a `RESULT` line (see `hist.rs`).

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Mutex};

use crate::client::Conn;
use crate::hist::{self, Outcome};
use crate::opts::{Args, Proto};

/// How long an open-loop run may take past its schedule to finish the
/// requests still queued; what is left then counts as errors.
const DRAIN: Duration = Duration::from_secs(10);

/// One load run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub addr: SocketAddr,
    pub proto: Proto,
    pub duration: Duration,
    /// Requests per second (open loop), or `None` for a closed loop.
    pub rate: Option<u64>,
    /// Concurrent requests at most (HTTP/1.1: connections too).
    pub workers: usize,
    /// Closed loop, HTTP/1.1: every request on a new connection (what a
    /// connection costs, handshakes included).
    pub fresh: bool,
}

impl Spec {
    /// The arguments of `weft-bench load` for this spec.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "load".to_owned(),
            self.addr.to_string(),
            format!("--proto={}", self.proto.arg()),
            format!("--duration={}ms", self.duration.as_millis()),
            format!("--workers={}", self.workers),
        ];
        if let Some(rate) = self.rate {
            args.push(format!("--rate={rate}"));
        }
        if self.fresh {
            args.push("--new-conn".to_owned());
        }
        args
    }

    pub fn parse(mut args: Args) -> Result<Self> {
        let proto = args.value("--proto")?.unwrap_or(Proto::H1);
        let duration = args
            .duration("--duration")?
            .unwrap_or(Duration::from_secs(10));
        let rate: Option<u64> = args.value("--rate")?;
        let workers: usize = args.value("--workers")?.unwrap_or(4);
        let fresh = args.flag("--new-conn");
        let [addr] = args
            .finish()?
            .try_into()
            .map_err(|_| anyhow::anyhow!("load takes one ADDR"))?;
        let addr = addr.parse().with_context(|| format!("bad ADDR {addr:?}"))?;
        if rate == Some(0) || !(1..=10_000).contains(&workers) {
            bail!("--rate must be above 0 and --workers within 1..=10000");
        }
        if fresh && (rate.is_some() || proto != Proto::H1) {
            bail!("--new-conn is for the closed loop (no --rate) over HTTP/1.1");
        }
        Ok(Self {
            addr,
            proto,
            duration,
            rate,
            workers,
            fresh,
        })
    }
}

/// `weft-bench load ADDR [--proto h1|h2] [--duration D] [--rate R] [--workers N] [--new-conn]`.
pub fn main(spec: &Spec) -> Result<()> {
    crate::safety::check_target(spec.addr)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(run(spec))?;
    crate::say(&hist::encode(&out.latency));
    crate::say(&out.result_line());
    Ok(())
}

/// Runs `spec` against its server.
pub async fn run(spec: &Spec) -> Result<Outcome> {
    let conns = Conn::pool(spec.addr, spec.proto, spec.workers).await?;
    let (tally, elapsed) = match spec.rate {
        Some(rate) => open_loop(conns, rate, spec.duration).await?,
        None => closed_loop(conns, spec.duration, spec.fresh).await?,
    };
    if let Some(e) = &tally.first_error {
        eprintln!("weft-bench load: {} errors, the first: {e}", tally.errors);
    }
    Ok(Outcome {
        lag_p99: Duration::from_nanos(tally.lag.value_at_quantile(0.99)),
        latency: tally.latency,
        ok: tally.ok,
        errors: tally.errors,
        elapsed,
    })
}

/// When each request of an open-loop run is meant to start.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub rate: u64,
}

impl Schedule {
    /// The intended start of request `i`: `start + i/rate`, computed afresh
    /// for each `i` so no rounding error accumulates.
    pub fn at(&self, i: u64) -> Instant {
        let ns = u128::from(i) * 1_000_000_000 / u128::from(self.rate);
        self.start + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// How many requests fit in `duration`.
    pub fn len(&self, duration: Duration) -> u64 {
        u64::try_from(duration.as_nanos() * u128::from(self.rate) / 1_000_000_000)
            .unwrap_or(u64::MAX)
    }
}

/// What the workers counted.
#[derive(Debug)]
struct Tally {
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: hist::new(),
            lag: hist::new(),
            ok: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn count(&mut self, res: Result<()>, from: Instant) {
        match res {
            Ok(()) => {
                hist::record(&mut self.latency, from.elapsed());
                self.ok += 1;
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    fn add(&mut self, other: Self) {
        self.latency.add(&other.latency).expect("same bounds");
        self.lag.add(&other.lag).expect("same bounds");
        self.ok += other.ok;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

type Queue = Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>;

async fn open_loop(conns: Vec<Conn>, rate: u64, duration: Duration) -> Result<(Tally, Duration)> {
    let schedule = Schedule {
        start: Instant::now() + Duration::from_millis(20),
        rate,
    };
    let n = schedule.len(duration);
    let (tx, rx) = mpsc::unbounded_channel();
    // Spin at most a quarter of the time: 100 µs a request at 1,000 rps.
    let spin = Duration::from_micros(100).min(Duration::from_nanos(250_000_000 / rate.max(1)));
    let dispatcher = std::thread::spawn(move || {
        for i in 0..n {
            let t = schedule.at(i);
            wait_until(t, spin);
            if tx.send(t).is_err() {
                break;
            }
        }
    });
    let queue: Queue = Arc::new(Mutex::new(rx));
    let stop = schedule.at(n) + DRAIN;
    let workers: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(open_worker(conn, queue.clone(), stop)))
        .collect();
    let mut tally = Tally::new();
    for w in workers {
        tally.add(w.await?);
    }
    let elapsed = schedule.start.elapsed();
    drop(queue);
    let _ = dispatcher.join();
    // Requests never sent (the run fell more than DRAIN behind) count as errors.
    tally.errors += n.saturating_sub(tally.ok + tally.errors);
    Ok((tally, elapsed))
}

/// Sleeps until shortly before `t`, then spins for the last `spin`:
/// `nanosleep` alone wakes 50-150 µs late (timer slack, scheduling), and that
/// lateness would show in every latency measured from the intended time.
fn wait_until(t: Instant, spin: Duration) {
    let now = Instant::now();
    if t > now + spin {
        std::thread::sleep(t - now - spin);
    }
    while Instant::now() < t {
        std::hint::spin_loop();
    }
}

async fn open_worker(mut conn: Conn, queue: Queue, stop: Instant) -> Tally {
    let mut tally = Tally::new();
    loop {
        let next = {
            let mut queue = queue.lock().await;
            tokio::time::timeout_at(stop.into(), queue.recv()).await
        };
        let Ok(Some(intended)) = next else { break };
        hist::record(&mut tally.lag, intended.elapsed());
        let res = conn.get().await;
        tally.count(res, intended);
    }
    tally
}

async fn closed_loop(
    conns: Vec<Conn>,
    duration: Duration,
    fresh: bool,
) -> Result<(Tally, Duration)> {
    let start = Instant::now();
    let end = start + duration;
    let workers: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move {
                let mut tally = Tally::new();
                while Instant::now() < end {
                    let sent = Instant::now();
                    let res = conn.get().await;
                    if fresh {
                        conn.close();
                    }
                    if res.is_err() {
                        // A dead server must not turn this into a busy loop.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    tally.count(res, sent);
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::new();
    for w in workers {
        tally.add(w.await?);
    }
    Ok((tally, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn schedule_is_exact_and_does_not_drift() {
        let start = Instant::now();
        let s = Schedule { start, rate: 1000 };
        assert_eq!(s.at(0), start);
        assert_eq!(s.at(3), start + Duration::from_millis(3));
        assert_eq!(s.at(1000), start + Duration::from_secs(1));
        assert_eq!(s.len(Duration::from_secs(10)), 10_000);
        let thirds = Schedule { start, rate: 3 };
        assert_eq!(thirds.at(1), start + Duration::from_nanos(333_333_333));
        assert_eq!(thirds.at(3_000_000), start + Duration::from_secs(1_000_000));
        assert_eq!(thirds.len(Duration::from_millis(999)), 2);
    }

    async fn local_server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(crate::server::serve(listener, std::future::pending()));
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_and_closed_loops_over_both_protocols() {
        let addr = local_server().await;
        for proto in [Proto::H1, Proto::H2] {
            let mut spec = Spec {
                addr,
                proto,
                duration: Duration::from_millis(500),
                rate: Some(200),
                workers: 4,
                fresh: false,
            };
            let out = run(&spec).await.unwrap();
            assert_eq!((out.ok, out.errors), (100, 0), "{proto}");
            assert_eq!(out.latency.len(), 100);
            spec.rate = None;
            spec.duration = Duration::from_millis(200);
            let out = run(&spec).await.unwrap();
            assert!(
                out.ok > 100 && out.errors == 0,
                "{proto}: {}",
                out.result_line()
            );
        }
    }

    /// One request stalls 300 ms on the only connection: the requests meant
    /// to start during the stall waited for it, and their latencies say so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stall_is_charged_to_every_request_it_delayed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(move |_req| {
                let n = seen.fetch_add(1, Ordering::Relaxed);
                async move {
                    if n == 20 {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    let body = http_body_util::Full::new(bytes::Bytes::from_static(b"ok"));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
        let spec = Spec {
            addr,
            proto: Proto::H1,
            duration: Duration::from_secs(1),
            rate: Some(100),
            workers: 1,
            fresh: false,
        };
        let out = run(&spec).await.unwrap();
        assert_eq!((out.ok, out.errors), (100, 0));
        let slow = out.latency.count_between(100_000_000, 60_000_000_000);
        assert!(
            slow >= 15,
            "only {slow} requests over 100 ms: {}",
            out.result_line()
        );
        assert!(
            out.lag_p99 >= Duration::from_millis(100),
            "{}",
            out.result_line()
        );
    }
}
