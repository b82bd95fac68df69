//! Start-up and shutdown: bind every listener first (a port in use fails
//! start-up, not the first request), serve until a signal or `/shutdown`,
//! then drain: stop accepting, let connections in flight finish within the
//! grace period, close the rest.

use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::{self, Admin};
use crate::balance::accrual::AccrualPolicy;
use crate::balance::BalanceConfig;
use crate::config::Config;
use crate::discovery::{DiscoveryConfig, Resolver};
use crate::http::HttpServer;
use crate::identity::Credentials;
use crate::inbound::authorize::Scope;
use crate::inbound::watch::{Policies, PolicyConfig};
use crate::shared::Shared;
use crate::telemetry::{Direction, Metrics};
use crate::tls::{load_roots, Tls};
use crate::trace::Tracer;
use crate::transport::connect::{grpc_endpoint, Connector};
use crate::transport::listen::{accept_loop, bind};
use crate::transport::orig_dst::OrigDstAddr;
use crate::transport::tasks::Tasks;
use crate::{inbound, outbound};

/// Everything about `config` that can be found wrong before anything
/// starts (the binary exits 64 with this line): the control plane and
/// identity addresses, the identity settings, the trust anchors.
pub fn check(config: &Config) -> Result<(), String> {
    if let Some(addr) = &config.control_addr {
        grpc_endpoint(addr).map_err(|e| format!("--control-addr (WEFT_PROXY_CONTROL_ADDR) {e}"))?;
    }
    if let Some(identity) = config.identity()? {
        if config.identity_addr.is_some() {
            grpc_endpoint(&identity.addr)
                .map_err(|e| format!("--identity-addr (WEFT_PROXY_IDENTITY_ADDR) {e}"))?;
        }
        if let Some(anchors) = &config.identity_trust_anchors {
            load_roots(anchors)?;
        }
    }
    if let Some(addr) = &config.trace_collector_addr {
        grpc_endpoint(addr)
            .map_err(|e| format!("--trace-collector-addr (WEFT_PROXY_TRACE_COLLECTOR_ADDR) {e}"))?;
    }
    Ok(())
}
use weft_proto::discovery::v1::ProxyContext;

/// The three listeners, bound.
#[derive(Debug)]
pub struct Bound {
    outbound: std::net::TcpListener,
    inbound: std::net::TcpListener,
    admin: std::net::TcpListener,
}

impl Bound {
    pub fn bind(config: &Config) -> Result<Self, String> {
        let one = |name: &str, addr: SocketAddr| {
            bind(addr).map_err(|e| format!("cannot listen on {addr} ({name}): {e}"))
        };
        Ok(Self {
            outbound: one("outbound", config.outbound_addr)?,
            inbound: one("inbound", config.inbound_addr)?,
            admin: one("admin", config.admin_addr)?,
        })
    }

    /// The bound addresses (outbound, inbound, admin), for tests that bind port 0.
    pub fn addrs(&self) -> std::io::Result<[SocketAddr; 3]> {
        Ok([
            self.outbound.local_addr()?,
            self.inbound.local_addr()?,
            self.admin.local_addr()?,
        ])
    }
}

/// The discovery client, when a control plane is configured; its metrics
/// registered.
fn discovery(config: &Config, registry: &mut Registry) -> Result<Option<Arc<Resolver>>, String> {
    let Some(control) = &config.control_addr else {
        return Ok(None);
    };
    let balance = BalanceConfig {
        decay: config.ewma_decay,
        default_rtt: config.ewma_default_rtt,
        accrual: AccrualPolicy {
            threshold: config.failure_accrual,
            min: config.failure_backoff_min,
            max: config.failure_backoff_max.max(config.failure_backoff_min),
        },
        node: config.node_name.clone(),
        zone: config.zone.clone(),
    };
    let discovery = DiscoveryConfig {
        control: control.clone(),
        resolve_timeout: config.resolve_timeout,
        idle_timeout: config.discovery_idle_timeout,
        context: ProxyContext {
            pod_namespace: config.pod_namespace.clone(),
            pod_name: config.pod_name.clone(),
            node_name: config.node_name.clone().unwrap_or_default(),
            zone: config.zone.clone().unwrap_or_default(),
        },
    };
    let resolver = Resolver::new(discovery, balance)?;
    resolver.register(registry);
    info!(%control, "discovery on: Service addresses are balanced over their endpoints");
    Ok(Some(resolver))
}

