//! Start-up and shutdown: bind the listeners, start the model, the source,
//! the admin and gRPC servers; serve until the shutdown future completes.

use anyhow::Context;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;
use weft_proto::identity::v1::identity_server::IdentityServer;
use weft_proto::policy::v1::policy_server::PolicyServer;

use crate::identity::anchors::Publisher;
use crate::identity::issuer::Issuer;
use crate::identity::review::TokenReviewer;
use crate::identity::service::IdentityService;
use crate::identity::tokens::TokenFile;
use crate::identity::Reviewer;

use crate::admin::{self, Admin};
use crate::authz::{PolicyHub, PolicyService};
use crate::config::{Config, Source};
use crate::discovery::DiscoveryServer;
use crate::encoded::DiscoveryService;
use crate::events::Events;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::model::authz::DefaultPolicy;
use crate::model::{self, Store};
use crate::ready::{self, Readiness};
use crate::sources::{files, kube};
use crate::webhook::cert::ServingCert;
use crate::webhook::{self, bundle, Injector};

/// HTTP/2 streams one client connection may hold besides its
/// --max-watches-per-connection discovery watches (the server's
/// SETTINGS_MAX_CONCURRENT_STREAMS is the sum): a client over it waits for
/// a stream to end, or has the new one refused (REFUSED_STREAM).
pub const OTHER_STREAMS_PER_CONNECTION: u32 = 100;

/// The listeners, bound before anything runs.
#[derive(Debug)]
pub struct Bound {
    pub grpc: TcpListener,
    pub admin: TcpListener,
    /// With --webhook.
    pub webhook: Option<TcpListener>,
}

impl Bound {
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            grpc: TcpListener::bind(config.grpc_addr)
                .await
                .with_context(|| format!("cannot listen on {} (gRPC)", config.grpc_addr))?,
            admin: TcpListener::bind(config.admin_addr)
                .await
                .with_context(|| format!("cannot listen on {} (admin)", config.admin_addr))?,
            webhook: match config.webhook {
                false => None,
                true => Some(
                    TcpListener::bind(config.webhook_addr)
                        .await
                        .with_context(|| {
                            format!("cannot listen on {} (webhook)", config.webhook_addr)
                        })?,
                ),
            },
        })
    }

    /// The webhook's address, when it is served.
    pub fn webhook_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.webhook
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
    }

    pub fn addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.grpc.local_addr()?, self.admin.local_addr()?))
    }
}

pub async fn run(
    config: Config,
    bound: Bound,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // The addresses bound (a port 0 in the flags is a free port here).
    let (grpc_addr, admin_addr) = bound.addrs()?;
    let webhook_addr = bound.webhook_addr()?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let hub = Arc::new(Hub::default());
    let (changes_tx, changes_rx) = model::apply::Changes::channel(1024);
    let source_name = match &config.source {
        Source::Kube => kube::SOURCE,
        Source::Files(_) => files::SOURCE,
    };
    let (pending_tx, pending_rx) = watch::channel(vec![source_name]);

    let policies = Arc::new(PolicyHub::new(config.default_inbound_policy));
    let store = Store::new(&config.cluster_domain, &config.trust_domain)
        .with_default_policy(config.default_inbound_policy);
    let client = match &config.source {
        Source::Files(_) => None,
        Source::Kube => Some(kube::client(config.kube_api_server.as_deref()).await?),
    };
    // Events on refused and reported objects, where there is an API server.
    let events = client.as_ref().map(|c| {
        let instance = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string());
        Events::spawn(c.clone(), instance, metrics.events_dropped.clone())
    });
    tokio::spawn(model::apply::run(
        store,
        changes_rx,
        hub.clone(),
        policies.clone(),
        metrics.clone(),
        pending_tx,
        events.clone(),
    ));
    match (&config.source, &client) {
        (Source::Files(dir), _) => {
            let source = files::FilesSource::new(dir.clone(), changes_tx, metrics.clone())
                .with_max_bytes(config.files_max_bytes);
            tokio::spawn(source.run(config.poll_interval));
        }
        (Source::Kube, Some(client)) => {
            kube::spawn(
                client.clone(),
                &config.namespaces,
                changes_tx,
                metrics.clone(),
            );
        }
        (Source::Kube, None) => unreachable!("the kube source has a client"),
    }
    let (identity, issuer) = match identity(&config, client.clone(), &mut registry)? {
        Some((service, issuer)) => (Some(IdentityServer::new(service)), Some(issuer)),
        None => (None, None),
    };
    let (anchors_task, publisher) = match (&client, &issuer, config.publish_trust_anchors) {
        (Some(client), Some(issuer), true) => {
            let publisher = crate::identity::anchors::Publisher::default();
            let task = crate::identity::anchors::spawn(
                client.clone(),
                config.inject.trust_anchors_configmap.clone(),
                issuer.clone(),
                publisher.clone(),
                &mut registry,
            );
            (Some(task), Some(publisher))
        }
        _ => (None, None),
    };
    let stop = CancellationToken::new();
    let cert = bound.webhook.is_some().then(ServingCert::new);
    let webhook_tasks = match (bound.webhook, &issuer, &cert) {
        (Some(listener), Some(issuer), Some(cert)) => webhook(
            &config,
            listener,
            (issuer.clone(), cert.clone()),
            client,
            (events, publisher),
            &mut registry,
            stop.clone(),
        ),
        (Some(_), None, _) => {
            anyhow::bail!("--webhook needs --identity-dir or --identity-secret")
        }
        _ => vec![],
    };

    let connection_waits = crate::conn_limit::register(&mut registry);
    let ready = Readiness::new(pending_rx, issuer).with_webhook(cert);
    let admin = Arc::new(Admin {
        registry,
        ready: ready.clone(),
    });
    let admin_task = tokio::spawn(admin::serve(admin, bound.admin, stop.clone()));

    let end_health = CancellationToken::new();
    let (health_task, health_service) = ready::health(ready.clone(), end_health.clone()).await;
    let end_watches = CancellationToken::new();
    let policy = PolicyService::new(policies, ready.clone(), end_watches.clone());
    let discovery = DiscoveryServer::new(
        hub,
        metrics,
        &config.cluster_domain,
        ready,
        end_watches.clone(),
    )
    .with_max_watches_per_connection(config.max_watches_per_connection);
    match webhook_addr {
        Some(webhook) => {
            info!(grpc = %grpc_addr, admin = %admin_addr, %webhook, "weft-control serving")
        }
        None => info!(grpc = %grpc_addr, admin = %admin_addr, "weft-control serving"),
    }
    tonic::transport::Server::builder()
        // Every kind of stream bounded per connection, not only
        // Discovery.Watch (health and policy watches, Certify calls).
        .max_concurrent_streams(
            config
                .max_watches_per_connection
                .saturating_add(OTHER_STREAMS_PER_CONNECTION),
        )
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(DiscoveryService::new(discovery))
        .add_service(PolicyServer::new(policy))
        .add_optional_service(identity)
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY a small update written after another
            // waits for the client's delayed ACK: 40-50 ms for one change in
            // fifty in weft-control-bench (its p99 at 500 watchers).
            crate::conn_limit::limit(
                tonic::transport::server::TcpIncoming::from(bound.grpc).with_nodelay(Some(true)),
                config.max_connections as usize,
                connection_waits,
            ),
            async move {
                shutdown.await;
                // Draining: every health status NOT_SERVING first.
                end_health.cancel();
                let _ = health_task.await;
                // Watches never end by themselves: end them, or the graceful
                // shutdown would wait for them forever.
                end_watches.cancel();
            },
        )
        .await?;
    info!("shut down");
    stop.cancel();
    let _ = admin_task.await;
    if let Some(task) = anchors_task {
        task.abort();
    }
    for task in webhook_tasks {
        task.abort();
    }
    Ok(())
}

