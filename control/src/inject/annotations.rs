//! The `weft.dev/` annotations that steer injection, read into a [`Plan`]:
//! the namespace's first, the pod's over them, the [`Settings`] where
//! neither says. Every value is checked with the parser of the program
//! that will read it (weft-init's ports and CIDRs, the Go durations of
//! weft-proxy and weft-control, tracing's filter syntax, Kubernetes
//! quantities), so a bad value is a [`Denied`] naming the annotation and
//! the value, never a pod that crash-loops.

use std::collections::BTreeMap;
use weft_init::cidr::Cidr;
use weft_init::ports::PortRange;

use super::{quantity, Denied, Settings};

pub const INJECT: &str = "weft.dev/inject";
pub const INJECTED: &str = "weft.dev/injected";
pub const PROXY_IMAGE: &str = "weft.dev/proxy-image";
pub const PROXY_LOG_LEVEL: &str = "weft.dev/proxy-log-level";
pub const PROXY_CPU_REQUEST: &str = "weft.dev/proxy-cpu-request";
pub const PROXY_CPU_LIMIT: &str = "weft.dev/proxy-cpu-limit";
pub const PROXY_MEMORY_REQUEST: &str = "weft.dev/proxy-memory-request";
pub const PROXY_MEMORY_LIMIT: &str = "weft.dev/proxy-memory-limit";
pub const SKIP_INBOUND_PORTS: &str = "weft.dev/skip-inbound-ports";
pub const SKIP_OUTBOUND_PORTS: &str = "weft.dev/skip-outbound-ports";
pub const SKIP_OUTBOUND_CIDRS: &str = "weft.dev/skip-outbound-cidrs";
pub const OPAQUE_PORTS: &str = "weft.dev/opaque-ports";
pub const PROXY_NATIVE_SIDECAR: &str = "weft.dev/proxy-native-sidecar";
pub const SHUTDOWN_GRACE: &str = "weft.dev/shutdown-grace";
pub const DEFAULT_INBOUND_POLICY: &str = "weft.dev/default-inbound-policy";
pub const TRACE_SAMPLE_PERCENT: &str = "weft.dev/trace-sample-percent";

/// The default inbound policies (the authorization issue's values).
pub const INBOUND_POLICIES: [&str; 4] = [
    "all-unauthenticated",
    "all-authenticated",
    "cluster-authenticated",
    "deny",
];

/// Everything the injected containers are made from, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub proxy_image: String,
    pub init_image: String,
    pub log_level: String,
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
    /// weft-init's list forms (`8080`, `9000-9100`).
    pub skip_inbound_ports: Vec<String>,
    pub skip_outbound_ports: Vec<String>,
    pub skip_outbound_cidrs: Vec<String>,
    pub opaque_ports: Vec<u16>,
    pub native_sidecar: bool,
    pub shutdown_grace: Option<String>,
    pub default_inbound_policy: Option<String>,
    pub trace_sample_percent: Option<String>,
    /// The `service.name` of the proxy's spans: the pod's workload.
    pub workload: Option<String>,
}

/// The namespace's `weft.dev/` annotations with the pod's over them.
pub fn merged(
    namespace: &BTreeMap<String, String>,
    pod: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let ours = |(k, v): (&String, &String)| {
        (k.starts_with("weft.dev/") && k != INJECTED).then(|| (k.clone(), v.clone()))
    };
    let mut out: BTreeMap<_, _> = namespace.iter().filter_map(ours).collect();
    out.extend(pod.iter().filter_map(ours));
    out
}

