//! Checks each route object on its own, as the API server's schema and
//! validation rules would, and turns it into what the model keeps. An
//! object that fails is refused with a reason naming the field (`spec.rules[1]
//! .matches[0].path.value: regex does not compile: …`), and the model keeps
//! its last good version.
//!
//! Checks that need other objects (a Service that does not exist, two
//! splits for one apex) are not here: they are [`super::compute`]'s, and
//! are reported as [`super::Problem`]s.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::collections::BTreeSet;
use std::time::Duration;

use super::gateway as gw;
use super::smi;
use super::table::*;
use crate::model::policy::RoutePolicy;
use crate::model::ObjKey;

/// The Gateway API's limits (its CRDs' `maxItems` and CEL rules).
pub mod limits {
    pub const PARENT_REFS: usize = 32;
    pub const HOSTNAMES: usize = 16;
    pub const RULES: usize = 16;
    pub const MATCHES_PER_RULE: usize = 64;
    pub const MATCHES_PER_ROUTE: usize = 128;
    pub const BACKEND_REFS: usize = 16;
    pub const FILTERS: usize = 16;
    pub const HEADERS: usize = 16;
    pub const QUERY_PARAMS: usize = 16;
    pub const WEIGHT: i64 = 1_000_000;
    pub const PATH_LENGTH: usize = 1024;
    /// weft's own: the compiled size of one regex (the `regex` crate's
    /// measure), so that one object cannot take the control plane's memory.
    pub const REGEX_BYTES: usize = 1 << 20;
}

const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// A checked TrafficSplit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitInfo {
    pub key: ObjKey,
    pub created: Option<Time>,
    /// The apex Service, in the split's namespace.
    pub apex: String,
    pub backends: Vec<(String, u32)>,
    /// `(HTTPRouteGroup or TCPRoute, name)`.
    pub matches: Vec<(MatchKind, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MatchKind {
    HttpRouteGroup,
    TcpRoute,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    pub key: ObjKey,
    pub matches: Vec<HttpMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpRouteInfo {
    pub key: ObjKey,
    /// Empty: every port.
    pub ports: BTreeSet<u16>,
}

/// A Service a Gateway API route attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parent {
    pub service: ObjKey,
    pub port: Option<u16>,
    pub section: Option<String>,
}

/// A backendRef before the model resolves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSpec {
    Service {
        service: ObjKey,
        port: u16,
        weight: u32,
        filters: Vec<Filter>,
    },
    /// A kind weft cannot send to (it gets its share as 500s).
    Invalid { reason: String, weight: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedRule {
    pub http: Vec<HttpMatch>,
    pub grpc: Vec<GrpcMatch>,
    pub filters: Vec<Filter>,
    /// Mirror filters keep their backendRef here, resolved like backends.
    pub mirrors: Vec<(BackendSpec, u32, u32)>,
    pub backends: Vec<BackendSpec>,
    pub timeouts: Option<Timeouts>,
    pub retry: Option<RuleRetry>,
}

/// A checked HTTPRoute or GRPCRoute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    pub kind: RouteKind,
    pub key: ObjKey,
    pub created: Option<Time>,
    pub parents: Vec<Parent>,
    pub rules: Vec<CheckedRule>,
    pub policy: RoutePolicy,
}

fn key_of(meta: &ObjectMeta, kind: &str) -> Result<ObjKey, String> {
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{kind} without metadata.name"))?;
    Ok((
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name,
    ))
}

/// Compiles a regex to check it, bounded in size.
fn regex(field: &str, pattern: &str) -> Result<(), String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(limits::REGEX_BYTES)
        .build()
        .map(|_| ())
        .map_err(|e| {
            let e = e.to_string();
            let first = e.lines().last().unwrap_or(&e).trim().to_owned();
            format!("{field}: regex '{pattern}' does not compile: {first}")
        })
}

fn full(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

fn at_most(field: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        return Err(format!("{field}: {n} items, over the limit of {max}"));
    }
    Ok(())
}

fn port(field: &str, n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{field}: {n} is out of range 1-65535"))
}

