//! Connecting to a destination, with a timeout and errors that say what
//! went wrong in terms the error responses use.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

use crate::errors::ProxyError;

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
