//! Binding listeners at start-up, and the accept loop that hands each
//! connection to a handler until shutdown.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn, Instrument};

use super::tasks::Tasks;

/// Binds `addr`. `[::]` is dual-stack; where the kernel has no IPv6 it
/// falls back to `0.0.0.0` on the same port. Called before the runtime
/// serves anything, so a port in use fails start-up.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    match bind_exact(addr) {
        Err(e) if addr.ip().is_unspecified() && addr.is_ipv6() => {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            debug!(%addr, error = %e, "IPv6 unavailable; listening on {v4}");
            bind_exact(v4).map_err(|_| e)
        }
        r => r,
    }
}

fn bind_exact(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Accepts until `shutdown`, each connection in its own task tracked by
/// `tasks`, at most as many at once as `limit` has permits; `at_limit` is
/// called for each connection that has to wait for one.
pub async fn accept_loop<H, F>(
    name: &'static str,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    tasks: Tasks,
    shutdown: CancellationToken,
    at_limit: impl Fn(),
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(error) => {
                // Out of fds or memory: wait instead of spinning.
                warn!(listener = name, %error, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        // The permit is taken once a connection is there, so an idle
        // listener holds none. At the limit this connection waits for a
        // free slot, and the ones after it wait in the listen backlog.
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return,
            Err(TryAcquireError::NoPermits) => {
                at_limit();
                debug!(listener = name, %peer, "connection limit reached: waiting for a slot");
                tokio::select! {
                    p = limit.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let span = info_span!(
            "conn",
            id,
            dir = name,
            %peer,
            dst = tracing::field::Empty,
            client_id = tracing::field::Empty
        );
        let task = Holding {
            task: handle(tcp, peer),
            _permit: permit,
        };
        tasks.spawn(task.instrument(span));
    }
}

pin_project_lite::pin_project! {
    /// A connection's task, holding its connection permit until it ends (a
    /// plain future: an `async` block awaiting the task would hold it twice).
    struct Holding<F> {
        #[pin]
        task: F,
        _permit: OwnedSemaphorePermit,
    }
}

impl<F: Future<Output = ()>> Future for Holding<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().task.poll(cx)
    }
}