/// The inbound policies: streamed from the control plane when there is
/// one (over a connection of their own, opened on the first inbound
/// connection), else the configured default; their metrics registered.
fn policies(
    config: &Config,
    registry: &mut Registry,
    stop: CancellationToken,
) -> Result<Arc<Policies>, String> {
    let channel = match &config.control_addr {
        // A policy is asked for by pod name; without one there is none to
        // ask for, and the configured default is the policy.
        Some(_) if config.pod_name.is_empty() => {
            warn!("no --pod-name (WEFT_PROXY_POD_NAME): inbound policy is --default-inbound-policy on every port");
            None
        }
        Some(control) => Some(
            grpc_endpoint(control)
                .map_err(|e| format!("--control-addr {e}"))?
                .connect_timeout(std::time::Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(std::time::Duration::from_secs(10))
                .keep_alive_timeout(std::time::Duration::from_secs(5))
                .keep_alive_while_idle(true)
                .connect_lazy(),
        ),
        None => None,
    };
    let policy = PolicyConfig {
        default: config.default_inbound_policy,
        timeout: config.inbound_policy_timeout,
        scope: Scope {
            trust_domain: config.trust_domain.clone(),
            pod_namespace: config.pod_namespace.clone(),
        },
        pod_name: config.pod_name.clone(),
    };
    let policies = Policies::new(channel, policy, stop);
    policies.register(registry);
    Ok(policies)
}

/// Mesh TLS, when the proxy has an identity: the trust anchors loaded, the
/// certificate requested in the background, the metrics registered.
fn mesh(config: &Config, registry: &mut Registry) -> Result<Option<Arc<Tls>>, String> {
    let Some(identity) = config.identity()? else {
        return Ok(None);
    };
    let anchors = config
        .identity_trust_anchors
        .as_deref()
        .ok_or("--identity-token-file needs --identity-trust-anchors")?;
    let roots = load_roots(anchors)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let credentials = Credentials::new(identity.id.clone());
    credentials.register(registry);
    let tls = Tls::new(
        provider.clone(),
        roots,
        credentials.clone(),
        config.connect_timeout,
    )?;
    tls.register(registry);
    info!(identity = %identity.id, certify = %identity.addr, "mesh TLS on: requesting a certificate");
    crate::identity::spawn(identity, credentials, provider)?;
    Ok(Some(Arc::new(tls)))
}

/// The tracer and its export task.
type Tracing = (Arc<Tracer>, tokio::task::JoinHandle<()>);

/// The tracer and its export task, when a collector is configured. The
/// task runs until `stop` (after the connections drained, so the last
/// requests' spans leave too).
fn tracer(
    config: &Config,
    registry: &mut Registry,
    (resolver, tls): (Option<Arc<Resolver>>, Option<Arc<Tls>>),
    stop: CancellationToken,
) -> Result<Option<Tracing>, String> {
    let Some(addr) = &config.trace_collector_addr else {
        return Ok(None);
    };
    let endpoint = grpc_endpoint(addr).map_err(|e| format!("--trace-collector-addr {e}"))?;
    let authority = endpoint.uri().authority().cloned();
    let (host, port) = authority
        .as_ref()
        .and_then(|a| Some((a.host(), a.port_u16()?)))
        .ok_or_else(|| format!("--trace-collector-addr {addr:?} is not host:port"))?;
    // Through discovery and mesh TLS, as the app's own traffic goes.
    let dialer = crate::trace::collector::Dialer::new(
        host,
        port,
        resolver,
        Connector {
            timeout: config.connect_timeout,
            tls,
        },
    );
    let channel = endpoint.connect_with_connector_lazy(dialer);
    let service = config
        .trace_service_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .or_else(|| (!config.pod_name.is_empty()).then_some(config.pod_name.as_str()))
        .unwrap_or("weft-proxy");
    let mut resource = vec![
        ("service.name", service),
        ("weft.version", env!("CARGO_PKG_VERSION")),
    ];
    for (key, value) in [
        ("k8s.pod.name", &config.pod_name),
        ("k8s.namespace.name", &config.pod_namespace),
    ] {
        if !value.is_empty() {
            resource.push((key, value));
        }
    }
    if let Some(node) = &config.node_name {
        resource.push(("k8s.node.name", node));
    }
    let encoder = crate::trace::wire::Encoder::new(&resource);
    let exporter = crate::trace::collector::Otlp::new(channel);
    let metrics = crate::trace::export::ExportMetrics::register(registry);
    let (queue, task) = crate::trace::export::spawn(exporter, encoder, metrics, stop);
    info!(collector = %addr, sample_percent = config.trace_sample_percent, "tracing on");
    Ok(Some((
        Arc::new(Tracer::new(queue, config.trace_sample_percent)),
        task,
    )))
}

/// Runs the proxy until `signal` completes or `/shutdown` is called, then
/// drains. An error (discovery or mesh TLS cannot be set up: what
/// [`check`] could not see) returns before anything is served.
pub async fn run<O>(
    config: Config,
    bound: Bound,
    orig_dst: O,
    signal: impl Future<Output = ()>,
) -> Result<(), String>
where
    O: OrigDstAddr + Send + Sync + 'static,
{
    check(&config)?;
    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let resolver = discovery(&config, &mut registry)?;
    let tls = mesh(&config, &mut registry)?;
    let policies = policies(&config, &mut registry, shutdown.clone())?;
    let trace_stop = CancellationToken::new();
    let (tracer, trace_task) = tracer(
        &config,
        &mut registry,
        (resolver.clone(), tls.clone()),
        trace_stop.clone(),
    )?
    .unzip();
    let ports = bound
        .addrs()
        .map(|a| a.map(|a| a.port()))
        .unwrap_or_default();
    let grace = config.shutdown_grace;
    let retain = config.metrics_retain_idle;
    let limit = Arc::new(Semaphore::new(config.max_connections as usize));
    let admin = Arc::new(Admin {
        registry,
        ready: false.into(),
        config_dump: format!("{config:#?}\n"),
        shutdown: shutdown.clone(),
        identity: tls.as_ref().map(|t| t.credentials().clone()),
        discovery: resolver.clone(),
    });
    let tasks = Tasks::default();
    let shared = Arc::new(Shared {
        http: HttpServer::new(&config, tls.clone(), tasks.clone()),
        tls,
        policies,
        config,
        metrics,
        orig_dst,
        resolver,
        tracer,
        shutdown: shutdown.clone(),
        own_ports: ports,
    });

    let listeners = (|| {
        Ok::<_, std::io::Error>((
            TcpListener::from_std(bound.outbound)?,
            TcpListener::from_std(bound.inbound)?,
            TcpListener::from_std(bound.admin)?,
        ))
    })();
    let (outbound, inbound, admin_listener) =
        listeners.map_err(|e| format!("cannot register the listeners with the runtime: {e}"))?;
    tokio::spawn(evict(shared.metrics.clone(), retain, shutdown.clone()));

    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        admin.clone(),
        admin_listener,
        admin_stop.clone(),
    ));
    let out = shared.clone();
    let inb = shared.clone();
    let accepting = [
        tokio::spawn(accept_loop(
            "outbound",
            outbound,
            limit.clone(),
            tasks.clone(),
            shutdown.clone(),
            at_limit(&shared, Direction::Outbound),
            move |tcp, _peer| small_task(outbound::serve(out.clone(), tcp)),
        )),
        tokio::spawn(accept_loop(
            "inbound",
            inbound,
            limit.clone(),
            tasks.clone(),
            shutdown.clone(),
            at_limit(&shared, Direction::Inbound),
            move |tcp, _peer| small_task(inbound::serve(inb.clone(), tcp)),
        )),
    ];
    admin.ready.store(true, Ordering::Release);
    info!(
        outbound = %ports[0], inbound = %ports[1], admin = %ports[2],
        "weft-proxy ready"
    );

    tokio::select! {
        _ = signal => info!("termination signal: draining"),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
    admin.ready.store(false, Ordering::Release);
    for task in accepting {
        let _ = task.await;
    }
    tasks.close();
    let open = tasks.len();
    info!(
        open,
        ?grace,
        "no longer accepting; waiting for open connections"
    );
    match tokio::time::timeout(grace, tasks.wait()).await {
        Ok(()) => info!("drained"),
        Err(_) => warn!(
            open = tasks.len(),
            "grace period over: closing the connections still open"
        ),
    }
    tasks.kill();
    tasks.wait().await;
    trace_stop.cancel();
    if let Some(task) = trace_task {
        let _ = task.await;
    }
    admin_stop.cancel();
    let _ = admin_task.await;
    Ok(())
}

