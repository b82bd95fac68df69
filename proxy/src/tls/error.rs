//! Why mesh TLS failed: [`ConnectError`] for the caller of
//! [`Tls::connect`](super::Tls::connect), and the `result` label of
//! `weft_tls_handshake_total` for both directions.

use rustls::CertificateError;
use std::sync::Arc;

/// Why [`Tls::connect`](super::Tls::connect) gave no connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// This proxy holds no certificate of its own: Certify has not
    /// answered (or refused it) within the connect timeout, or the last
    /// one expired. No TLS byte was sent; the server is not at fault.
    #[error("mesh TLS with {expected}: this proxy has no valid certificate ({why})")]
    NoIdentity { expected: Arc<str>, why: String },
    /// The server's certificate is valid but names another identity than
    /// the one discovery named (or none).
    #[error("mesh TLS with {expected}: {0}", expected = .0.expected)]
    WrongIdentity(WrongIdentity),
    /// The handshake with the server failed otherwise (an untrusted or
    /// expired certificate, a server refusing ours, no TLS 1.3, a timeout,
    /// the connection lost); `reason` is the metric label.
    #[error("mesh TLS with {expected}: {error}")]
    Handshake {
        expected: Arc<str>,
        reason: &'static str,
        #[source]
        error: std::io::Error,
    },
}

impl ConnectError {
    /// The `result` label this failure is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoIdentity { .. } => "no_own_certificate",
            Self::WrongIdentity(_) => "wrong_identity",
            Self::Handshake { reason, .. } => reason,
        }
    }

    /// The failure of a handshake with a server that had to be `expected`.
    pub(super) fn handshake(expected: &Arc<str>, error: std::io::Error) -> Self {
        if let Some(w) = wrong_identity(&error) {
            return Self::WrongIdentity(w.clone());
        }
        Self::Handshake {
            expected: expected.clone(),
            reason: reason(&error),
            error,
        }
    }
}

/// A server that is not who discovery said: its certificate chains to the
/// trust anchors but names another SPIFFE ID, or none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrongIdentity {
    pub expected: Arc<str>,
    /// The server's SPIFFE ID, if its certificate has one.
    pub got: Option<String>,
}

impl std::fmt::Display for WrongIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.got {
            Some(got) => write!(f, "the server is {got}, not {}", self.expected),
            None => write!(f, "the server has no SPIFFE ID; expected {}", self.expected),
        }
    }
}

impl std::error::Error for WrongIdentity {}

fn tls_error(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

fn wrong_identity(error: &std::io::Error) -> Option<&WrongIdentity> {
    match tls_error(error)? {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<WrongIdentity>()
        }
        _ => None,
    }
}

/// Why a handshake failed, as a metric label.
pub(super) fn reason(error: &std::io::Error) -> &'static str {
    if error.kind() == std::io::ErrorKind::TimedOut {
        return "timeout";
    }
    if wrong_identity(error).is_some() {
        return "wrong_identity";
    }
    let Some(tls) = tls_error(error) else {
        return "io";
    };
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::Expired)
        | rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => "expired",
        rustls::Error::InvalidCertificate(_) => "untrusted",
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => "incompatible",
        rustls::Error::AlertReceived(_) => "refused_by_peer",
        _ => "handshake",
    }
}