/// A TrafficSplit (v1alpha4, or an older version already converted).
pub fn split(ts: &smi::TrafficSplit) -> Result<SplitInfo, String> {
    let key = key_of(&ts.metadata, "TrafficSplit")?;
    let spec = &ts.spec;
    if spec.service.is_empty() {
        return Err("spec.service: the apex Service is not named".into());
    }
    if spec.backends.is_empty() {
        return Err("spec.backends: no backend".into());
    }
    let mut backends = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, b) in spec.backends.iter().enumerate() {
        let field = format!("spec.backends[{i}]");
        if b.service.is_empty() {
            return Err(format!("{field}.service: no Service named"));
        }
        if !seen.insert(&b.service) {
            return Err(format!("{field}.service: {} is listed twice", b.service));
        }
        let weight = u32::try_from(b.weight).map_err(|_| {
            format!(
                "{field}.weight: {} is not a weight (a whole number 0-{})",
                b.weight,
                u32::MAX
            )
        })?;
        backends.push((b.service.clone(), weight));
    }
    let mut matches = Vec::new();
    for (i, m) in spec.matches.iter().enumerate() {
        let field = format!("spec.matches[{i}]");
        let kind = match m.kind.as_str() {
            "HTTPRouteGroup" => MatchKind::HttpRouteGroup,
            "TCPRoute" => MatchKind::TcpRoute,
            other => {
                return Err(format!(
                    "{field}.kind: '{other}' is not HTTPRouteGroup or TCPRoute"
                ))
            }
        };
        if let Some(g) = m.api_group.as_deref().filter(|g| *g != "specs.smi-spec.io") {
            return Err(format!("{field}.apiGroup: '{g}' is not specs.smi-spec.io"));
        }
        if m.name.is_empty() {
            return Err(format!("{field}.name: no {} named", m.kind));
        }
        matches.push((kind, m.name.clone()));
    }
    Ok(SplitInfo {
        key,
        created: ts.metadata.creation_timestamp.clone(),
        apex: spec.service.clone(),
        backends,
        matches,
    })
}

/// An HTTPRouteGroup: each match's `pathRegex` anchored at the start of
/// the path, header values anchored at both ends.
pub fn group(g: &smi::HTTPRouteGroup) -> Result<GroupInfo, String> {
    let key = key_of(&g.metadata, "HTTPRouteGroup")?;
    let mut matches = Vec::new();
    let mut names = BTreeSet::new();
    for (i, m) in g.spec.matches.iter().enumerate() {
        let field = format!("spec.matches[{i}]");
        if m.name.is_empty() {
            return Err(format!("{field}.name: a match needs a name"));
        }
        if !names.insert(&m.name) {
            return Err(format!("{field}.name: '{}' is used twice", m.name));
        }
        let path = match &m.path_regex {
            Some(re) => {
                regex(&format!("{field}.pathRegex"), re)?;
                Some(PathMatch::Regex(format!("^(?:{re})")))
            }
            None => None,
        };
        let mut methods = Vec::new();
        for (j, method) in m.methods.iter().enumerate() {
            if method == "*" {
                methods.clear();
                break;
            }
            let upper = method.to_ascii_uppercase();
            if !HTTP_METHODS.contains(&upper.as_str()) {
                return Err(format!(
                    "{field}.methods[{j}]: '{method}' is not an HTTP method or *"
                ));
            }
            methods.push(upper);
        }
        let mut headers = Vec::new();
        for (f, name, value) in m.headers.iter().flat_map(smi::Headers::pairs) {
            regex(&format!("{field}.{f}"), value)?;
            headers.push(NamedMatch {
                name: name.to_ascii_lowercase(),
                value: ValueMatch::Regex(full(value)),
            });
        }
        matches.push(HttpMatch {
            path,
            methods,
            headers,
            query: Vec::new(),
        });
    }
    Ok(GroupInfo { key, matches })
}

pub fn tcp_route(r: &smi::TCPRoute) -> Result<TcpRouteInfo, String> {
    let key = key_of(&r.metadata, "TCPRoute")?;
    let ports = r
        .spec
        .matches
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| port(&format!("spec.matches.ports[{i}]"), *p))
        .collect::<Result<_, _>>()?;
    Ok(TcpRouteInfo { key, ports })
}

