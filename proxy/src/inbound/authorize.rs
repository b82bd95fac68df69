//! Inbound authorization: one function from the pod port's policy, the
//! client's verified mesh identity and the request's head to allow or deny.
//!
//! A [`PortPolicy`] is compiled once from the control plane's
//! `weft.policy.v1.InboundPolicy` (regexes built, ServiceAccounts turned
//! into SPIFFE IDs); [`authorize`] then only compares. Whatever the policy
//! says that this proxy does not understand (an unknown default, a client
//! kind, a path match kind, a regex that does not compile) denies: it
//! fails closed.

use http::{HeaderName, Method};
use regex::Regex;
use std::borrow::Cow;
use std::sync::Arc;
use weft_proto::policy::v1 as pb;

use crate::config::InboundDefault;

/// The compiled size limit of one regex (as the control plane's).
const REGEX_BYTES: usize = 1 << 20;

/// The inbound policy of one pod port, compiled.
#[derive(Clone, Debug)]
pub struct PortPolicy {
    default: DefaultRule,
    /// No policy from the control plane yet, and the configured default is
    /// not `all-unauthenticated`: everything is denied (`no_policy`).
    fail_closed: bool,
    authorizations: Vec<Authorization>,
    /// The control plane says the port is opaque TCP (no detection).
    opaque: bool,
    /// `spiffe://<trust-domain>/`: identities of this cluster.
    cluster_prefix: Arc<str>,
    /// `spiffe://<trust-domain>/ns/<pod-namespace>/`.
    namespace_prefix: Arc<str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DefaultRule {
    AllowAll,
    AllowAuthenticated,
    AllowCluster,
    AllowSameNamespace,
    Deny,
}

#[derive(Clone, Debug)]
struct Authorization {
    name: Arc<str>,
    /// Exact SPIFFE IDs (`None`: an entry this proxy does not understand).
    clients: Vec<Option<Box<str>>>,
    /// Empty: every request and every opaque connection.
    routes: Vec<Route>,
}

#[derive(Clone, Debug)]
struct Route {
    name: Arc<str>,
    path: Option<PathRule>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, ValueRule)>,
    /// A part of it could not be understood: it matches nothing.
    broken: bool,
}

#[derive(Clone, Debug)]
enum PathRule {
    Exact(Box<str>),
    /// Without its trailing `/`; empty for `/`.
    Prefix(Box<str>),
    Regex(Regex),
}

#[derive(Clone, Debug)]
enum ValueRule {
    Exact(Box<[u8]>),
    Regex(Regex),
}

/// Where this proxy is: what identities its policies name are made of.
#[derive(Clone, Debug)]
pub struct Scope {
    pub trust_domain: String,
    pub pod_namespace: String,
}

/// Why a request or connection is refused: the metric's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub &'static str);

impl Denied {
    /// No policy yet, and not allowed to guess.
    pub const NO_POLICY: Denied = Denied("no_policy");
    /// The policy wants a mesh identity; the client has none.
    pub const UNAUTHENTICATED: Denied = Denied("unauthenticated");
    /// No authorization names the client.
    pub const SOURCE: Denied = Denied("source");
    /// Authorizations name the client, none for this request's route (or
    /// for an opaque connection).
    pub const ROUTE: Denied = Denied("route");
    /// The default denies and nothing is authorized.
    pub const DEFAULT: Denied = Denied("default");
}

/// What allowed a request or connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed<'p> {
    /// The authorization's name, or `default`.
    pub by: &'p str,
    /// The HTTP route's name; empty for a whole connection or the default.
    pub route: &'p str,
}

impl PortPolicy {
    /// Compiles the control plane's policy.
    pub fn compile(p: &pb::InboundPolicy, scope: &Scope) -> Self {
        let default = match pb::DefaultPolicy::try_from(p.default_policy) {
            Ok(pb::DefaultPolicy::AllowAll) => DefaultRule::AllowAll,
            Ok(pb::DefaultPolicy::AllowAuthenticated) => DefaultRule::AllowAuthenticated,
            Ok(pb::DefaultPolicy::AllowMeshed) => DefaultRule::AllowCluster,
            Ok(pb::DefaultPolicy::AllowSameNamespace) => DefaultRule::AllowSameNamespace,
            // Unspecified, Deny, and values of a newer control plane.
            _ => DefaultRule::Deny,
        };
        let td = &scope.trust_domain;
        let authorizations = p
            .authorizations
            .iter()
            .map(|a| Authorization {
                name: a.name.as_str().into(),
                clients: a.clients.iter().map(|c| client(c, td)).collect(),
                routes: a.http_routes.iter().map(route).collect(),
            })
            .collect();
        Self {
            default,
            fail_closed: false,
            authorizations,
            opaque: p.protocol() == pb::Protocol::Opaque,
            ..Self::defaulted(InboundDefault::Deny, scope)
        }
    }