/// Reads the annotations (already [`merged`]) over the settings.
pub fn plan(annotations: &BTreeMap<String, String>, settings: &Settings) -> Result<Plan, Denied> {
    let check = |name: &str, f: &dyn Fn(&str) -> Result<(), String>| -> Result<_, Denied> {
        match annotations.get(name) {
            None => Ok(None),
            Some(value) => match f(value) {
                Ok(()) => Ok(Some(value.trim().to_owned())),
                Err(reason) => Err(Denied::new(name, value, reason)),
            },
        }
    };
    let quantity = |v: &str| quantity::parse(v).map(drop);
    let image = |v: &str| image(v);
    let cpu_request = check(PROXY_CPU_REQUEST, &quantity)?.or(settings.proxy_cpu_request.clone());
    let cpu_limit = check(PROXY_CPU_LIMIT, &quantity)?.or(settings.proxy_cpu_limit.clone());
    let memory_request =
        check(PROXY_MEMORY_REQUEST, &quantity)?.or(settings.proxy_memory_request.clone());
    let memory_limit =
        check(PROXY_MEMORY_LIMIT, &quantity)?.or(settings.proxy_memory_limit.clone());
    request_within_limit(PROXY_CPU_REQUEST, &cpu_request, &cpu_limit)?;
    request_within_limit(PROXY_MEMORY_REQUEST, &memory_request, &memory_limit)?;
    let list = |name: &str, each: fn(&str) -> Result<String, String>| -> Result<_, Denied> {
        let Some(value) = annotations.get(name) else {
            return Ok(vec![]);
        };
        split(value)
            .map(|item| each(item).map_err(|reason| Denied::new(name, value, reason)))
            .collect()
    };
    let opaque_ports = list(OPAQUE_PORTS, single_port)?
        .iter()
        .map(|p| p.parse().expect("single_port writes a u16"))
        .collect();
    Ok(Plan {
        proxy_image: check(PROXY_IMAGE, &image)?.unwrap_or_else(|| settings.proxy_image.clone()),
        init_image: settings.init_image.clone(),
        log_level: check(PROXY_LOG_LEVEL, &annotation_log_filter)?
            .unwrap_or_else(|| settings.proxy_log_level.clone()),
        cpu_request,
        cpu_limit,
        memory_request,
        memory_limit,
        skip_inbound_ports: list(SKIP_INBOUND_PORTS, port_range)?,
        skip_outbound_ports: list(SKIP_OUTBOUND_PORTS, port_range)?,
        skip_outbound_cidrs: list(SKIP_OUTBOUND_CIDRS, cidr)?,
        opaque_ports,
        native_sidecar: match check(PROXY_NATIVE_SIDECAR, &boolean)? {
            Some(v) => v == "true",
            None => settings.proxy_native_sidecar,
        },
        shutdown_grace: check(SHUTDOWN_GRACE, &|v| crate::config::duration(v).map(drop))?,
        default_inbound_policy: check(DEFAULT_INBOUND_POLICY, &inbound_policy)?
            .or_else(|| settings.default_inbound_policy.clone()),
        trace_sample_percent: check(TRACE_SAMPLE_PERCENT, &percent)?,
        workload: None,
    })
}

/// The items of a comma-separated list; empty items (`80,,81`, a
/// trailing comma) are skipped, as the flags of weft-init skip them.
fn split(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A port or a range, as weft-init reads it, written back in its input form.
fn port_range(item: &str) -> Result<String, String> {
    let r: PortRange = item.parse()?;
    Ok(if r.first == r.last {
        r.first.to_string()
    } else {
        format!("{}-{}", r.first, r.last)
    })
}

/// One port: weft-proxy's opaque ports are single ports.
fn single_port(item: &str) -> Result<String, String> {
    let r: PortRange = item.parse()?;
    if r.first != r.last {
        return Err(format!(
            "'{item}' is a range: opaque ports are single ports (list them: 3306,3307)"
        ));
    }
    Ok(r.first.to_string())
}

/// A CIDR, as weft-init reads it, in its normalised form.
fn cidr(item: &str) -> Result<String, String> {
    item.parse::<Cidr>().map(|c| c.to_string())
}

fn image(v: &str) -> Result<(), String> {
    let v = v.trim();
    if v.is_empty() || v.contains(char::is_whitespace) {
        return Err(format!("'{v}' is not an image reference"));
    }
    Ok(())
}

fn log_filter(v: &str) -> Result<(), String> {
    // The filter syntax is ASCII, and tracing-subscriber 0.3.23 panics
    // (slicing inside a character) on some non-ASCII filters: refused first.
    if !v.is_ascii() {
        return Err(format!(
            "'{v}' is not a log filter (like info or warn,weft_proxy=debug): only ASCII is allowed"
        ));
    }
    tracing_subscriber::EnvFilter::try_new(v.trim())
        .map(drop)
        .map_err(|e| format!("'{v}' is not a log filter (like info or warn,weft_proxy=debug): {e}"))
}

/// The longest `weft.dev/proxy-log-level` a pod may carry.
const MAX_ANNOTATION_LOG_FILTER: usize = 512;

/// A pod's log filter: `target=level` directives only. The span and field
/// filters of the full syntax (`target[span{field=value}]=level`) compile
/// field values to regexes, which a pod author could make slow to compile
/// in the webhook and in every proxy start (the `flags` fuzz target found
/// a 300-byte value taking 250 ms in a debug build); operators keep the
/// full syntax in the proxy's own `--log`.
fn annotation_log_filter(v: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_:.,=- ".contains(c);
    if v.len() > MAX_ANNOTATION_LOG_FILTER || !v.chars().all(plain) {
        return Err(format!(
            "'{}' is not a log filter for a pod: only comma-separated target=level directives \
             (like info or warn,weft_proxy=debug: letters, digits and _ : . - =), at most \
             {MAX_ANNOTATION_LOG_FILTER} characters",
            v.chars().take(80).collect::<String>()
        ));
    }
    log_filter(v)
}

fn boolean(v: &str) -> Result<(), String> {
    match v.trim() {
        "true" | "false" => Ok(()),
        _ => Err(format!("'{v}' is neither true nor false")),
    }
}

fn inbound_policy(v: &str) -> Result<(), String> {
    if INBOUND_POLICIES.contains(&v.trim()) {
        return Ok(());
    }
    Err(format!(
        "'{v}' is not an inbound policy (one of {})",
        INBOUND_POLICIES.join(", ")
    ))
}

fn percent(v: &str) -> Result<(), String> {
    match v.trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(()),
        _ => Err(format!("'{v}' is not a percentage from 0 to 100")),
    }
}

