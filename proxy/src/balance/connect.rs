//! Pick an endpoint, connect to it, fail over: the one way both opaque TCP
//! (a connection per client connection) and HTTP (a connection per
//! request, or a reused one) reach a balanced Service.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{Balancer, Endpoint, Picked};
use crate::errors::ProxyError;

/// How many endpoints a request or connection tries when connecting fails
/// (nothing was sent, so trying another is always safe).
pub const CONNECT_ATTEMPTS: usize = 3;

/// Picks an endpoint of `balancer` (the endpoints of the Service at `dst`)
/// and connects to it with `connect` (or takes a connection it owns). When connecting fails because of the
/// endpoint (refused, timed out, TLS with it failed), the failure is
/// recorded against it and another is tried, up to [`CONNECT_ATTEMPTS`].
/// Any other error (this proxy has no certificate yet, say) is returned at
/// once and leaves the endpoint's record alone: it is not the endpoint's fault.
pub async fn connect<T, F, Fut>(
    balancer: &Balancer,
    dst: SocketAddr,
    mut connect: F,
) -> Result<(Picked, T), ProxyError>
where
    F: FnMut(Arc<Endpoint>) -> Fut,
    Fut: Future<Output = Result<T, ProxyError>>,
{
    let mut last = None;
    for _ in 0..CONNECT_ATTEMPTS {
        let picked = balancer.pick().map_err(|why| why.error(dst))?;
        match connect(Arc::clone(&picked.endpoint)).await {
            Ok(conn) => return Ok((picked, conn)),
            Err(e) if e.is_connect() => {
                balancer.failed(picked);
                last = Some(e);
            }
            // `picked` is dropped: the attempt is cancelled, not counted.
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(ProxyError::AllFailing(dst)))
}
