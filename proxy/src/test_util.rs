//! Seams for in-process tests (feature `test-util`, never in a production
//! build): an original-destination source that the test sets.
//!
//! In a pod, iptables redirects a connection to the proxy and the kernel
//! remembers where it was going (`SO_ORIGINAL_DST`). In a test there is no
//! iptables: the client connects to the proxy's listener itself, after
//! telling [`OrigDst`] where it was "really" going. The proxy then reads the
//! accepted socket's peer address (the client's own address) and asks
//! [`OrigDst`] for it, exactly where it would ask the kernel.
//!
//! ```no_run
//! # async fn f(outbound: std::net::SocketAddr) -> std::io::Result<()> {
//! let orig = weft_proxy::test_util::OrigDst::default();
//! let socket = tokio::net::TcpSocket::new_v4()?;
//! socket.bind("127.0.0.1:0".parse().unwrap())?;
//! orig.set(socket.local_addr()?, "127.96.0.10:8080".parse().unwrap());
//! let _tcp = socket.connect(outbound).await?;
//! # Ok(()) }
//! ```

use socket2::SockRef;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use crate::transport::orig_dst::OrigDstAddr;

/// Where test connections were going, shared by the test and the proxies
/// it runs (clones share the same map).
#[derive(Clone, Debug, Default)]
pub struct OrigDst(Arc<Mutex<Table>>);

#[derive(Debug, Default)]
struct Table {
    /// Client address → destination; each entry serves one connection.
    clients: HashMap<SocketAddr, SocketAddr>,
    /// Listener address → destination of every connection it accepts that
    /// has no entry of its own.
    listeners: HashMap<SocketAddr, SocketAddr>,
}

impl OrigDst {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next connection from `client` (a bound, not yet connected
    /// socket's local address) was going to `dst`. The entry is used once:
    /// the port may later be reused by a connection of someone else.
    pub fn set(&self, client: SocketAddr, dst: SocketAddr) {
        self.table().clients.insert(client, dst);
    }

    /// Every connection accepted on `listener` without an entry of its own
    /// was going to `dst`: what all connections redirected to one pod's
    /// inbound port share, whoever makes them (another proxy, say).
    pub fn set_listener(&self, listener: SocketAddr, dst: SocketAddr) {
        self.table().listeners.insert(listener, dst);
    }
}

impl OrigDstAddr for OrigDst {
    fn orig_dst_addr(&self, socket: &dyn AsFd, local: SocketAddr) -> io::Result<SocketAddr> {
        let fd = socket.as_fd();
        let peer = SockRef::from(&fd).peer_addr()?.as_socket().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "peer is not an IP address")
        })?;
        let mut table = self.table();
        if let Some(dst) = table.clients.remove(&peer) {
            return Ok(dst);
        }
        table.listeners.get(&local).copied().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no original destination set for {peer} (accepted on {local})"),
            )
        })
    }
}
