//! Certify end to end: a real weft-control (its `run`, on loopback port 0)
//! with a CA made by the same code as `weft identity init`, a token file,
//! and a tonic client sending CSRs: issued for the token's own identity,
//! refused with the precise reason otherwise; the issuer rotated on disk is
//! picked up.

use rcgen::{CertificateParams, KeyPair, SanType};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::Code;
use weft_control::config::{Config, Source};
use weft_control::identity::ca;
use weft_control::run::{run, Bound};
use weft_proto::identity::v1 as pb;
use weft_proto::identity::v1::identity_client::IdentityClient;

const WEB_TOKEN: &str = "token-of-shop-web-0123456789";
const DB_TOKEN: &str = "token-of-shop-db-0123456789";
const DAY: Duration = Duration::from_secs(24 * 3600);

struct Plane {
    dir: PathBuf,
    grpc: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start() -> Plane {
    let dir = std::env::temp_dir().join(format!("weft-identity-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (manifests, ca_dir) = (dir.join("manifests"), dir.join("ca"));
    std::fs::create_dir_all(&manifests).unwrap();
    ca::generate("cluster.local", 365 * DAY, 30 * DAY)
        .unwrap()
        .write(&ca_dir)
        .unwrap();
    let tokens = dir.join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!("{WEB_TOKEN}: shop/web\n{DB_TOKEN}: shop/db\n"),
    )
    .unwrap();
    let config = Config {
        poll_interval: Duration::from_millis(50),
        identity_dir: Some(ca_dir),
        identity_tokens: Some(tokens),
        leaf_lifetime: Duration::from_secs(3600),
        ..Config::loopback(Source::Files(manifests))
    };
    let bound = Bound::bind(&config).await.unwrap();
    let (grpc, admin) = bound.addrs().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(run(config, bound, async {
        let _ = stopped.await;
    }));
    Plane {
        dir,
        grpc,
        admin,
        _stop: stop,
    }
}

fn csr(san: &str) -> Vec<u8> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(san.try_into().unwrap())];
    p.serialize_request(&key).unwrap().der().to_vec()
}

fn request(identity: &str, token: &str, san: &str) -> pb::CertifyRequest {
    pb::CertifyRequest {
        identity: identity.into(),
        token: token.into(),
        certificate_signing_request: csr(san),
    }
}

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const DB: &str = "spiffe://cluster.local/ns/shop/sa/db";

#[tokio::test]
async fn certify_issues_for_the_token_and_refuses_precisely() {
    let plane = start().await;
    let mut client = loop {
        match IdentityClient::connect(format!("http://{}", plane.grpc)).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };

    // Issued: the leaf names the identity and chains to the issuer.
    let rsp = client
        .certify(request(WEB, WEB_TOKEN, WEB))
        .await
        .unwrap()
        .into_inner();
    let (_, leaf) = x509_parser::parse_x509_certificate(&rsp.leaf_certificate).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names[0].to_string(),
        format!("URI({WEB})")
    );
    let (_, issuer) =
        x509_parser::parse_x509_certificate(&rsp.intermediate_certificates[0]).unwrap();
    leaf.verify_signature(Some(issuer.public_key())).unwrap();
    let until = rsp.valid_until.unwrap().seconds;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now + 3500..=now + 3700).contains(&until),
        "valid for the leaf lifetime"
    );

    // A token of another ServiceAccount.
    let err = client
        .certify(request(WEB, DB_TOKEN, WEB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        format!("identity mismatch: the token is for {DB}, the request asks for {WEB}")
    );
    // A token nobody knows.
    let err = client
        .certify(request(WEB, "nobody-knows-this-token", WEB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().starts_with("invalid token:"),
        "{}",
        err.message()
    );
    // A CSR for another identity than the request's.
    let err = client
        .certify(request(WEB, WEB_TOKEN, DB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        format!("bad CSR: its SAN is {DB:?}, not the identity {WEB}")
    );
    // Not a SPIFFE identity.
    let err = client
        .certify(request("web", WEB_TOKEN, WEB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let text = weft_tests::http_get(plane.admin, "/metrics").await;
    for (result, n) in [
        ("issued", 1),
        ("identity_mismatch", 1),
        ("invalid_token", 1),
        ("bad_csr", 1),
        ("bad_request", 1),
    ] {
        let line = format!("weft_control_certify_total{{result=\"{result}\"}} {n}");
        assert!(text.contains(&line), "no {line} in {text}");
    }

    // The issuer rotated on disk (same anchor file replaced as a whole):
    // new leaves are signed by the new issuer.
    let ca_dir = plane.dir.join("ca");
    ca::generate("cluster.local", 365 * DAY, 30 * DAY)
        .unwrap()
        .write(&ca_dir)
        .unwrap();
    let new_issuer = ca::first_der(
        &std::fs::read_to_string(ca_dir.join(ca::ISSUER_CERT_FILE)).unwrap(),
        "CERTIFICATE",
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rsp = client
            .certify(request(WEB, WEB_TOKEN, WEB))
            .await
            .unwrap()
            .into_inner();
        if rsp.intermediate_certificates[0] == new_issuer {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new issuer was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn identity_without_a_way_to_check_tokens_or_a_cluster_does_not_start() {
    let dir = std::env::temp_dir().join(format!("weft-identity-cfg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (manifests, ca_dir) = (dir.join("manifests"), dir.join("ca"));
    std::fs::create_dir_all(&manifests).unwrap();
    ca::generate("cluster.local", 365 * DAY, 30 * DAY)
        .unwrap()
        .write(&ca_dir)
        .unwrap();
    let files = Config::loopback(Source::Files(manifests));
    for (config, why) in [
        (
            Config {
                identity_dir: Some(ca_dir.clone()),
                ..files.clone()
            },
            "identity: a directory --source needs --identity-tokens (there is no TokenReview API to ask)",
        ),
        (
            Config {
                identity_secret: Some(
                    weft_control::config::SecretRef::parse("weft/weft-issuer").unwrap(),
                ),
                ..files.clone()
            },
            "identity: --identity-secret needs --source=kube",
        ),
    ] {
        let bound = Bound::bind(&config).await.unwrap();
        let err = run(config, bound, std::future::pending()).await.unwrap_err();
        assert_eq!(err.to_string(), why);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
