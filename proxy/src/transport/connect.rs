//! Connecting to a destination, with a timeout and errors that say what
//! went wrong in terms the error responses use; to a meshed endpoint, over
//! mesh TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::either::Either;

use crate::errors::ProxyError;
use crate::tls::{Alpn, ConnectError, Tls};

pub async fn connect(dst: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(timeout, TcpStream::connect(dst)).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(ProxyError::ConnectRefused(dst))
        }
        Ok(Err(e)) => Err(ProxyError::Connect(dst, e)),
        Err(_) => Err(ProxyError::ConnectTimeout(dst, timeout)),
    }
}

/// Where an upstream connection goes: an address and, for an endpoint
/// whose pod is meshed, the identity its proxy must prove.
#[derive(Clone, Debug)]
pub struct Remote {
    pub addr: SocketAddr,
    pub identity: Option<Arc<str>>,
}

impl Remote {
    pub fn plain(addr: SocketAddr) -> Self {
        Self {
            addr,
            identity: None,
        }
    }
}

/// An upstream connection: plain TCP, or mesh TLS over it. The TLS stream
/// is boxed: rustls' connection state is 1.1 KB, and every future that
/// holds the connection (the HTTP client connection's task, the opaque
/// forward) would otherwise carry that space for plain TCP too.
pub type Io = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// Opens upstream connections.
#[derive(Clone, Debug)]
pub struct Connector {
    pub timeout: Duration,
    /// Mesh TLS, when the proxy has an identity.
    pub tls: Option<Arc<Tls>>,
}

impl Connector {
    /// Connects to `remote`; over mesh TLS saying `alpn` when the remote is
    /// meshed and this proxy has an identity.
    pub async fn connect(&self, remote: &Remote, alpn: Alpn) -> Result<Io, ProxyError> {
        let tcp = connect(remote.addr, self.timeout).await?;
        match (&self.tls, &remote.identity) {
            (Some(tls), Some(id)) => tls
                .connect(tcp, remote.addr, id, alpn)
                .await
                .map(|stream| Either::Right(Box::new(stream)))
                .map_err(|e| match e {
                    ConnectError::NoIdentity { .. } => ProxyError::NoIdentity(remote.addr),
                    e => ProxyError::Tls(remote.addr, e.to_string()),
                }),
            _ => Ok(Either::Left(tcp)),
        }
    }
}

/// A control-plane address (`host:port`, or a URI `http://host:port`) as a
/// gRPC endpoint; an error says what is wrong with it.
pub fn grpc_endpoint(addr: &str) -> Result<tonic::transport::Endpoint, String> {
    let uri = weft_proto::grpc_uri(addr)?;
    tonic::transport::Endpoint::from_shared(uri).map_err(|e| format!("{addr:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_plane_addresses() {
        for ok in [
            "weft-control.weft:8086",
            "127.0.0.1:8086",
            "http://[::1]:8086",
        ] {
            assert!(grpc_endpoint(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("not-an-address", "not host:port"),
            ("host:", "not host:port"),
            ("ftp://host:21", "scheme"),
            ("a b:1", "not an address"),
            (":8086", "not"),
        ] {
            let e = grpc_endpoint(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
