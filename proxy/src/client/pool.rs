//! The connections of one destination ([`Conns`]), and those of plain
//! addresses ([`AddrPool`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{H2Slot, H1};

/// The upstream connections of one destination: its HTTP/2 connection and
/// at most `max_idle` idle HTTP/1 connections. A balancer endpoint owns
/// one; its lock is the endpoint's own, taken only when an HTTP/1 client
/// connection moves to or from this endpoint.
#[derive(Debug, Default)]
pub struct Conns {
    pub h2: H2Slot,
    idle: Mutex<Vec<(Instant, H1)>>,
    /// The destination is gone: nothing more is kept.
    retired: AtomicBool,
}

impl Conns {
    /// An idle HTTP/1 connection idle for less than `timeout`.
    pub fn take_idle(&self, timeout: Duration) -> Option<H1> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while let Some((since, sender)) = idle.pop() {
            if now.duration_since(since) < timeout && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps an HTTP/1 connection done with its requests for the next
    /// client connection, if it is reusable and there is room.
    pub fn release(&self, sender: H1, max_idle: usize, timeout: Duration) {
        if !sender.is_ready() || self.retired.load(Relaxed) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        idle.retain(|(since, s)| now.duration_since(*since) < timeout && !s.is_closed());
        if idle.len() < max_idle {
            idle.push((now, sender));
        }
    }

    /// The destination left discovery: its idle connections are closed
    /// now, its HTTP/2 connection once the requests on it are done, and
    /// connections released later are closed too.
    pub fn retire(&self) {
        self.retired.store(true, Relaxed);
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.h2.clear();
    }

    /// Whether the destination is gone ([`Conns::retire`]).
    pub fn is_retired(&self) -> bool {
        self.retired.load(Relaxed)
    }

    /// Whether nothing idle is kept (expired connections dropped first).
    fn prune(&self, timeout: Duration) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        idle.retain(|(since, s)| now.duration_since(*since) < timeout && !s.is_closed());
        idle.is_empty()
    }
}

/// The most plain addresses whose idle HTTP/1 connections are kept.
pub const MAX_ADDRS: usize = 1024;

/// Idle HTTP/1 connections to plain addresses (an original destination, the
/// app inbound), shared between client connections: looked up once per
/// client connection, never per request. At most [`MAX_ADDRS`] addresses;
/// when full, those with nothing idle and no client connection using them
/// are dropped, and past that a new address is not pooled.
#[derive(Debug, Default)]
pub struct AddrPool {
    map: Mutex<HashMap<SocketAddr, Arc<Conns>>>,
}

impl AddrPool {
    /// The connections of `addr`; `timeout` is how long idle ones are kept.
    pub fn conns(&self, addr: SocketAddr, timeout: Duration) -> Arc<Conns> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(conns) = map.get(&addr) {
            return Arc::clone(conns);
        }
        if map.len() >= MAX_ADDRS {
            map.retain(|_, c| Arc::strong_count(c) > 1 || !c.prune(timeout));
        }
        let conns = Arc::new(Conns::default());
        if map.len() < MAX_ADDRS {
            map.insert(addr, Arc::clone(&conns));
        }
        conns
    }

    /// How many addresses are kept (metrics, tests).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_address_pool_is_bounded() {
        let pool = AddrPool::default();
        let timeout = Duration::from_secs(90);
        let addr = |i: usize| SocketAddr::from(([127, 0, (i >> 8) as u8, i as u8], 80));
        // A client connection keeps using the first address.
        let kept = pool.conns(addr(0), timeout);
        for i in 1..MAX_ADDRS + 100 {
            drop(pool.conns(addr(i), timeout));
            assert!(pool.len() <= MAX_ADDRS, "{} addresses", pool.len());
        }
        // Addresses nobody uses and with nothing idle were dropped; the
        // one in use was not.
        assert!(pool.len() < MAX_ADDRS);
        assert!(Arc::ptr_eq(&kept, &pool.conns(addr(0), timeout)));
    }
}
