//! Certify in a cluster, end to end: a real weft-control (its `run`, on
//! loopback port 0) with the kube source against the fake Kubernetes API
//! server, its issuer from a watched Secret and its tokens checked with the
//! TokenReview API, and a tonic client sending CSRs made with rcgen.

use rcgen::{CertificateParams, KeyPair, SanType};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::Code;
use weft_control::config::{Config, SecretRef, Source};
use weft_control::identity::ca::{self, Generated};
use weft_control::run::{run, Bound};
use weft_proto::identity::v1 as pb;
use weft_proto::identity::v1::identity_client::IdentityClient;
use weft_tests::fakekube::{FakeKube, API_AUDIENCE, SECRETS, TOKEN_REVIEWS};

const DAY: Duration = Duration::from_secs(24 * 3600);
const WAIT: Duration = Duration::from_secs(10);
const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const DB: &str = "spiffe://cluster.local/ns/shop/sa/db";
const WEB_SA: &str = "system:serviceaccount:shop:web";
const DB_SA: &str = "system:serviceaccount:shop:db";

/// A running weft-control; stopped when dropped.
struct Plane {
    client: IdentityClient<Channel>,
    admin: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// weft-control with the kube source on `kube`, its issuer from the Secret
/// `weft/weft-issuer`.
async fn start(kube: &FakeKube, adjust: impl FnOnce(Config) -> Config) -> Plane {
    let config = adjust(Config {
        kube_api_server: Some(kube.url()),
        identity_secret: Some(SecretRef::parse("weft/weft-issuer").unwrap()),
        leaf_lifetime: Duration::from_secs(3600),
        ..Config::loopback(Source::Kube)
    });
    let bound = Bound::bind(&config).await.unwrap();
    let (grpc, admin) = bound.addrs().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        run(config, bound, async {
            let _ = stopped.await;
        })
        .await
        .expect("weft-control runs")
    });
    let client = IdentityClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    Plane {
        client,
        admin,
        _stop: stop,
    }
}

/// The issuer Secret: the three files of a CA directory.
fn issuer_secret(cert: &str, key: &str, anchors: &str) -> serde_json::Value {
    weft_tests::fakekube::issuer_secret("weft", "weft-issuer", cert, key, anchors)
}

fn secret_of(g: &Generated) -> serde_json::Value {
    issuer_secret(&g.issuer_pem, &g.issuer_key_pem, &g.anchor_pem)
}

fn der(pem: &str) -> Vec<u8> {
    ca::first_der(pem, "CERTIFICATE").unwrap()
}

fn request(identity: &str, token: &str, san: &str) -> pb::CertifyRequest {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(san.try_into().unwrap())];
    pb::CertifyRequest {
        identity: identity.into(),
        token: token.into(),
        certificate_signing_request: p.serialize_request(&key).unwrap().der().to_vec(),
    }
}

/// Certify `identity` with `token`; the refusal as (code, message).
async fn certify(
    plane: &Plane,
    identity: &str,
    token: &str,
) -> Result<pb::CertifyResponse, (Code, String)> {
    plane
        .client
        .clone()
        .certify(request(identity, token, identity))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| (s.code(), s.message().to_owned()))
}

/// The leaf's URI SANs.
fn sans(rsp: &pb::CertifyResponse) -> Vec<String> {
    let (_, leaf) = x509_parser::parse_x509_certificate(&rsp.leaf_certificate).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect()
}

/// Whether the leaf is signed by `issuer` (DER) and `issuer` by `anchor` (PEM).
fn chains(rsp: &pb::CertifyResponse, issuer: &[u8], anchor: &str) -> bool {
    let (_, leaf) = x509_parser::parse_x509_certificate(&rsp.leaf_certificate).unwrap();
    let (_, issuer) = x509_parser::parse_x509_certificate(issuer).unwrap();
    let anchor = der(anchor);
    let (_, anchor) = x509_parser::parse_x509_certificate(&anchor).unwrap();
    leaf.verify_signature(Some(issuer.public_key())).is_ok()
        && issuer.verify_signature(Some(anchor.public_key())).is_ok()
}

