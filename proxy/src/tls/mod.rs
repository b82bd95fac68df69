//! Mesh TLS between two proxies: TLS 1.3 only, both sides present their
//! certificate, and identities are SPIFFE IDs (URI SANs), never DNS names.
//!
//! - The client (outbound) verifies the server's chain against the trust
//!   anchors and its SPIFFE ID against the one discovery named for the
//!   endpoint; it offers one ALPN protocol saying what follows
//!   ([`Alpn`]), so the server needs no detection.
//! - The server (inbound) recognises mesh TLS by that ALPN in the
//!   ClientHello ([`hello`]); any other TLS is the app's own and passes
//!   through untouched. It requires a client certificate from the trust
//!   anchors and records the client's SPIFFE ID.
//! - Failures (wrong identity, untrusted or expired certificate, a peer
//!   that will not do TLS 1.3) refuse the connection; each is counted in
//!   `weft_tls_handshake_total{direction, peer_id, result}` and logged once.
//!   A proxy without a certificate of its own refuses before any byte;
//!   outbound, [`ConnectError`] tells that apart from a failed handshake.
//!
//! Identities come from [`crate::identity`]; this module uses it, never
//! the reverse.

mod error;
pub mod hello;
mod recent;

pub use error::{ConnectError, WrongIdentity};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, ConfigBuilder, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme, WantsVerifier,
};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

use self::error::reason;
use self::recent::Recent;
use crate::identity::{spiffe_id_of_der, Credentials};
use crate::telemetry::Direction;

/// What follows the handshake, said by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alpn {
    Http1,
    Http2,
    Opaque,
}

impl Alpn {
    pub const ALL: [Alpn; 3] = [Alpn::Http1, Alpn::Http2, Alpn::Opaque];

    pub fn id(self) -> &'static [u8] {
        match self {
            Alpn::Http1 => b"weft.http1",
            Alpn::Http2 => b"weft.h2",
            Alpn::Opaque => b"weft.opaque",
        }
    }

    pub fn from_id(id: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.id() == id)
    }
}

/// Whether a ClientHello's ALPN offers a mesh protocol.
pub fn is_mesh(alpn: hello::Alpn<'_>) -> bool {
    alpn.iter().any(|p| Alpn::from_id(p).is_some())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct HandshakeLabels {
    direction: Direction,
    peer_id: String,
    result: &'static str,
}

/// A mesh TLS connection's peer and protocol.
#[derive(Clone, Debug)]
pub struct Peer {
    pub id: Arc<str>,
    pub alpn: Alpn,
}

/// A client configuration's expected server identity and protocol.
type ClientKey = (Arc<str>, Alpn);

/// How many client configurations are kept, one per expected identity and
/// protocol: enough for every identity a proxy talks to in a large mesh.
/// Each is under 1 KiB (the `ClientConfig` is 344 bytes, plus its
/// verifier, ALPN list and key), so at most about 4 MiB; past the bound,
/// those not used recently are rebuilt when next needed (about 4 µs each
/// in a debug build).
const CLIENT_CONFIGS: usize = 4096;

/// The TLS state of the proxy, built once at start-up.
#[derive(Debug)]
pub struct Tls {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    credentials: Arc<Credentials>,
    server: Arc<ServerConfig>,
    /// TLS 1.3 with the proxy's crypto provider: checked once at start.
    client: ConfigBuilder<ClientConfig, WantsVerifier>,
    /// One client configuration per (expected identity, protocol), at most
    /// [`CLIENT_CONFIGS`]: looked up once per new upstream connection.
    clients: Mutex<Recent<ClientKey, Arc<ClientConfig>>>,
    handshake_timeout: Duration,
    handshakes: Family<HandshakeLabels, Counter>,
}

/// The trust anchors in a PEM file.
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(roots)
}

