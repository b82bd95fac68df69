//! What a route table does with one request: the reference reading of a
//! [`RouteTable`], used by the model's tests and by the `weft` CLI's
//! explanations. It compiles each regex it meets (the proxy compiles a
//! table once per update instead); it never panics on any table or
//! request.

use regex::Regex;

use super::table::*;
use crate::model::store::DestKey;

/// The parts of a request head that routing reads.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    /// Path and query, as on the request line.
    pub path: String,
    /// Names in any case.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn get(path: &str) -> Self {
        Self {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn is_grpc(&self) -> bool {
        self.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("content-type") && v.starts_with("application/grpc")
        })
    }
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<'t> {
    /// To this Service port's endpoints, under this rule (`None`: no route
    /// applies, the destination's own policy).
    Forward {
        rule: Option<&'t Rule>,
        backend: DestKey,
    },
    /// The rule redirects.
    Redirect { rule: &'t Rule },
    /// Answered by the proxy: 404 (routes attached, none matches), 500 (no
    /// valid backend), 503 (the backend has no ready endpoint).
    Respond { status: u16, reason: String },
}

fn re_match(pattern: &str, value: &str) -> bool {
    Regex::new(pattern).is_ok_and(|re| re.is_match(value))
}

fn value_matches(m: &ValueMatch, value: &str) -> bool {
    match m {
        ValueMatch::Exact(v) => v == value,
        ValueMatch::Regex(re) => re_match(re, value),
    }
}

fn headers_match(list: &[NamedMatch], req: &Request) -> bool {
    list.iter().all(|h| {
        req.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&h.name))
            .is_some_and(|(_, v)| value_matches(&h.value, v))
    })
}

fn path_matches(m: &PathMatch, path: &str) -> bool {
    match m {
        PathMatch::Exact(p) => p == path,
        PathMatch::Prefix(p) => {
            let p = p.trim_end_matches('/');
            p.is_empty()
                || path == p
                || path
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
        PathMatch::Regex(re) => re_match(re, path),
    }
}

pub fn http_matches(m: &HttpMatch, req: &Request) -> bool {
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let params: Vec<(&str, &str)> = query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .collect();
    m.path.as_ref().is_none_or(|p| path_matches(p, path))
        && (m.methods.is_empty() || m.methods.contains(&req.method))
        && headers_match(&m.headers, req)
        && m.query.iter().all(|q| {
            params
                .iter()
                .find(|(n, _)| *n == q.name)
                .is_some_and(|(_, v)| value_matches(&q.value, v))
        })
}

pub fn grpc_matches(m: &GrpcMatch, req: &Request) -> bool {
    // `/package.Service/Method`
    let mut parts = req.path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    m.service.as_ref().is_none_or(|s| value_matches(s, service))
        && m.method.as_ref().is_none_or(|x| value_matches(x, method))
        && headers_match(&m.headers, req)
}

/// The backend that `roll` picks by weight (`roll` is reduced modulo the
/// total weight: a uniform random number gives each its share).
pub fn pick(backends: &[Backend], roll: u64) -> Result<&Backend, String> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return Err(
            match backends.iter().find_map(|b| match &b.target {
                Target::Invalid(r) => Some(r.clone()),
                Target::Service(_) => None,
            }) {
                Some(r) => format!("no backend can take traffic: {r}"),
                None => "no backend can take traffic: every weight is 0".into(),
            },
        );
    }
    let mut at = roll % total;
    for b in backends {
        if at < u64::from(b.weight) {
            return Ok(b);
        }
        at -= u64::from(b.weight);
    }
    Err("no backend".into())
}

fn forward<'t>(
    rule: Option<&'t Rule>,
    backends: &'t [Backend],
    roll: u64,
    ready: &dyn Fn(&DestKey) -> bool,
) -> Outcome<'t> {
    let chosen = match pick(backends, roll) {
        Ok(b) => b,
        Err(reason) => {
            return Outcome::Respond {
                status: 500,
                reason,
            }
        }
    };
    match &chosen.target {
        Target::Invalid(reason) => Outcome::Respond {
            status: 500,
            reason: reason.clone(),
        },
        Target::Service(d) if !ready(d) => Outcome::Respond {
            status: 503,
            reason: format!(
                "{}/{}:{} has no ready endpoint",
                d.service.0, d.service.1, d.port
            ),
        },
        Target::Service(d) => Outcome::Forward {
            rule,
            backend: d.clone(),
        },
    }
}

/// Routes one HTTP (or gRPC) request from a client in `client_ns`.
pub fn route<'t>(
    table: &'t RouteTable,
    client_ns: &str,
    req: &Request,
    roll: u64,
    ready: &dyn Fn(&DestKey) -> bool,
) -> Outcome<'t> {
    let apex = |rule| {
        if ready(&table.dest) {
            Outcome::Forward {
                rule,
                backend: table.dest.clone(),
            }
        } else {
            Outcome::Respond {
                status: 503,
                reason: "the Service has no ready endpoint".into(),
            }
        }
    };
    let Some(set) = table.for_client(client_ns) else {
        return apex(None);
    };
    let rule = if req.is_grpc() && !set.grpc.is_empty() {
        set.grpc
            .iter()
            .find(|e| grpc_matches(&e.matcher, req))
            .map(|e| e.rule)
    } else {
        set.http
            .iter()
            .find(|e| http_matches(&e.matcher, req))
            .map(|e| e.rule)
    };
    let Some(rule) = rule.and_then(|r| set.rules.get(r)) else {
        return match set.otherwise {
            Otherwise::NotFound => Outcome::Respond {
                status: 404,
                reason: "no route matches".into(),
            },
            Otherwise::Apex => apex(None),
        };
    };
    if rule
        .filters
        .iter()
        .any(|f| matches!(f, Filter::Redirect { .. }))
    {
        return Outcome::Redirect { rule };
    }
    forward(Some(rule), &rule.backends, roll, ready)
}

/// Routes one opaque TCP connection.
pub fn route_tcp<'t>(
    table: &'t RouteTable,
    roll: u64,
    ready: &dyn Fn(&DestKey) -> bool,
) -> Outcome<'t> {
    match &table.tcp {
        Some(backends) => forward(None, backends, roll, ready),
        None if ready(&table.dest) => Outcome::Forward {
            rule: None,
            backend: table.dest.clone(),
        },
        None => Outcome::Respond {
            status: 503,
            reason: "the Service has no ready endpoint".into(),
        },
    }
}
