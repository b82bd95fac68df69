//! Mesh TLS between two [`Tls`] instances over an in-memory pipe, with
//! certificates from a CA made here.

use super::*;
use crate::identity::{Credentials, Leaf};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TD: &str = "spiffe://cluster.local";

struct Ca {
    anchor_der: CertificateDer<'static>,
    issuer_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let ca_params = |path_len| {
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
        p
    };
    let anchor_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let anchor = ca_params(1).self_signed(&anchor_key).unwrap();
    let issuer_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let issuer_params = ca_params(0);
    let issuer = issuer_params
        .signed_by(&issuer_key, &Issuer::new(ca_params(1), anchor_key))
        .unwrap();
    Ca {
        anchor_der: anchor.der().clone(),
        issuer_der: issuer.der().clone(),
        issuer: Issuer::new(issuer_params, issuer_key),
    }
}

impl Ca {
    /// Credentials for `id`; `expired` makes a certificate that ended an
    /// hour ago (while the proxy believes it still valid).
    fn credentials(&self, id: &str, expired: bool) -> Arc<Credentials> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        if expired {
            p.not_before = now - time::Duration::hours(2);
            p.not_after = now - time::Duration::hours(1);
        }
        let leaf = p.signed_by(&key, &self.issuer).unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
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
            valid_until: SystemTime::now() + Duration::from_secs(3600),
            issuer: "test issuer".into(),
        });
        credentials
    }

    fn tls(&self, credentials: Arc<Credentials>) -> Tls {
        let mut roots = RootCertStore::empty();
        roots.add(self.anchor_der.clone()).unwrap();
        Tls::new(
            Arc::new(rustls::crypto::ring::default_provider()),
            roots,
            credentials,
            Duration::from_secs(5),
        )
        .unwrap()
    }
}

fn id(sa: &str) -> String {
    format!("{TD}/ns/shop/sa/{sa}")
}

const ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

/// A handshake between `client` (expecting `expected`) and `server`; the
/// client's result, and the server's view of the client.
async fn handshake(
    client: &Tls,
    server: &Tls,
    expected: &str,
) -> (Result<(), String>, Option<Peer>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let expected: Arc<str> = expected.into();
    let (c, s) = tokio::join!(
        async {
            let mut tls = client.connect(a, ADDR, &expected, Alpn::Http2).await?;
            tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            let mut buf = [0; 4];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            assert_eq!(&buf, b"pong");
            Ok(())
        },
        async {
            let (mut tls, peer) = server.accept(b).await?;
            let mut buf = [0; 4];
            tls.read_exact(&mut buf).await.ok()?;
            tls.write_all(b"pong").await.ok()?;
            tls.flush().await.ok()?;
            Some(peer)
        }
    );
    (c, s)
}

fn count(tls: &Tls, direction: Direction, peer_id: &str, result: &'static str) -> u64 {
    tls.handshakes
        .get_or_create(&HandshakeLabels {
            direction,
            peer_id: peer_id.to_owned(),
            result,
        })
        .get()
}

#[tokio::test]
async fn both_sides_learn_the_other_identity() {
    let ca = ca();
    let client = ca.tls(ca.credentials(&id("web"), false));
    let server = ca.tls(ca.credentials(&id("db"), false));
    let (c, peer) = handshake(&client, &server, &id("db")).await;
    c.unwrap();
    let peer = peer.unwrap();
    assert_eq!(&*peer.id, id("web"));
    assert_eq!(peer.alpn, Alpn::Http2);
    assert_eq!(count(&client, Direction::Outbound, &id("db"), "ok"), 1);
    assert_eq!(count(&server, Direction::Inbound, &id("web"), "ok"), 1);
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused() {
    let ca = ca();
    let client = ca.tls(ca.credentials(&id("web"), false));
    let server = ca.tls(ca.credentials(&id("impostor"), false));
    let (c, peer) = handshake(&client, &server, &id("db")).await;
    let error = c.unwrap_err();
    assert!(error.contains(&id("impostor")), "{error}");
    assert!(peer.is_none());
    assert_eq!(
        count(&client, Direction::Outbound, &id("db"), "wrong_identity"),
        1
    );
}

#[tokio::test]
async fn untrusted_and_expired_certificates_are_refused() {
    let ca = ca();
    let other = self::ca();
    // A server whose chain ends at another anchor.
    let client = ca.tls(ca.credentials(&id("web"), false));
    let server = ca.tls(other.credentials(&id("db"), false));
    let (c, _) = handshake(&client, &server, &id("db")).await;
    assert!(c.is_err());
    assert_eq!(
        count(&client, Direction::Outbound, &id("db"), "untrusted"),
        1
    );
    // A client whose chain ends at another anchor: the server refuses it.
    let client = ca.tls(other.credentials(&id("web"), false));
    let server = ca.tls(ca.credentials(&id("db"), false));
    let (_, peer) = handshake(&client, &server, &id("db")).await;
    assert!(peer.is_none());
    assert_eq!(count(&server, Direction::Inbound, "", "untrusted"), 1);
    // An expired server certificate.
    let client = ca.tls(ca.credentials(&id("web"), false));
    let server = ca.tls(ca.credentials(&id("db"), true));
    let (c, _) = handshake(&client, &server, &id("db")).await;
    assert!(c.is_err());
    assert_eq!(count(&client, Direction::Outbound, &id("db"), "expired"), 1);
}

#[tokio::test]
async fn a_client_without_a_certificate_or_tls13_is_refused() {
    let ca = ca();
    let server = ca.tls(ca.credentials(&id("db"), false));
    // TLS 1.2 only, offering the mesh ALPN: a downgrade attempt.
    let mut roots = RootCertStore::empty();
    roots.add(ca.anchor_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![Alpn::Http1.id().to_vec()];
    let (a, b) = tokio::io::duplex(64 * 1024);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let (c, s) = tokio::join!(
        connector.connect(ServerName::IpAddress(ADDR.ip().into()), a),
        server.accept(b)
    );
    assert!(c.is_err() && s.is_none());
    assert_eq!(count(&server, Direction::Inbound, "", "incompatible"), 1);
}

#[test]
fn alpn_ids_round_trip() {
    for a in Alpn::ALL {
        assert_eq!(Alpn::from_id(a.id()), Some(a));
    }
    assert_eq!(Alpn::from_id(b"h2"), None);
}

#[tokio::test]
async fn a_connection_waits_for_the_first_certificate() {
    let ca = ca();
    let server = ca.tls(ca.credentials(&id("db"), false));
    // A client proxy still starting: its certificate arrives 200 ms later.
    let pending = Credentials::new(id("web"));
    let client = ca.tls(pending.clone());
    let later = ca.credentials(&id("web"), false).current().unwrap();
    let issue = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        pending.store(Leaf {
            key: later.key.clone(),
            valid_until: later.valid_until,
            issuer: later.issuer.clone(),
        });
    };
    let db = id("db");
    let ((c, peer), ()) = tokio::join!(handshake(&client, &server, &db), issue);
    c.unwrap();
    assert_eq!(&*peer.unwrap().id, id("web"));

    // With none coming, it gives up after the handshake timeout.
    let never = ca.tls(Credentials::new(id("web")));
    let (c, _) = tokio::time::timeout(
        Duration::from_secs(10),
        handshake(&never, &server, &id("db")),
    )
    .await
    .unwrap();
    assert!(c.unwrap_err().contains("no valid certificate"));
}
