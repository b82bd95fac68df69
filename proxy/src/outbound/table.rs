//! A destination's routes (`Profile.routes`), compiled once per discovery
//! update into what [`super::route`] reads per request: regexes built,
//! header names and values parsed, weights summed, each backend Service's
//! destination (its own watch and balancer) looked up, each rule's policy
//! made, and the metrics handles of every rule and backend created. A
//! request then matches and picks with no allocation, lock or map lookup.

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;
use std::sync::Arc;
use tracing::warn;
use weft_proto::discovery::v1 as pb;

use super::mirror::Mirror;
use crate::discovery::policy::{proto_duration, Policy};
use crate::discovery::Dest;
use crate::telemetry::histogram::LatencyHistogram;
use prometheus_client::metrics::counter::Counter;

/// What compiling needs from the resolver: the destination of a backend
/// authority, and the metrics handles of a `(route, backend)` pair.
pub trait Backends {
    fn backend(&self, authority: &str) -> Arc<Dest>;
    fn metrics(&self, route: &str, backend: &str) -> RouteMetrics;
}

/// One destination's routes.
#[derive(Debug)]
pub struct RouteTable {
    pub http: Option<HttpTable>,
    pub tcp: Option<TcpTable>,
}

/// The HTTP rules and the matches that pick them, in precedence order.
#[derive(Debug)]
pub struct HttpTable {
    pub(super) rules: Vec<Rule>,
    pub(super) matches: Vec<HttpMatch>,
    pub(super) grpc: Vec<GrpcMatch>,
    pub(super) unmatched: Unmatched,
    /// `route="default"`: requests no rule handled (sent to the destination
    /// itself, or answered 404).
    pub default: RouteMetrics,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmatched {
    /// 404 (Gateway API routes are attached).
    NotFound,
    /// The destination's own endpoints (a TrafficSplit with matches).
    Service,
}

/// One rule: its filters, backends and policy.
#[derive(Debug)]
pub struct Rule {
    /// `<kind>/<namespace>/<name>`, the `route` label.
    pub name: Arc<str>,
    pub(super) filters: Vec<Filter>,
    pub(super) redirect: Option<Redirect>,
    pub(super) mirror: Option<Mirror>,
    pub(super) backends: Weighted,
    /// Replaces the destination's policy when present.
    pub policy: Option<Arc<Policy>>,
}

/// Backends chosen by weight.
#[derive(Debug)]
pub struct Weighted {
    pub(super) list: Vec<Backend>,
    /// The running sum of the weights, one per backend.
    pub(super) cumulative: Vec<u32>,
}

/// One backend of a rule or TCP split.
#[derive(Debug)]
pub struct Backend {
    pub target: BackendTarget,
    /// Its own filters (header modifiers), after the rule's.
    pub(super) filters: Vec<Filter>,
    pub metrics: RouteMetrics,
}

#[derive(Debug)]
pub enum BackendTarget {
    /// A Service port with its own watch and balancer.
    Service(Arc<Dest>),
    /// Cannot take traffic; the control plane's reason.
    Invalid(Arc<str>),
}

/// TCP connections split by weight.
#[derive(Debug)]
pub struct TcpTable {
    pub(super) backends: Weighted,
}

#[derive(Debug)]
pub(super) struct HttpMatch {
    pub(super) rule: usize,
    pub(super) path: Option<PathMatch>,
    pub(super) methods: Vec<Method>,
    pub(super) headers: Vec<(HeaderName, ValueMatch)>,
    pub(super) query: Vec<(Box<str>, ValueMatch)>,
}

#[derive(Debug)]
pub(super) struct GrpcMatch {
    pub(super) rule: usize,
    pub(super) service: Option<ValueMatch>,
    pub(super) method: Option<ValueMatch>,
    pub(super) headers: Vec<(HeaderName, ValueMatch)>,
}

#[derive(Debug)]
pub(super) enum PathMatch {
    Exact(Box<str>),
    /// Without its trailing slash: `""` matches every path.
    Prefix(Box<str>),
    Regex(Regex),
    /// A variant this proxy does not know, or a regex that does not compile.
    Never,
}

#[derive(Debug)]
pub(super) enum ValueMatch {
    Exact(Box<[u8]>),
    Regex(Regex),
    Never,
}

#[derive(Debug)]
pub(super) enum Filter {
    RequestHeaders(HeaderMod),
    ResponseHeaders(HeaderMod),
    Rewrite(Rewrite),
}

#[derive(Debug, Default)]
pub(super) struct HeaderMod {
    pub(super) set: Vec<(HeaderName, HeaderValue)>,
    pub(super) add: Vec<(HeaderName, HeaderValue)>,
    pub(super) remove: Vec<HeaderName>,
}

#[derive(Debug)]
pub(super) enum PathModifier {
    Full(Box<str>),
    Prefix(Box<str>),
}

#[derive(Debug)]
pub(super) struct Redirect {
    pub(super) scheme: Option<Box<str>>,
    pub(super) hostname: Option<Box<str>>,
    pub(super) path: Option<PathModifier>,
    pub(super) port: Option<u16>,
    pub(super) status: http::StatusCode,
}

#[derive(Debug)]
pub(super) struct Rewrite {
    pub(super) hostname: Option<HeaderValue>,
    pub(super) path: Option<PathModifier>,
}

/// The metrics handles of one `(route, backend)` pair.
#[derive(Clone, Debug, Default)]
pub struct RouteMetrics {
    pub requests: Counter,
    pub responses: [Counter; 5],
    pub latency: LatencyHistogram,
}

impl RouteMetrics {
    /// A request answered with `status`, `micros` after it arrived.
    pub fn done(&self, status: http::StatusCode, micros: u64) {
        self.requests.inc();
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[class].inc();
        self.latency.observe_us(micros);
    }
}

impl RouteTable {
    /// Compiles `routes`; `None` when they route nothing (no HTTP and no
    /// TCP part), so that the destination takes the unrouted path.
    pub fn compile(routes: &pb::Routes, env: &dyn Backends) -> Option<Self> {
        let http = routes.http.as_ref().map(|h| HttpTable::compile(h, env));
        let tcp = routes.tcp.as_ref().map(|t| TcpTable {
            backends: Weighted::compile(&t.backends, &route_name(t.route.as_ref()), env),
        });
        (http.is_some() || tcp.is_some()).then_some(Self { http, tcp })
    }
}

impl HttpTable {
    fn compile(h: &pb::HttpRoutes, env: &dyn Backends) -> Self {
        let rules: Vec<Rule> = h.rules.iter().map(|r| Rule::compile(r, env)).collect();
        let in_range = |i: u32| (i as usize) < rules.len();
        let matches = h
            .matches
            .iter()
            .filter(|m| in_range(m.rule))
            .map(|m| HttpMatch {
                rule: m.rule as usize,
                path: m.path.as_ref().map(path_match),
                methods: m
                    .methods
                    .iter()
                    .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                    .collect(),
                headers: header_matches(&m.headers),
                query: m
                    .query_params
                    .iter()
                    .map(|q| (q.name.as_str().into(), value_match(q.value.as_ref())))
                    .collect(),
            })
            .collect();
        let grpc = h
            .grpc_matches
            .iter()
            .filter(|m| in_range(m.rule))
            .map(|m| GrpcMatch {
                rule: m.rule as usize,
                service: m.service.as_ref().map(|v| value_match(Some(v))),
                method: m.method.as_ref().map(|v| value_match(Some(v))),
                headers: header_matches(&m.headers),
            })
            .collect();
        let unmatched = match h.unmatched() {
            pb::Unmatched::Service => Unmatched::Service,
            _ => Unmatched::NotFound,
        };
        Self {
            rules,
            matches,
            grpc,
            unmatched,
            default: env.metrics("default", ""),
        }
    }
}

impl Rule {
    fn compile(r: &pb::HttpRule, env: &dyn Backends) -> Self {
        let name = route_name(r.route.as_ref());
        let (mut redirect, mut mirror) = (None, None);
        let filters = r
            .filters
            .iter()
            .filter_map(|f| match f.kind.as_ref()? {
                pb::http_filter::Kind::Redirect(r) => {
                    redirect.get_or_insert_with(|| compile_redirect(r));
                    None
                }
                pb::http_filter::Kind::Mirror(m) => {
                    if mirror.is_none() {
                        mirror = compile_mirror(m, &name, env);
                    }
                    None
                }
                other => filter(other),
            })
            .collect();
        let policy = (r.timeouts.is_some() || r.retry.is_some()).then(|| {
            let mut policy = Policy::from_parts(r.timeouts.as_ref(), r.retry.as_ref());
            policy.backoff = r.retry_backoff.as_ref().and_then(proto_duration);
            Arc::new(policy)
        });
        Self {
            backends: Weighted::compile(&r.backends, &name, env),
            name,
            filters,
            redirect,
            mirror,
            policy,
        }
    }
}

impl Weighted {
    fn compile(backends: &[pb::WeightedBackend], route: &Arc<str>, env: &dyn Backends) -> Self {
        let mut sum = 0u32;
        let mut list = Vec::with_capacity(backends.len());
        let mut cumulative = Vec::with_capacity(backends.len());
        for b in backends {
            let (target, label) = match b.backend.as_ref().and_then(|b| b.target.as_ref()) {
                Some(pb::backend::Target::Service(s)) if !s.authority.is_empty() => (
                    BackendTarget::Service(env.backend(&s.authority)),
                    s.authority.clone(),
                ),
                Some(pb::backend::Target::Invalid(why)) => {
                    (BackendTarget::Invalid(why.as_str().into()), String::new())
                }
                _ => (
                    BackendTarget::Invalid("the backend names no Service this proxy knows".into()),
                    String::new(),
                ),
            };
            // Weights are capped so that their sum fits the random choice.
            sum = sum.saturating_add(b.weight.min(1 << 24));
            cumulative.push(sum);
            list.push(Backend {
                target,
                filters: b
                    .filters
                    .iter()
                    .filter_map(|f| filter(f.kind.as_ref()?))
                    .collect(),
                metrics: env.metrics(route, &label),
            });
        }
        Self { list, cumulative }
    }

