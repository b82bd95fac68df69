//! The renewal schedule under paused tokio time, against a fake Certify
//! served by tonic over an in-memory pipe: a day passes in milliseconds and
//! every instant is exact (to the millisecond of tokio's timer).

use super::renew::{csr, endpoint, leaf_info, renewal_time, start, Backoff};
use super::testing::TestCa;
use super::*;
use prometheus_client::registry::Registry;
use rcgen::KeyPair;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::codegen::http::Uri;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use weft_proto::identity::v1::identity_server::{Identity, IdentityServer};
use weft_proto::identity::v1::{CertifyRequest, CertifyResponse};

use crate::time::Converter;

const ID: &str = "spiffe://cluster.local/ns/shop/sa/web";
const TOKEN: &str = "token-of-web";

/// What the fake Certify answers.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// A certificate for the identity asked, valid this long.
    Issue(Duration),
    /// A certificate valid `cert`, said to be valid `said`.
    Overstated { cert: Duration, said: Duration },
    /// A certificate for another identity.
    Impostor,
    /// A refusal with this code.
    Refuse(tonic::Code),
}

struct FakeCertify {
    ca: TestCa,
    clock: Converter,
    answer: Mutex<Answer>,
    /// When each request came (on tokio's clock); the count is watched.
    requests: Mutex<Vec<Instant>>,
    count: watch::Sender<usize>,
}

#[tonic::async_trait]
impl Identity for FakeCertify {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let req = request.into_inner();
        assert_eq!(req.identity, ID);
        assert_eq!(req.token, TOKEN);
        self.requests.lock().unwrap().push(Instant::now());
        self.count.send_modify(|n| *n += 1);
        let answer = *self.answer.lock().unwrap();
        let minute = Duration::from_secs(60);
        let (id, cert, said) = match answer {
            Answer::Issue(life) => (ID, life, life),
            Answer::Overstated { cert, said } => (ID, cert, said),
            Answer::Impostor => ("spiffe://cluster.local/ns/shop/sa/other", minute, minute),
            Answer::Refuse(code) => return Err(Status::new(code, "told to refuse")),
        };
        let now = self.clock.now();
        let (cert, said) = (now + cert, now + said);
        Ok(Response::new(CertifyResponse {
            leaf_certificate: self.ca.sign(&req.certificate_signing_request, id, cert),
            intermediate_certificates: self
                .ca
                .intermediates()
                .into_iter()
                .map(|c| c.to_vec())
                .collect(),
            valid_until: Some(said.into()),
        }))
    }
}

/// Hands each connection the channel makes to the fake's server, over a
/// `duplex` pipe.
#[derive(Clone)]
struct Pipe(mpsc::Sender<std::io::Result<tokio::io::DuplexStream>>);

impl tonic::codegen::Service<Uri> for Pipe {
    type Response = hyper_util::rt::TokioIo<tokio::io::DuplexStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move {
            let (client, theirs) = tokio::io::duplex(64 * 1024);
            server
                .send(Ok(theirs))
                .await
                .map_err(|_| std::io::Error::other("the fake Certify is gone"))?;
            Ok(hyper_util::rt::TokioIo::new(client))
        })
    }
}

/// A renewal task for [`ID`] against a fake Certify, with its metrics.
struct Harness {
    fake: Arc<FakeCertify>,
    credentials: Arc<Credentials>,
    registry: Registry,
    renewer: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl Harness {
    fn start(answer: Answer) -> Self {
        // Wall-clock time starts on a whole second, so that a certificate
        // issued on one expires exactly when Certify says (X.509 has no
        // fractions of a second).
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let clock = Converter::at(
            std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            Instant::now(),
        );
        let fake = Arc::new(FakeCertify {
            ca: TestCa::new(),
            clock,
            answer: Mutex::new(answer),
            requests: Mutex::default(),
            count: watch::Sender::new(0),
        });
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(IdentityServer::from_arc(fake.clone()))
                .serve_with_incoming(ReceiverStream::new(rx)),
        );
        let channel = endpoint("http://certify.test")
            .unwrap()
            .connect_with_connector_lazy(Pipe(tx));
        let dir = TempDir::new();
        let token_file = dir.0.join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let credentials = Credentials::with_clock(ID.into(), clock);
        let mut registry = Registry::default();
        credentials.register(&mut registry);
        let config = IdentityConfig {
            id: ID.into(),
            addr: "certify.test".into(),
            token_file,
        };
        let provider = rustls::crypto::ring::default_provider();
        let renewer = start(config, credentials.clone(), &provider, channel).unwrap();
        Self {
            fake,
            credentials,
            registry,
            renewer,
            _dir: dir,
        }
    }

