//! The outbound chain: a connection the application made, redirected to
//! the outbound listener, from accept to the upstream.
//!
//! ```text
//! serve     original destination, loop check
//! resolve   discovery: a Service's balanced endpoints, or passthrough
//! detect    HTTP/1, HTTP/2, or opaque TCP (not on opaque Services/ports)
//! route     per request (HTTP) or connection (TCP): a Plan (route.rs),
//!           from the destination's routes compiled per update (table.rs)
//! forward   HTTP: per request over reused upstream connections (crate::http)
//!           TCP: pick, connect, fail over, then copy bytes both ways
//! ```

pub mod mirror;
pub mod route;
pub mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::balance::connect;
use crate::detect::{self, Look};
use crate::discovery::Resolved;
use crate::http::{Forward, Target};
use crate::shared::Shared;
use crate::telemetry::{Direction, MeshIds, Protocol};
use crate::tls::Alpn;
use crate::trace::SpanKind;
use crate::transport::connect::Remote;
use crate::transport::io::Counted;
use crate::transport::opaque;
use crate::transport::orig_dst::OrigDstAddr;
use route::{Answer, Plan};
use table::RouteTable;

const OUT: Direction = Direction::Outbound;

pub async fn serve<O: OrigDstAddr>(shared: Arc<Shared<O>>, tcp: TcpStream) {
    let Some(orig) = shared.original_dst(OUT, &tcp) else {
        return;
    };
    let view = match &shared.resolver {
        Some(resolver) => resolver.resolve(orig).await,
        None => Resolved::Passthrough,
    };
    let look = Look {
        mesh: false,
        http: route::detects_http(&view, orig, &shared.config.opaque_ports),
    };
    let Some((protocol, io)) = detect::accepted(tcp, shared.config.detect_timeout, look).await
    else {
        return;
    };
    shared.metrics.detected(OUT, protocol);
    match protocol {
        Protocol::Http1 | Protocol::Http2 => http(&shared, orig, view, protocol, io).await,
        _ => tcp_forward(&shared, orig, &view, io).await,
    }
}

/// Serves the connection's requests, each routed on its own.
async fn http<O, I>(shared: &Shared<O>, orig: SocketAddr, view: Resolved, protocol: Protocol, io: I)
where
    O: OrigDstAddr,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The accepted connection is plaintext; each request is counted under
    // the connection it went over upstream.
    let metrics = shared.metrics.conn(OUT, orig, None);
    let io = Counted::new(io, metrics.read.clone(), metrics.write.clone());
    let fwd = Forward::new(&shared.http, metrics.http(), shared.own_id());
    let conn = Arc::new((fwd, view, shared.tracer.clone()));
    let shutdown = shared.shutdown.clone();
    debug!(?protocol, "forwarding HTTP");
    let h2 = protocol == Protocol::Http2;
    let resolve_timeout = shared.resolver.as_ref().map(|r| r.resolve_timeout());
    let handle = move |mut req: http::Request<hyper::body::Incoming>| {
        let conn = conn.clone();
        async move {
            let start = Instant::now();
            let (fwd, view, tracer) = &*conn;
            let mut span = tracer
                .as_ref()
                .and_then(|t| t.start(req.headers_mut(), SpanKind::Client));
            if let Some(span) = &mut span {
                span.request(&req, orig);
            }
            let service = match (&span, view) {
                (Some(_), Resolved::Service(dest)) => dest.policy.load().service.clone(),
                _ => None,
            };
            if let Some(name) = &service {
                // The inbound proxy names its span after the same Service.
                crate::trace::tell_service(req.headers_mut(), name);
            }
            // One atomic load when the destination has no routes.
            let table = routes_of(view);
            let mut route_name = None;
            let rsp = match route::route(view, table.as_deref(), orig, &mut req) {
                Plan::Forward(routed) => {
                    if let (Some(dest), Some(wait)) = (routed.pending(), resolve_timeout) {
                        // A backend whose watch this update opened.
                        dest.resolved(wait).await;
                    }
                    if let (Some(mirror), Some(wait)) = (routed.mirror(), resolve_timeout) {
                        mirror.copy(&req, fwd.client(), wait);
                    }
                    route_name = routed.route_name();
                    let mut rsp = fwd
                        .routed(h2, routed.target, routed.policy, req, start, &mut span)
                        .await;
                    routed.respond(&mut rsp);
                    if let Some(m) = routed.metrics {
                        m.done(rsp.status(), start.elapsed().as_micros() as u64);
                    }
                    rsp
                }
                Plan::Answer(answer) => {
                    let rsp = match answer {
                        Answer::Error(error) => {
                            if let Some(span) = &mut span {
                                span.error = Some(error.reason());
                            }
                            fwd.refuse(&req, error, start)
                        }
                        Answer::Redirect(rsp) => fwd.answer(rsp, start),
                    };
                    if let Some(t) = table.as_ref().and_then(|t| t.http.as_ref()) {
                        t.default
                            .done(rsp.status(), start.elapsed().as_micros() as u64);
                    }
                    rsp
                }
            };
            match (span, tracer) {
                (Some(span), Some(tracer)) => {
                    tracer.finish(span, route_name, service.as_ref(), rsp, fwd.own_id())
                }
                _ => rsp,
            }
        }
    };
    if shared.http.serve(h2, io, handle, shutdown).await == crate::http::Ended::Flooded {
        shared.metrics.refused(OUT, "http2_flood");
    }
}