/// The injector: its serving certificate kept issued, its server, and
/// (with a cluster and a configuration named) its `caBundle` kept in sync.
fn webhook(
    config: &Config,
    listener: TcpListener,
    (issuer, cert): (Issuer, Arc<ServingCert>),
    client: Option<::kube::Client>,
    (events, publisher): (Option<Events>, Option<Publisher>),
    registry: &mut Registry,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let settings = crate::inject::Settings {
        trust_domain: config.trust_domain.clone(),
        token_audience: config.identity_token_audience.clone(),
        default_inbound_policy: (config.default_inbound_policy
            != DefaultPolicy::AllUnauthenticated)
            .then(|| config.default_inbound_policy.as_str().to_string()),
        ..config.inject.clone()
    };
    let injector =
        Arc::new(Injector::new(settings, client.clone(), events, registry).with_anchors(publisher));
    let mut tasks = vec![
        tokio::spawn(
            cert.clone()
                .keep_issued(issuer, config.webhook_dns_names.clone()),
        ),
        tokio::spawn(webhook::serve(
            injector,
            cert.clone(),
            listener,
            stop,
            admin::Limits::default(),
        )),
    ];
    if let (Some(client), false) = (client, config.webhook_configuration.is_empty()) {
        let name = config.webhook_configuration.clone();
        tasks.push(tokio::spawn(bundle::keep_synced(client, name, cert)));
    }
    tasks
}

/// The Certify service, when an issuer is configured: the issuer from
/// --identity-dir (valid at start) or --identity-secret (watched through
/// `client`), tokens checked by --identity-tokens or else the TokenReview
/// API through `client`.
fn identity(
    config: &Config,
    client: Option<::kube::Client>,
    registry: &mut Registry,
) -> anyhow::Result<Option<(IdentityService, Issuer)>> {
    if config.identity_dir.is_none() && config.identity_secret.is_none() {
        return Ok(None);
    }
    let issuer = Issuer::new(&config.trust_domain, registry);
    let issuer_from = match (&config.identity_dir, &config.identity_secret, &client) {
        (Some(dir), _, _) => {
            issuer
                .load_dir(dir)
                .map_err(|e| anyhow::anyhow!("identity: {e}"))?;
            issuer.watch_dir(dir.clone(), Duration::from_secs(2));
            dir.display().to_string()
        }
        (None, Some(secret), Some(client)) => {
            issuer.watch_secret(client.clone(), secret.clone());
            format!("Secret {secret}")
        }
        // Config::validate refuses these before anything starts.
        _ => anyhow::bail!("identity: --identity-secret needs --source=kube"),
    };
    let (reviewer, tokens_from): (Arc<dyn Reviewer>, _) = match (&config.identity_tokens, client) {
        (Some(file), _) => (
            Arc::new(TokenFile::load(file).map_err(|e| anyhow::anyhow!("identity: {e}"))?),
            file.display().to_string(),
        ),
        (None, Some(client)) => (
            Arc::new(TokenReviewer::new(
                client,
                &config.identity_token_audience,
                registry,
            )),
            format!("TokenReview, audience {}", config.identity_token_audience),
        ),
        (None, None) => anyhow::bail!(
            "identity: a directory --source needs --identity-tokens (there is no TokenReview API to ask)"
        ),
    };
    info!(
        issuer = issuer_from,
        tokens = tokens_from,
        "serving Certify"
    );
    let kept = issuer.clone();
    Ok(Some((
        IdentityService::new(issuer, reviewer, config.leaf_lifetime, registry),
        kept,
    )))
}
