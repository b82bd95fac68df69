use super::ca::{self, Authority, CsrError};
use super::*;
use rcgen::{CertificateParams, KeyPair, SanType};
use std::time::{Duration, SystemTime};

const TD: &str = "cluster.local";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn web() -> Identity {
    Identity {
        namespace: "shop".into(),
        service_account: "web".into(),
    }
}

/// A day's leaf for shop/web from `a`, for a CSR asking exactly that.
fn web_leaf(a: &Authority) -> ca::Leaf {
    a.certify(
        &csr(&["spiffe://cluster.local/ns/shop/sa/web"]),
        &web(),
        DAY,
    )
    .unwrap()
}

fn authority() -> Authority {
    let g = ca::generate(TD, 10 * 365 * DAY, 365 * DAY).unwrap();
    Authority::from_pem(&g.issuer_pem, &g.issuer_key_pem, &g.anchor_pem, TD).unwrap()
}

fn csr(sans: &[&str]) -> Vec<u8> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans
        .iter()
        .map(|s| SanType::URI((*s).try_into().unwrap()))
        .collect();
    p.serialize_request(&key).unwrap().der().to_vec()
}

#[test]
fn spiffe_ids_round_trip_and_bad_ones_are_named() {
    let id = web().spiffe_id(TD);
    assert_eq!(id, "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!(Identity::from_spiffe(&id, TD), Ok(web()));
    assert!(Identity::from_spiffe("spiffe://other/ns/shop/sa/web", TD)
        .unwrap_err()
        .contains("not in the trust domain"));
    assert!(Identity::from_spiffe("spiffe://cluster.local/ns/shop", TD)
        .unwrap_err()
        .contains("not of the form"));
    assert!(Identity::from_spiffe("https://x", TD)
        .unwrap_err()
        .contains("not a spiffe"));
    assert!(Identity::from_spiffe("spiffe://cluster.local/ns/Shop/sa/web", TD).is_err());
}

#[test]
fn a_leaf_carries_the_identity_and_chains_to_the_anchor() {
    let g = ca::generate(TD, 10 * 365 * DAY, 365 * DAY).unwrap();
    let a = Authority::from_pem(&g.issuer_pem, &g.issuer_key_pem, &g.anchor_pem, TD).unwrap();
    let leaf = web_leaf(&a);
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf.der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, ["URI(spiffe://cluster.local/ns/shop/sa/web)"]);
    assert!(!cert.is_ca());
    // Valid for about a day, from a minute ago.
    let secs = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(
        (DAY.as_secs() as i64..=DAY.as_secs() as i64 + 120).contains(&secs),
        "{secs}"
    );
    let until = leaf.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(until > DAY - Duration::from_secs(60));
    // Signed by the issuer, which is signed by the anchor.
    let issuer_der = &leaf.intermediates[0];
    let (_, issuer) = x509_parser::parse_x509_certificate(issuer_der).unwrap();
    cert.verify_signature(Some(issuer.public_key())).unwrap();
    let anchor_der = ca::first_der(&g.anchor_pem, "CERTIFICATE").unwrap();
    let (_, anchor) = x509_parser::parse_x509_certificate(&anchor_der).unwrap();
    issuer.verify_signature(Some(anchor.public_key())).unwrap();
    assert!(anchor.is_ca() && issuer.is_ca());
}

