//! The gRPC listener's connection limit: at most `--max-connections`
//! client connections are served at once. A connection accepted at the
//! limit waits, unserved, for one to close, and the ones after it wait in
//! the kernel's listen backlog (as the proxy's own limit does): no error
//! storm, and each wait counted in
//! `weft_control_connection_limit_waits_total`.
//!
//! Every proxy holds one connection (its Watch streams multiplexed over
//! it), so the limit is a bound on memory against a client that opens
//! connections without end, not a capacity plan.

use futures_util::Stream;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Registers the wait counter.
pub fn register(registry: &mut Registry) -> Counter {
    let waits = Counter::default();
    registry.sub_registry_with_prefix("weft_control").register(
        "connection_limit_waits",
        "gRPC connections that waited for a free slot at --max-connections",
        waits.clone(),
    );
    waits
}

/// `incoming`'s connections, at most `max` open at once (see the module
/// doc); `waits` counts each time the next one had to wait.
pub fn limit<S>(incoming: S, max: usize, waits: Counter) -> impl Stream<Item = io::Result<Limited>>
where
    S: Stream<Item = io::Result<TcpStream>> + Unpin,
{
    let slots = Arc::new(Semaphore::new(max));
    futures_util::stream::unfold(
        (incoming, slots, waits),
        |(mut incoming, slots, waits)| async move {
            use futures_util::StreamExt;
            let io = match incoming.next().await? {
                Ok(io) => io,
                Err(e) => return Some((Err(e), (incoming, slots, waits))),
            };
            // Accepted at the limit: it waits, unserved, and no other is
            // accepted meanwhile.
            let slot = match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    waits.inc();
                    Arc::clone(&slots)
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed")
                }
            };
            Some((Ok(Limited { io, _slot: slot }), (incoming, slots, waits)))
        },
    )
}

/// An accepted connection holding its slot until it is dropped.
#[derive(Debug)]
pub struct Limited {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
