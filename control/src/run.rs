//! Start-up and shutdown: bind the listeners, start the model, the source,
//! the admin and gRPC servers; serve until the shutdown future completes.

use anyhow::Context;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::info;
use weft_proto::discovery::v1::discovery_server::DiscoveryServer as DiscoveryGrpc;
use weft_proto::identity::v1::identity_server::IdentityServer;

use crate::identity::ca::Authority;
use crate::identity::service::IdentityService;
use crate::identity::tokens::TokenFile;

use crate::admin::{self, Admin};
use crate::config::{Config, Source};
use crate::discovery::DiscoveryServer;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::model::{self, Store};
use crate::sources::{files, kube};

/// The two listeners, bound before anything runs.
#[derive(Debug)]
pub struct Bound {
    pub grpc: TcpListener,
    pub admin: TcpListener,
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
        })
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
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let hub = Arc::new(Hub::default());
    let (changes_tx, changes_rx) = mpsc::channel(1024);
    let source_name = match &config.source {
        Source::Kube => kube::SOURCE,
        Source::Files(_) => files::SOURCE,
    };
    let (pending_tx, pending_rx) = watch::channel(vec![source_name]);

    let store = Store::new(&config.cluster_domain, &config.trust_domain);
    tokio::spawn(model::apply::run(
        store,
        changes_rx,
        hub.clone(),
        metrics.clone(),
        pending_tx,
    ));
    match &config.source {
        Source::Files(dir) => {
            let source = files::FilesSource::new(dir.clone(), changes_tx, metrics.clone());
            tokio::spawn(source.run(config.poll_interval));
        }
        Source::Kube => {
            let client = kube::client(config.kube_api_server.as_deref()).await?;
            kube::spawn(client, &config.namespaces, changes_tx, metrics.clone());
        }
    }

    let identity = match &config.identity_dir {
        None => None,
        Some(dir) => {
            let authority = Authority::load(dir, &config.trust_domain)
                .map_err(|e| anyhow::anyhow!("identity: {e}"))?;
            let Some(tokens) = &config.identity_tokens else {
                anyhow::bail!(
                    "identity: --identity-dir needs --identity-tokens (the TokenReview API is not used yet)"
                );
            };
            let reviewer =
                Arc::new(TokenFile::load(tokens).map_err(|e| anyhow::anyhow!("identity: {e}"))?);
            let service =
                IdentityService::new(authority, reviewer, config.leaf_lifetime, &mut registry);
            service.watch(dir.clone(), Duration::from_secs(2));
            info!(dir = %dir.display(), "serving Certify");
            Some(IdentityServer::new(service))
        }
    };

    let stop = CancellationToken::new();
    let admin = Arc::new(Admin {
        registry,
        pending: pending_rx.clone(),
    });
    let admin_task = tokio::spawn(admin::serve(admin, bound.admin, stop.clone()));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<DiscoveryGrpc<DiscoveryServer>>()
        .await;
    {
        // Serving once the sources synced.
        let health = health.clone();
        let mut pending = pending_rx;
        tokio::spawn(async move {
            while !pending.borrow_and_update().is_empty() {
                if pending.changed().await.is_err() {
                    return;
                }
            }
            health.set_serving::<DiscoveryGrpc<DiscoveryServer>>().await;
            info!("sources synced: ready");
        });
    }

    let discovery = DiscoveryServer::new(hub, metrics, &config.cluster_domain);
    info!(grpc = %bound.grpc.local_addr()?, "weft-control serving");
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(DiscoveryGrpc::new(discovery))
        .add_optional_service(identity)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(bound.grpc),
            shutdown,
        )
        .await?;
    info!("shut down");
    stop.cancel();
    let _ = admin_task.await;
    Ok(())
}