impl Tls {
    pub fn new(
        provider: Arc<CryptoProvider>,
        roots: RootCertStore,
        credentials: Arc<Credentials>,
        handshake_timeout: Duration,
    ) -> Result<Self, String> {
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS server: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Resolver(credentials.clone())));
        server.alpn_protocols = Alpn::ALL.iter().map(|a| a.id().to_vec()).collect();
        // Mesh connections are long-lived and few: no resumption state to keep.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS client: {e}"))?;
        Ok(Self {
            provider,
            roots,
            credentials,
            server: Arc::new(server),
            client,
            clients: Mutex::new(Recent::new(CLIENT_CONFIGS)),
            handshake_timeout,
            handshakes: Family::default(),
        })
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.sub_registry_with_prefix("weft").register(
            "tls_handshake",
            "Mesh TLS handshakes, by peer identity and result (ok, or why it failed)",
            self.handshakes.clone(),
        );
    }

    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    fn client_config(&self, expected: &Arc<str>, alpn: Alpn) -> Arc<ClientConfig> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.get_or_insert_with(&(expected.clone(), alpn), || {
            let mut config = self
                .client
                .clone()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ExpectIdentity {
                    expected: expected.clone(),
                    roots: self.roots.clone(),
                    provider: self.provider.clone(),
                }))
                .with_client_cert_resolver(Arc::new(Resolver(self.credentials.clone())));
            config.alpn_protocols = vec![alpn.id().to_vec()];
            config.resumption = rustls::client::Resumption::disabled();
            Arc::new(config)
        })
    }

    fn count(&self, direction: Direction, peer_id: &str, result: &'static str) {
        self.handshakes
            .get_or_create(&HandshakeLabels {
                direction,
                peer_id: peer_id.to_owned(),
                result,
            })
            .inc();
    }

    /// Whether the proxy holds a certificate, waiting for the first one at
    /// most the handshake timeout; counted when it gives up.
    async fn own_certificate(&self, direction: Direction, peer_id: &str) -> bool {
        let held = self
            .credentials
            .wait_current(self.handshake_timeout)
            .await
            .is_some();
        if !held {
            self.count(direction, peer_id, "no_own_certificate");
        }
        held
    }

    /// A handshake, failing with `TimedOut` after the handshake timeout.
    async fn bounded<T>(
        &self,
        handshake: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> std::io::Result<T> {
        tokio::time::timeout(self.handshake_timeout, handshake)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    /// Opens mesh TLS over `io` to a server that must be `expected`,
    /// waiting at most the handshake timeout for this proxy's first
    /// certificate.
    pub async fn connect<I>(
        &self,
        io: I,
        addr: SocketAddr,
        expected: &Arc<str>,
        alpn: Alpn,
    ) -> Result<tokio_rustls::client::TlsStream<I>, ConnectError>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        if !self.own_certificate(Direction::Outbound, expected).await {
            return Err(ConnectError::NoIdentity {
                expected: expected.clone(),
                why: self.credentials.not_ready().unwrap_or_default(),
            });
        }
        let connector = tokio_rustls::TlsConnector::from(self.client_config(expected, alpn));
        let handshake = connector.connect(ServerName::IpAddress(addr.ip().into()), io);
        match self.bounded(handshake).await {
            Ok(stream) => {
                self.count(Direction::Outbound, expected, "ok");
                Ok(stream)
            }
            Err(error) => {
                let error = ConnectError::handshake(expected, error);
                let why = error.reason();
                self.count(Direction::Outbound, expected, why);
                info!(server = %addr, expected = %expected, %error, reason = why, "mesh TLS to the server refused");
                Err(error)
            }
        }
    }

    /// Terminates mesh TLS on `io` (its ClientHello offered a mesh ALPN).
    /// Failures are logged in the connection's span, which names the client.
    /// The stream is boxed: rustls' connection state is 1.2 KB, and the
    /// connection's task holds the stream at each layer it passes (an
    /// `async fn` keeps its arguments beside what it moves them into; see
    /// `run::small_task`).
    pub async fn accept<I>(&self, io: I) -> Option<(Box<tokio_rustls::server::TlsStream<I>>, Peer)>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        if !self.own_certificate(Direction::Inbound, "").await {
            info!("mesh TLS from the client refused: this proxy has no valid certificate");
            return None;
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server.clone());
        let stream = match self.bounded(acceptor.accept(io)).await {
            Ok(s) => s,
            Err(error) => {
                let why = reason(&error);
                self.count(Direction::Inbound, "", why);
                info!(%error, reason = why, "mesh TLS from the client refused");
                return None;
            }
        };
        let (_, conn) = stream.get_ref();
        let id = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| spiffe_id_of_der(c));
        let alpn = conn.alpn_protocol().and_then(Alpn::from_id);
        match (id, alpn) {
            (Some(id), Some(alpn)) => {
                self.count(Direction::Inbound, &id, "ok");
                Some((
                    Box::new(stream),
                    Peer {
                        id: id.into(),
                        alpn,
                    },
                ))
            }
            (None, _) => {
                self.count(Direction::Inbound, "", "no_identity");
                info!("mesh TLS from the client refused: its certificate has no SPIFFE ID");
                None
            }
            (Some(id), None) => {
                self.count(Direction::Inbound, &id, "incompatible");
                info!("mesh TLS from the client refused: no mesh protocol agreed");
                None
            }
        }
    }
}

/// Presents the proxy's current certificate (client and server side).
#[derive(Debug)]
struct Resolver(Arc<Credentials>);

impl Resolver {
    fn key(&self) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|leaf| leaf.key.clone())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key()
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies a server: its chain against the trust anchors (as a TLS
/// server certificate), and its SPIFFE ID against the expected one.
#[derive(Debug)]
struct ExpectIdentity {
    expected: Arc<str>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ExpectIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let got = spiffe_id_of_der(end_entity);
        if got.as_deref() == Some(&*self.expected) {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(WrongIdentity {
                expected: self.expected.clone(),
                got,
            }))),
        ))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configuration allows TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests;