/// Counts a connection that waits at `--max-connections` in
/// `weft_tcp_refused_total{reason="connection_limit"}`.
fn at_limit<O>(shared: &Shared<O>, direction: Direction) -> impl Fn() {
    let metrics = shared.metrics.clone();
    move || metrics.refused(direction, "connection_limit")
}

/// Removes idle metric series every quarter of the retention period.
async fn evict(metrics: Metrics, retain: std::time::Duration, stop: CancellationToken) {
    let period = (retain / 4).max(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
        let evicted = metrics.evict_idle(retain);
        if evicted > 0 {
            tracing::debug!(evicted, "idle metric series removed");
        }
    }
}

/// The most a connection's task may hold inline, checked in debug builds
/// (every test connection): an idle connection costs its task, so a state
/// that grows it (an unboxed TLS stream or connect, an `async fn` holding
/// a large argument beside what it moved it into) should be boxed rather
/// than carried by every connection. With the TLS streams and the opaque
/// connects inline, the inbound task was 10.1 KB; it is 3.2 KB (debug).
const MAX_CONN_TASK: usize = 4096;

fn small_task<F: std::future::Future>(task: F) -> F {
    debug_assert!(
        std::mem::size_of_val(&task) <= MAX_CONN_TASK,
        "a connection task of {} bytes (at most {MAX_CONN_TASK}): box its largest state",
        std::mem::size_of_val(&task)
    );
    task
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn config(args: &[&str]) -> Config {
        let argv = std::iter::once("weft-proxy").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap().config
    }

    #[test]
    fn an_unusable_configuration_is_refused_before_start() {
        assert_eq!(check(&config(&[])), Ok(()));
        assert_eq!(
            check(&config(&["--control-addr", "weft-control.weft:8086"])),
            Ok(())
        );
        let e = check(&config(&["--control-addr", "not-an-address"])).unwrap_err();
        assert!(
            e.starts_with("--control-addr (WEFT_PROXY_CONTROL_ADDR)"),
            "{e}"
        );
        assert!(e.contains("not host:port"), "{e}");
        let e = check(&config(&["--identity-token-file", "/t"])).unwrap_err();
        assert!(e.contains("--identity-trust-anchors"), "{e}");
        let e = check(&config(&[
            "--pod-namespace",
            "web",
            "--identity-token-file",
            "/t",
            "--identity-trust-anchors",
            "/nonexistent/anchors.pem",
            "--identity-addr",
            "ca:8086",
        ]))
        .unwrap_err();
        assert!(e.contains("/nonexistent/anchors.pem"), "{e}");
    }
}
