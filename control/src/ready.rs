//! Whether weft-control may answer: every source finished its first sync
//! and, when Certify is served, an issuer is loaded.
//!
//! `/ready`, `grpc.health.v1` and `Discovery.Watch` all ask here, so they
//! never disagree. Before the first sync the model holds only part of the
//! cluster: a watch answered from it would say `DoesNotExist` for a
//! Service that exists, and a proxy would send that Service's traffic in
//! plaintext to its original address. So until then Watch answers
//! `UNAVAILABLE` (the proxy keeps what it had and retries) and every health
//! status is NOT_SERVING.
//!
//! Touches nothing but the two watch channels it reads and the health
//! reporter it writes.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::info;
use weft_proto::discovery::v1::discovery_server::DiscoveryServer as DiscoveryGrpc;
use weft_proto::identity::v1::identity_server::IdentityServer as IdentityGrpc;

use crate::discovery::DiscoveryServer;
use std::sync::Arc;

use crate::identity::issuer::Issuer;
use crate::identity::service::IdentityService;
use crate::webhook::cert::ServingCert;

/// The health service name of Discovery.
pub const DISCOVERY: &str = <DiscoveryGrpc<DiscoveryServer> as NamedService>::NAME;
/// The health service name of Identity.
pub const IDENTITY: &str = <IdentityGrpc<IdentityService> as NamedService>::NAME;

/// What readiness depends on; clones read the same state.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// Sources that have not finished their initial sync.
    pending: watch::Receiver<Vec<&'static str>>,
    /// The CA, when Certify is served.
    issuer: Option<(Issuer, watch::Receiver<u64>)>,
    /// The injector's serving certificate, when the webhook is served.
    webhook: Option<(Arc<ServingCert>, watch::Receiver<u64>)>,
}

impl Readiness {
    /// Ready once `pending` is empty and, with `issuer`, once it has one.
    pub fn new(pending: watch::Receiver<Vec<&'static str>>, issuer: Option<Issuer>) -> Self {
        Self {
            pending,
            issuer: issuer.map(|i| {
                let taken = i.taken();
                (i, taken)
            }),
            webhook: None,
        }
    }

    /// Also not ready until the injector (served with `cert`) has its
    /// serving certificate: the API server would get TLS errors from it.
    pub fn with_webhook(mut self, cert: Option<Arc<ServingCert>>) -> Self {
        self.webhook = cert.map(|c| {
            let issued = c.issued();
            (c, issued)
        });
        self
    }

    /// Why the injector cannot answer yet, or `None` once it can (or when
    /// it is not served).
    pub fn webhook(&self) -> Option<String> {
        let (cert, _) = self.webhook.as_ref()?;
        cert.chain()
            .is_none()
            .then(|| "the injector has no serving certificate yet (see the log)".to_owned())
    }

    /// Why discovery cannot answer yet (the sources still syncing), or
    /// `None` once it can.
    pub fn discovery(&self) -> Option<String> {
        let pending = self.pending.borrow();
        (!pending.is_empty()).then(|| {
            format!(
                "syncing: {} (weft-control has not finished its first sync)",
                pending.join(", ")
            )
        })
    }

    /// Why Certify cannot be served yet, or `None` once it can (or when it
    /// is not served at all).
    pub fn identity(&self) -> Option<String> {
        let (issuer, _) = self.issuer.as_ref()?;
        self.discovery().or_else(|| {
            issuer
                .current()
                .is_none()
                .then(|| "no issuer loaded yet (see the log)".to_owned())
        })
    }

    /// Why weft-control as a whole is not ready, or `None` once it is.
    pub fn overall(&self) -> Option<String> {
        self.discovery()
            .or_else(|| self.identity())
            .or_else(|| self.webhook())
    }

    /// Whether Certify is served.
    pub fn serves_identity(&self) -> bool {
        self.issuer.is_some()
    }

    /// Waits until something readiness depends on changed; `false` when
    /// nothing can change any more (the model, the issuer and the serving
    /// certificate are all gone). An input whose sender is gone is only
    /// never waited on again: the others still count.
    pub async fn changed(&mut self) -> bool {
        let Self {
            pending,
            issuer,
            webhook,
        } = self;
        let mut issuer = issuer.as_mut().map(|(_, taken)| taken);
        let mut webhook = webhook.as_mut().map(|(_, issued)| issued);
        let mut open = [true, issuer.is_some(), webhook.is_some()];
        while open.contains(&true) {
            let (which, r) = tokio::select! {
                r = pending.changed(), if open[0] => (0, r),
                r = next(&mut issuer), if open[1] => (1, r),
                r = next(&mut webhook), if open[2] => (2, r),
            };
            match r {
                Ok(()) => return true,
                Err(_) => open[which] = false,
            }
        }
        false
    }
}

/// The next change of `rx`; never, without one.
async fn next(rx: &mut Option<&mut watch::Receiver<u64>>) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