fn parents(ns: &str, refs: &[gw::ParentRef]) -> Result<Vec<Parent>, String> {
    at_most("spec.parentRefs", refs.len(), limits::PARENT_REFS)?;
    let mut out = Vec::new();
    for (i, p) in refs.iter().enumerate() {
        let group = p.group.as_deref().unwrap_or("gateway.networking.k8s.io");
        let kind = p.kind.as_deref().unwrap_or("Gateway");
        // Only a Service parent is a mesh route; others (a Gateway) are
        // some gateway's business.
        if !(matches!(group, "" | "core") && kind == "Service") {
            continue;
        }
        let field = format!("spec.parentRefs[{i}]");
        if p.name.is_empty() {
            return Err(format!("{field}.name: no Service named"));
        }
        out.push(Parent {
            service: (
                p.namespace.clone().unwrap_or_else(|| ns.to_owned()),
                p.name.clone(),
            ),
            port: p
                .port
                .map(|n| port(&format!("{field}.port"), n))
                .transpose()?,
            section: p.section_name.clone().filter(|s| !s.is_empty()),
        });
    }
    Ok(out)
}

fn weight(field: &str, w: Option<i64>) -> Result<u32, String> {
    match w {
        None => Ok(1),
        Some(w) if (0..=limits::WEIGHT).contains(&w) => Ok(w as u32),
        Some(w) => Err(format!(
            "{field}.weight: {w} is out of range 0-{}",
            limits::WEIGHT
        )),
    }
}

fn backend(
    ns: &str,
    field: &str,
    b: &gw::BackendRef,
    filters: Vec<Filter>,
) -> Result<BackendSpec, String> {
    let weight = weight(field, b.weight)?;
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !(matches!(group, "" | "core") && kind == "Service") {
        return Ok(BackendSpec::Invalid {
            reason: format!("kind {kind} of group '{group}' is not a Service"),
            weight,
        });
    }
    if b.name.is_empty() {
        return Err(format!("{field}.name: no Service named"));
    }
    let Some(p) = b.port else {
        return Err(format!("{field}.port: a Service backendRef needs a port"));
    };
    Ok(BackendSpec::Service {
        service: (
            b.namespace.clone().unwrap_or_else(|| ns.to_owned()),
            b.name.clone(),
        ),
        port: port(&format!("{field}.port"), p)?,
        weight,
        filters,
    })
}

fn value_match(field: &str, m: &gw::ValueMatch, lower: bool) -> Result<NamedMatch, String> {
    if m.name.is_empty() {
        return Err(format!("{field}.name: empty"));
    }
    let value = match m.type_.as_deref().unwrap_or("Exact") {
        "Exact" => ValueMatch::Exact(m.value.clone()),
        "RegularExpression" => {
            regex(&format!("{field}.value"), &m.value)?;
            ValueMatch::Regex(full(&m.value))
        }
        other => {
            return Err(format!(
                "{field}.type: '{other}' is not Exact or RegularExpression"
            ))
        }
    };
    Ok(NamedMatch {
        name: if lower {
            m.name.to_ascii_lowercase()
        } else {
            m.name.clone()
        },
        value,
    })
}

fn named(
    field: &str,
    list: &[gw::ValueMatch],
    max: usize,
    lower: bool,
) -> Result<Vec<NamedMatch>, String> {
    at_most(field, list.len(), max)?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let n = value_match(&f, m, lower)?;
        // The spec: the first of two entries with one name counts.
        if seen.insert(n.name.clone()) {
            out.push(n);
        }
    }
    Ok(out)
}

