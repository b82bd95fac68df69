//! A certificate authority made in memory for tests: an anchor, an
//! intermediate issuer under it, and leaves for SPIFFE IDs, signed from a
//! CSR (as Certify does) or made whole.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Credentials, Leaf};

pub(crate) struct TestCa {
    anchor: CertificateDer<'static>,
    issuer_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca_params(path_len: u8) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p
}

fn leaf_params(id: &str, not_after: SystemTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    p.is_ca = IsCa::ExplicitNoCa;
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = time::OffsetDateTime::from(not_after) - time::Duration::days(1);
    p.not_after = not_after.into();
    p
}

impl TestCa {
    pub(crate) fn new() -> Self {
        let anchor_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let anchor = ca_params(1).self_signed(&anchor_key).unwrap();
        let issuer_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let issuer_der = ca_params(0)
            .signed_by(&issuer_key, &Issuer::new(ca_params(1), anchor_key))
            .unwrap();
        Self {
            anchor: anchor.der().clone(),
            issuer_der: issuer_der.der().clone(),
            issuer: Issuer::new(ca_params(0), issuer_key),
        }
    }

    /// The trust anchors: this CA's root.
    pub(crate) fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.anchor.clone()).unwrap();
        roots
    }

    /// The chain above a leaf (the issuer).
    pub(crate) fn intermediates(&self) -> Vec<CertificateDer<'static>> {
        vec![self.issuer_der.clone()]
    }

    /// A leaf for `id` with the key of `csr` (DER), valid until `not_after`
    /// rounded up to a whole second (X.509 has no fractions).
    pub(crate) fn sign(&self, csr: &[u8], id: &str, not_after: SystemTime) -> Vec<u8> {
        let since = not_after.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(since.as_secs() + u64::from(since.subsec_nanos() > 0));
        let csr = CertificateSigningRequestParams::from_der(&csr.to_vec().into()).unwrap();
        CertificateSigningRequestParams {
            params: leaf_params(id, not_after),
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .unwrap()
        .der()
        .to_vec()
    }

    /// Credentials holding a leaf for `id` that the proxy believes valid
    /// for an hour; `expired` makes the certificate itself end an hour ago.
    pub(crate) fn credentials(&self, id: &str, expired: bool) -> Arc<Credentials> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let hour = Duration::from_secs(3600);
        let not_after = if expired {
            SystemTime::now() - hour
        } else {
            SystemTime::now() + hour
        };
        let leaf = leaf_params(id, not_after)
            .signed_by(&key, &self.issuer)
            .unwrap();
        let signing = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            )))
            .unwrap();
        let credentials = Credentials::new(id.to_owned());
        credentials.store(Leaf {
            key: Arc::new(CertifiedKey::new(
                vec![leaf.der().clone(), self.issuer_der.clone()],
                signing,
            )),
            valid_until: SystemTime::now() + hour,
            issuer: "test issuer".into(),
        });
        credentials
    }
}