    /// The policy of a port the control plane has not spoken about (yet,
    /// or there is no control plane): the configured default. With a
    /// control plane (`pending`), a default other than
    /// `all-unauthenticated` fails closed until the first policy.
    pub fn fallback(default: InboundDefault, scope: &Scope, pending: bool) -> Self {
        let mut p = Self::defaulted(default, scope);
        p.fail_closed = pending && default != InboundDefault::AllUnauthenticated;
        p
    }

    fn defaulted(default: InboundDefault, scope: &Scope) -> Self {
        let td = &scope.trust_domain;
        Self {
            default: match default {
                InboundDefault::AllUnauthenticated => DefaultRule::AllowAll,
                InboundDefault::AllAuthenticated => DefaultRule::AllowAuthenticated,
                InboundDefault::ClusterAuthenticated => DefaultRule::AllowCluster,
                InboundDefault::Deny => DefaultRule::Deny,
            },
            fail_closed: false,
            authorizations: Vec::new(),
            opaque: false,
            cluster_prefix: format!("spiffe://{td}/").into(),
            namespace_prefix: format!("spiffe://{td}/ns/{}/", scope.pod_namespace).into(),
        }
    }

    /// Whether the port is opaque TCP (the pod's or its namespace's
    /// `weft.dev/opaque-ports`): protocol detection is skipped.
    pub fn is_opaque(&self) -> bool {
        self.opaque
    }

    /// Whether this is the fail-closed stand-in for a policy not arrived.
    pub fn is_fail_closed(&self) -> bool {
        self.fail_closed
    }

    /// The names of the authorizations that name `client`, for the log.
    pub fn naming(&self, client: &str) -> Vec<&str> {
        self.authorizations
            .iter()
            .filter(|a| a.names(Some(client)))
            .map(|a| &*a.name)
            .collect()
    }
}

fn client(c: &pb::ClientMatch, trust_domain: &str) -> Option<Box<str>> {
    use pb::client_match::Kind;
    match c.kind.as_ref()? {
        Kind::SpiffeId(id) => Some(id.as_str().into()),
        Kind::ServiceAccount(sa) => {
            Some(format!("spiffe://{trust_domain}/ns/{}/sa/{}", sa.namespace, sa.name).into())
        }
    }
}

fn whole(pattern: &str) -> Option<Regex> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_BYTES)
        .build()
        .ok()
}

fn route(r: &pb::HttpRouteMatch) -> Route {
    use pb::header_match::Value;
    use pb::path_match::Kind;
    let mut broken = false;
    let path = r.path.as_ref().and_then(|p| {
        let rule = match p.kind.as_ref() {
            Some(Kind::Exact(s)) => Some(PathRule::Exact(s.as_str().into())),
            Some(Kind::Prefix(s)) => Some(PathRule::Prefix(s.trim_end_matches('/').into())),
            Some(Kind::Regex(re)) => whole(re).map(PathRule::Regex),
            None => None,
        };
        broken |= rule.is_none();
        rule
    });
    let methods = r
        .methods
        .iter()
        .filter_map(|m| {
            let method = Method::from_bytes(m.as_bytes()).ok();
            broken |= method.is_none();
            method
        })
        .collect();
    let headers = r
        .headers
        .iter()
        .filter_map(|h| {
            let name = HeaderName::from_bytes(h.name.as_bytes()).ok();
            let value = match h.value.as_ref() {
                Some(Value::Exact(v)) => Some(ValueRule::Exact(v.as_bytes().into())),
                Some(Value::Regex(re)) => whole(re).map(ValueRule::Regex),
                None => None,
            };
            let rule = name.zip(value);
            broken |= rule.is_none();
            rule
        })
        .collect();
    Route {
        name: r.name.as_str().into(),
        path,
        methods,
        headers,
        broken,
    }
}

impl Authorization {
    fn names(&self, client: Option<&str>) -> bool {
        let Some(client) = client else { return false };
        self.clients.iter().flatten().any(|c| **c == *client)
    }
}

