//! A Gateway API rule's filters, and GEP-2257 durations.

use std::collections::BTreeSet;
use std::time::Duration;

use super::matches::backend;
use super::{at_most, limits, port, BackendSpec};
use crate::model::routes::gateway as gw;
use crate::model::routes::table::*;

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
pub(super) fn filters(
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

pub(super) fn duration(field: &str, v: &str) -> Result<Duration, String> {
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