fn http_match(field: &str, m: &gw::HttpMatch) -> Result<HttpMatch, String> {
    let path = match &m.path {
        None => Some(PathMatch::Prefix("/".into())),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".into());
            let f = format!("{field}.path.value");
            if value.len() > limits::PATH_LENGTH {
                return Err(format!(
                    "{f}: longer than {} characters",
                    limits::PATH_LENGTH
                ));
            }
            match p.type_.as_deref().unwrap_or("PathPrefix") {
                t @ ("Exact" | "PathPrefix") => {
                    if !value.starts_with('/') {
                        return Err(format!("{f}: '{value}' is not an absolute path"));
                    }
                    for bad in ["//", "/./", "/../", "%2f", "%2F", "#"] {
                        if value.contains(bad) {
                            return Err(format!("{f}: '{value}' contains '{bad}'"));
                        }
                    }
                    if t == "Exact" {
                        Some(PathMatch::Exact(value))
                    } else {
                        Some(PathMatch::Prefix(value))
                    }
                }
                "RegularExpression" => {
                    regex(&f, &value)?;
                    Some(PathMatch::Regex(full(&value)))
                }
                other => {
                    return Err(format!(
                        "{field}.path.type: '{other}' is not Exact, PathPrefix or RegularExpression"
                    ))
                }
            }
        }
    };
    let methods = match &m.method {
        None => Vec::new(),
        Some(method) if HTTP_METHODS.contains(&method.as_str()) => vec![method.clone()],
        Some(method) => return Err(format!("{field}.method: '{method}' is not an HTTP method")),
    };
    Ok(HttpMatch {
        path,
        methods,
        headers: named(
            &format!("{field}.headers"),
            &m.headers,
            limits::HEADERS,
            true,
        )?,
        query: named(
            &format!("{field}.queryParams"),
            &m.query_params,
            limits::QUERY_PARAMS,
            false,
        )?,
    })
}

fn grpc_match(field: &str, m: &gw::GrpcMatch) -> Result<GrpcMatch, String> {
    let (service, method) = match &m.method {
        None => (None, None),
        Some(mm) => {
            let f = format!("{field}.method");
            if mm.service.is_none() && mm.method.is_none() {
                return Err(format!(
                    "{f}: one or both of service and method must be given"
                ));
            }
            let exact = match mm.type_.as_deref().unwrap_or("Exact") {
                "Exact" => true,
                "RegularExpression" => false,
                other => {
                    return Err(format!(
                        "{f}.type: '{other}' is not Exact or RegularExpression"
                    ))
                }
            };
            let one = |name: &str, v: &Option<String>| -> Result<Option<ValueMatch>, String> {
                let Some(v) = v else { return Ok(None) };
                if exact {
                    let ok = !v.is_empty()
                        && v.split('.').all(|part| {
                            !part.is_empty()
                                && !part.starts_with(|c: char| c.is_ascii_digit())
                                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        })
                        && (name == "service" || !v.contains('.'));
                    if !ok {
                        return Err(format!("{f}.{name}: '{v}' is not a gRPC {name} name"));
                    }
                    Ok(Some(ValueMatch::Exact(v.clone())))
                } else {
                    regex(&format!("{f}.{name}"), v)?;
                    Ok(Some(ValueMatch::Regex(full(v))))
                }
            };
            (one("service", &mm.service)?, one("method", &mm.method)?)
        }
    };
    Ok(GrpcMatch {
        service,
        method,
        headers: named(
            &format!("{field}.headers"),
            &m.headers,
            limits::HEADERS,
            true,
        )?,
    })
}

fn header_edit(field: &str, m: &Option<gw::HeaderModifier>) -> Result<HeaderEdit, String> {
    let Some(m) = m else {
        return Err(format!("{field}: the filter's settings are missing"));
    };
    for (what, n) in [
        ("set", m.set.len()),
        ("add", m.add.len()),
        ("remove", m.remove.len()),
    ] {
        at_most(&format!("{field}.{what}"), n, limits::HEADERS)?;
    }
    let pairs = |list: &[gw::Header]| {
        list.iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect()
    };
    Ok(HeaderEdit {
        set: pairs(&m.set),
        add: pairs(&m.add),
        remove: m.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    })
}

fn path_modifier(field: &str, p: &Option<gw::PathModifier>) -> Result<Option<PathRewrite>, String> {
    let Some(p) = p else { return Ok(None) };
    match (p.type_.as_str(), &p.replace_full_path, &p.replace_prefix_match) {
        ("ReplaceFullPath", Some(v), None) => Ok(Some(PathRewrite::Full(v.clone()))),
        ("ReplacePrefixMatch", None, Some(v)) => Ok(Some(PathRewrite::Prefix(v.clone()))),
        (t, _, _) => Err(format!(
            "{field}.path: type '{t}' needs its one value (replaceFullPath for ReplaceFullPath, replacePrefixMatch for ReplacePrefixMatch)"
        )),
    }
}

