//! Outbound routing: one function from what discovery said about a
//! connection's destination (its [`RouteTable`], compiled once per update)
//! and a request's head to a [`Plan`] for that request: a backend's
//! balancer (or the destination's own, or the original address) with the
//! rule's policy, or an answer the proxy makes itself (a redirect, 404 when
//! no route matches, 500 for an invalid backend).
//!
//! Matching walks the matches in the precedence order the control plane
//! sorted them in and takes the first that holds; it allocates nothing.
//! The request's own filters (header modifiers, URL rewrite) are applied
//! here; the response's by [`Routed::respond`].

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, Uri};
use std::net::SocketAddr;
use std::sync::Arc;

use super::mirror::Mirror;
use super::table::{
    Backend, BackendTarget, Filter, GrpcMatch, HeaderMod, HttpMatch, HttpTable, PathMatch,
    PathModifier, Redirect, RouteMetrics, RouteTable, Rule, Unmatched, ValueMatch, Weighted,
};
use crate::balance::random;
use crate::discovery::policy::Policy;
use crate::discovery::{Dest, Resolution, Resolved};
use crate::errors::ProxyError;
use crate::http::Target;

/// What to do with one request (HTTP) or one connection (opaque TCP).
#[derive(Debug)]
pub enum Plan<'a> {
    /// Send it on.
    Forward(Routed<'a>),
    /// Answer it without sending it anywhere.
    Answer(Answer),
}

/// A request or connection to send on, and what its route adds.
#[derive(Clone, Copy, Debug)]
pub struct Routed<'a> {
    pub target: Target<'a>,
    /// The rule's policy, replacing the destination's (None: the
    /// destination's own).
    pub policy: Option<&'a Arc<Policy>>,
    rule: Option<&'a Rule>,
    backend: Option<&'a Backend>,
    /// The route metrics the request counts in (None: no routes).
    pub metrics: Option<&'a RouteMetrics>,
}

/// An answer the proxy makes itself.
#[derive(Debug)]
pub enum Answer {
    Error(ProxyError),
    Redirect(Response<Bytes>),
}

impl<'a> Routed<'a> {
    fn plain(target: Target<'a>) -> Self {
        Self {
            target,
            policy: None,
            rule: None,
            backend: None,
            metrics: None,
        }
    }

    /// The backend's destination, when it has had no answer from discovery
    /// yet (its watch was opened by this update): the request waits for it.
    pub fn pending(&self) -> Option<&'a Dest> {
        match self.target {
            Target::Balanced(d) if d.resolution() == Resolution::Pending => Some(d),
            _ => None,
        }
    }

    /// The rule's name (`<kind>/<namespace>/<name>`), when a route rule
    /// matched.
    pub fn route_name(&self) -> Option<&'a Arc<str>> {
        self.rule.map(|r| &r.name)
    }

    /// The rule's mirror, if it has one.
    pub fn mirror(&self) -> Option<&'a Mirror> {
        self.rule?.mirror.as_ref()
    }

    /// Applies the rule's and backend's response filters to `rsp`.
    pub fn respond<B>(&self, rsp: &mut Response<B>) {
        let filters = self.rule.map(|r| &r.filters[..]).unwrap_or_default();
        let own = self.backend.map(|b| &b.filters[..]).unwrap_or_default();
        for f in filters.iter().chain(own) {
            if let Filter::ResponseHeaders(m) = f {
                apply(m, rsp.headers_mut());
            }
        }
    }
}

/// The plan for a request to `orig` (whose destination has `table`, the
/// one loaded for this request), applying its request filters to `req`.
pub fn route<'a, B>(
    view: &'a Resolved,
    table: Option<&'a RouteTable>,
    orig: SocketAddr,
    req: &mut Request<B>,
) -> Plan<'a> {
    let dest = match view {
        Resolved::Passthrough => return Plan::Forward(Routed::plain(Target::Addr(orig))),
        Resolved::Service(dest) => dest,
    };
    let Some(http) = table.and_then(|t| t.http.as_ref()) else {
        return Plan::Forward(Routed::plain(Target::Balanced(dest)));
    };
    let Some((rule, prefix)) = find(http, req) else {
        return match http.unmatched {
            Unmatched::Service => Plan::Forward(Routed {
                metrics: Some(&http.default),
                ..Routed::plain(Target::Balanced(dest))
            }),
            Unmatched::NotFound => Plan::Answer(Answer::Error(ProxyError::NoRoute(orig))),
        };
    };
    if let Some(redirect) = &rule.redirect {
        let rsp = redirect_response(redirect, req, prefix, orig.port());
        return Plan::Answer(Answer::Redirect(rsp));
    }
    let backend = match choose(&rule.backends, orig) {
        Ok(b) => b,
        Err(e) => return Plan::Answer(Answer::Error(e)),
    };
    for f in rule.filters.iter().chain(&backend.filters) {
        match f {
            Filter::RequestHeaders(m) => apply(m, req.headers_mut()),
            Filter::Rewrite(r) => {
                if let Some(host) = &r.hostname {
                    set_host(req, host);
                }
                if let Some(p) = &r.path {
                    let path = modified_path(p, req.uri().path(), prefix);
                    set_path(req, &path);
                }
            }
            Filter::ResponseHeaders(_) => {}
        }
    }
    let BackendTarget::Service(backend_dest) = &backend.target else {
        unreachable!("choose() returns service backends only");
    };
    Plan::Forward(Routed {
        target: Target::Balanced(backend_dest),
        policy: rule.policy.as_ref(),
        rule: Some(rule),
        backend: Some(backend),
        metrics: Some(&backend.metrics),
    })
}

