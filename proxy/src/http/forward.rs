//! One client connection's forwarding state, and the way a request goes
//! through it: in from hyper, out to its [`Target`], its response (the
//! upstream's, or the proxy's own for an error) back, its metrics recorded
//! under the labels of the connection it actually went over.

use arc_swap::ArcSwapOption;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::time::Instant;
use tokio_util::either::Either as OneOf;
use tracing::debug;

use super::headers::{is_upgrade, strip_hop_by_hop};
use super::server::{HttpServer, Served};
use super::session::H1Session;
use super::{Body, Target};
use crate::client::{Client, Conns};
use crate::discovery::policy::Policy;
use crate::errors::ProxyError;
use crate::telemetry::HttpMetrics;
use crate::trace::{Recording, Spanned};
use crate::transport::tasks::Tasks;

/// One client connection's forwarding state.
#[derive(Debug)]
pub struct Forward {
    /// Requests that went over no mesh TLS (or came in over it, inbound).
    metrics: HttpMetrics,
    /// Outbound with mesh TLS: requests that went over it.
    mesh: Option<MeshMetrics>,
    accrual_5xx: bool,
    /// Its HTTP/1 requests' upstream connection.
    pub(super) session: H1Session,
    /// The connections of the plain address its requests go to (looked up
    /// once: a client connection's plain address does not change).
    addr: OnceLock<(SocketAddr, Arc<Conns>)>,
    pub(super) client: Arc<Client>,
    pub(super) tasks: Tasks,
}

/// This proxy's identity, and the metrics of requests that went over mesh
/// TLS labelled with the server's identity (made once per identity the
/// connection meets: one, for a Service of one Deployment).
#[derive(Debug)]
struct MeshMetrics {
    client: Arc<str>,
    last: ArcSwapOption<(Arc<str>, HttpMetrics)>,
}

/// Where a request went: whether it has been counted yet, and the mesh
/// identity of the server, when it went over mesh TLS.
#[derive(Debug, Default)]
pub(super) struct Used {
    counted: bool,
    mesh: Option<Arc<str>>,
    /// The request's span, when it is sampled.
    pub(super) span: Option<Box<Recording>>,
}

impl Forward {
    /// The state of a new client connection. `metrics` label its requests;
    /// with `mesh_client` (outbound, this proxy's identity), requests that
    /// go over mesh TLS are labelled with the identities of both ends instead.
    pub fn new(server: &HttpServer, metrics: HttpMetrics, mesh_client: Option<Arc<str>>) -> Self {
        Self {
            metrics,
            mesh: mesh_client.map(|client| MeshMetrics {
                client,
                last: ArcSwapOption::empty(),
            }),
            accrual_5xx: server.accrual_5xx,
            session: H1Session::new(server.client.clone()),
            addr: OnceLock::new(),
            client: server.client.clone(),
            tasks: server.tasks.clone(),
        }
    }