/// The filters of a rule or backendRef. `mirrors` collects the
/// RequestMirror filters' backends (only rules may have them).
fn filters(
    ns: &str,
    field: &str,
    list: &[gw::HttpFilter],
    grpc: bool,
    mut mirrors: Option<&mut Vec<(BackendSpec, u32, u32)>>,
) -> Result<Vec<Filter>, String> {
    at_most(field, list.len(), limits::FILTERS)?;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, f) in list.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let t = f.type_.as_str();
        let allowed = match t {
            "RequestHeaderModifier" | "ResponseHeaderModifier" => true,
            "RequestMirror" => mirrors.is_some(),
            "RequestRedirect" | "URLRewrite" => !grpc && mirrors.is_some(),
            _ => false,
        };
        if !allowed {
            return Err(format!(
                "{field}.type: '{t}' is not a filter weft supports here"
            ));
        }
        if t != "RequestMirror" && !seen.insert(t) {
            return Err(format!("{field}.type: {t} is repeated"));
        }
        out.push(match t {
            "RequestHeaderModifier" => Filter::RequestHeaders(header_edit(
                &format!("{field}.requestHeaderModifier"),
                &f.request_header_modifier,
            )?),
            "ResponseHeaderModifier" => Filter::ResponseHeaders(header_edit(
                &format!("{field}.responseHeaderModifier"),
                &f.response_header_modifier,
            )?),
            "RequestRedirect" => {
                let f2 = format!("{field}.requestRedirect");
                let r = f
                    .request_redirect
                    .as_ref()
                    .ok_or_else(|| format!("{f2}: missing"))?;
                let status = match r.status_code.unwrap_or(302) {
                    s @ (301 | 302 | 303 | 307 | 308) => s as u16,
                    s => {
                        return Err(format!(
                            "{f2}.statusCode: {s} is not 301, 302, 303, 307 or 308"
                        ))
                    }
                };
                if let Some(s) = r
                    .scheme
                    .as_deref()
                    .filter(|s| !matches!(*s, "http" | "https"))
                {
                    return Err(format!("{f2}.scheme: '{s}' is not http or https"));
                }
                Filter::Redirect {
                    scheme: r.scheme.clone(),
                    hostname: r.hostname.clone(),
                    path: path_modifier(&f2, &r.path)?,
                    port: r.port.map(|p| port(&format!("{f2}.port"), p)).transpose()?,
                    status,
                }
            }
            "URLRewrite" => {
                let f2 = format!("{field}.urlRewrite");
                let r = f
                    .url_rewrite
                    .as_ref()
                    .ok_or_else(|| format!("{f2}: missing"))?;
                Filter::Rewrite {
                    hostname: r.hostname.clone(),
                    path: path_modifier(&f2, &r.path)?,
                }
            }
            _ => {
                let f2 = format!("{field}.requestMirror");
                let m = f
                    .request_mirror
                    .as_ref()
                    .ok_or_else(|| format!("{f2}: missing"))?;
                let (num, den) = match (&m.percent, &m.fraction) {
                    (Some(_), Some(_)) => {
                        return Err(format!("{f2}: percent and fraction are exclusive"))
                    }
                    (Some(p), None) if (0..=100).contains(p) => (*p as u32, 100),
                    (Some(p), None) => {
                        return Err(format!("{f2}.percent: {p} is out of range 0-100"))
                    }
                    (None, Some(fr)) => {
                        let den = fr.denominator.unwrap_or(100);
                        if den < 1
                            || fr.numerator < 0
                            || fr.numerator > den
                            || den > i64::from(u32::MAX)
                        {
                            return Err(format!(
                                "{f2}.fraction: {}/{den} is not a fraction from 0 to 1",
                                fr.numerator
                            ));
                        }
                        (fr.numerator as u32, den as u32)
                    }
                    (None, None) => (1, 1),
                };
                let target = backend(ns, &format!("{f2}.backendRef"), &m.backend_ref, Vec::new())?;
                let target = match target {
                    BackendSpec::Service {
                        service,
                        port,
                        filters,
                        ..
                    } => BackendSpec::Service {
                        service,
                        port,
                        weight: 1,
                        filters,
                    },
                    invalid => invalid,
                };
                if let Some(list) = mirrors.as_deref_mut() {
                    list.push((target, num, den));
                }
                continue;
            }
        });
    }
    Ok(out)
}

