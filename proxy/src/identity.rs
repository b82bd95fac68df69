//! The proxy's own identity: a key made in memory at start (it never leaves
//! the process), a certificate for `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`
//! from the control plane's `Identity/Certify` in exchange for a CSR and the
//! pod's ServiceAccount token, renewed at about 70% of its lifetime.
//!
//! A failed renewal is retried with backoff while the old certificate keeps
//! serving; once it expires the proxy has no certificate, `/ready` says so
//! and mesh TLS handshakes fail. Every step is in the metrics:
//! `weft_identity_certify_total{result}`, `weft_identity_cert_expiry_timestamp_seconds`,
//! `weft_identity_cert_valid`.

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tonic::transport::{Channel, Endpoint as GrpcEndpoint};
use tracing::{info, warn};
use weft_proto::identity::v1::identity_client::IdentityClient;
use weft_proto::identity::v1::CertifyRequest;

/// Renew when this share of a certificate's lifetime has passed.
const RENEW_AT: f64 = 0.7;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the proxy needs to get certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityConfig {
    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub id: String,
    /// The control plane serving Certify.
    pub addr: String,
    /// The ServiceAccount token, read again for every request (projected
    /// tokens are rotated by the kubelet).
    pub token_file: PathBuf,
}

/// The certificate in force.
#[derive(Debug)]
pub struct Leaf {
    pub key: Arc<CertifiedKey>,
    pub valid_until: SystemTime,
    /// The issuer's subject, for `/identity`.
    pub issuer: String,
}

/// The proxy's credentials, read by every TLS handshake.
#[derive(Debug)]
pub struct Credentials {
    pub id: Arc<str>,
    current: ArcSwapOption<Leaf>,
    /// Why the last Certify failed (cleared by a success), for `/ready`.
    last_error: Mutex<Option<String>>,
    /// Told of every new certificate (connections made before the first
    /// one wait for it).
    issued: tokio::sync::watch::Sender<()>,
    certify: Family<ResultLabel, Counter>,
    expiry: Gauge,
    valid: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

impl Credentials {
    pub fn new(id: String) -> Arc<Self> {
        Arc::new(Self {
            id: id.into(),
            current: ArcSwapOption::empty(),
            last_error: Mutex::default(),
            issued: tokio::sync::watch::Sender::new(()),
            certify: Family::default(),
            expiry: Gauge::default(),
            valid: Gauge::default(),
        })
    }

    pub fn register(&self, registry: &mut Registry) {
        let weft = registry.sub_registry_with_prefix("weft_identity");
        weft.register(
            "certify",
            "Certificate requests to the control plane, by result",
            self.certify.clone(),
        );
        weft.register(
            "cert_expiry_timestamp_seconds",
            "When the proxy's certificate expires (Unix time; 0: none yet)",
            self.expiry.clone(),
        );
        weft.register(
            "cert_valid",
            "1 while the proxy holds an unexpired certificate",
            self.valid.clone(),
        );
    }

    /// The certificate in force, if it has not expired.
    pub fn current(&self) -> Option<Arc<Leaf>> {
        let leaf = self.current.load_full()?;
        if leaf.valid_until <= SystemTime::now() {
            self.valid.set(0);
            return None;
        }
        Some(leaf)
    }

