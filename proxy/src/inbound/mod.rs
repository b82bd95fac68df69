//! The inbound chain: a connection to a pod port, redirected to the inbound
//! listener, from accept to the application.
//!
//! ```text
//! serve      original destination, loop check
//! detect     mesh TLS (a ClientHello offering a weft ALPN), HTTP/1, HTTP/2, opaque
//! terminate  mesh TLS: the client's identity from its certificate (ALPN
//!            says the protocol inside)
//! authorize  per request (HTTP) or connection (TCP): authorize.rs, with
//!            the port's policy from watch.rs, counted in decisions.rs
//! forward    to the app on 127.0.0.1:<port> (or the pod IP): HTTP per
//!            request over reused connections, TCP byte for byte
//! ```

pub mod authorize;
pub mod decisions;
pub mod watch;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, Span};

use crate::config::InboundTarget;
use crate::detect::{self, Look};
use crate::errors::ProxyError;
use crate::http::{Forward, Target};
use crate::shared::Shared;
use crate::telemetry::{Direction, MeshIds, Protocol};
use crate::tls::Alpn;
use crate::trace::SpanKind;
use crate::transport::connect::Remote;
use crate::transport::io::Counted;
use crate::transport::opaque;
use crate::transport::orig_dst::OrigDstAddr;
use authorize::{authorize, missing, Denied};
use decisions::ConnDecisions;
use watch::PortWatch;

const IN: Direction = Direction::Inbound;