/// The path as routes are matched against it: with its dot segments
/// (`.` and `..`, percent-encoded or not) removed as RFC 3986 (5.2.4) says,
/// so that `/public/../admin` is matched as the `/admin` an application
/// would serve. Borrowed (no allocation) unless it has one.
fn normalized(path: &str) -> Cow<'_, str> {
    fn dots(seg: &str) -> usize {
        match seg.to_ascii_lowercase().as_str() {
            "." | "%2e" => 1,
            ".." | ".%2e" | "%2e." | "%2e%2e" => 2,
            _ => 0,
        }
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Cow::Borrowed(path);
    };
    if !rest.split('/').any(|seg| dots(seg) > 0) {
        return Cow::Borrowed(path);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match dots(seg) {
            0 => out.push(seg),
            n => {
                if n == 2 {
                    out.pop();
                }
                if last {
                    // `/a/..` is `/`, `/a/b/.` is `/a/b/`.
                    out.push("");
                }
            }
        }
    }
    Cow::Owned(format!("/{}", out.join("/")))
}

impl Route {
    fn matches<B>(&self, req: &http::Request<B>, path: &str) -> bool {
        if self.broken {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.contains(req.method()) {
            return false;
        }
        let path_ok = match &self.path {
            None => true,
            Some(PathRule::Exact(p)) => path == &**p,
            Some(PathRule::Prefix(p)) => path
                .strip_prefix(&**p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            Some(PathRule::Regex(re)) => re.is_match(path),
        };
        path_ok
            && self.headers.iter().all(|(name, rule)| {
                req.headers().get_all(name).iter().any(|v| match rule {
                    ValueRule::Exact(want) => v.as_bytes() == &**want,
                    ValueRule::Regex(re) => v.to_str().is_ok_and(|v| re.is_match(v)),
                })
            })
    }
}

/// Whether `client` (its verified mesh identity, `None` without mesh TLS)
/// may send `req` (`None`: an opaque TCP connection) to a port with
/// `policy`.
pub fn authorize<'p, B>(
    policy: &'p PortPolicy,
    client: Option<&str>,
    req: Option<&http::Request<B>>,
) -> Result<Allowed<'p>, Denied> {
    if policy.fail_closed {
        return Err(Denied::NO_POLICY);
    }
    let mut named = false;
    // Normalized once, when a route is first looked at.
    let mut path: Option<Cow<'_, str>> = None;
    for a in &policy.authorizations {
        if !a.names(client) {
            continue;
        }
        named = true;
        if a.routes.is_empty() {
            return Ok(Allowed {
                by: &a.name,
                route: "",
            });
        }
        if let Some(req) = req {
            let path = path.get_or_insert_with(|| normalized(req.uri().path()));
            if let Some(r) = a.routes.iter().find(|r| r.matches(req, path)) {
                return Ok(Allowed {
                    by: &a.name,
                    route: &r.name,
                });
            }
        }
    }
    let by_default = Allowed {
        by: "default",
        route: "",
    };
    let has = |prefix: &str| client.is_some_and(|c| c.starts_with(prefix));
    let allowed = match policy.default {
        DefaultRule::AllowAll => true,
        DefaultRule::AllowAuthenticated => client.is_some(),
        DefaultRule::AllowCluster => has(&policy.cluster_prefix),
        DefaultRule::AllowSameNamespace => has(&policy.namespace_prefix),
        DefaultRule::Deny => false,
    };
    if allowed {
        return Ok(by_default);
    }
    // Without an identity, what could have allowed it needs one.
    let needs_identity = policy.default != DefaultRule::Deny || !policy.authorizations.is_empty();
    Err(if client.is_none() && needs_identity {
        Denied::UNAUTHENTICATED
    } else if named {
        Denied::ROUTE
    } else if !policy.authorizations.is_empty() || policy.default != DefaultRule::Deny {
        Denied::SOURCE
    } else {
        Denied::DEFAULT
    })
}

/// What rule would have allowed a denied request or connection, for the
/// log line.
pub fn missing<B>(
    policy: &PortPolicy,
    client: Option<&str>,
    req: Option<&http::Request<B>>,
    denied: Denied,
) -> String {
    let what = match req {
        Some(r) => format!("{} {}", r.method(), r.uri().path()),
        None => "an opaque connection".into(),
    };
    match denied {
        Denied::NO_POLICY => {
            "the port's policy from the control plane (none yet: fail closed)".into()
        }
        Denied::UNAUTHENTICATED => "mesh TLS: the client has no verified identity".into(),
        Denied::ROUTE => format!(
            "a route for {what} in {}",
            policy.naming(client.unwrap_or_default()).join(", ")
        ),
        _ => format!(
            "an authorization with {} among its sources, for {what}",
            client.unwrap_or("(none)")
        ),
    }
}

#[cfg(test)]
mod tests;