/// The value of one series on the admin port's /metrics (0 when absent).
async fn metric(plane: &Plane, series: &str) -> u64 {
    let text = weft_tests::http_get(plane.admin, "/metrics").await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Waits until `f` gives something.
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {what} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_review_says_whose_token_it_is() {
    let kube = FakeKube::start();
    let g = ca::generate("cluster.local", 365 * DAY, 30 * DAY).unwrap();
    kube.apply(&SECRETS, secret_of(&g));
    kube.add_token("web-token", WEB_SA, &["weft"]);
    kube.add_token("db-token", DB_SA, &["weft"]);
    kube.add_token("default-token", WEB_SA, &[API_AUDIENCE]);
    kube.add_token("user-token", "alice", &["weft"]);
    let plane = start(&kube, |c| c).await;

    // Issued for the projected token's ServiceAccount.
    let rsp = eventually("issued", async || {
        certify(&plane, WEB, "web-token").await.ok()
    })
    .await;
    assert_eq!(sans(&rsp), [format!("URI({WEB})")]);
    assert_eq!(rsp.intermediate_certificates, [der(&g.issuer_pem)]);
    assert!(chains(
        &rsp,
        &rsp.intermediate_certificates[0],
        &g.anchor_pem
    ));
    // A renewal soon after costs no TokenReview.
    let reviews = kube.creates(&TOKEN_REVIEWS);
    assert!(reviews > 0, "asked the TokenReview API");
    certify(&plane, WEB, "web-token").await.unwrap();
    assert_eq!(kube.creates(&TOKEN_REVIEWS), reviews, "cached");

    // The token of another ServiceAccount than the CSR's.
    assert_eq!(
        certify(&plane, WEB, "db-token").await.unwrap_err(),
        (
            Code::PermissionDenied,
            format!("identity mismatch: the token is for {DB}, the request asks for {WEB}")
        )
    );
    // Tokens the API server does not authenticate for "weft".
    assert_eq!(
        certify(&plane, WEB, "nobody-knows-this").await.unwrap_err(),
        (
            Code::Unauthenticated,
            r#"invalid token: the API server does not authenticate it for the audience "weft": invalid bearer token"#.into()
        )
    );
    let (code, msg) = certify(&plane, WEB, "default-token").await.unwrap_err();
    assert_eq!(code, Code::Unauthenticated);
    assert!(
        msg.starts_with(
            r#"invalid token: the API server does not authenticate it for the audience "weft""#
        ) && msg.contains(&format!(r#"token audiences ["{API_AUDIENCE}"]"#)),
        "{msg}"
    );
    let (code, msg) = certify(&plane, WEB, "user-token").await.unwrap_err();
    assert_eq!(code, Code::Unauthenticated);
    assert!(msg.contains(r#""alice", not of a ServiceAccount"#), "{msg}");
    assert_eq!(
        certify(&plane, WEB, "").await.unwrap_err(),
        (
            Code::Unauthenticated,
            "invalid token: the request has no token".into()
        )
    );

    // The API server gone: tokens cannot be checked (UNAVAILABLE, not a
    // refusal of the token); one accepted a moment ago still is.
    kube.add_token("late-token", WEB_SA, &["weft"]);
    drop(kube);
    let (code, msg) = certify(&plane, WEB, "late-token").await.unwrap_err();
    assert_eq!(code, Code::Unavailable);
    assert!(
        msg.starts_with("the token could not be checked: the TokenReview API failed:"),
        "{msg}"
    );
    certify(&plane, WEB, "web-token").await.unwrap();

    for (result, n) in [
        ("issued", 3),
        ("identity_mismatch", 1),
        ("invalid_token", 4),
        ("review_unavailable", 1),
    ] {
        let series = format!("weft_control_certify_total{{result=\"{result}\"}}");
        assert_eq!(metric(&plane, &series).await, n, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuer_follows_its_secret_and_keeps_the_last_good_one() {
    let kube = FakeKube::start();
    // --identity-tokens takes precedence over TokenReview.
    let tokens = std::env::temp_dir().join(format!("weft-kube-tokens-{}", std::process::id()));
    std::fs::write(&tokens, "token-of-shop-web-0123456789: shop/web\n").unwrap();
    let file = tokens.clone();
    let plane = start(&kube, move |c| Config {
        identity_tokens: Some(file),
        ..c
    })
    .await;
    let web = async || certify(&plane, WEB, "token-of-shop-web-0123456789").await;

    // No Secret yet: no issuer.
    assert_eq!(
        web().await.unwrap_err(),
        (
            Code::Unavailable,
            "no issuer loaded yet (see weft-control's log)".into()
        )
    );
    let ready = async || weft_tests::http_get(plane.admin, "/ready").await;
    let answer = eventually("synced", async || {
        let answer = ready().await;
        (!answer.starts_with("syncing")).then_some(answer)
    })
    .await;
    assert!(answer.contains("no issuer loaded yet"), "{answer}");
    let first = ca::generate("cluster.local", 365 * DAY, 30 * DAY).unwrap();
    kube.apply(&SECRETS, secret_of(&first));
    let rsp = eventually("issued", async || web().await.ok()).await;
    assert_eq!(ready().await.trim(), "ready");
    assert_eq!(rsp.intermediate_certificates, [der(&first.issuer_pem)]);

    // The next issuer under the same anchor: new leaves are its.
    let next = first.next_issuer("cluster.local", 30 * DAY).unwrap();
    kube.apply(&SECRETS, secret_of(&next));
    let rsp = eventually("signed by the next issuer", async || {
        let rsp = web().await.unwrap();
        (rsp.intermediate_certificates == [der(&next.issuer_pem)]).then_some(rsp)
    })
    .await;
    assert!(chains(&rsp, &der(&next.issuer_pem), &first.anchor_pem));

    // A Secret whose key is not its certificate's: reported, the issuer in use stays.
    let other = ca::generate("cluster.local", 365 * DAY, 30 * DAY).unwrap();
    kube.apply(
        &SECRETS,
        issuer_secret(&other.issuer_pem, &next.issuer_key_pem, &other.anchor_pem),
    );
    let invalid = r#"weft_control_issuer_loads_total{result="invalid"}"#;
    eventually("reported", async || {
        (metric(&plane, invalid).await == 1).then_some(())
    })
    .await;
    let rsp = web().await.unwrap();
    assert_eq!(rsp.intermediate_certificates, [der(&next.issuer_pem)]);
    let loaded = r#"weft_control_issuer_loads_total{result="loaded"}"#;
    assert_eq!(metric(&plane, loaded).await, 2);

    assert_eq!(kube.creates(&TOKEN_REVIEWS), 0, "the token file decides");
    std::fs::remove_file(&tokens).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_are_remembered_and_reviews_are_limited_per_client() {
    use weft_control::identity::review::CLIENT_BURST;
    let kube = FakeKube::start();
    let g = ca::generate("cluster.local", 365 * DAY, 30 * DAY).unwrap();
    kube.apply(&SECRETS, secret_of(&g));
    kube.add_token("web-token", WEB_SA, &["weft"]);
    let plane = start(&kube, |c| c).await;
    eventually("issued", async || {
        certify(&plane, WEB, "web-token").await.ok()
    })
    .await;
    let started = tokio::time::Instant::now();

    // A bad token sent again and again costs one TokenReview.
    let reviews = kube.creates(&TOKEN_REVIEWS);
    let first = certify(&plane, WEB, "a-bad-token").await.unwrap_err();
    assert_eq!(first.0, Code::Unauthenticated);
    for _ in 0..4 {
        assert_eq!(
            certify(&plane, WEB, "a-bad-token").await.unwrap_err(),
            first
        );
    }
    assert_eq!(kube.creates(&TOKEN_REVIEWS), reviews + 1, "refusal cached");

    // Many different bad tokens from one client: the API server sees the
    // client's burst (and its refills), the rest is RESOURCE_EXHAUSTED.
    let mut limited = 0;
    for i in 0..40 {
        match certify(&plane, WEB, &format!("bad-token-{i}")).await {
            Err((Code::ResourceExhausted, msg)) => {
                assert!(
                    msg.contains("too many token reviews from 127.0.0.1"),
                    "{msg}"
                );
                limited += 1;
            }
            Err((Code::Unauthenticated, _)) => {}
            other => panic!("{other:?}"),
        }
    }
    let spent = kube.creates(&TOKEN_REVIEWS) - reviews;
    let budget = u64::from(CLIENT_BURST) + started.elapsed().as_secs() + 1;
    assert!(spent <= budget, "{spent} reviews, at most {budget} allowed");
    assert!(limited >= 40 + 1 - budget, "only {limited} limited");
    // A token accepted before is still taken (cached), limit or not.
    certify(&plane, WEB, "web-token").await.unwrap();

    let reviews_of = async |result: &str| {
        metric(
            &plane,
            &format!("weft_control_token_reviews_total{{result=\"{result}\"}}"),
        )
        .await
    };
    assert_eq!(reviews_of("cached_refused").await, 4);
    assert_eq!(reviews_of("rate_limited").await, limited);
    assert_eq!(reviews_of("cached_accepted").await, 1);
    assert_eq!(reviews_of("accepted").await, 1);
    assert_eq!(reviews_of("refused").await, spent);
    assert_eq!(
        metric(
            &plane,
            "weft_control_certify_total{result=\"rate_limited\"}"
        )
        .await,
        limited
    );
}