    /// The certificate in force, waiting at most `limit` for one when there
    /// is none yet (a connection made while the proxy starts).
    pub async fn wait_current(&self, limit: Duration) -> Option<Arc<Leaf>> {
        if let Some(leaf) = self.current() {
            return Some(leaf);
        }
        let mut issued = self.issued.subscribe();
        let wait = async {
            loop {
                if let Some(leaf) = self.current() {
                    return leaf;
                }
                if issued.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.ok()
    }

    /// Why the proxy cannot do mesh TLS now, if it cannot (`/ready`).
    pub fn not_ready(&self) -> Option<String> {
        if self.current().is_some() {
            return None;
        }
        let why = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(match (self.current.load().is_some(), why) {
            (true, Some(e)) => format!("identity: certificate expired; renewal failing: {e}"),
            (true, None) => "identity: certificate expired".to_owned(),
            (false, Some(e)) => format!("identity: no certificate yet: {e}"),
            (false, None) => "identity: no certificate yet".to_owned(),
        })
    }

    /// What `/identity` shows.
    pub fn describe(&self) -> String {
        let mut out = format!("identity: {}\n", self.id);
        match self.current.load_full() {
            Some(leaf) => {
                let left = leaf
                    .valid_until
                    .duration_since(SystemTime::now())
                    .map_or_else(|_| "expired".to_owned(), |d| format!("{}s", d.as_secs()));
                out += &format!("issuer: {}\nvalid for: {left}\n", leaf.issuer);
            }
            None => out += "certificate: none yet\n",
        }
        if let Some(e) = &*self.last_error.lock().unwrap_or_else(|e| e.into_inner()) {
            out += &format!("last error: {e}\n");
        }
        out
    }

    pub(crate) fn store(&self, leaf: Leaf) {
        let until = leaf
            .valid_until
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.expiry.set(until.as_secs() as i64);
        self.valid.set(1);
        self.current.store(Some(Arc::new(leaf)));
        self.issued.send_replace(());
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.certify
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
    }

    fn failed(&self, error: String) {
        self.certify
            .get_or_create(&ResultLabel { result: "error" })
            .inc();
        if self.current().is_none() {
            self.valid.set(0);
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }
}

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
    let channel = GrpcEndpoint::from_shared(uri.clone())
        .map_err(|e| format!("identity address {uri:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect_lazy();
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
    let client = IdentityClient::new(channel);
    Ok(tokio::spawn(keep_certified(
        config,
        credentials,
        client,
        csr,
        signing,
    )))
}

/// A CSR for `id` (one URI SAN, nothing else).
fn csr(key: &KeyPair, id: &str) -> Result<Vec<u8>, String> {
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

async fn keep_certified(
    config: IdentityConfig,
    credentials: Arc<Credentials>,
    mut client: IdentityClient<Channel>,
    csr: Vec<u8>,
    signing: Arc<dyn rustls::sign::SigningKey>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let wait = match certify(&config, &mut client, &csr, &signing).await {
            Ok(leaf) => {
                let now = SystemTime::now();
                let life = leaf.valid_until.duration_since(now).unwrap_or_default();
                info!(
                    identity = %config.id,
                    valid_for = ?Duration::from_secs(life.as_secs()),
                    issuer = %leaf.issuer,
                    "certificate issued"
                );
                credentials.store(leaf);
                backoff = BACKOFF_MIN;
                life.mul_f64(RENEW_AT)
            }
            Err(error) => {
                warn!(identity = %config.id, %error, retry_in = ?backoff, "certificate request failed");
                credentials.failed(error);
                let wait = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                // Never sleep past the expiry of the certificate in force.
                match credentials.current() {
                    Some(leaf) => wait.min(
                        leaf.valid_until
                            .duration_since(SystemTime::now())
                            .unwrap_or_default()
                            .max(BACKOFF_MIN),
                    ),
                    None => wait,
                }
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn certify(
    config: &IdentityConfig,
    client: &mut IdentityClient<Channel>,
    csr: &[u8],
    signing: &Arc<dyn rustls::sign::SigningKey>,
) -> Result<Leaf, String> {
    // A few hundred bytes, once per renewal: a blocking read is fine.
    let token = std::fs::read_to_string(&config.token_file)
        .map_err(|e| format!("cannot read the token {}: {e}", config.token_file.display()))?;
    let rsp = client
        .certify(CertifyRequest {
            identity: config.id.clone(),
            token: token.trim().to_owned(),
            certificate_signing_request: csr.to_vec(),
        })
        .await
        .map_err(|s| format!("Certify refused ({:?}): {}", s.code(), s.message()))?
        .into_inner();
    let valid_until = rsp
        .valid_until
        .and_then(|t| SystemTime::try_from(t).ok())
        .ok_or("Certify answered without a valid expiry")?;
    let leaf = leaf_info(&rsp.leaf_certificate, &config.id)?;
    let mut chain = vec![CertificateDer::from(rsp.leaf_certificate)];
    chain.extend(
        rsp.intermediate_certificates
            .into_iter()
            .map(CertificateDer::from),
    );
    Ok(Leaf {
        key: Arc::new(CertifiedKey::new(chain, signing.clone())),
        valid_until,
        issuer: leaf,
    })
}

/// Checks that the leaf names `id`; returns its issuer's subject.
fn leaf_info(der: &[u8], id: &str) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("Certify answered with an unparsable certificate: {e}"))?;
    match crate::tls::spiffe_id_of(&cert) {
        Some(got) if got == id => Ok(cert.issuer().to_string()),
        Some(got) => Err(format!(
            "Certify answered with a certificate for {got}, not {id}"
        )),
        None => Err("Certify answered with a certificate without a URI SAN".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csr_asks_for_exactly_the_identity() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = csr(&key, "spiffe://cluster.local/ns/shop/sa/web").unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_der(&der.into()).unwrap();
        match parsed.params.subject_alt_names.as_slice() {
            [SanType::URI(uri)] => {
                assert_eq!(uri.as_str(), "spiffe://cluster.local/ns/shop/sa/web")
            }
            other => panic!("SANs {other:?}"),
        }
    }

    #[test]
    fn not_ready_says_why() {
        let c = Credentials::new("spiffe://td/ns/a/sa/b".into());
        assert_eq!(c.not_ready().unwrap(), "identity: no certificate yet");
        c.failed("Certify refused (Unauthenticated): bad token".into());
        assert!(c.not_ready().unwrap().contains("bad token"));
        assert!(c.describe().contains("certificate: none yet"));
    }
}
