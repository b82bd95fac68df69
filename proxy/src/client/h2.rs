//! One HTTP/2 connection to a destination, shared by every request that
//! goes there, and made once: requests that find none wait for the one
//! being made rather than each making their own, and when making it fails
//! they all get that failure (and fail over) instead of each trying again.

use arc_swap::ArcSwapOption;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::H2;
use crate::errors::ProxyError;

#[derive(Debug, Default)]
pub struct H2Slot {
    /// The connection, once made (an atomic load to read).
    current: ArcSwapOption<H2>,
    /// Held while a connection is being made: one at a time.
    connecting: tokio::sync::Mutex<()>,
    /// Attempts completed (made or failed), and a copy of the last failure,
    /// both changed only with `connecting` held.
    attempts: AtomicU64,
    failure: Mutex<Option<ProxyError>>,
}

impl H2Slot {
    /// The open connection, if there is one.
    pub fn ready(&self) -> Option<H2> {
        let current = self.current.load();
        current.as_deref().filter(|s| !s.is_closed()).cloned()
    }

    /// The open connection, or the one `connect` makes (only one
    /// request at a time makes one; the others wait for it).
    pub async fn get<F, Fut>(&self, connect: F) -> Result<H2, ProxyError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<H2, ProxyError>>,
    {
        if let Some(sender) = self.ready() {
            return Ok(sender);
        }
        let seen = self.attempts.load(Relaxed);
        let _one = self.connecting.lock().await;
        if let Some(sender) = self.ready() {
            return Ok(sender);
        }
        if self.attempts.load(Relaxed) != seen {
            // An attempt ended while this request waited, and made nothing.
            let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = failure.as_ref().and_then(ProxyError::copy_connect) {
                return Err(e);
            }
        }
        let made = connect().await;
        self.attempts.fetch_add(1, Relaxed);
        match made {
            Ok(sender) => {
                self.current.store(Some(Arc::new(sender.clone())));
                Ok(sender)
            }
            Err(e) => {
                *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = e.copy_connect();
                Err(e)
            }
        }
    }

    /// Forgets the connection: it closes once the requests on it are done.
    pub fn clear(&self) {
        self.current.store(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn requests_waiting_on_a_failed_connect_share_its_failure() {
        let slot = Arc::new(H2Slot::default());
        let attempts = Arc::new(AtomicUsize::new(0));
        let dst: SocketAddr = "10.244.0.9:8080".parse().expect("an address");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (slot, attempts) = (slot.clone(), attempts.clone());
                tokio::spawn(async move {
                    slot.get(|| async {
                        attempts.fetch_add(1, Relaxed);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Err(ProxyError::ConnectTimeout(dst, Duration::from_secs(1)))
                    })
                    .await
                })
            })
            .collect();
        let started = tokio::time::Instant::now();
        for t in tasks {
            let e = t.await.expect("the task").expect_err("no connection");
            assert!(
                matches!(e, ProxyError::ConnectTimeout(a, _) if a == dst),
                "{e}"
            );
        }
        assert_eq!(attempts.load(Relaxed), 1, "one connect for eight requests");
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(1),
            "not one after the other"
        );
        // A request after the failure tries again.
        let again = slot
            .get(|| async { Err(ProxyError::ConnectRefused(dst)) })
            .await;
        assert!(matches!(again, Err(ProxyError::ConnectRefused(_))));
    }
}