/// Opaque TCP: one upstream connection (to an endpoint picked once, with
/// fail-over), then bytes copied both ways.
async fn tcp_forward<O, I>(shared: &Shared<O>, orig: SocketAddr, view: &Resolved, io: I)
where
    O: OrigDstAddr,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connector = &shared.http.client.connector;
    let attempt = |remote: Remote| async move {
        let started = Instant::now();
        // Boxed: connecting is the task's largest state, needed once
        // (`run::small_task`). Not in `Connector::connect` itself: the
        // HTTP clients call it inside a future already boxed.
        let server = Box::pin(connector.connect(&remote, Alpn::Opaque)).await?;
        let mesh = remote.identity.filter(|_| connector.tls.is_some());
        Ok((server, started.elapsed(), mesh))
    };
    let table = routes_of(view);
    let routed = match route::route_tcp(view, table.as_deref(), orig) {
        Plan::Forward(routed) => routed,
        Plan::Answer(answer) => {
            // Closing the client connection is all TCP can say.
            if let Answer::Error(error) = answer {
                debug!(%error, "opaque connection refused by its route");
                shared
                    .metrics
                    .conn(OUT, orig, None)
                    .proxy_error(error.reason());
            }
            return;
        }
    };
    if let Some(m) = routed.metrics {
        // A TCP connection counts in its route once, when its backend is chosen.
        m.requests.inc();
    }
    if let (Some(dest), Some(r)) = (routed.pending(), &shared.resolver) {
        dest.resolved(r.resolve_timeout()).await;
    }
    let connected = match routed.target {
        Target::Addr(addr) => attempt(Remote::plain(addr)).await.map(|c| (None, c)),
        Target::Balanced(dest) => {
            connect::connect(&dest.balancer, dest.addr, |ep| attempt(ep.remote()))
                .await
                .map(|(picked, c)| {
                    dest.balancer.established(&picked, c.1);
                    (Some(picked), c)
                })
        }
    };
    let (picked, (server, _, mesh)) = match connected {
        Ok(c) => c,
        Err(error) => {
            // Closing the client connection is all TCP can say.
            debug!(%error, "opaque forward failed");
            shared
                .metrics
                .conn(OUT, orig, None)
                .proxy_error(error.reason());
            return;
        }
    };
    let ids = mesh.and_then(|server| {
        Some(MeshIds {
            client: shared.own_id()?,
            server,
        })
    });
    let metrics = shared.metrics.conn(OUT, orig, ids.as_ref());
    let io = Counted::new(io, metrics.read.clone(), metrics.write.clone());
    let activity = io.activity();
    debug!(tls = ids.is_some(), "forwarding opaque TCP");
    opaque::forward(io, activity, server, shared.config.tcp_idle_timeout).await;
    // `picked` counted the connection as the endpoint's load while it lived.
    drop(picked);
}

/// The routes of a connection's destination, as they are now (None for a
/// passthrough or a destination without routes).
fn routes_of(view: &Resolved) -> Option<Arc<RouteTable>> {
    match view {
        Resolved::Service(dest) => dest.routes.load_full(),
        Resolved::Passthrough => None,
    }
}
