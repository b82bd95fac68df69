//! One accepted connection, inbound or outbound, from accept to close:
//! original destination → loop check → protocol detection → HTTP or opaque
//! forwarding to the target.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Span};

use crate::config::{Config, InboundTarget};
use crate::detect::Look;
use crate::discover::{Dest, Resolution, Resolver, Route};
use crate::errors::ProxyError;
use crate::http::HttpServer;
use crate::opaque;
use crate::telemetry::{Direction, MeshIds, Metrics, Protocol};
use crate::tls::{Alpn, Tls};
use crate::transport::connect::Remote;
use crate::transport::io::{Counted, Prefixed};
use crate::transport::orig_dst::OrigDstAddr;

/// Where a connection's requests (HTTP) or bytes (opaque) go.
#[derive(Clone, Debug)]
pub enum Target {
    /// One address: the original destination, or the app inbound.
    Addr(SocketAddr),
    /// The endpoints of a Service, balanced per request (HTTP) or per
    /// connection (opaque).
    Balanced(Arc<Dest>),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(addr) => write!(f, "{addr}"),
            Target::Balanced(dest) => write!(f, "endpoints of {}", dest.addr),
        }
    }
}

/// How many endpoints a request or connection tries when connecting fails
/// (nothing was sent, so trying another is always safe).
pub const CONNECT_ATTEMPTS: usize = 3;

/// What every connection handler needs, built once.
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
    pub shutdown: CancellationToken,
    /// The proxy's own listening ports: a connection "to" one of them that
    /// was not redirected would loop.
    pub own_ports: [u16; 3],
}

impl<O: OrigDstAddr> Shared<O> {
    /// Where a connection to `orig` is forwarded.
    fn target(&self, direction: Direction, orig: SocketAddr) -> SocketAddr {
        match (direction, self.config.inbound_target) {
            (Direction::Outbound, _) | (Direction::Inbound, InboundTarget::PodIp) => orig,
            (Direction::Inbound, InboundTarget::Loopback) => {
                let ip = match orig.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
                        IpAddr::V4(Ipv4Addr::LOCALHOST)
                    }
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                };
                SocketAddr::new(ip, orig.port())
            }
        }
    }

    /// A connection whose original destination is the proxy itself was not
    /// redirected (someone connected to a proxy port directly): forwarding
    /// it would connect the proxy to itself.
    fn is_loop(&self, orig: SocketAddr, local: SocketAddr) -> bool {
        let same_ip = orig.ip() == local.ip()
            || orig.ip().is_loopback()
            || match local.ip() {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4) == Some(orig.ip()),
                IpAddr::V4(_) => false,
            };
        same_ip && self.own_ports.contains(&orig.port())
    }
}

pub async fn serve<O: OrigDstAddr>(shared: Arc<Shared<O>>, direction: Direction, tcp: TcpStream) {
    let Ok(local) = tcp.local_addr() else { return };
    let orig = match shared.orig_dst.orig_dst_addr(&tcp, local) {
        Ok(orig) => orig,
        Err(error) => {
            debug!(%error, "no original destination: refused");
            shared.metrics.refused(direction, "no_orig_dst");
            return;
        }
    };
    if shared.is_loop(orig, local) {
        debug!(%orig, "connection to the proxy itself: refused");
        shared.metrics.refused(direction, "loop");
        return;
    }
    let target = match (&shared.resolver, direction) {
        (Some(resolver), Direction::Outbound) => match resolver.resolve(orig).await {
            Route::Balanced(dest) => Target::Balanced(dest),
            Route::Passthrough => Target::Addr(orig),
        },
        _ => Target::Addr(shared.target(direction, orig)),
    };
    Span::current().record("dst", tracing::field::display(orig));

    let opaque_service = matches!(&target, Target::Balanced(d)
        if d.resolution() == (Resolution::Service { opaque: true }));
    let tls = shared.tls.as_ref();
    let look = Look {
        // Mesh TLS reaches the inbound side even on opaque ports.
        mesh: direction == Direction::Inbound && tls.is_some(),
        http: !(opaque_service || shared.config.opaque_ports.contains(&orig.port())),
    };
    let (protocol, io) = if !look.mesh && !look.http {
        (
            Protocol::OpaquePort,
            Prefixed::new(bytes::Bytes::new(), tcp),
        )
    } else {
        match crate::detect::detect(tcp, shared.config.detect_timeout, look).await {
            Ok(detected) => detected,
            Err(error) => {
                debug!(%error, "client went away during detection");
                return;
            }
        }
    };
    shared.metrics.detected(direction, protocol);

    match (protocol, tls) {
        (Protocol::MeshTls, Some(tls)) => {
            let Some((stream, peer)) = tls.accept(io).await else {
                shared.metrics.refused(direction, "tls");
                return;
            };
            Span::current().record("client_id", tracing::field::display(&peer.id));
            let protocol = match peer.alpn {
                Alpn::Http1 => Protocol::Http1,
                Alpn::Http2 => Protocol::Http2,
                Alpn::Opaque => Protocol::Opaque,
            };
            let ids = MeshIds {
                client: peer.id,
                server: tls.credentials().id.clone(),
            };
            forward(
                &shared,
                direction,
                orig,
                target,
                protocol,
                stream,
                Some(ids),
            )
            .await
        }
        _ => {
            let ids = outbound_mesh(tls, &target);
            forward(&shared, direction, orig, target, protocol, io, ids).await
        }
    }
}