fn duration(field: &str, v: &str) -> Result<Duration, String> {
    gateway_duration(v).ok_or_else(|| {
        format!("{field}: '{v}' is not a Gateway API duration (1h, 10s, 500ms, 1m30s)")
    })
}

/// GEP-2257: one to four `<1-5 digits><h|m|s|ms>` parts, e.g. `1h30m`,
/// `500ms`, `0s`.
pub fn gateway_duration(v: &str) -> Option<Duration> {
    let mut rest = v;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=5).contains(&digits) {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += unit * u32::try_from(n).ok()?;
        parts += 1;
    }
    (1..=4).contains(&parts).then_some(total)
}

fn rule_limits(rules: usize, matches: impl Iterator<Item = usize>) -> Result<(), String> {
    at_most("spec.rules", rules, limits::RULES)?;
    let mut total = 0;
    for (i, n) in matches.enumerate() {
        at_most(
            &format!("spec.rules[{i}].matches"),
            n,
            limits::MATCHES_PER_RULE,
        )?;
        total += n;
    }
    if total > limits::MATCHES_PER_ROUTE {
        return Err(format!(
            "spec.rules: {total} matches in all, over the limit of {}",
            limits::MATCHES_PER_ROUTE
        ));
    }
    Ok(())
}

fn backends(
    ns: &str,
    field: &str,
    refs: &[gw::BackendRef],
    grpc: bool,
) -> Result<Vec<BackendSpec>, String> {
    at_most(field, refs.len(), limits::BACKEND_REFS)?;
    refs.iter()
        .enumerate()
        .map(|(j, b)| {
            let f = format!("{field}[{j}]");
            let fl = filters(ns, &format!("{f}.filters"), &b.filters, grpc, None)?;
            backend(ns, &f, b, fl)
        })
        .collect()
}

