//! The certificate authority: a trust anchor (root, kept offline) and an
//! issuer (intermediate) that signs the proxies' leaf certificates, all
//! ECDSA P-256.
//!
//! On disk, in one directory (what `weft identity init` writes, and the
//! layout of a `kubernetes.io/tls` Secret plus the bundle):
//!
//! | file | content |
//! |---|---|
//! | `ca.crt` | the trust anchors (PEM, one or more: several during a rotation) |
//! | `tls.crt` | the issuer certificate (PEM), optionally followed by the intermediates up to an anchor |
//! | `tls.key` | the issuer's private key (PEM, PKCS#8) |
//!
//! `weft identity init` also writes `ca.key`, the trust anchor's key, for
//! making the next issuer; it should not stay next to the others.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::Path;
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;

use super::Identity;

/// Files of a CA directory.
pub const ANCHORS_FILE: &str = "ca.crt";
pub const ISSUER_CERT_FILE: &str = "tls.crt";
pub const ISSUER_KEY_FILE: &str = "tls.key";
pub const ANCHOR_KEY_FILE: &str = "ca.key";

/// Leaves are valid from this long before they are issued, so that a peer
/// whose clock is a little behind accepts them.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A loaded issuer: it signs leaves and hands out its chain.
#[derive(Debug)]
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    issuer_der: Vec<u8>,
    /// The issuer, then the rest of `tls.crt` but the anchors.
    chain: Vec<Vec<u8>>,
    pub anchors_pem: String,
    pub trust_domain: String,
}

/// A signed leaf and what goes with it.
#[derive(Debug)]
pub struct Leaf {
    pub der: Vec<u8>,
    /// The issuer, then the intermediates above it that `tls.crt` carries
    /// (never an anchor: those are the trust roots the peers hold).
    pub intermediates: Vec<Vec<u8>>,
    pub not_after: SystemTime,
}

/// Why a CSR was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    #[error("bad CSR: {0}")]
    Unparsable(String),
    #[error("bad CSR: it must name exactly one identity, as one URI SAN (it has {0} SANs)")]
    Sans(usize),
    #[error("bad CSR: its SAN is {0:?}, not the identity {1}")]
    Mismatch(String, String),
}

fn ca_params(cn: &str, lifetime: Duration, path_len: u8) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = now - CLOCK_SKEW;
    p.not_after = now + lifetime;
    p
}

/// The files of a new installation: a trust anchor and an issuer.
#[derive(Debug)]
pub struct Generated {
    pub anchor_pem: String,
    pub anchor_key_pem: String,
    pub issuer_pem: String,
    pub issuer_key_pem: String,
}

/// Makes a trust anchor (valid `anchor_lifetime`) and an issuer signed by
/// it (valid `issuer_lifetime`) for `trust_domain`.
pub fn generate(
    trust_domain: &str,
    anchor_lifetime: Duration,
    issuer_lifetime: Duration,
) -> Result<Generated, rcgen::Error> {
    let anchor_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let anchor_params = ca_params(
        &format!("weft trust anchor {trust_domain}"),
        anchor_lifetime,
        1,
    );
    let anchor = anchor_params.self_signed(&anchor_key)?;
    let issuer_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let issuer_params = ca_params(&format!("weft issuer {trust_domain}"), issuer_lifetime, 0);
    let anchor_issuer = Issuer::new(anchor_params, anchor_key);
    let issuer = issuer_params.signed_by(&issuer_key, &anchor_issuer)?;
    Ok(Generated {
        anchor_pem: anchor.pem(),
        anchor_key_pem: anchor_issuer.key().serialize_pem(),
        issuer_pem: issuer.pem(),
        issuer_key_pem: issuer_key.serialize_pem(),
    })
}

