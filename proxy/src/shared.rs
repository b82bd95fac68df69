//! What every connection handler of both directions needs, built once at
//! start-up and passed to each listener as one `Arc`; and the first stage
//! of both chains: the original destination, with the loop check.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Span};

use crate::config::Config;
use crate::discovery::Resolver;
use crate::http::HttpServer;
use crate::inbound::watch::Policies;
use crate::telemetry::{Direction, Metrics};
use crate::tls::Tls;
use crate::transport::orig_dst::OrigDstAddr;

#[derive(Debug)]
pub struct Shared<O> {
    pub config: Config,
    pub metrics: Metrics,
    pub http: HttpServer,
    pub orig_dst: O,
    /// Discovery, when a control plane is configured.
    pub resolver: Option<Arc<Resolver>>,
    /// Mesh TLS, when the proxy has an identity.
    pub tls: Option<Arc<Tls>>,
    /// The inbound policy of each pod port in use.
    pub policies: Arc<Policies>,
    /// Spans, when a collector is configured.
    pub tracer: Option<Arc<crate::trace::Tracer>>,
    pub shutdown: CancellationToken,
    /// The proxy's own listening ports: a connection "to" one of them that
    /// was not redirected would loop.
    pub own_ports: [u16; 3],
}

impl<O: OrigDstAddr> Shared<O> {
    /// Where `tcp` was going before iptables redirected it; `None` (the
    /// connection is refused and counted) when that cannot be read or is
    /// the proxy itself.
    pub fn original_dst(&self, direction: Direction, tcp: &TcpStream) -> Option<SocketAddr> {
        let local = tcp.local_addr().ok()?;
        let orig = match self.orig_dst.orig_dst_addr(tcp, local) {
            Ok(orig) => orig,
            Err(error) => {
                debug!(%error, "no original destination: refused");
                self.metrics.refused(direction, "no_orig_dst");
                return None;
            }
        };
        if is_loop(&self.own_ports, orig, local) {
            debug!(%orig, "connection to the proxy itself: refused");
            self.metrics.refused(direction, "loop");
            return None;
        }
        Span::current().record("dst", tracing::field::display(orig));
        Some(orig)
    }

    /// This proxy's own identity, when it speaks mesh TLS.
    pub fn own_id(&self) -> Option<Arc<str>> {
        Some(self.tls.as_ref()?.credentials().id.clone())
    }
}

/// A connection whose original destination is the proxy itself was not
/// redirected (someone connected to a proxy port directly): forwarding it
/// would connect the proxy to itself.
fn is_loop(own_ports: &[u16; 3], orig: SocketAddr, local: SocketAddr) -> bool {
    let same_ip = orig.ip() == local.ip()
        || orig.ip().is_loopback()
        || match local.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4) == Some(orig.ip()),
            IpAddr::V4(_) => false,
        };
    same_ip && own_ports.contains(&orig.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_connections_to_the_proxy_itself() {
        let ports = [4140, 4143, 4191];
        let local: SocketAddr = "10.244.0.5:4140".parse().unwrap();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(is_loop(&ports, a("10.244.0.5:4143"), local));
        assert!(is_loop(&ports, a("127.0.0.1:4191"), local));
        assert!(!is_loop(&ports, a("10.244.0.5:8080"), local), "the app");
        assert!(!is_loop(&ports, a("10.244.0.6:4143"), local), "another pod");
        let mapped: SocketAddr = "[::ffff:10.244.0.5]:4140".parse().unwrap();
        assert!(is_loop(&ports, a("10.244.0.5:4140"), mapped));
    }
}