#[test]
fn csrs_for_anything_else_are_refused_with_the_reason() {
    let a = authority();
    let other = a.certify(&csr(&["spiffe://cluster.local/ns/shop/sa/db"]), &web(), DAY);
    assert_eq!(
        other.unwrap_err(),
        CsrError::Mismatch(
            "spiffe://cluster.local/ns/shop/sa/db".into(),
            "spiffe://cluster.local/ns/shop/sa/web".into()
        )
    );
    let two = a.certify(
        &csr(&[
            "spiffe://cluster.local/ns/shop/sa/web",
            "spiffe://cluster.local/ns/shop/sa/db",
        ]),
        &web(),
        DAY,
    );
    assert_eq!(two.unwrap_err(), CsrError::Sans(2));
    assert_eq!(
        a.certify(&csr(&[]), &web(), DAY).unwrap_err(),
        CsrError::Sans(0)
    );
    let garbage = a.certify(b"not a csr", &web(), DAY).unwrap_err();
    assert!(garbage.to_string().starts_with("bad CSR:"), "{garbage}");
    // A CSR whose signature does not match its key.
    let mut tampered = csr(&["spiffe://cluster.local/ns/shop/sa/web"]);
    let n = tampered.len();
    tampered[n - 5] ^= 0xff;
    assert!(matches!(
        a.certify(&tampered, &web(), DAY),
        Err(CsrError::Unparsable(_))
    ));
}

#[test]
fn leaves_never_outlive_the_issuer() {
    let g = ca::generate(TD, 365 * DAY, Duration::from_secs(3600)).unwrap();
    let a = Authority::from_pem(&g.issuer_pem, &g.issuer_key_pem, &g.anchor_pem, TD).unwrap();
    let leaf = web_leaf(&a);
    assert!(leaf.not_after <= SystemTime::now() + Duration::from_secs(3600));
}

#[test]
fn a_key_that_is_not_the_issuers_is_refused() {
    let g = ca::generate(TD, 365 * DAY, 30 * DAY).unwrap();
    let other = ca::generate(TD, 365 * DAY, 30 * DAY).unwrap();
    let err =
        Authority::from_pem(&g.issuer_pem, &other.issuer_key_pem, &g.anchor_pem, TD).unwrap_err();
    assert_eq!(err, "tls.key is not the key of tls.crt");
    let err = Authority::from_pem(&g.issuer_pem, &g.issuer_key_pem, "", TD).unwrap_err();
    assert!(err.contains("ca.crt"), "{err}");
}

#[test]
fn token_files_name_serviceaccounts() {
    let map =
        tokens::parse("\"0123456789abcdef\": shop/web\n\"fedcba9876543210\": shop/db\n").unwrap();
    assert_eq!(map["0123456789abcdef"], web());
    assert!(tokens::parse("\"short\": shop/web")
        .unwrap_err()
        .contains("shorter than 16"));
    assert!(tokens::parse("\"0123456789abcdef\": web")
        .unwrap_err()
        .contains("namespace/serviceaccount"));
    assert!(tokens::parse("- a\n- b\n").is_err());
}

#[test]
fn the_chain_handed_out_is_tls_crt_without_the_anchors() {
    let g = ca::generate(TD, 365 * DAY, 30 * DAY).unwrap();
    let with_anchor = format!("{}{}", g.issuer_pem, g.anchor_pem);
    let a = Authority::from_pem(&with_anchor, &g.issuer_key_pem, &g.anchor_pem, TD).unwrap();
    let leaf = web_leaf(&a);
    let issuer_der = ca::first_der(&g.issuer_pem, "CERTIFICATE").unwrap();
    assert_eq!(leaf.intermediates, std::slice::from_ref(&issuer_der));
    // An intermediate between the issuer and the anchor is handed out.
    let other = ca::generate(TD, 365 * DAY, 30 * DAY).unwrap();
    let chained = format!("{}{}", g.issuer_pem, other.issuer_pem);
    let a = Authority::from_pem(&chained, &g.issuer_key_pem, &other.anchor_pem, TD).unwrap();
    let leaf = web_leaf(&a);
    let middle = ca::first_der(&other.issuer_pem, "CERTIFICATE").unwrap();
    assert_eq!(leaf.intermediates, [issuer_der, middle]);
}

