//! A proxy as `weft-proxy` runs it (`weft_proxy::run::run`), its three
//! listeners on 127.0.0.1 port 0, its configuration parsed from flags as
//! the binary parses them, and the fake original destination.

use clap::Parser;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weft_proxy::config::Config;
use weft_proxy::run::{run, Bound};
use weft_proxy::test_util::OrigDst;

use super::client::{self, Reply, H1, H2};
use super::control::Control;
use super::traffic::Dialer;
use super::{eventually, metrics};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

/// The proxy's configuration from `args` (flags of `weft-proxy`), listening
/// on 127.0.0.1 port 0 unless `args` say otherwise.
pub fn config(args: &[String]) -> Config {
    let mut all: Vec<String> = [
        "weft-proxy",
        "--outbound-addr=127.0.0.1:0",
        "--inbound-addr=127.0.0.1:0",
        "--admin-addr=127.0.0.1:0",
    ]
    .map(String::from)
    .into();
    all.extend(args.iter().cloned());
    match Cli::try_parse_from(&all) {
        Ok(cli) => cli.config,
        Err(e) => panic!("weft-proxy {args:?}: {e}"),
    }
}

#[derive(Debug)]
pub struct Proxy {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    /// Where the test says its connections were going.
    pub orig: OrigDst,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Proxy {
    /// A proxy with `args`, no control plane unless `args` name one.
    pub async fn start(args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Self::start_with(OrigDst::default(), &args).await
    }

    /// A proxy that discovers Services from `control`.
    pub async fn with_control(control: &Control, args: &[&str]) -> Self {
        let mut all = vec![format!("--control-addr={}", control.addr())];
        all.extend(args.iter().map(|s| s.to_string()));
        Self::start_with(OrigDst::default(), &all).await
    }

    /// A proxy reading original destinations from `orig` (shared with
    /// other proxies of the test, say); returns once its `/ready` is 200.
    pub async fn start_with(orig: OrigDst, args: &[String]) -> Self {
        let proxy = Self::launch(orig, args);
        eventually("the proxy is ready", async || {
            let r = proxy.admin_get("/ready").await?;
            anyhow::ensure!(r.status == 200, "{} {}", r.status, r.body);
            Ok(())
        })
        .await;
        proxy
    }

    /// As [`Proxy::start_with`], without waiting for `/ready`: for a proxy
    /// that is not to be ready (its listeners are bound on return, so its
    /// admin port answers).
    pub fn launch(orig: OrigDst, args: &[String]) -> Self {
        super::logs();
        let config = config(args);
        let bound = Bound::bind(&config).expect("the proxy binds its listeners");
        let [outbound, inbound, admin] = bound.addrs().expect("bound addresses");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, bound, orig.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            outbound,
            inbound,
            admin,
            orig,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A connection to the outbound listener that was going to `dst`.
    pub async fn connect(&self, dst: SocketAddr) -> TcpStream {
        client::connect_via(&self.orig, self.outbound, dst).await
    }

    /// A connection to the inbound listener that was going to `dst`.
    pub async fn connect_inbound(&self, dst: SocketAddr) -> TcpStream {
        client::connect_via(&self.orig, self.inbound, dst).await
    }

    /// An HTTP/1.1 client connection through the outbound listener to `dst`.
    pub async fn h1(&self, dst: SocketAddr) -> H1 {
        H1::handshake(self.connect(dst).await).await
    }

    /// An HTTP/2 (prior knowledge) client connection through the outbound
    /// listener to `dst`.
    pub async fn h2(&self, dst: SocketAddr) -> H2 {
        H2::handshake(self.connect(dst).await).await
    }

    /// `GET path` to `dst` on a connection of its own, through the
    /// outbound listener.
    pub async fn get(&self, dst: SocketAddr, path: &str) -> Reply {
        self.h1(dst)
            .await
            .send(client::get(path))
            .await
            .unwrap_or_else(|e| panic!("GET {path} via the proxy to {dst}: {e:#}"))
    }

    /// `GET path` on the admin port.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<Reply> {
        client::http_get(self.admin, path).await
    }

    /// The sum of the samples of `series` on `/metrics` (see
    /// [`metrics::sum`]).
    pub async fn metric(&self, series: &str) -> f64 {
        let scrape = self
            .admin_get("/metrics")
            .await
            .expect("the proxy serves /metrics");
        metrics::sum(&scrape.body, series)
    }

    /// Waits until `series` on `/metrics` is `value`.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        eventually(&format!("{series} is {value}"), async || {
            let got = self.metric(series).await;
            anyhow::ensure!(got == value, "it is {got}");
            Ok(())
        })
        .await;
    }

    /// Makes the proxy start watching `dst` (a destination is watched from
    /// its first connection): a connection, closed at once. Like any
    /// connection that sends nothing it is forwarded as opaque TCP, so the
    /// destination (an endpoint of it) sees a connection come and go.
    pub async fn watch(&self, dst: SocketAddr) {
        drop(self.connect(dst).await);
    }

    /// The endpoints the proxy's balancer for `dst` knows now.
    pub async fn endpoints(&self, dst: SocketAddr) -> BTreeSet<SocketAddr> {
        let scrape = self.admin_get("/metrics").await.expect("/metrics");
        endpoints_in(&scrape.body, dst)
    }

    /// Watches `dst` and waits until discovery has told the proxy that it
    /// is a Service with exactly `endpoints`, over a stream that is up.
    pub async fn wait_endpoints(&self, dst: SocketAddr, endpoints: &[SocketAddr]) {
        self.watch(dst).await;
        let want: BTreeSet<SocketAddr> = endpoints.iter().copied().collect();
        eventually(&format!("{dst} has the endpoints {want:?}"), async || {
            let scrape = self.admin_get("/metrics").await?.body;
            let resolved = metrics::label_values(
                &scrape,
                &format!("weft_balancer_endpoints{{dst=\"{dst}\"}}"),
                "state",
            );
            anyhow::ensure!(!resolved.is_empty(), "not resolved as a Service");
            let stale = metrics::sum(&scrape, &format!("weft_discovery_stale{{dst=\"{dst}\"}}"));
            anyhow::ensure!(stale == 0.0, "stale");
            let got = endpoints_in(&scrape, dst);
            anyhow::ensure!(got == want, "it has {got:?}");
            Ok(())
        })
        .await;
    }

    /// What connects through the outbound listener, for tasks of their own.
    pub fn dialer(&self) -> Dialer {
        Dialer::new(self.orig.clone(), self.outbound)
    }

    /// Sends the termination signal (what SIGTERM is to the binary).
    pub fn terminate(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits at most `within` for `run` to return; whether it did.
    pub async fn exited(&mut self, within: Duration) -> bool {
        let Some(task) = self.task.as_mut() else {
            return true;
        };
        match tokio::time::timeout(within, task).await {
            Ok(result) => {
                let ran = result.expect("the proxy does not panic");
                ran.expect("the proxy starts and drains without an error");
                self.task = None;
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The endpoints of `dst` in a scrape (every endpoint known has a latency
/// estimate).
fn endpoints_in(scrape: &str, dst: SocketAddr) -> BTreeSet<SocketAddr> {
    let series = format!("weft_balancer_endpoint_latency_ewma_ms{{dst=\"{dst}\"}}");
    metrics::label_values(scrape, &series, "endpoint")
        .iter()
        .map(|e| e.parse().expect("an endpoint address"))
        .collect()
}
