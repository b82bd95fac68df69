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

use super::table::*;
use crate::model::policy::RoutePolicy;
use crate::model::ObjKey;

mod filters;
mod matches;
mod routes;
mod smi;

pub use filters::gateway_duration;
pub use routes::{grpc_route, http_route};
pub use smi::{group, split, tcp_route};

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

pub(super) const HTTP_METHODS: [&str; 9] = [
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
    /// The name of each match, in the same order (a TrafficTarget picks
    /// matches by name).
    pub names: Vec<String>,
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

pub(crate) fn key_of(meta: &ObjectMeta, kind: &str) -> Result<ObjKey, String> {
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
pub(super) fn regex(field: &str, pattern: &str) -> Result<(), String> {
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

pub(super) fn full(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

pub(super) fn at_most(field: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        return Err(format!("{field}: {n} items, over the limit of {max}"));
    }
    Ok(())
}

pub(super) fn port(field: &str, n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{field}: {n} is out of range 1-65535"))
}
