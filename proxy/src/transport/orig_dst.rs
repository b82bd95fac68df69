//! The original destination of a connection that iptables redirected to one
//! of the proxy's listeners (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`).
//!
//! Behind a trait so that in-process tests, which have no iptables, can say
//! where a connection was "really" going.

use socket2::SockRef;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

/// Reads where an accepted connection was originally addressed.
pub trait OrigDstAddr {
    fn orig_dst_addr(&self, socket: &dyn AsFd, local: SocketAddr) -> io::Result<SocketAddr>;
}

/// The kernel's answer, from the conntrack entry of the redirected connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct SoOriginalDst;

impl OrigDstAddr for SoOriginalDst {
    /// `local` is the accepted socket's local address; its family decides
    /// which socket option to ask. A dual-stack listener sees IPv4
    /// connections with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`),
    /// whose original destination only the IPv4 option knows.
    fn orig_dst_addr(&self, socket: &dyn AsFd, local: SocketAddr) -> io::Result<SocketAddr> {
        let fd = socket.as_fd();
        let sock = SockRef::from(&fd);
        let ipv4 = match local {
            SocketAddr::V4(_) => true,
            SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
        };
        let addr = if ipv4 {
            sock.original_dst_v4()?
        } else {
            sock.original_dst_v6()?
        };
        addr.as_socket().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "original destination is not an IP address",
            )
        })
    }
}