pub fn http_route(r: &gw::HTTPRoute) -> Result<RouteInfo, String> {
    let key = key_of(&r.metadata, "HTTPRoute")?;
    let ns = key.0.clone();
    at_most("spec.hostnames", r.spec.hostnames.len(), limits::HOSTNAMES)?;
    let rules = &r.spec.rules;
    rule_limits(
        rules.len(),
        rules.iter().map(|r| r.matches.as_ref().map_or(0, Vec::len)),
    )?;
    let mut checked = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let http = match rule.matches.as_deref().filter(|l| !l.is_empty()) {
            None => vec![http_match(&field, &gw::HttpMatch::default())?],
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(j, m)| http_match(&format!("{field}.matches[{j}]"), m))
                .collect::<Result<_, _>>()?,
        };
        let mut mirrors = Vec::new();
        let fl = filters(
            &ns,
            &format!("{field}.filters"),
            &rule.filters,
            false,
            Some(&mut mirrors),
        )?;
        let redirect = fl.iter().any(|f| matches!(f, Filter::Redirect { .. }));
        let rewrite = fl.iter().any(|f| matches!(f, Filter::Rewrite { .. }));
        if redirect && rewrite {
            return Err(format!(
                "{field}.filters: RequestRedirect and URLRewrite are exclusive"
            ));
        }
        if redirect && !rule.backend_refs.is_empty() {
            return Err(format!(
                "{field}: RequestRedirect with backendRefs (a redirect answers itself)"
            ));
        }
        let prefix_replaced = fl.iter().any(|f| {
            matches!(
                f,
                Filter::Redirect {
                    path: Some(PathRewrite::Prefix(_)),
                    ..
                } | Filter::Rewrite {
                    path: Some(PathRewrite::Prefix(_)),
                    ..
                }
            )
        });
        if prefix_replaced
            && !(http.len() == 1 && matches!(http[0].path, Some(PathMatch::Prefix(_))))
        {
            return Err(format!(
                "{field}: ReplacePrefixMatch needs exactly one PathPrefix match"
            ));
        }
        let timeouts = match &rule.timeouts {
            None => None,
            Some(t) => {
                let f = format!("{field}.timeouts");
                let request = t
                    .request
                    .as_deref()
                    .map(|v| duration(&format!("{f}.request"), v))
                    .transpose()?;
                let backend_request = t
                    .backend_request
                    .as_deref()
                    .map(|v| duration(&format!("{f}.backendRequest"), v))
                    .transpose()?;
                if let (Some(r), Some(b)) = (request, backend_request) {
                    if !r.is_zero() && b > r {
                        return Err(format!("{f}.backendRequest: longer than request"));
                    }
                }
                Some(Timeouts {
                    request,
                    backend_request,
                })
            }
        };
        let retry = match &rule.retry {
            None => None,
            Some(r) => {
                let f = format!("{field}.retry");
                let codes = r
                    .codes
                    .iter()
                    .enumerate()
                    .map(|(k, c)| {
                        u16::try_from(*c)
                            .ok()
                            .filter(|c| (400..=599).contains(c))
                            .ok_or_else(|| {
                                format!("{f}.codes[{k}]: {c} is not a status in 400-599")
                            })
                    })
                    .collect::<Result<_, _>>()?;
                let attempts = r
                    .attempts
                    .map(|a| {
                        u32::try_from(a)
                            .ok()
                            .filter(|a| *a <= 100)
                            .ok_or_else(|| format!("{f}.attempts: {a} is not a count in 0-100"))
                    })
                    .transpose()?;
                let backoff = r
                    .backoff
                    .as_deref()
                    .map(|v| duration(&format!("{f}.backoff"), v))
                    .transpose()?;
                Some(RuleRetry {
                    codes,
                    attempts,
                    backoff,
                })
            }
        };
        checked.push(CheckedRule {
            http,
            grpc: Vec::new(),
            filters: fl,
            mirrors,
            backends: backends(
                &ns,
                &format!("{field}.backendRefs"),
                &rule.backend_refs,
                false,
            )?,
            timeouts,
            retry,
        });
    }
    Ok(RouteInfo {
        kind: RouteKind::HttpRoute,
        parents: parents(&ns, &r.spec.parent_refs)?,
        key,
        created: r.metadata.creation_timestamp.clone(),
        rules: checked,
        policy: RoutePolicy::from_meta(&r.metadata)?,
    })
}

pub fn grpc_route(r: &gw::GRPCRoute) -> Result<RouteInfo, String> {
    let key = key_of(&r.metadata, "GRPCRoute")?;
    let ns = key.0.clone();
    at_most("spec.hostnames", r.spec.hostnames.len(), limits::HOSTNAMES)?;
    let rules = &r.spec.rules;
    rule_limits(
        rules.len(),
        rules.iter().map(|r| r.matches.as_ref().map_or(0, Vec::len)),
    )?;
    let mut checked = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let grpc = match rule.matches.as_deref().filter(|l| !l.is_empty()) {
            None => vec![GrpcMatch::default()],
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(j, m)| grpc_match(&format!("{field}.matches[{j}]"), m))
                .collect::<Result<_, _>>()?,
        };
        let mut mirrors = Vec::new();
        let fl = filters(
            &ns,
            &format!("{field}.filters"),
            &rule.filters,
            true,
            Some(&mut mirrors),
        )?;
        checked.push(CheckedRule {
            http: Vec::new(),
            grpc,
            filters: fl,
            mirrors,
            backends: backends(
                &ns,
                &format!("{field}.backendRefs"),
                &rule.backend_refs,
                true,
            )?,
            timeouts: None,
            retry: None,
        });
    }
    Ok(RouteInfo {
        kind: RouteKind::GrpcRoute,
        parents: parents(&ns, &r.spec.parent_refs)?,
        key,
        created: r.metadata.creation_timestamp.clone(),
        rules: checked,
        policy: RoutePolicy::from_meta(&r.metadata)?,
    })
}