pub async fn serve<O: OrigDstAddr>(shared: Arc<Shared<O>>, tcp: TcpStream) {
    let Some(orig) = shared.original_dst(IN, &tcp) else {
        return;
    };
    let tls = shared.tls.as_ref();
    // The port's policy says whether it is opaque (once it has arrived:
    // a port's first connections are detected without it).
    let port = shared.policies.port(orig.port());
    let look = Look {
        // Mesh TLS reaches the inbound side even on opaque ports.
        mesh: tls.is_some(),
        http: !shared.config.opaque_ports.contains(&orig.port()) && !port.current().is_opaque(),
    };
    let Some((protocol, io)) = detect::accepted(tcp, shared.config.detect_timeout, look).await
    else {
        return;
    };
    shared.metrics.detected(IN, protocol);
    let (Protocol::MeshTls, Some(tls)) = (protocol, tls) else {
        return forward(&shared, orig, &port, protocol, io, None).await;
    };
    let Some((stream, peer)) = tls.accept(io).await else {
        shared.metrics.refused(IN, "tls");
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
    forward(&shared, orig, &port, protocol, stream, Some(ids)).await
}

/// Where the application listens for a connection to `orig`.
fn app_addr(target: InboundTarget, orig: SocketAddr) -> SocketAddr {
    match target {
        InboundTarget::PodIp => orig,
        InboundTarget::Loopback => {
            let ip = match orig.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            SocketAddr::new(ip, orig.port())
        }
    }
}

/// Forwards a detected connection (plain, or mesh TLS terminated) to the
/// app, each request or the connection authorized first.
async fn forward<O, I>(
    shared: &Shared<O>,
    orig: SocketAddr,
    port: &Arc<PortWatch>,
    protocol: Protocol,
    io: I,
    mesh: Option<MeshIds>,
) where
    O: OrigDstAddr,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    shared.policies.arrived(port).await;
    let app = app_addr(shared.config.inbound_target, orig);
    let metrics = shared.metrics.conn(IN, orig, mesh.as_ref());
    let io = Counted::new(io, metrics.read.clone(), metrics.write.clone());
    let (client, server) = match mesh {
        Some(m) => (Some(m.client), Some(m.server)),
        None => (None, None),
    };
    let decisions = shared.policies.metrics.conn(client.as_ref(), orig.port());
    let shutdown = shared.shutdown.clone();
    debug!(?protocol, %app, "forwarding");
    if matches!(protocol, Protocol::Http1 | Protocol::Http2) {
        let fwd = Forward::new(&shared.http, metrics.http(), None);
        let traced = shared.tracer.clone().map(|t| (t, server));
        let conn = Arc::new((fwd, port.clone(), client, decisions, traced));
        let h2 = protocol == Protocol::Http2;
        let handle = move |mut req: http::Request<hyper::body::Incoming>| {
            let conn = conn.clone();
            async move {
                let start = Instant::now();
                let (fwd, port, client, decisions, tracer) = &*conn;
                let mut span = tracer
                    .as_ref()
                    .and_then(|(t, _)| t.start(req.headers_mut(), SpanKind::Server));
                if let Some(span) = &mut span {
                    span.request(&req, orig);
                }
                // The Service the client proxy named (trusted from a mesh
                // peer only), never passed on to the app.
                let service = match span {
                    Some(_) => crate::trace::told_service(req.headers_mut()),
                    None => None,
                }
                .filter(|_| client.is_some());
                let rsp = match check(port, client.as_deref(), Some(&req), decisions) {
                    Err(denied) => {
                        let error = ProxyError::Forbidden(denied.0);
                        if let Some(span) = &mut span {
                            span.error = Some(error.reason());
                        }
                        fwd.refuse(&req, error, start)
                    }
                    Ok(()) => {
                        fwd.request(h2, Target::Addr(app), req, start, &mut span)
                            .await
                    }
                };
                match (span, tracer) {
                    (Some(mut span), Some((tracer, server))) => {
                        // The server's identity is this proxy's, the
                        // client's the one its certificate proved.
                        span.server_id.clone_from(server);
                        tracer.finish(span, None, service.as_ref(), rsp, client.as_ref())
                    }
                    _ => rsp,
                }
            }
        };
        if shared.http.serve(h2, io, handle, shutdown).await == crate::http::Ended::Flooded {
            shared.metrics.refused(IN, "http2_flood");
        }
        return;
    }
    if let Err(denied) = check::<()>(port, client.as_deref(), None, &decisions) {
        debug!(%denied, "connection refused by policy");
        metrics.proxy_error(ProxyError::Forbidden(denied.0).reason());
        return;
    }
    let connector = &shared.http.client.connector;
    // Boxed: connecting is this task's largest state, needed once
    // (`run::small_task`).
    match Box::pin(connector.connect(&Remote::plain(app), Alpn::Opaque)).await {
        Ok(server) => {
            let activity = io.activity();
            opaque::forward(io, activity, server, shared.config.tcp_idle_timeout).await
        }
        Err(error) => {
            // Closing the client connection is all TCP can say.
            debug!(%error, "opaque forward failed");
            metrics.proxy_error(error.reason());
        }
    }
}

/// Authorizes a request or connection with the port's policy in force
/// now; counts the decision and logs a denial (rate-limited).
fn check<B>(
    port: &PortWatch,
    client: Option<&str>,
    req: Option<&http::Request<B>>,
    decisions: &ConnDecisions,
) -> Result<(), Denied> {
    let policy = port.current();
    match authorize(&policy, client, req) {
        Ok(allowed) => {
            decisions.allowed(&allowed);
            Ok(())
        }
        Err(denied) => {
            decisions.denied(denied);
            port.log.denied(decisions.port(), client, denied, || {
                missing(&policy, client, req, denied)
            });
            Err(denied)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_is_on_loopback_or_the_pod_ip() {
        let orig: SocketAddr = "10.244.0.5:8080".parse().unwrap();
        assert_eq!(
            app_addr(InboundTarget::Loopback, orig),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(app_addr(InboundTarget::PodIp, orig), orig);
        let v6: SocketAddr = "[fd00::5]:8080".parse().unwrap();
        assert_eq!(
            app_addr(InboundTarget::Loopback, v6),
            "[::1]:8080".parse().unwrap()
        );
        let mapped: SocketAddr = "[::ffff:10.244.0.5]:8080".parse().unwrap();
        assert_eq!(
            app_addr(InboundTarget::Loopback, mapped),
            "127.0.0.1:8080".parse().unwrap()
        );
    }
}