/// The plan for an opaque TCP connection to `orig`: its destination, the
/// backend its TCP split picks, or its original address.
pub fn route_tcp<'a>(
    view: &'a Resolved,
    table: Option<&'a RouteTable>,
    orig: SocketAddr,
) -> Plan<'a> {
    let dest = match view {
        Resolved::Passthrough => return Plan::Forward(Routed::plain(Target::Addr(orig))),
        Resolved::Service(dest) => dest,
    };
    let Some(tcp) = table.and_then(|t| t.tcp.as_ref()) else {
        return Plan::Forward(Routed::plain(Target::Balanced(dest)));
    };
    match choose(&tcp.backends, orig) {
        Ok(backend) => {
            let BackendTarget::Service(d) = &backend.target else {
                unreachable!("choose() returns service backends only");
            };
            Plan::Forward(Routed {
                backend: Some(backend),
                metrics: Some(&backend.metrics),
                ..Routed::plain(Target::Balanced(d))
            })
        }
        Err(e) => Plan::Answer(Answer::Error(e)),
    }
}

/// Whether a connection to `orig` is worth protocol detection: not when its
/// Service or its port is marked opaque.
pub fn detects_http(view: &Resolved, orig: SocketAddr, opaque_ports: &[u16]) -> bool {
    let opaque_service = matches!(view, Resolved::Service(d)
        if d.resolution() == (Resolution::Service { opaque: true }));
    !(opaque_service || opaque_ports.contains(&orig.port()))
}

/// A backend by weight: an invalid one (or none with weight) is an error.
fn choose(w: &Weighted, orig: SocketAddr) -> Result<&Backend, ProxyError> {
    let total = w.total();
    if total == 0 {
        return Err(ProxyError::InvalidBackend(
            orig,
            "no backend of the route has a weight".into(),
        ));
    }
    let backend = w
        .pick(random(total as usize) as u32)
        .expect("a number below the total falls in some backend");
    match &backend.target {
        BackendTarget::Service(_) => Ok(backend),
        BackendTarget::Invalid(why) => Err(ProxyError::InvalidBackend(orig, why.clone())),
    }
}

/// What matching reads of a request, taken from it once.
struct Head<'r> {
    path: &'r str,
    query: &'r str,
    method: &'r http::Method,
    headers: &'r HeaderMap,
}

/// The first rule whose match holds, and the prefix its path match matched.
fn find<'t, B>(t: &'t HttpTable, req: &Request<B>) -> Option<(&'t Rule, Option<&'t str>)> {
    let head = Head {
        path: req.uri().path(),
        query: req.uri().query().unwrap_or(""),
        method: req.method(),
        headers: req.headers(),
    };
    if !t.grpc.is_empty() && is_grpc(head.headers) {
        let m = t.grpc.iter().find(|m| grpc_matches(m, &head))?;
        return Some((&t.rules[m.rule], None));
    }
    let m = t.matches.iter().find(|m| http_matches(m, &head))?;
    let prefix = match &m.path {
        Some(PathMatch::Prefix(p)) => Some(&**p),
        _ => None,
    };
    Some((&t.rules[m.rule], prefix))
}

fn http_matches(m: &HttpMatch, head: &Head<'_>) -> bool {
    if let Some(p) = &m.path {
        if !path_matches(p, head.path) {
            return false;
        }
    }
    if !m.methods.is_empty() && !m.methods.contains(head.method) {
        return false;
    }
    headers_match(&m.headers, head.headers)
        && m.query
            .iter()
            .all(|(name, v)| query_value(head.query, name).is_some_and(|q| v.matches(q)))
}

fn grpc_matches(m: &GrpcMatch, head: &Head<'_>) -> bool {
    // `/package.Service/Method`
    let Some((service, method)) = head.path.strip_prefix('/').and_then(|p| p.split_once('/'))
    else {
        return false;
    };
    m.service
        .as_ref()
        .is_none_or(|v| v.matches(service.as_bytes()))
        && m.method
            .as_ref()
            .is_none_or(|v| v.matches(method.as_bytes()))
        && headers_match(&m.headers, head.headers)
}

