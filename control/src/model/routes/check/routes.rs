//! HTTPRoute and GRPCRoute as a whole: the rules and their limits.

use super::filters::{duration, filters};
use super::matches::{backends, grpc_match, http_match, parents};
use super::{at_most, key_of, limits, CheckedRule, RouteInfo};
use crate::model::policy::RoutePolicy;
use crate::model::routes::gateway as gw;
use crate::model::routes::table::*;

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