impl Generated {
    /// A new issuer (new key, valid `issuer_lifetime`) under the same trust
    /// anchor: a rotation the proxies need not hear of, since they trust
    /// the anchor.
    pub fn next_issuer(
        &self,
        trust_domain: &str,
        issuer_lifetime: Duration,
    ) -> Result<Generated, rcgen::Error> {
        let anchor_der = first_der(&self.anchor_pem, "CERTIFICATE")
            .ok_or(rcgen::Error::CouldNotParseCertificate)?;
        let anchor =
            Issuer::from_ca_cert_der(&anchor_der.into(), KeyPair::from_pem(&self.anchor_key_pem)?)?;
        let issuer_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        // A name of its own, so operators (and `/identity` on the proxies)
        // can tell leaves of the new issuer from those of the old.
        let name = format!(
            "weft issuer {trust_domain} (from {})",
            OffsetDateTime::now_utc().unix_timestamp()
        );
        let issuer = ca_params(&name, issuer_lifetime, 0).signed_by(&issuer_key, &anchor)?;
        Ok(Generated {
            anchor_pem: self.anchor_pem.clone(),
            anchor_key_pem: self.anchor_key_pem.clone(),
            issuer_pem: issuer.pem(),
            issuer_key_pem: issuer_key.serialize_pem(),
        })
    }

    /// Writes the four files into `dir` (created if missing; keys mode 0600).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir)?;
        let write = |name: &str, text: &str, mode: u32| -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(dir.join(name))?;
            f.write_all(text.as_bytes())
        };
        write(ANCHORS_FILE, &self.anchor_pem, 0o644)?;
        write(ANCHOR_KEY_FILE, &self.anchor_key_pem, 0o600)?;
        write(ISSUER_CERT_FILE, &self.issuer_pem, 0o644)?;
        write(ISSUER_KEY_FILE, &self.issuer_key_pem, 0o600)
    }
}

impl Authority {
    /// Loads the issuer of `dir` (see the module documentation).
    pub fn load(dir: &Path, trust_domain: &str) -> Result<Self, String> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let (cert_pem, key_pem, anchors_pem) = (
            read(ISSUER_CERT_FILE)?,
            read(ISSUER_KEY_FILE)?,
            read(ANCHORS_FILE)?,
        );
        Self::from_pem(&cert_pem, &key_pem, &anchors_pem, trust_domain)
            .map_err(|e| format!("{}: {e}", dir.display()))
    }

    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        anchors_pem: &str,
        trust_domain: &str,
    ) -> Result<Self, String> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| format!("{ISSUER_KEY_FILE}: {e}"))?;
        let cert_der = first_der(cert_pem, "CERTIFICATE")
            .ok_or_else(|| format!("{ISSUER_CERT_FILE}: no PEM certificate"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| format!("{ISSUER_CERT_FILE}: {e}"))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(format!(
                "{ISSUER_KEY_FILE} is not the key of {ISSUER_CERT_FILE}"
            ));
        }
        if !cert.is_ca() {
            return Err(format!("{ISSUER_CERT_FILE} is not a CA certificate"));
        }
        if first_der(anchors_pem, "CERTIFICATE").is_none() {
            return Err(format!("{ANCHORS_FILE}: no PEM certificate"));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.clone().into(), key)
            .map_err(|e| format!("{ISSUER_CERT_FILE}: {e}"))?;
        let anchors = all_der(anchors_pem, "CERTIFICATE");
        let above = all_der(cert_pem, "CERTIFICATE").into_iter().skip(1);
        let chain = std::iter::once(cert_der.clone())
            .chain(above.filter(|c| !anchors.contains(c)))
            .collect();
        Ok(Self {
            issuer,
            issuer_der: cert_der,
            chain,
            anchors_pem: anchors_pem.to_owned(),
            trust_domain: trust_domain.to_owned(),
        })
    }

    /// The issuer's own expiry.
    pub fn issuer_not_after(&self) -> SystemTime {
        x509_parser::parse_x509_certificate(&self.issuer_der)
            .map(|(_, c)| {
                SystemTime::UNIX_EPOCH
                    + Duration::from_secs(c.validity().not_after.timestamp().max(0) as u64)
            })
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Signs a leaf for `identity` from `csr` (DER), valid `lifetime` (cut
    /// to the issuer's own expiry). The CSR must carry exactly one SAN: the
    /// identity's SPIFFE URI; nothing else in it is used but its key.
    pub fn certify(
        &self,
        csr: &[u8],
        identity: &Identity,
        lifetime: Duration,
    ) -> Result<Leaf, CsrError> {
        let spiffe = identity.spiffe_id(&self.trust_domain);
        let parsed = CertificateSigningRequestParams::from_der(&csr.to_vec().into())
            .map_err(|e| CsrError::Unparsable(e.to_string()))?;
        match parsed.params.subject_alt_names.as_slice() {
            [SanType::URI(uri)] if uri.as_str() == spiffe => {}
            [SanType::URI(uri)] => return Err(CsrError::Mismatch(uri.to_string(), spiffe)),
            [other] => return Err(CsrError::Mismatch(format!("{other:?}"), spiffe)),
            sans => return Err(CsrError::Sans(sans.len())),
        }
        let now = OffsetDateTime::now_utc();
        let issuer_end = self.issuer_not_after();
        let end = (SystemTime::now() + lifetime).min(issuer_end);
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::URI(
            spiffe
                .as_str()
                .try_into()
                .map_err(|e| CsrError::Unparsable(format!("{e}")))?,
        )];
        p.distinguished_name = DistinguishedName::new();
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = now - CLOCK_SKEW;
        p.not_after = OffsetDateTime::from(end);
        let request = CertificateSigningRequestParams {
            params: p,
            public_key: parsed.public_key,
        };
        let leaf = request
            .signed_by(&self.issuer)
            .map_err(|e| CsrError::Unparsable(e.to_string()))?;
        Ok(Leaf {
            der: leaf.der().to_vec(),
            intermediates: self.chain.clone(),
            not_after: end,
        })
    }
}

