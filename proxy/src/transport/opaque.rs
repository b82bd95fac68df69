//! Opaque TCP: bytes copied both ways until both sides are done.
//!
//! When one side shuts down its write half, the other side's write half is
//! shut down too and the opposite direction keeps flowing (half-close). A
//! connection with no bytes either way for the idle timeout is closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

/// Buffer per direction: large enough for bulk transfers to move in few
/// syscalls, small enough that 10,000 connections stay within memory.
const BUF: usize = 16 * 1024;

/// Copies between `client` and `server` until both are done or the
/// connection has been idle for `idle_timeout`.
pub async fn forward<I, S>(
    mut client: I,
    activity: Arc<AtomicU64>,
    mut server: S,
    idle_timeout: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, BUF, BUF);
    tokio::pin!(copy);
    let mut seen = activity.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            result = &mut copy => {
                match result {
                    Ok((up, down)) => debug!(up, down, "opaque connection closed"),
                    Err(error) => debug!(%error, "opaque connection ended with an error"),
                }
                return;
            }
            _ = tokio::time::sleep(idle_timeout) => {
                let now = activity.load(Ordering::Relaxed);
                if now == seen {
                    debug!(?idle_timeout, "opaque connection idle: closed");
                    return;
                }
                seen = now;
            }
        }
    }
}
