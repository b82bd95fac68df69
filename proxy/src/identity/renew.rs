//! Keeping the proxy certified: one task that asks Certify for a
//! certificate, then renews it at 70% of its lifetime.
//!
//! The schedule, all on tokio's clock:
//!
//! ```text
//! certify ok    → store it; next request at 70% of its lifetime (at least
//!                 BACKOFF_MIN away); backoff reset
//! certify fails → keep the certificate in force; next request after the
//!                 backoff (500 ms, doubling to 30 s)
//! expiry first  → drop the certificate at its expiry, keep waiting for
//!                 the next request
//! ```

use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SigningKey};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::{sleep_until, Instant};
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};
use weft_proto::identity::v1::identity_client::IdentityClient;
use weft_proto::identity::v1::CertifyRequest;

use super::{spiffe_id_of, Credentials, IdentityConfig, Leaf};

/// Renew when this share of a certificate's lifetime has passed.
const RENEW_AT: f64 = 0.7;
/// The first retry after a failure, and the shortest wait between two
/// requests.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(500);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Makes a key and keeps a certificate for it, until the process ends.
/// Must be called within the runtime.
pub fn spawn(
    config: IdentityConfig,
    credentials: Arc<Credentials>,
    provider: Arc<CryptoProvider>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let uri = if config.addr.contains("://") {
        config.addr.clone()
    } else {
        format!("http://{}", config.addr)
    };
    let channel = endpoint(&uri)?.connect_lazy();
    start(config, credentials, &provider, channel)
}

/// The Certify endpoint at `uri`, with the proxy's timeouts.
pub(super) fn endpoint(uri: &str) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(uri.to_owned())
        .map_err(|e| format!("identity address {uri:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true))
}

/// [`spawn`] over a channel already made.
pub(super) fn start(
    config: IdentityConfig,
    credentials: Arc<Credentials>,
    provider: &CryptoProvider,
    channel: Channel,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot make a key: {e}"))?;
    let csr = csr(&key, &config.id)?;
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
        .map_err(|e| format!("cannot load the key: {e}"))?;
    drop(key);
    let renewer = Renewer {
        config,
        credentials,
        client: IdentityClient::new(channel),
        csr,
        signing,
    };
    Ok(tokio::spawn(renewer.run()))
}

/// A CSR for `id` (one URI SAN, nothing else).
pub(super) fn csr(key: &KeyPair, id: &str) -> Result<Vec<u8>, String> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(
        id.try_into()
            .map_err(|e| format!("identity {id:?} is not a URI: {e}"))?,
    )];
    params
        .serialize_request(key)
        .map(|csr| csr.der().to_vec())
        .map_err(|e| format!("cannot make a CSR: {e}"))
}

/// When to renew a certificate received `now` that expires at `expires`:
/// once 70% of its lifetime has passed, and never sooner than
/// [`BACKOFF_MIN`] (a control plane answering with very short lifetimes
/// must not be asked in a tight loop).
pub(super) fn renewal_time(now: Instant, expires: Instant) -> Instant {
    let life = expires.saturating_duration_since(now);
    now + life.mul_f64(RENEW_AT).max(BACKOFF_MIN)
}

/// The wait before retrying a failed request: [`BACKOFF_MIN`], doubling
/// up to [`BACKOFF_MAX`].
#[derive(Debug)]
pub(super) struct Backoff(Duration);

impl Backoff {
    pub(super) fn new() -> Self {
        Self(BACKOFF_MIN)
    }

    pub(super) fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (wait * 2).min(BACKOFF_MAX);
        wait
    }
}

struct Renewer {
    config: IdentityConfig,
    credentials: Arc<Credentials>,
    client: IdentityClient<Channel>,
    csr: Vec<u8>,
    signing: Arc<dyn SigningKey>,
}

impl Renewer {
    async fn run(mut self) {
        let mut backoff = Backoff::new();
        loop {
            let next = match self.certify().await {
                Ok(leaf) => {
                    let life = leaf
                        .valid_until
                        .duration_since(self.credentials.clock().now())
                        .unwrap_or_default();
                    info!(
                        identity = %self.config.id,
                        valid_for = ?Duration::from_secs(life.as_secs()),
                        issuer = %leaf.issuer,
                        "certificate issued"
                    );
                    let expires = self.credentials.store(leaf);
                    backoff = Backoff::new();
                    renewal_time(Instant::now(), expires)
                }
                Err(error) => {
                    let wait = backoff.next();
                    warn!(identity = %self.config.id, %error, retry_in = ?wait, "certificate request failed");
                    self.credentials.failed(error);
                    Instant::now() + wait
                }
            };
            self.wait(next).await;
        }
    }

    /// Sleeps until `next`, dropping the certificate in force at its
    /// expiry if that comes first.
    async fn wait(&self, next: Instant) {
        if let Some(expires) = self.credentials.expires().filter(|e| *e < next) {
            sleep_until(expires).await;
            if self.credentials.drop_expired() {
                warn!(identity = %self.config.id, "certificate expired: mesh TLS is off until Certify answers");
            }
        }
        sleep_until(next).await;
    }

    async fn certify(&mut self) -> Result<Leaf, String> {
        let config = &self.config;
        // A few hundred bytes, once per renewal: a blocking read is fine.
        let token = std::fs::read_to_string(&config.token_file)
            .map_err(|e| format!("cannot read the token {}: {e}", config.token_file.display()))?;
        let rsp = self
            .client
            .certify(CertifyRequest {
                identity: config.id.clone(),
                token: token.trim().to_owned(),
                certificate_signing_request: self.csr.clone(),
            })
            .await
            .map_err(|s| format!("Certify refused ({:?}): {}", s.code(), s.message()))?
            .into_inner();
        let said = rsp
            .valid_until
            .and_then(|t| SystemTime::try_from(t).ok())
            .ok_or("Certify answered without a valid expiry")?;
        let leaf = leaf_info(&rsp.leaf_certificate, &config.id)?;
        // The certificate's own expiry rules (X.509 counts whole seconds;
        // the answer may carry a fraction past it).
        let valid_until = said.min(leaf.not_after);
        if valid_until <= self.credentials.clock().now() {
            return Err("Certify answered with a certificate that has already expired".into());
        }
        let mut chain = vec![CertificateDer::from(rsp.leaf_certificate)];
        chain.extend(
            rsp.intermediate_certificates
                .into_iter()
                .map(CertificateDer::from),
        );
        Ok(Leaf {
            key: Arc::new(CertifiedKey::new(chain, self.signing.clone())),
            valid_until,
            issuer: leaf.issuer,
        })
    }
}

/// What the proxy reads in its leaf certificate.
#[derive(Debug)]
pub(super) struct LeafInfo {
    /// The issuer's subject.
    pub(super) issuer: String,
    pub(super) not_after: SystemTime,
}

/// Checks that the leaf names `id`; reads its issuer and expiry.
pub(super) fn leaf_info(der: &[u8], id: &str) -> Result<LeafInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("Certify answered with an unparsable certificate: {e}"))?;
    match spiffe_id_of(&cert) {
        Some(got) if got == id => {}
        Some(got) => {
            return Err(format!(
                "Certify answered with a certificate for {got}, not {id}"
            ))
        }
        None => return Err("Certify answered with a certificate without a URI SAN".to_owned()),
    }
    let not_after = u64::try_from(cert.validity().not_after.timestamp())
        .map_or(SystemTime::UNIX_EPOCH, |s| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(s)
        });
    Ok(LeafInfo {
        issuer: cert.issuer().to_string(),
        not_after,
    })
}
