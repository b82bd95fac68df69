//! Mesh TLS between two [`Tls`] instances over an in-memory pipe, with
//! certificates from a CA made here.

use super::*;
use crate::identity::testing::TestCa;
use crate::identity::Leaf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TD: &str = "spiffe://cluster.local";

fn tls(ca: &TestCa, credentials: Arc<Credentials>) -> Tls {
    Tls::new(
        Arc::new(rustls::crypto::ring::default_provider()),
        ca.roots(),
        credentials,
        Duration::from_secs(5),
    )
    .unwrap()
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
) -> (Result<(), ConnectError>, Option<Peer>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let expected: Arc<str> = expected.into();
    let (c, s) = tokio::join!(
        async {
            let mut tls = client.connect(a, ADDR, &expected, Alpn::Http2).await?;
            // TLS 1.3: the server may refuse the client's certificate
            // after the client finished its handshake.
            let ping = async {
                tls.write_all(b"ping").await?;
                tls.flush().await?;
                let mut buf = [0; 4];
                tls.read_exact(&mut buf).await?;
                assert_eq!(&buf, b"pong");
                Ok(())
            };
            ping.await
                .map_err(|error| ConnectError::handshake(&expected, error))
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
    let ca = TestCa::new();
    let client = tls(&ca, ca.credentials(&id("web"), false));
    let server = tls(&ca, ca.credentials(&id("db"), false));
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
    let ca = TestCa::new();
    let client = tls(&ca, ca.credentials(&id("web"), false));
    let server = tls(&ca, ca.credentials(&id("impostor"), false));
    let (c, peer) = handshake(&client, &server, &id("db")).await;
    let error = c.unwrap_err();
    let ConnectError::WrongIdentity(wrong) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(wrong.got.as_deref(), Some(&*id("impostor")));
    assert_eq!(&*wrong.expected, id("db"));
    assert_eq!(
        error.to_string(),
        format!(
            "mesh TLS with {}: the server is {}, not {}",
            id("db"),
            id("impostor"),
            id("db")
        )
    );
    assert!(peer.is_none());
    assert_eq!(
        count(&client, Direction::Outbound, &id("db"), "wrong_identity"),
        1
    );
}

#[tokio::test]
async fn untrusted_and_expired_certificates_are_refused() {
    let ca = TestCa::new();
    let other = TestCa::new();
    // A server whose chain ends at another anchor.
    let client = tls(&ca, ca.credentials(&id("web"), false));
    let server = tls(&ca, other.credentials(&id("db"), false));
    let (c, _) = handshake(&client, &server, &id("db")).await;
    assert!(
        matches!(
            c,
            Err(ConnectError::Handshake {
                reason: "untrusted",
                ..
            })
        ),
        "{c:?}"
    );
    assert_eq!(
        count(&client, Direction::Outbound, &id("db"), "untrusted"),
        1
    );
    // A client whose chain ends at another anchor: the server refuses it.
    let client = tls(&ca, other.credentials(&id("web"), false));
    let server = tls(&ca, ca.credentials(&id("db"), false));
    let (_, peer) = handshake(&client, &server, &id("db")).await;
    assert!(peer.is_none());
    assert_eq!(count(&server, Direction::Inbound, "", "untrusted"), 1);
    // An expired server certificate.
    let client = tls(&ca, ca.credentials(&id("web"), false));
    let server = tls(&ca, ca.credentials(&id("db"), true));
    let (c, _) = handshake(&client, &server, &id("db")).await;
    assert!(
        matches!(
            c,
            Err(ConnectError::Handshake {
                reason: "expired",
                ..
            })
        ),
        "{c:?}"
    );
    assert_eq!(count(&client, Direction::Outbound, &id("db"), "expired"), 1);
}

#[tokio::test]
async fn a_client_without_a_certificate_or_tls13_is_refused() {
    let ca = TestCa::new();
    let server = tls(&ca, ca.credentials(&id("db"), false));
    // TLS 1.2 only, offering the mesh ALPN: a downgrade attempt.
    let roots = ca.roots();
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

/// Under paused time: the waits (200 ms, the 5 s handshake timeout) take
/// none.
#[tokio::test(start_paused = true)]
async fn a_connection_waits_for_the_first_certificate() {
    let ca = TestCa::new();
    let server = tls(&ca, ca.credentials(&id("db"), false));
    // A client proxy still starting: its certificate arrives 200 ms later.
    let pending = Credentials::new(id("web"));
    let client = tls(&ca, pending.clone());
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

    // With none coming, it gives up after the handshake timeout, saying
    // that it is this proxy that has no certificate, not the server that
    // failed: the server never saw a byte.
    let silent = tls(&ca, Credentials::new(id("web")));
    let (a, _b) = tokio::io::duplex(64 * 1024);
    let started = tokio::time::Instant::now();
    let error = silent
        .connect(a, ADDR, &id("db").into(), Alpn::Http1)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_millis(5010),
        "{waited:?}"
    );
    assert!(
        matches!(error, ConnectError::NoIdentity { .. }),
        "{error:?}"
    );

    // Once a request for it has failed, the answer comes at once.
    let never = Credentials::new(id("web"));
    never.failed("Certify refused (PermissionDenied): identity mismatch".into());
    let never = tls(&ca, never);
    let (a, mut b) = tokio::io::duplex(64 * 1024);
    let started = tokio::time::Instant::now();
    let error = never
        .connect(a, ADDR, &id("db").into(), Alpn::Http1)
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO, "refused: no wait");
    let ConnectError::NoIdentity { expected, why } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(&**expected, id("db"));
    assert!(why.contains("PermissionDenied"), "{why}");
    assert_eq!(error.reason(), "no_own_certificate");
    assert!(
        error
            .to_string()
            .contains("this proxy has no valid certificate"),
        "{error}"
    );
    assert_eq!(
        count(&never, Direction::Outbound, &id("db"), "no_own_certificate"),
        1
    );
    let mut sent = Vec::new();
    b.read_to_end(&mut sent).await.unwrap();
    assert!(sent.is_empty(), "{} bytes sent", sent.len());
}

#[test]
fn client_configurations_are_kept_within_their_bound() {
    let ca = TestCa::new();
    let tls = tls(&ca, ca.credentials(&id("web"), false));
    let db: Arc<str> = id("db").into();
    let first = tls.client_config(&db, Alpn::Http2);
    assert!(Arc::ptr_eq(&first, &tls.client_config(&db, Alpn::Http2)));
    assert!(!Arc::ptr_eq(&first, &tls.client_config(&db, Alpn::Http1)));
    for n in 0..3 * CLIENT_CONFIGS {
        let peer: Arc<str> = format!("{TD}/ns/shop/sa/peer-{n}").into();
        tls.client_config(&peer, Alpn::Opaque);
        // The identity in use stays cached.
        if n % 1000 == 0 {
            assert!(Arc::ptr_eq(&first, &tls.client_config(&db, Alpn::Http2)));
        }
    }
    let held = tls.clients.lock().unwrap().len();
    assert!(held <= CLIENT_CONFIGS, "{held} configurations held");
}