#[test]
fn the_next_issuer_is_signed_by_the_same_anchor() {
    let g = ca::generate(TD, 365 * DAY, 30 * DAY).unwrap();
    let next = g.next_issuer(TD, 30 * DAY).unwrap();
    assert_eq!(next.anchor_pem, g.anchor_pem);
    assert_ne!(next.issuer_pem, g.issuer_pem);
    assert_ne!(next.issuer_key_pem, g.issuer_key_pem);
    let anchor_der = ca::first_der(&g.anchor_pem, "CERTIFICATE").unwrap();
    let (_, anchor) = x509_parser::parse_x509_certificate(&anchor_der).unwrap();
    let issuer_der = ca::first_der(&next.issuer_pem, "CERTIFICATE").unwrap();
    let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_der).unwrap();
    issuer.verify_signature(Some(anchor.public_key())).unwrap();
    assert!(issuer.is_ca());
    Authority::from_pem(&next.issuer_pem, &next.issuer_key_pem, &next.anchor_pem, TD).unwrap();
}

#[test]
fn secrets_hold_the_files_of_a_ca_directory() {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::ByteString;
    let g = ca::generate(TD, 365 * DAY, 30 * DAY).unwrap();
    let secret = |files: &[(&str, &[u8])]| Secret {
        data: Some(
            files
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                .collect(),
        ),
        type_: Some("kubernetes.io/tls".into()),
        ..Secret::default()
    };
    let good = secret(&[
        ("tls.crt", g.issuer_pem.as_bytes()),
        ("tls.key", g.issuer_key_pem.as_bytes()),
        ("ca.crt", g.anchor_pem.as_bytes()),
    ]);
    assert!(issuer::from_secret(&good, TD).is_ok());
    let no_anchor = secret(&[
        ("tls.crt", g.issuer_pem.as_bytes()),
        ("tls.key", g.issuer_key_pem.as_bytes()),
    ]);
    assert_eq!(
        issuer::from_secret(&no_anchor, TD).unwrap_err(),
        "the Secret has no ca.crt"
    );
    let binary = secret(&[
        ("tls.crt", &[0xff, 0xfe]),
        ("tls.key", g.issuer_key_pem.as_bytes()),
        ("ca.crt", g.anchor_pem.as_bytes()),
    ]);
    assert_eq!(
        issuer::from_secret(&binary, TD).unwrap_err(),
        "tls.crt is not PEM text"
    );
    assert_eq!(
        issuer::from_secret(&Secret::default(), TD).unwrap_err(),
        "the Secret has no tls.crt"
    );
}

#[test]
fn secret_names() {
    let s = issuer::SecretRef::parse("weft/weft-issuer").unwrap();
    assert_eq!(s.to_string(), "weft/weft-issuer");
    for bad in ["weft", "weft/", "/x", "a/b/c", "A/b", ""] {
        assert!(issuer::SecretRef::parse(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn token_files_review_tokens() {
    let path = std::env::temp_dir().join(format!("weft-tokens-unit-{}", std::process::id()));
    std::fs::write(&path, "\"0123456789abcdef\": shop/web\n").unwrap();
    let file = tokens::TokenFile::load(&path).unwrap();
    assert_eq!(file.review("0123456789abcdef", None).await, Ok(web()));
    assert!(matches!(
        file.review("fedcba9876543210", None).await,
        Err(ReviewError::Invalid(_))
    ));
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_token_file_is_looked_at_once_a_second() {
    let path = std::env::temp_dir().join(format!("weft-tokens-again-{}", std::process::id()));
    std::fs::write(&path, "\"0123456789abcdef\": shop/web\n").unwrap();
    let file = tokens::TokenFile::load(&path).unwrap();
    // Changed (size and time): not seen before the second is over.
    std::fs::write(&path, "\"fedcba9876543210fe\": shop/web\n").unwrap();
    // A time of its own (a file system's clock may not have moved yet).
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(later))
        .unwrap();
    assert_eq!(file.review("0123456789abcdef", None).await, Ok(web()));
    tokio::time::advance(tokens::CHECK_EVERY).await;
    assert_eq!(file.review("fedcba9876543210fe", None).await, Ok(web()));
    assert!(file.review("0123456789abcdef", None).await.is_err());
    std::fs::remove_file(&path).unwrap();
}