/// A TLS server certificate for weft-control's own HTTPS servers (the
/// injector webhook), with its new key.
#[derive(Debug)]
pub struct Serving {
    /// The leaf, then the issuer and the intermediates above it.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's key, PKCS#8 DER.
    pub key: Vec<u8>,
    pub not_after: SystemTime,
}

impl Authority {
    /// Signs a server certificate for `dns_names` with a new key, valid
    /// `lifetime` (cut to the issuer's own expiry). It carries no SPIFFE
    /// URI, so no proxy takes it for a workload's.
    pub fn serving(&self, dns_names: &[String], lifetime: Duration) -> Result<Serving, String> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let mut p = CertificateParams::new(dns_names.to_vec()).map_err(|e| e.to_string())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            dns_names.first().map_or("weft-control", String::as_str),
        );
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let end = (SystemTime::now() + lifetime).min(self.issuer_not_after());
        p.not_before = OffsetDateTime::now_utc() - CLOCK_SKEW;
        p.not_after = OffsetDateTime::from(end);
        let cert = p.signed_by(&key, &self.issuer).map_err(|e| e.to_string())?;
        Ok(Serving {
            chain: std::iter::once(cert.der().to_vec())
                .chain(self.chain.iter().cloned())
                .collect(),
            key: key.serialize_der(),
            not_after: end,
        })
    }
}

/// The DER of the first PEM block labelled `label` in `text`.
pub fn first_der(text: &str, label: &str) -> Option<Vec<u8>> {
    pem::parse_many(text)
        .ok()?
        .into_iter()
        .find(|p| p.tag() == label)
        .map(pem::Pem::into_contents)
}

/// Every PEM block labelled `label` in `text`, as DER.
pub fn all_der(text: &str, label: &str) -> Vec<Vec<u8>> {
    pem::parse_many(text)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.tag() == label)
        .map(pem::Pem::into_contents)
        .collect()
}

/// PEM of a DER certificate.
pub fn cert_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}