fn status(not_ready: Option<String>) -> ServingStatus {
    match not_ready {
        None => ServingStatus::Serving,
        Some(_) => ServingStatus::NotServing,
    }
}

/// Sets the `grpc.health.v1` statuses of `""` (the whole server),
/// Discovery and, when served, Identity from `ready`.
async fn set(reporter: &HealthReporter, ready: &Readiness) {
    reporter
        .set_service_status("", status(ready.overall()))
        .await;
    reporter
        .set_service_status(DISCOVERY, status(ready.discovery()))
        .await;
    if ready.serves_identity() {
        reporter
            .set_service_status(IDENTITY, status(ready.identity()))
            .await;
    }
}

/// Makes the health service and keeps its statuses in step with `ready`
/// until `stop`, when everything turns NOT_SERVING (a draining server takes
/// no new work) and health Watch streams end. Every status is NOT_SERVING before this returns, so no
/// client can see SERVING before the sources synced.
pub async fn health(
    mut ready: Readiness,
    stop: CancellationToken,
) -> (
    tokio::task::JoinHandle<()>,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (mut reporter, service) = tonic_health::server::health_reporter();
    set(&reporter, &ready).await;
    let task = tokio::spawn(async move {
        let mut said_ready = false;
        loop {
            if !said_ready && ready.overall().is_none() {
                said_ready = true;
                info!("sources synced: ready");
            }
            tokio::select! {
                more = ready.changed() => {
                    if !more {
                        // Nothing can change any more: hold until shutdown.
                        stop.cancelled().await;
                        break;
                    }
                    set(&reporter, &ready).await;
                }
                _ = stop.cancelled() => break,
            }
        }
        // NOT_SERVING, then forgotten: a health Watch stream ends once it
        // said so (a stream left open would hold the graceful shutdown).
        let mut names = vec!["", DISCOVERY];
        if ready.serves_identity() {
            names.push(IDENTITY);
        }
        for name in names {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
            reporter.clear_service_status(name).await;
        }
    });
    (task, service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[tokio::test]
    async fn ready_after_every_source_and_the_issuer() {
        let (pending_tx, pending) = watch::channel(vec!["kube"]);
        let issuer = Issuer::new("cluster.local", &mut Registry::default());
        let mut ready = Readiness::new(pending, Some(issuer));
        let syncing = ready.discovery().unwrap();
        assert!(
            syncing.contains("first sync") && syncing.contains("kube"),
            "{syncing}"
        );
        assert_eq!(ready.identity(), Some(syncing.clone()));
        assert_eq!(ready.overall(), Some(syncing));

        pending_tx.send_modify(|p| p.clear());
        assert!(ready.changed().await);
        assert_eq!(ready.discovery(), None);
        assert_eq!(
            ready.identity().as_deref(),
            Some("no issuer loaded yet (see the log)")
        );
        assert!(ready.overall().is_some(), "no issuer: not ready overall");

        let dir = std::env::temp_dir().join(format!("weft-ready-{}", std::process::id()));
        let day = std::time::Duration::from_secs(24 * 3600);
        crate::identity::ca::generate("cluster.local", 365 * day, 30 * day)
            .unwrap()
            .write(&dir)
            .unwrap();
        let (issuer, _) = ready.issuer.clone().unwrap();
        issuer.load_dir(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(ready.changed().await, "an issuer taken is a change");
        assert_eq!((ready.identity(), ready.overall()), (None, None));

        let mut plain = Readiness::new(watch::channel(vec![]).1, None);
        assert_eq!((plain.identity(), plain.overall()), (None, None));
        assert!(!plain.serves_identity());
        assert!(!plain.changed().await, "its only input is gone");
    }

    #[tokio::test]
    async fn with_the_webhook_not_ready_until_its_serving_certificate_is_issued() {
        let issuer = Issuer::new("cluster.local", &mut Registry::default());
        let dir = std::env::temp_dir().join(format!("weft-ready-wh-{}", std::process::id()));
        let day = std::time::Duration::from_secs(24 * 3600);
        crate::identity::ca::generate("cluster.local", 365 * day, 30 * day)
            .unwrap()
            .write(&dir)
            .unwrap();
        issuer.load_dir(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let cert = ServingCert::new();
        // The sources' sender is gone (as after a source stopped): the
        // certificate still counts as a change.
        let mut ready = Readiness::new(watch::channel(vec![]).1, Some(issuer.clone()))
            .with_webhook(Some(cert.clone()));
        assert_eq!(ready.identity(), None);
        let why = ready.overall().expect("no serving certificate: not ready");
        assert!(why.contains("serving certificate"), "{why}");

        cert.issue(&issuer, &["weft-control.weft-system.svc".to_owned()])
            .unwrap();
        assert!(ready.changed().await, "a certificate issued is a change");
        assert_eq!((ready.webhook(), ready.overall()), (None, None));
    }
}