fn headers_match(ms: &[(http::HeaderName, ValueMatch)], headers: &HeaderMap) -> bool {
    ms.iter()
        .all(|(name, v)| headers.get(name).is_some_and(|h| v.matches(h.as_bytes())))
}

fn path_matches(m: &PathMatch, path: &str) -> bool {
    match m {
        PathMatch::Exact(e) => path == &**e,
        PathMatch::Prefix(p) => {
            path.starts_with(&**p)
                && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/' || p.is_empty())
        }
        PathMatch::Regex(re) => re.is_match(path),
        PathMatch::Never => false,
    }
}

impl ValueMatch {
    fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Exact(e) => value == &**e,
            ValueMatch::Regex(re) => std::str::from_utf8(value).is_ok_and(|v| re.is_match(v)),
            ValueMatch::Never => false,
        }
    }
}

/// The first value of query parameter `name` (as written: not
/// percent-decoded).
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q [u8]> {
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (n == name).then_some(v.as_bytes())
    })
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

fn apply(m: &HeaderMod, headers: &mut HeaderMap) {
    for (name, value) in &m.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &m.add {
        headers.append(name.clone(), value.clone());
    }
    for name in &m.remove {
        headers.remove(name);
    }
}

/// The request's path with `m` applied (`prefix`: what its match matched).
fn modified_path(m: &PathModifier, path: &str, prefix: Option<&str>) -> String {
    match m {
        PathModifier::Full(f) => f.to_string(),
        PathModifier::Prefix(new) => {
            let rest = prefix.and_then(|p| path.strip_prefix(p)).unwrap_or(path);
            let new = new.trim_end_matches('/');
            match (new.is_empty(), rest.is_empty()) {
                (true, true) => "/".into(),
                (true, false) => rest.into(),
                (false, _) => format!("{new}{rest}"),
            }
        }
    }
}

/// Sets the request's path (its query kept). A path that does not start
/// with `/` (an empty replacement, or a prefix that cut inside a segment)
/// gets one: an empty request target is not HTTP (the `route` fuzz target
/// found one). A path that cannot be a URI's leaves the request as it was.
fn set_path<B>(req: &mut Request<B>, path: &str) {
    let uri = req.uri();
    let slash = if path.starts_with('/') { "" } else { "/" };
    let pq = match uri.query() {
        Some(q) => format!("{slash}{path}?{q}"),
        None => format!("{slash}{path}"),
    };
    let Ok(pq) = pq.parse() else {
        return;
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

fn set_host<B>(req: &mut Request<B>, host: &HeaderValue) {
    let uri = req.uri();
    if uri.authority().is_some() {
        let mut parts = uri.clone().into_parts();
        parts.authority = host.to_str().ok().and_then(|h| h.parse().ok());
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req.headers_mut().insert(header::HOST, host.clone());
}

/// The request's host and port, from its URI or its `Host` header.
fn request_host<B>(req: &Request<B>) -> (String, Option<u16>) {
    if let Some(a) = req.uri().authority() {
        return (a.host().to_string(), a.port_u16());
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    match host.parse::<http::uri::Authority>() {
        Ok(a) => (a.host().to_string(), a.port_u16()),
        Err(_) => (String::new(), None),
    }
}

/// The redirect `r` makes of `req`. Without a port of its own or a scheme,
/// the port is the request's: its `Host`'s, else the one it was sent to
/// (`orig_port`, the Service port, as the spec's listener port).
fn redirect_response<B>(
    r: &Redirect,
    req: &Request<B>,
    prefix: Option<&str>,
    orig_port: u16,
) -> Response<Bytes> {
    let (req_host, req_port) = request_host(req);
    let req_port = req_port.unwrap_or(orig_port);
    let scheme = r.scheme.as_deref().unwrap_or("http");
    let host = r.hostname.as_deref().unwrap_or(&req_host);
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => None,
        (None, None) => Some(req_port),
    };
    let port = port.filter(|p| !matches!((scheme, p), ("http", 80) | ("https", 443)));
    let path = match &r.path {
        Some(m) => modified_path(m, req.uri().path(), prefix),
        None => req.uri().path().to_string(),
    };
    let mut location = format!("{scheme}://{host}");
    if let Some(p) = port {
        location.push_str(&format!(":{p}"));
    }
    location.push_str(&path);
    if let Some(q) = req.uri().query() {
        location.push('?');
        location.push_str(q);
    }
    let mut rsp = Response::new(Bytes::new());
    *rsp.status_mut() = r.status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        rsp.headers_mut().insert(header::LOCATION, v);
    }
    rsp
}

#[cfg(test)]
mod tests;
