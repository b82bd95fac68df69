//! The proxy's own identity: a key made in memory at start (it never leaves
//! the process), a certificate for `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`
//! from the control plane's `Identity/Certify` in exchange for a CSR and the
//! pod's ServiceAccount token, renewed at 70% of its lifetime.
//!
//! - [`Credentials`] hold the certificate in force; every mesh TLS
//!   handshake reads them.
//! - [`spawn`] starts the task that keeps them certified (`renew.rs`):
//!   a failed renewal is retried with backoff while the old certificate
//!   keeps serving; at its expiry the certificate is dropped, `/ready` says
//!   so and mesh TLS handshakes fail until Certify answers again.
//! - Every wait runs on tokio's clock (wall-clock expiries converted by
//!   [`crate::time::Converter`]), so the schedule is tested under paused
//!   time.
//!
//! Metrics: `weft_identity_certify_total{result}`,
//! `weft_identity_cert_expiry_timestamp_seconds`, `weft_identity_cert_valid`.
//!
//! This module knows SPIFFE IDs and certificates, not TLS connections:
//! `tls` uses it, never the reverse.

mod credentials;
mod renew;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use credentials::Credentials;
pub use renew::spawn;

use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

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

/// A certificate and its key, as the TLS handshakes present them.
#[derive(Debug)]
pub struct Leaf {
    pub key: Arc<CertifiedKey>,
    /// The certificate's expiry, as Certify said it.
    pub valid_until: SystemTime,
    /// The issuer's subject, for `/identity`.
    pub issuer: String,
}

/// The SPIFFE ID (the URI SAN starting `spiffe://`) of a parsed certificate.
pub fn spiffe_id_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some((*uri).to_owned()),
        _ => None,
    })
}

/// The SPIFFE ID of a certificate in DER; `None` when it does not parse or
/// has none.
pub fn spiffe_id_of_der(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    spiffe_id_of(&cert)
}