    fn answer(&self, answer: Answer) {
        *self.fake.answer.lock().unwrap() = answer;
    }

    /// Waits for the `n`th request (from 1) to Certify; its instant.
    async fn request(&self, n: usize) -> Instant {
        let mut count = self.fake.count.subscribe();
        tokio::time::timeout(Duration::from_secs(3600), count.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("no request {n} within an hour"))
            .unwrap();
        self.fake.requests.lock().unwrap()[n - 1]
    }

    /// Waits for the `n`th certificate stored (from 1).
    async fn certificate(&self, n: u64) -> Arc<Leaf> {
        let mut issued = self.credentials.issued();
        let wait = async {
            while self.metric("weft_identity_certify_total{result=\"ok\"}") < n as f64 {
                issued.changed().await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(3600), wait)
            .await
            .unwrap_or_else(|_| panic!("no certificate {n} within an hour"));
        self.credentials.current().unwrap()
    }

    /// A sample of the registry as `/metrics` shows it (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.parse().unwrap())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// A directory removed on drop (for the token file).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weft-identity-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `actual` is `expected` to tokio's timer granularity.
#[track_caller]
fn assert_at(actual: Duration, expected: Duration) {
    assert!(
        actual >= expected && actual <= expected + Duration::from_millis(2),
        "at {actual:?}, expected {expected:?}"
    );
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn renews_at_70_percent_of_the_lifetime_and_rotates() {
    let h = Harness::start(Answer::Issue(Duration::from_secs(100)));
    let first = h.certificate(1).await;
    let t0 = h.request(1).await;
    assert_eq!(h.metric("weft_identity_cert_valid"), 1.0);

    let second = h.certificate(2).await;
    assert_at(h.request(2).await - t0, Duration::from_secs(70));
    // A new certificate (same key, new leaf) in force, its expiry shown.
    assert_ne!(first.key.cert[0], second.key.cert[0]);
    assert!(second.valid_until > first.valid_until);
    let until = second
        .valid_until
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    assert_eq!(
        h.metric("weft_identity_cert_expiry_timestamp_seconds"),
        until.as_secs() as f64
    );
    // The next renewal is 70% into the new lifetime.
    h.certificate(3).await;
    assert_at(h.request(3).await - t0, Duration::from_secs(140));
    assert_eq!(h.metric("weft_identity_certify_total{result=\"ok\"}"), 3.0);
    assert_eq!(
        h.metric("weft_identity_certify_total{result=\"error\"}"),
        0.0
    );
    assert!(h.credentials.not_ready().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failing_renewal_keeps_the_certificate_until_it_expires_then_drops_it() {
    let h = Harness::start(Answer::Issue(Duration::from_secs(10)));
    h.certificate(1).await;
    let t0 = h.request(1).await;
    h.answer(Answer::Refuse(tonic::Code::Unavailable));

    // Renewal at 7 s fails; retries after 0.5 s, then 1 s, then 2 s.
    assert_at(h.request(2).await - t0, ms(7000));
    assert_at(h.request(3).await - t0, ms(7500));
    assert_at(h.request(4).await - t0, ms(8500));
    // Until its expiry at 10 s the certificate serves, ready.
    tokio::time::sleep_until(t0 + ms(9990)).await;
    assert_eq!(h.metric("weft_identity_cert_valid"), 1.0);
    assert_eq!(
        h.metric("weft_identity_certify_total{result=\"error\"}"),
        3.0
    );
    assert!(h.credentials.current().is_some());
    assert_eq!(h.credentials.not_ready(), None);
    assert!(h
        .credentials
        .describe()
        .contains("last error: Certify refused (Unavailable)"));

    // At its expiry it is dropped (the gauge says so before anyone asks).
    tokio::time::sleep_until(t0 + ms(10_005)).await;
    assert_eq!(h.metric("weft_identity_cert_valid"), 0.0);
    assert!(h.credentials.expires().is_none());
    assert!(h.credentials.current().is_none());
    let why = h.credentials.not_ready().unwrap();
    assert!(
        why.contains("certificate expired; renewal failing: Certify refused (Unavailable)"),
        "{why}"
    );
    assert!(h.credentials.describe().contains("certificate: expired"));
    assert!(h.credentials.wait_current(ms(100)).await.is_none());

    // The backoff goes on (4 s after 10.5 s); once Certify answers, the
    // proxy is ready again and the backoff starts over: the next renewal
    // is at 70% of the new lifetime.
    assert_at(h.request(5).await - t0, ms(10_500));
    h.answer(Answer::Issue(Duration::from_secs(10)));
    h.certificate(2).await;
    assert_at(h.request(6).await - t0, ms(14_500));
    assert_eq!(h.metric("weft_identity_cert_valid"), 1.0);
    assert_eq!(h.credentials.not_ready(), None);
    assert!(!h.credentials.describe().contains("last error"));
    h.answer(Answer::Refuse(tonic::Code::Unavailable));
    assert_at(h.request(7).await - t0, ms(21_500));
    assert_at(h.request(8).await - t0, ms(22_000));
}

#[tokio::test(start_paused = true)]
async fn without_a_certificate_the_backoff_doubles_to_its_cap() {
    let h = Harness::start(Answer::Refuse(tonic::Code::PermissionDenied));
    let mut at = vec![h.request(1).await];
    for n in 2..=10 {
        at.push(h.request(n).await);
    }
    let gaps: Vec<u64> = at
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64)
        .collect();
    let expected = [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000];
    for (gap, want) in gaps.iter().zip(expected) {
        assert!(*gap >= want && *gap <= want + 2, "gaps {gaps:?}");
    }
    let why = h.credentials.not_ready().unwrap();
    assert!(
        why.starts_with("identity: no certificate yet: Certify refused (PermissionDenied)"),
        "{why}"
    );
    assert_eq!(h.metric("weft_identity_cert_valid"), 0.0);
    assert_eq!(h.metric("weft_identity_certify_total{result=\"ok\"}"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn the_certificate_s_own_expiry_rules_over_the_answer_s() {
    let h = Harness::start(Answer::Overstated {
        cert: Duration::from_secs(10),
        said: Duration::from_secs(100),
    });
    let leaf = h.certificate(1).await;
    let t0 = h.request(1).await;
    assert_eq!(
        leaf.valid_until,
        h.credentials.clock().system_time(t0) + Duration::from_secs(10)
    );
    h.answer(Answer::Refuse(tonic::Code::Unavailable));
    assert_at(h.request(2).await - t0, ms(7000));
    tokio::time::sleep_until(t0 + ms(10_005)).await;
    assert_eq!(h.metric("weft_identity_cert_valid"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_certificate_for_another_identity_is_not_used() {
    let h = Harness::start(Answer::Impostor);
    assert_at(h.request(2).await - h.request(1).await, ms(500));
    assert!(h.credentials.current().is_none());
    let why = h.credentials.not_ready().unwrap();
    assert!(
        why.contains("a certificate for spiffe://cluster.local/ns/shop/sa/other, not"),
        "{why}"
    );
}

#[test]
fn renewal_comes_at_70_percent_and_never_in_a_tight_loop() {
    let now = Instant::now();
    assert_eq!(
        renewal_time(now, now + Duration::from_secs(100)),
        now + Duration::from_secs(70)
    );
    assert_eq!(renewal_time(now, now + ms(100)), now + ms(500));
    assert_eq!(renewal_time(now, now), now + ms(500));
    let mut backoff = Backoff::new();
    let waits: Vec<_> = (0..9).map(|_| backoff.next().as_millis()).collect();
    assert_eq!(
        waits,
        [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]
    );
}

#[test]
fn the_csr_asks_for_exactly_the_identity() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let der = csr(&key, ID).unwrap();
    let parsed = rcgen::CertificateSigningRequestParams::from_der(&der.into()).unwrap();
    match parsed.params.subject_alt_names.as_slice() {
        [rcgen::SanType::URI(uri)] => assert_eq!(uri.as_str(), ID),
        other => panic!("SANs {other:?}"),
    }
}

#[test]
fn a_leaf_must_name_the_identity() {
    let ca = TestCa::new();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let until = std::time::SystemTime::now() + Duration::from_secs(60);
    let der = ca.sign(&csr(&key, ID).unwrap(), ID, until);
    assert_eq!(spiffe_id_of_der(&der).as_deref(), Some(ID));
    let info = leaf_info(&der, ID).unwrap();
    let whole = until
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    let whole = std::time::SystemTime::UNIX_EPOCH
        + Duration::from_secs(whole.as_secs() + u64::from(whole.subsec_nanos() > 0));
    assert_eq!(info.not_after, whole);
    let error = leaf_info(&der, "spiffe://cluster.local/ns/shop/sa/db").unwrap_err();
    assert!(error.contains(&format!("for {ID}, not")), "{error}");
    assert!(leaf_info(b"not a certificate", ID).is_err());
}

#[test]
fn not_ready_says_why() {
    let c = Credentials::new("spiffe://td/ns/a/sa/b".into());
    assert_eq!(c.not_ready().unwrap(), "identity: no certificate yet");
    c.failed("Certify refused (Unauthenticated): bad token".into());
    assert!(c.not_ready().unwrap().contains("bad token"));
    assert!(c.describe().contains("certificate: none yet"));
}