/// The identities of an outbound connection to a Service whose endpoints
/// are all meshed as one identity (the usual case: one Deployment, one
/// ServiceAccount); its requests go over mesh TLS.
fn outbound_mesh(tls: Option<&Arc<Tls>>, target: &Target) -> Option<MeshIds> {
    let (tls, Target::Balanced(dest)) = (tls?, target) else {
        return None;
    };
    let set = dest.balancer.set();
    let mut ids = set.all.iter().map(|e| e.info.identity.as_ref());
    let first = ids.next()??;
    ids.all(|id| id == Some(first)).then(|| MeshIds {
        client: tls.credentials().id.clone(),
        server: first.clone(),
    })
}

/// Forwards a detected connection (plain, or mesh TLS terminated) to its
/// target, with its metrics.
async fn forward<O, I>(
    shared: &Shared<O>,
    direction: Direction,
    orig: SocketAddr,
    target: Target,
    protocol: Protocol,
    io: I,
    mesh: Option<MeshIds>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let metrics = shared.metrics.conn(direction, orig, mesh.as_ref());
    let io = Counted::new(io, metrics.read.clone(), metrics.write.clone());
    let activity = io.activity();
    debug!(?protocol, %target, "forwarding");

    let shutdown = shared.shutdown.clone();
    match protocol {
        Protocol::Http1 => {
            shared
                .http
                .serve_h1(io, target, metrics.http(), shutdown)
                .await
        }
        Protocol::Http2 => {
            shared
                .http
                .serve_h2(io, target, metrics.http(), shutdown)
                .await
        }
        Protocol::Opaque | Protocol::OpaqueTimeout | Protocol::OpaquePort | Protocol::MeshTls => {
            let connector = &shared.http.upstream.connector;
            let idle = shared.config.tcp_idle_timeout;
            match target {
                Target::Addr(addr) => {
                    match connector.connect(&Remote::plain(addr), Alpn::Opaque).await {
                        Ok(server) => opaque::forward(io, activity, server, idle).await,
                        // Closing the client connection is all TCP can say.
                        Err(error) => debug!(%error, "opaque forward failed"),
                    }
                }
                Target::Balanced(dest) => {
                    let balancer = &dest.balancer;
                    let mut last = None;
                    for _ in 0..CONNECT_ATTEMPTS {
                        let picked = match balancer.pick() {
                            Ok(p) => p,
                            Err(why) => {
                                last = Some(ProxyError::unavailable(dest.addr, why));
                                break;
                            }
                        };
                        let started = std::time::Instant::now();
                        match connector.connect(&picked.remote(), Alpn::Opaque).await {
                            Ok(server) => {
                                balancer.established(&picked, started.elapsed());
                                // `picked` counts the connection as load while it lives.
                                opaque::forward(io, activity, server, idle).await;
                                drop(picked);
                                last = None;
                                break;
                            }
                            Err(error) => {
                                balancer.failed(picked);
                                last = Some(error);
                            }
                        }
                    }
                    if let Some(error) = last {
                        debug!(%error, "opaque forward failed");
                    }
                }
            }
        }
    }
    drop(metrics);
}