/// A request above its limit: Kubernetes refuses such a pod.
fn request_within_limit(
    name: &str,
    request: &Option<String>,
    limit: &Option<String>,
) -> Result<(), Denied> {
    let (Some(req), Some(lim)) = (request, limit) else {
        return Ok(());
    };
    match (quantity::parse(req), quantity::parse(lim)) {
        (Ok(r), Ok(l)) if r > l => Err(Denied::new(
            name,
            req,
            format!("'{req}' is more than the limit '{lim}'"),
        )),
        _ => Ok(()),
    }
}

/// A clap value parser: a quantity, kept as written.
pub fn quantity_arg(v: &str) -> Result<String, String> {
    quantity::parse(v).map(|_| v.trim().to_owned())
}

/// A clap value parser: a tracing log filter, kept as written.
pub fn log_filter_arg(v: &str) -> Result<String, String> {
    log_filter(v).map(|()| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `flags` fuzz target (a slow unit): a field filter whose
    /// value compiles to a regex took 80-250 ms to parse in a debug build
    /// (seconds under the fuzzer). A pod's filter takes no span or field
    /// filters, and is refused before it is parsed.
    #[test]
    fn a_pods_log_filter_takes_no_span_or_field_filters() {
        let found = "wan,catedwan,cated[aq{{{{level=yyyy\0\0\0\0\0\0\0\0\01.m100100.m1.!1001000";
        for v in [
            found,
            "weft_proxy[conn{dst=10.0.0.1}]=debug",
            &"a".repeat(513),
        ] {
            let err = annotation_log_filter(v).unwrap_err();
            assert!(
                err.contains("only comma-separated target=level"),
                "{v:?}: {err}"
            );
        }
        for v in [
            "info",
            "warn,weft_proxy=debug",
            "weft_proxy::http=trace,h2=warn",
        ] {
            assert_eq!(annotation_log_filter(v), Ok(()), "{v}");
        }
        // The proxy's own --log keeps the full syntax.
        assert!(log_filter_arg("weft_proxy[conn{dst=10.0.0.1}]=debug").is_ok());
    }

    /// Found by the `flags` fuzz target: tracing-subscriber 0.3.23 slices a
    /// directive inside a multi-byte character and panics (the webhook's
    /// admission task with it) on some non-ASCII filters.
    #[test]
    fn a_non_ascii_log_filter_is_refused_not_a_panic() {
        let found = "war\0\0)/skip-outbou\x03:\x01\0\0\0\0\0\0\x036Midrs\0\x0b,     -11E-l|gdklwar\0r\0\0\x0b\u{4c5ca}0=ena2\u{4c5ca},Mi";
        for v in [found, "x[\u{4c5ca}0=e]", "warn,é=debug"] {
            let err = log_filter(v).unwrap_err();
            assert!(err.contains("is not a log filter"), "{v:?}: {err}");
        }
        assert_eq!(log_filter("warn,weft_proxy=debug"), Ok(()));
    }
}