    /// A request that arrived at `start` on an HTTP/2 (`h2`) or HTTP/1
    /// connection. Not `async`: a layer that only picks a future would
    /// hold the request once more.
    pub fn request<'a>(
        &'a self,
        h2: bool,
        target: Target<'a>,
        req: Request<Incoming>,
        start: Instant,
        span: &'a mut Option<Box<Recording>>,
    ) -> impl Future<Output = Response<Served>> + Send + 'a {
        self.routed(h2, target, None, req, start, span)
    }

    /// A request, with a route's `policy` in place of the target's own
    /// retry and timeout policy when it has one; `span` (a sampled
    /// request's) gets where it went, its retries and the proxy's error.
    pub fn routed<'a>(
        &'a self,
        h2: bool,
        target: Target<'a>,
        policy: Option<&'a Arc<Policy>>,
        req: Request<Incoming>,
        start: Instant,
        span: &'a mut Option<Box<Recording>>,
    ) -> impl Future<Output = Response<Served>> + Send + 'a {
        if h2 {
            OneOf::Left(self.h2(target, policy, req, start, span))
        } else {
            OneOf::Right(self.h1(target, policy, req, start, span))
        }
    }

    /// An HTTP/1 request that arrived at `start`.
    pub async fn h1(
        &self,
        target: Target<'_>,
        policy: Option<&Arc<Policy>>,
        mut req: Request<Incoming>,
        start: Instant,
        span: &mut Option<Box<Recording>>,
    ) -> Response<Served> {
        let upgrade = is_upgrade(req.headers());
        strip_hop_by_hop(req.headers_mut(), upgrade);
        let mut used = Used {
            span: span.take(),
            ..Used::default()
        };
        let result = if upgrade {
            // Boxed: rare, and its connect would weigh on every request.
            Box::pin(self.upgrade(target, req, &mut used)).await
        } else {
            self.dispatch(target, policy, req, start, false, false, &mut used)
                .await
        };
        let mut rsp = self.respond(result, start, false, &mut used);
        *span = used.span;
        if rsp.status() != StatusCode::SWITCHING_PROTOCOLS {
            strip_hop_by_hop(rsp.headers_mut(), false);
        }
        rsp
    }

    /// An HTTP/2 request (gRPC among them) that arrived at `start`.
    pub async fn h2(
        &self,
        target: Target<'_>,
        policy: Option<&Arc<Policy>>,
        req: Request<Incoming>,
        start: Instant,
        span: &mut Option<Box<Recording>>,
    ) -> Response<Served> {
        let grpc = is_grpc(&req);
        let mut used = Used {
            span: span.take(),
            ..Used::default()
        };
        let result = self
            .dispatch(target, policy, req, start, true, grpc, &mut used)
            .await;
        let rsp = self.respond(result, start, grpc, &mut used);
        *span = used.span;
        rsp
    }

    /// This proxy's mesh identity, when its outbound requests speak mesh
    /// TLS.
    pub fn own_id(&self) -> Option<&Arc<str>> {
        self.mesh.as_ref().map(|m| &m.client)
    }

    /// How this connection's upstream connections are made.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// The proxy's own answer to a request it will not forward.
    pub fn refuse<B>(
        &self,
        req: &Request<B>,
        error: ProxyError,
        start: Instant,
    ) -> Response<Served> {
        self.respond(Err(error), start, is_grpc(req), &mut Used::default())
    }

    /// An answer the proxy made itself without an error (a route's
    /// redirect), counted like any response.
    pub fn answer(&self, rsp: Response<bytes::Bytes>, start: Instant) -> Response<Served> {
        self.metrics.request();
        let micros = start.elapsed().as_micros() as u64;
        self.metrics.done(rsp.status(), micros);
        rsp.map(|b| Spanned::plain(Body::whole(b)))
    }

    /// A request goes out over a connection to `mesh` (a server identity,
    /// or `None` for no mesh TLS): it is counted there, once however many
    /// attempts it takes.
    pub(super) fn sending(&self, used: &mut Used, mesh: Option<Arc<str>>, to: SocketAddr) {
        if !used.counted {
            used.counted = true;
            self.with_metrics(mesh.as_ref(), |m| m.request());
        }
        if let Some(span) = &mut used.span {
            span.endpoint = Some(to);
            span.server_id.clone_from(&mesh);
        }
        used.mesh = mesh;
    }

    /// The connections of plain address `addr`, when it is the one this
    /// client connection's requests went to before (or the first).
    pub(super) fn addr_conns(&self, addr: SocketAddr) -> Option<&Arc<Conns>> {
        let (a, conns) = self.addr.get_or_init(|| {
            (
                addr,
                self.client.addrs.conns(addr, self.client.idle_timeout),
            )
        });
        (*a == addr).then_some(conns)
    }

    /// Whether 5xx responses count against the endpoint.
    pub(super) fn accrual_5xx(&self) -> bool {
        self.accrual_5xx
    }

    fn respond(
        &self,
        result: Result<Response<Incoming>, ProxyError>,
        start: Instant,
        grpc: bool,
        used: &mut Used,
    ) -> Response<Served> {
        let mesh = used.mesh.as_ref();
        if !used.counted {
            // Answered before it went anywhere.
            self.with_metrics(mesh, |m| m.request());
        }
        let rsp = match result {
            Ok(rsp) => rsp.map(Body::Stream),
            Err(error) => {
                debug!(%error, "answering with an error");
                self.with_metrics(mesh, |m| m.proxy_error(error.reason()));
                if let Some(span) = &mut used.span {
                    span.error = Some(error.reason());
                }
                error.to_response(grpc).map(Body::whole)
            }
        };
        let micros = start.elapsed().as_micros() as u64;
        // A gRPC answer's status: in its headers (trailers-only, as the
        // proxy's own errors), else counted when its trailers come.
        let grpc = grpc && rsp.status() == StatusCode::OK;
        let trailers_only = grpc.then(|| rsp.headers().get("grpc-status")).flatten();
        let status = self.with_metrics(mesh, |m| {
            m.done(rsp.status(), micros);
            match trailers_only {
                Some(v) => {
                    m.grpc().record(Some(v));
                    None
                }
                None => grpc.then(|| Arc::clone(m.grpc())),
            }
        });
        rsp.map(|b| Spanned::counted(b, status))
    }

    /// Runs `f` on the metrics of a request that went to `server` (a mesh
    /// identity) or over no mesh TLS. One atomic load when the server is
    /// the one met before; a label lookup when it changes.
    fn with_metrics<R>(&self, server: Option<&Arc<str>>, f: impl FnOnce(&HttpMetrics) -> R) -> R {
        let (Some(mesh), Some(server)) = (&self.mesh, server) else {
            return f(&self.metrics);
        };
        let last = mesh.last.load();
        if let Some(pair) = last.as_ref().filter(|p| p.0 == *server) {
            return f(&pair.1);
        }
        let metrics = self.metrics.meshed(&mesh.client, server);
        let r = f(&metrics);
        mesh.last.store(Some(Arc::new((server.clone(), metrics))));
        r
    }
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}
