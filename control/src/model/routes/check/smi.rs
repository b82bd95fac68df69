//! The SMI objects: TrafficSplit, HTTPRouteGroup, TCPRoute.

use std::collections::BTreeSet;

use super::{
    full, key_of, port, regex, GroupInfo, MatchKind, SplitInfo, TcpRouteInfo, HTTP_METHODS,
};
use crate::model::routes::smi;
use crate::model::routes::table::*;

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
    let names = g.spec.matches.iter().map(|m| m.name.clone()).collect();
    Ok(GroupInfo {
        key,
        matches,
        names,
    })
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
