//! The webhook's serving certificate, from weft's own CA: issued by the
//! issuer in use as soon as there is one, issued again when the issuer
//! changes and when two thirds of its lifetime have passed, so it never
//! expires while weft-control runs. The TLS server reads the current one
//! at each handshake.

use arc_swap::ArcSwapOption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

use crate::identity::issuer::Issuer;

/// How long a serving certificate is valid.
pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// After a failed issue, how long before the next try.
const RETRY: Duration = Duration::from_secs(10);

/// The certificate the webhook serves, replaced in place.
#[derive(Debug, Default)]
pub struct ServingCert {
    current: ArcSwapOption<CertifiedKey>,
    /// The anchors of the issuer that signed it: the `caBundle`.
    anchors: ArcSwapOption<String>,
    /// Bumped at each new certificate.
    issued: tokio::sync::watch::Sender<u64>,
}

impl ServingCert {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The trust anchors (PEM) that verify the certificate served now.
    pub fn anchors(&self) -> Option<Arc<String>> {
        self.anchors.load_full()
    }

    /// The certificate served now: the leaf first.
    pub fn chain(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.current.load_full().map(|k| k.cert.clone())
    }

    /// Changes at each new certificate.
    pub fn issued(&self) -> tokio::sync::watch::Receiver<u64> {
        self.issued.subscribe()
    }

    /// Issues a certificate for `dns_names` from `issuer`'s authority now;
    /// returns its expiry.
    pub fn issue(&self, issuer: &Issuer, dns_names: &[String]) -> Result<SystemTime, String> {
        let authority = issuer.current().ok_or("no issuer loaded yet")?;
        let serving = authority.serving(dns_names, LIFETIME)?;
        let provider = rustls::crypto::ring::default_provider();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(serving.key));
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("the serving key: {e}"))?;
        let chain = serving
            .chain
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        self.current
            .store(Some(Arc::new(CertifiedKey::new(chain, signing))));
        self.anchors
            .store(Some(Arc::new(authority.anchors_pem.clone())));
        self.issued.send_modify(|n| *n += 1);
        Ok(serving.not_after)
    }

    /// Keeps a certificate issued: now (once there is an issuer), when the
    /// issuer changes, and at two thirds of each one's lifetime. Runs
    /// until the task is dropped.
    pub async fn keep_issued(self: Arc<Self>, issuer: Issuer, dns_names: Vec<String>) {
        let mut taken = issuer.taken();
        loop {
            let wait = match self.issue(&issuer, &dns_names) {
                Ok(not_after) => {
                    let left = not_after
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    info!(dns = ?dns_names, valid_for = ?left, "webhook serving certificate issued");
                    left * 2 / 3
                }
                Err(e) => {
                    warn!(error = %e, "webhook serving certificate not issued; trying again");
                    RETRY
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = taken.changed() => if changed.is_err() {
                    // The issuer is gone (shutting down): keep the last one.
                    std::future::pending::<()>().await;
                },
            }
        }
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ca;
    use prometheus_client::registry::Registry;

    fn issuer(issuer_lifetime: Duration) -> (Issuer, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "weft-serving-{}-{}",
            std::process::id(),
            issuer_lifetime.as_secs()
        ));
        ca::generate("cluster.local", issuer_lifetime * 2, issuer_lifetime)
            .unwrap()
            .write(&dir)
            .unwrap();
        let issuer = Issuer::new("cluster.local", &mut Registry::default());
        issuer.load_dir(&dir).unwrap();
        (issuer, dir)
    }

    fn leaf_of(cert: &ServingCert) -> Vec<u8> {
        cert.chain().expect("a certificate")[0].to_vec()
    }

    #[test]
    fn the_certificate_names_the_service_and_chains_to_the_anchors() {
        let (issuer, dir) = issuer(Duration::from_secs(30 * 24 * 3600));
        let cert = ServingCert::new();
        assert!(cert
            .issue(&Issuer::new("cluster.local", &mut Registry::default()), &[])
            .is_err());
        let names = vec!["weft-control.weft-system.svc".to_owned()];
        let not_after = cert.issue(&issuer, &names).unwrap();
        let left = not_after.duration_since(SystemTime::now()).unwrap();
        assert!(left <= LIFETIME && left > LIFETIME - Duration::from_secs(60));
        let leaf = leaf_of(&cert);
        let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            format!("{:?}", san.value.general_names),
            r#"[DNSName("weft-control.weft-system.svc")]"#
        );
        assert!(!parsed.is_ca());
        assert_eq!(
            cert.anchors().as_deref(),
            Some(&std::fs::read_to_string(dir.join("ca.crt")).unwrap())
        );
        // Leaf, then the issuer.
        assert_eq!(cert.chain().unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(start_paused = true)]
    async fn it_is_renewed_at_two_thirds_of_its_life_and_when_the_issuer_changes() {
        let (issuer, dir) = issuer(Duration::from_secs(30 * 24 * 3600));
        let cert = ServingCert::new();
        let mut issued = cert.issued();
        let task = tokio::spawn(
            cert.clone()
                .keep_issued(issuer.clone(), vec!["localhost".into()]),
        );
        issued.changed().await.unwrap();
        let (first, at) = (leaf_of(&cert), tokio::time::Instant::now());
        issued.changed().await.unwrap();
        let renewed_after = at.elapsed();
        assert_ne!(leaf_of(&cert), first, "a new certificate");
        assert!(
            renewed_after <= LIFETIME * 2 / 3 && renewed_after > LIFETIME / 2,
            "renewed after {renewed_after:?}"
        );
        // A new issuer: a new certificate at once.
        let before = leaf_of(&cert);
        let at = tokio::time::Instant::now();
        ca::generate(
            "cluster.local",
            Duration::from_secs(3600 * 48),
            Duration::from_secs(3600 * 24),
        )
        .unwrap()
        .write(&dir)
        .unwrap();
        issuer.load_dir(&dir).unwrap();
        issued.changed().await.unwrap();
        assert_eq!(at.elapsed(), Duration::ZERO);
        assert_ne!(leaf_of(&cert), before);
        task.abort();
        let _ = std::fs::remove_dir_all(dir);
    }
}
