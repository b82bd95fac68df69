//! A Gateway API route's parentRefs, backendRefs and matches.

use std::collections::BTreeSet;

use super::filters::filters;
use super::{at_most, full, limits, port, regex, BackendSpec, Parent, HTTP_METHODS};
use crate::model::routes::gateway as gw;
use crate::model::routes::table::*;

pub(super) fn parents(ns: &str, refs: &[gw::ParentRef]) -> Result<Vec<Parent>, String> {
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

pub(super) fn weight(field: &str, w: Option<i64>) -> Result<u32, String> {
    match w {
        None => Ok(1),
        Some(w) if (0..=limits::WEIGHT).contains(&w) => Ok(w as u32),
        Some(w) => Err(format!(
            "{field}.weight: {w} is out of range 0-{}",
            limits::WEIGHT
        )),
    }
}

pub(super) fn backend(
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

pub(super) fn http_match(field: &str, m: &gw::HttpMatch) -> Result<HttpMatch, String> {
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

pub(super) fn grpc_match(field: &str, m: &gw::GrpcMatch) -> Result<GrpcMatch, String> {
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

pub(super) fn backends(
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