    /// The backend of the random number `r` below [`Self::total`].
    pub(super) fn pick(&self, r: u32) -> Option<&Backend> {
        let i = self.cumulative.iter().position(|&c| r < c)?;
        self.list.get(i)
    }

    pub(super) fn total(&self) -> u32 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Every backend, for tests and for warming their watches.
    pub fn backends(&self) -> &[Backend] {
        &self.list
    }
}

fn route_name(r: Option<&pb::RouteName>) -> Arc<str> {
    match r {
        Some(r) => format!("{}/{}/{}", r.kind, r.namespace, r.name).into(),
        None => "default".into(),
    }
}

fn regex(re: &str) -> Option<Regex> {
    match Regex::new(re) {
        Ok(re) => Some(re),
        Err(error) => {
            warn!(%error, regex = re, "discovery sent a route regex that does not compile: it matches nothing");
            None
        }
    }
}

fn path_match(p: &pb::PathMatch) -> PathMatch {
    use pb::path_match::Kind;
    match &p.kind {
        Some(Kind::Exact(e)) => PathMatch::Exact(e.as_str().into()),
        Some(Kind::Prefix(p)) => PathMatch::Prefix(p.trim_end_matches('/').into()),
        Some(Kind::Regex(r)) => regex(r).map_or(PathMatch::Never, PathMatch::Regex),
        None => PathMatch::Never,
    }
}

fn value_match(v: Option<&pb::ValueMatch>) -> ValueMatch {
    use pb::value_match::Kind;
    match v.and_then(|v| v.kind.as_ref()) {
        Some(Kind::Exact(e)) => ValueMatch::Exact(e.as_bytes().into()),
        Some(Kind::Regex(r)) => regex(r).map_or(ValueMatch::Never, ValueMatch::Regex),
        None => ValueMatch::Never,
    }
}

fn header_matches(headers: &[pb::NamedValueMatch]) -> Vec<(HeaderName, ValueMatch)> {
    headers
        .iter()
        .map(|h| match HeaderName::from_bytes(h.name.as_bytes()) {
            Ok(name) => (name, value_match(h.value.as_ref())),
            // A name no request can carry: the match can never hold.
            Err(_) => (HeaderName::from_static("x-weft-invalid"), ValueMatch::Never),
        })
        .collect()
}

fn header_mod(m: &pb::HeaderModifier) -> HeaderMod {
    let pairs = |hs: &[pb::Header]| {
        hs.iter()
            .filter_map(|h| {
                let parsed = HeaderName::from_bytes(h.name.as_bytes())
                    .ok()
                    .zip(HeaderValue::from_str(&h.value).ok());
                if parsed.is_none() {
                    warn!(
                        header = h.name,
                        "discovery sent a header filter that is not a valid header: ignored"
                    );
                }
                parsed
            })
            .collect()
    };
    HeaderMod {
        set: pairs(&m.set),
        add: pairs(&m.add),
        remove: m
            .remove
            .iter()
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect(),
    }
}

fn path_modifier(p: Option<&pb::PathModifier>) -> Option<PathModifier> {
    use pb::path_modifier::Kind;
    match p?.kind.as_ref()? {
        Kind::Full(f) => Some(PathModifier::Full(f.as_str().into())),
        Kind::Prefix(p) => Some(PathModifier::Prefix(p.as_str().into())),
    }
}

fn filter(f: &pb::http_filter::Kind) -> Option<Filter> {
    use pb::http_filter::Kind;
    match f {
        Kind::RequestHeaders(m) => Some(Filter::RequestHeaders(header_mod(m))),
        Kind::ResponseHeaders(m) => Some(Filter::ResponseHeaders(header_mod(m))),
        Kind::Rewrite(r) => Some(Filter::Rewrite(Rewrite {
            hostname: (!r.hostname.is_empty())
                .then(|| HeaderValue::from_str(&r.hostname).ok())
                .flatten(),
            path: path_modifier(r.path.as_ref()),
        })),
        // Taken out by the rule.
        Kind::Redirect(_) | Kind::Mirror(_) => None,
    }
}

/// A mirror to a Service backend (one to an invalid backend mirrors
/// nothing).
fn compile_mirror(m: &pb::RequestMirror, route: &Arc<str>, env: &dyn Backends) -> Option<Mirror> {
    let Some(pb::backend::Target::Service(s)) = m.backend.as_ref()?.target.as_ref() else {
        return None;
    };
    (!s.authority.is_empty()).then(|| Mirror {
        target: env.backend(&s.authority),
        numerator: m.numerator.min(m.denominator),
        denominator: m.denominator,
        in_flight: Arc::default(),
        metrics: env.metrics(route, &s.authority),
    })
}

fn compile_redirect(r: &pb::RequestRedirect) -> Redirect {
    let status = match r.status {
        301 | 302 | 303 | 307 | 308 => http::StatusCode::from_u16(r.status as u16),
        _ => Ok(http::StatusCode::FOUND),
    }
    .unwrap_or(http::StatusCode::FOUND);
    Redirect {
        scheme: (!r.scheme.is_empty()).then(|| r.scheme.as_str().into()),
        hostname: (!r.hostname.is_empty()).then(|| r.hostname.as_str().into()),
        path: path_modifier(r.path.as_ref()),
        port: u16::try_from(r.port).ok().filter(|p| *p != 0),
        status,
    }
}
