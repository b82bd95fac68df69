//! weft's hand-written balancer and retry budget against tower's.
//!
//! - **pick/observe**: one request's worth of balancer work over 10
//!   endpoints: pick an endpoint (p2c over Peak-EWMA) and record its
//!   outcome. weft: `Balancer::pick` + `Balancer::finish`, shared by every
//!   connection as is (atomics). tower: `p2c::Balance` over
//!   `load::PeakEwma` services that answer at once, `poll_ready` + `call` +
//!   the response (which records the latency); `Balance` takes `&mut self`,
//!   so connections share it behind a `Mutex` or a `Buffer` (tower's way:
//!   a task that owns it, a channel to it).
//! - **budget**: one request's deposit and one retry's withdrawal. weft:
//!   `discovery::policy::Budget` (a lock-free ring of per-second counters);
//!   tower: `retry::budget::TpsBudget`.
//!
//! Each at 1 thread and at 2 threads sharing one balancer or budget (the
//! time is per operation, wall clock, both threads together).
//!
//! ```text
//! cargo bench -p weft-proxy --bench balance
//! ```

use criterion::{criterion_group, criterion_main, Criterion};
use prometheus_client::metrics::counter::Counter;
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma};
use tower::retry::budget::{Budget as _, TpsBudget};
use tower::{Service, ServiceExt};
use weft_proxy::balance::accrual::AccrualPolicy;
use weft_proxy::balance::{BalanceConfig, Balancer, EndpointInfo, Locality};
use weft_proxy::discovery::policy::Budget;

const ENDPOINTS: usize = 10;
const DECAY: Duration = Duration::from_secs(10);
const DEFAULT_RTT: Duration = Duration::from_millis(30);

fn weft_balancer() -> Balancer {
    let config = BalanceConfig {
        decay: DECAY,
        default_rtt: DEFAULT_RTT,
        accrual: AccrualPolicy {
            threshold: 5,
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
        },
        node: None,
        zone: None,
    };
    let balancer = Balancer::new(Arc::new(config), Counter::default());
    let endpoints: Vec<EndpointInfo> = (0..ENDPOINTS)
        .map(|i| EndpointInfo {
            addr: Some(SocketAddr::from(([10, 244, 0, 10 + i as u8], 8080))),
            weight: 1,
            ready: true,
            serving: true,
            ..EndpointInfo::default()
        })
        .collect();
    balancer.update(&endpoints, Locality::default());
    balancer
}

/// An endpoint that answers at once.
#[derive(Clone, Copy)]
struct Instant200;

impl Service<()> for Instant200 {
    type Response = ();
    type Error = Infallible;
    type Future = std::future::Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

type TowerBalance = Balance<ServiceList<Vec<PeakEwma<Instant200>>>, ()>;

fn tower_balancer() -> TowerBalance {
    let services = (0..ENDPOINTS)
        .map(|_| {
            PeakEwma::new(
                Instant200,
                DEFAULT_RTT,
                DECAY.as_nanos() as f64,
                CompleteOnResponse::default(),
            )
        })
        .collect();
    Balance::new(ServiceList::new(services))
}

/// Polls a future that is ready at once.
fn now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("the benchmark's services answer at once"),
    }
}

/// One request through tower's balancer: ready, call, response.
fn tower_request(balance: &mut TowerBalance) {
    let mut cx = Context::from_waker(Waker::noop());
    match balance.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => unreachable!("ready endpoints"),
    }
    let rsp = balance.call(());
    black_box(now(rsp).ok());
}

/// `op` run `iters` times in all by `threads` threads at once; the wall time.
fn threaded<S: Sync>(shared: &S, threads: u64, iters: u64, op: impl Fn(&S) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..iters / threads {
                    op(shared);
                }
            });
        }
    });
    start.elapsed()
}

fn pick_observe(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick+observe, 10 endpoints");
    for threads in [1u64, 2] {
        let weft = weft_balancer();
        g.bench_function(format!("weft p2c+PeakEwma, {threads} thread(s)"), |b| {
            b.iter_custom(|iters| {
                threaded(&weft, threads, iters, |w| {
                    let picked = w.pick().expect("endpoints");
                    w.finish(black_box(picked), true);
                })
            })
        });
        let tower = Mutex::new(tower_balancer());
        g.bench_function(
            format!("tower p2c+PeakEwma in a Mutex, {threads} thread(s)"),
            |b| {
                b.iter_custom(|iters| {
                    threaded(&tower, threads, iters, |t| {
                        tower_request(&mut t.lock().expect("not poisoned"))
                    })
                })
            },
        );
        // tower's own way to share a service: a Buffer (a task owns the
        // balancer; callers send it requests over a channel).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads as usize)
            .enable_all()
            .build()
            .expect("a runtime");
        let buffered = rt.block_on(async { tower::buffer::Buffer::new(tower_balancer(), 1024) });
        g.bench_function(
            format!("tower p2c+PeakEwma in a Buffer, {threads} thread(s)"),
            |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        let tasks: Vec<_> = (0..threads)
                            .map(|_| {
                                let mut svc = buffered.clone();
                                tokio::spawn(async move {
                                    for _ in 0..iters / threads {
                                        let svc = svc.ready().await.expect("ready");
                                        black_box(svc.call(()).await.ok());
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.expect("the task ran");
                        }
                        start.elapsed()
                    })
                })
            },
        );
    }
    g.finish();
}

fn budget(c: &mut Criterion) {
    let mut g = c.benchmark_group("retry budget: deposit + withdraw");
    for threads in [1u64, 2] {
        let weft = Budget::default();
        g.bench_function(format!("weft Budget, {threads} thread(s)"), |b| {
            b.iter_custom(|iters| {
                threaded(&weft, threads, iters, |w| {
                    w.deposit();
                    black_box(w.withdraw(0.2, 10));
                })
            })
        });
        let tower = TpsBudget::new(Duration::from_secs(10), 10, 0.2);
        g.bench_function(format!("tower TpsBudget, {threads} thread(s)"), |b| {
            b.iter_custom(|iters| {
                threaded(&tower, threads, iters, |t| {
                    t.deposit();
                    black_box(t.withdraw());
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pick_observe, budget);
criterion_main!(benches);
