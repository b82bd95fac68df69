//! A destination's compiled route table: plain data (strings, numbers,
//! Service ports), so that the discovery API can carry it as protobuf and
//! the proxy can compile it once per update.
//!
//! Every regex in a table is already anchored as its resource means it
//! (`^(?:…)$` for Gateway API and header regexes, `^(?:…)` for an SMI
//! `pathRegex`): a matcher only asks whether it matches.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::policy::RoutePolicy;
use crate::model::store::DestKey;
use crate::model::ObjKey;

/// Which resource a rule came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    HttpRoute,
    GrpcRoute,
    TrafficSplit,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::HttpRoute => "HTTPRoute",
            RouteKind::GrpcRoute => "GRPCRoute",
            RouteKind::TrafficSplit => "TrafficSplit",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteRef {
    pub kind: RouteKind,
    pub key: ObjKey,
}

impl std::fmt::Display for RouteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.key.0, self.key.1)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Element-wise: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`.
    Prefix(String),
    Regex(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueMatch {
    Exact(String),
    Regex(String),
}

/// A header (name lower-cased) or query parameter (name as written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// All of its conditions must hold (an empty one matches every request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpMatch {
    pub path: Option<PathMatch>,
    /// Upper case; empty: any method.
    pub methods: Vec<String>,
    pub headers: Vec<NamedMatch>,
    pub query: Vec<NamedMatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcMatch {
    pub service: Option<ValueMatch>,
    pub method: Option<ValueMatch>,
    pub headers: Vec<NamedMatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdit {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRewrite {
    Full(String),
    /// Replaces the matched `PathPrefix`.
    Prefix(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    RequestHeaders(HeaderEdit),
    ResponseHeaders(HeaderEdit),
    Redirect {
        scheme: Option<String>,
        hostname: Option<String>,
        path: Option<PathRewrite>,
        port: Option<u16>,
        /// 301, 302, 303, 307 or 308 (default 302).
        status: u16,
    },
    Rewrite {
        hostname: Option<String>,
        path: Option<PathRewrite>,
    },
    /// A copy of the request goes to `backend` for `numerator/denominator`
    /// of the requests; its response is dropped.
    Mirror {
        backend: Target,
        numerator: u32,
        denominator: u32,
    },
}

/// Where a backend's share goes: a Service port's own endpoints (never
/// that Service's routes or splits), or nowhere, with the reason (the
/// proxy answers 500 for that share).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Service(DestKey),
    Invalid(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub target: Target,
    /// Relative; 0 gets no traffic.
    pub weight: u32,
    /// Header filters of this backendRef alone.
    pub filters: Vec<Filter>,
}

/// `timeouts` of an HTTPRoute rule; `Duration::ZERO` turns that timeout off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub request: Option<Duration>,
    pub backend_request: Option<Duration>,
}

/// The experimental `retry` of an HTTPRoute rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleRetry {
    pub codes: Vec<u16>,
    pub attempts: Option<u32>,
    pub backoff: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub route: RouteRef,
    /// Its index in the route's `rules` (0 for a split).
    pub index: usize,
    pub filters: Vec<Filter>,
    /// Empty only with a redirect (the rule answers itself).
    pub backends: Vec<Backend>,
    pub timeouts: Option<Timeouts>,
    pub retry: Option<RuleRetry>,
    /// The route object's `weft.dev/retry-*`/`weft.dev/timeout`
    /// annotations; the rule's own `timeouts`/`retry` win over them.
    pub policy: RoutePolicy,
}

/// One match of one rule: a set's entries are sorted by precedence, so the
/// first that matches a request decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<M> {
    pub rule: usize,
    pub matcher: M,
}

/// What a request that no entry matches gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Otherwise {
    /// Gateway API routes are attached: 404.
    NotFound,
    /// A TrafficSplit's matches: the apex Service's own endpoints.
    Apex,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSet {
    pub rules: Vec<Rule>,
    pub http: Vec<Entry<HttpMatch>>,
    /// For gRPC requests (`content-type: application/grpc…`) when not
    /// empty; otherwise gRPC requests use `http` like any other.
    pub grpc: Vec<Entry<GrpcMatch>>,
    pub otherwise: Otherwise,
}

/// Something wrong that only the model can see (two objects in conflict,
/// a reference to a Service that does not exist): reported on `object`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub kind: &'static str,
    pub object: ObjKey,
    pub reason: String,
}

/// One destination's routing. No producer set and no consumer sets: no
/// route applies, requests go to the Service's own endpoints with its
/// annotations' policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTable {
    pub dest: DestKey,
    /// For every client (producer routes, or the winning TrafficSplit).
    pub producer: Option<RouteSet>,
    /// For clients in that namespace only, instead of `producer`.
    pub consumers: BTreeMap<String, RouteSet>,
    /// Opaque TCP connections: split between these by weight, per
    /// connection; `None`: the Service's own endpoints.
    pub tcp: Option<Vec<Backend>>,
    /// The split `tcp` comes from (set exactly when `tcp` is).
    pub tcp_route: Option<RouteRef>,
    pub problems: Vec<Problem>,
}

impl RouteTable {
    /// The set a client in namespace `client_ns` uses, if any.
    pub fn for_client(&self, client_ns: &str) -> Option<&RouteSet> {
        self.consumers.get(client_ns).or(self.producer.as_ref())
    }
}
