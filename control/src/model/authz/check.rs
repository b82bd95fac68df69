//! Checks one TrafficTarget on its own and turns it into what the model
//! keeps. A TrafficTarget that fails is refused with a reason naming the
//! field, and its last good version stays in force.
//!
//! References to other objects (an HTTPRouteGroup that does not exist) are
//! not checked here: they allow nothing until the object appears
//! ([`super::compute`]).

use std::collections::BTreeSet;

use super::smi::{IdentityBinding, TrafficTarget};
use crate::model::routes::check::key_of;
use crate::model::ObjKey;

/// The most sources and rules of one TrafficTarget (weft's own bound, so
/// that one object cannot make every policy of a namespace huge).
pub const MAX_SOURCES: usize = 256;
pub const MAX_RULES: usize = 64;

/// A checked TrafficTarget: its destination ServiceAccount is in its own
/// namespace (`key.0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetInfo {
    pub key: ObjKey,
    /// The destination ServiceAccount's name.
    pub destination: String,
    /// `(namespace, name)` of each source ServiceAccount, deduplicated.
    pub sources: BTreeSet<ObjKey>,
    pub rules: Vec<Rule>,
}

/// One rule, the object it names not looked up yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// These matches of an HTTPRouteGroup of the TrafficTarget's namespace
    /// (`None`: all of them).
    Group {
        name: String,
        matches: Option<BTreeSet<String>>,
    },
    /// A TCPRoute of the TrafficTarget's namespace.
    Tcp { name: String },
}

pub fn target(tt: &TrafficTarget) -> Result<TargetInfo, String> {
    let key = key_of(&tt.metadata, "TrafficTarget")?;
    let spec = &tt.spec;
    let destination = binding("spec.destination", &spec.destination, &key.0)?;
    if destination.0 != key.0 {
        return Err(format!(
            "spec.destination.namespace: '{}' is not the TrafficTarget's namespace '{}' (SMI: a TrafficTarget lives in its destination's namespace)",
            destination.0, key.0
        ));
    }
    if spec.sources.is_empty() {
        return Err("spec.sources: no source ServiceAccount".into());
    }
    if spec.sources.len() > MAX_SOURCES {
        return Err(format!(
            "spec.sources: {} items, over the limit of {MAX_SOURCES}",
            spec.sources.len()
        ));
    }
    let sources = spec
        .sources
        .iter()
        .enumerate()
        .map(|(i, s)| binding(&format!("spec.sources[{i}]"), s, &key.0))
        .collect::<Result<_, _>>()?;
    if spec.rules.len() > MAX_RULES {
        return Err(format!(
            "spec.rules: {} items, over the limit of {MAX_RULES}",
            spec.rules.len()
        ));
    }
    let mut rules = Vec::new();
    for (i, r) in spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        if r.name.is_empty() {
            return Err(format!("{field}.name: no {} named", r.kind));
        }
        let name = r.name.clone();
        rules.push(match r.kind.as_str() {
            "HTTPRouteGroup" => Rule::Group {
                name,
                matches: r.matches.as_ref().map(|m| m.iter().cloned().collect()),
            },
            "TCPRoute" if r.matches.is_some() => {
                return Err(format!(
                    "{field}.matches: a TCPRoute rule has no matches to pick (its ports are in the TCPRoute)"
                ))
            }
            "TCPRoute" => Rule::Tcp { name },
            other => {
                return Err(format!(
                    "{field}.kind: '{other}' is not HTTPRouteGroup or TCPRoute"
                ))
            }
        });
    }
    Ok(TargetInfo {
        key,
        destination: destination.1,
        sources,
        rules,
    })
}

/// A ServiceAccount reference; its namespace defaults to `own_ns`.
fn binding(field: &str, b: &IdentityBinding, own_ns: &str) -> Result<ObjKey, String> {
    if b.kind != "ServiceAccount" {
        return Err(format!(
            "{field}.kind: '{}' is not ServiceAccount (the only kind SMI v1alpha3 names)",
            b.kind
        ));
    }
    if !dns_label(&b.name) && !dns_subdomain(&b.name) {
        return Err(format!(
            "{field}.name: '{}' is not a ServiceAccount name",
            b.name
        ));
    }
    let ns = b.namespace.as_deref().unwrap_or(own_ns);
    if !dns_label(ns) {
        return Err(format!("{field}.namespace: '{ns}' is not a namespace name"));
    }
    Ok((ns.to_owned(), b.name.clone()))
}

/// RFC 1123 label: what a namespace name is.
fn dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// RFC 1123 subdomain: what a ServiceAccount name is.
fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}
