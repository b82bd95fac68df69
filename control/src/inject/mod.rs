//! Sidecar injection: the one function that turns a pod (or a workload's
//! pod template) into a meshed one, used by the admission webhook
//! ([`crate::webhook`]) and by `weft inject` alike ([`manifest`]).
//!
//! [`inject`] decides ([`Skip`] with a reason, or [`Denied`] for a bad
//! annotation value) and, when it injects, adds weft-init first in
//! `initContainers`, then weft-proxy as a native sidecar (or, with
//! `weft.dev/proxy-native-sidecar: "false"`, as the first container), the
//! proxy's volumes and the `weft.dev/injected` annotation. [`uninject`]
//! removes exactly those. Pods are JSON values, so that every field the
//! injector does not know is kept as it was. Pure: no I/O.

pub mod annotations;
pub mod cli;
pub mod manifest;
pub mod quantity;
pub mod render;

use clap::Args;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

use annotations::{INJECT, INJECTED};
use render::{ANCHORS_VOLUME, INIT_CONTAINER, PROXY_CONTAINER, TOKEN_VOLUME};

/// What injection is made of where no annotation says otherwise: flags of
/// weft-control (the webhook) and of `weft inject`.
#[derive(Clone, Debug, PartialEq, Args)]
pub struct Settings {
    /// The weft-proxy image injected (`weft.dev/proxy-image` overrides it).
    #[arg(long, env = "WEFT_CONTROL_PROXY_IMAGE", default_value = PROXY_IMAGE)]
    pub proxy_image: String,

    /// The weft-init image injected.
    #[arg(long, env = "WEFT_CONTROL_INIT_IMAGE", default_value = INIT_IMAGE)]
    pub init_image: String,

    /// The control plane's gRPC address the injected proxies use
    /// (discovery and Certify).
    #[arg(
        long,
        env = "WEFT_CONTROL_PROXY_CONTROL_ADDR",
        value_name = "HOST:PORT",
        default_value = CONTROL_ADDR
    )]
    pub proxy_control_addr: String,

    /// The ConfigMap (in each meshed pod's namespace) whose `ca.crt` holds
    /// the trust anchors the injected proxies mount.
    #[arg(
        long,
        env = "WEFT_CONTROL_TRUST_ANCHORS_CONFIGMAP",
        value_name = "NAME",
        default_value = ANCHORS_CONFIGMAP
    )]
    pub trust_anchors_configmap: String,

    /// The proxies' log filter (`weft.dev/proxy-log-level` overrides it).
    #[arg(long, env = "WEFT_CONTROL_PROXY_LOG_LEVEL", default_value = LOG_LEVEL, value_parser = annotations::log_filter_arg)]
    pub proxy_log_level: String,

    /// The proxies' CPU request (`weft.dev/proxy-cpu-request`).
    #[arg(long, env = "WEFT_CONTROL_PROXY_CPU_REQUEST", default_value = CPU_REQUEST, value_parser = annotations::quantity_arg)]
    pub proxy_cpu_request: Option<String>,

    /// The proxies' CPU limit (`weft.dev/proxy-cpu-limit`); none by default.
    #[arg(long, env = "WEFT_CONTROL_PROXY_CPU_LIMIT", value_parser = annotations::quantity_arg)]
    pub proxy_cpu_limit: Option<String>,

    /// The proxies' memory request (`weft.dev/proxy-memory-request`).
    #[arg(long, env = "WEFT_CONTROL_PROXY_MEMORY_REQUEST", default_value = MEMORY_REQUEST, value_parser = annotations::quantity_arg)]
    pub proxy_memory_request: Option<String>,

    /// The proxies' memory limit (`weft.dev/proxy-memory-limit`).
    #[arg(long, env = "WEFT_CONTROL_PROXY_MEMORY_LIMIT", default_value = MEMORY_LIMIT, value_parser = annotations::quantity_arg)]
    pub proxy_memory_limit: Option<String>,

    /// Inject the proxy as a native sidecar (an init container with
    /// `restartPolicy: Always`, Kubernetes 1.29 and later); `false`: a
    /// classic sidecar container (`weft.dev/proxy-native-sidecar`).
    #[arg(long, env = "WEFT_CONTROL_PROXY_NATIVE_SIDECAR", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub proxy_native_sidecar: bool,

    /// The proxies' OpenTelemetry collector (OTLP/gRPC `host:port`, a
    /// Jaeger's 4317): the proxies export spans there. Unset: no spans.
    #[arg(long, env = "WEFT_CONTROL_PROXY_TRACE_COLLECTOR_ADDR", value_name = "HOST:PORT", value_parser = host_port)]
    pub proxy_trace_collector_addr: Option<String>,

    /// How long the proxy's projected ServiceAccount token is valid (the
    /// kubelet renews it at 80%); at least 10m.
    #[arg(long = "proxy-token-expiry", env = "WEFT_CONTROL_PROXY_TOKEN_EXPIRY", value_parser = token_expiry, default_value = "1h")]
    pub token_expiry: Duration,

    /// The trust domain (weft-control: its --trust-domain).
    #[arg(skip = String::from("cluster.local"))]
    pub trust_domain: String,

    /// The audience of the proxy's token (weft-control: its
    /// --identity-token-audience).
    #[arg(skip = String::from("weft"))]
    pub token_audience: String,

    /// The proxy's default inbound policy when no `weft.dev/default-inbound-policy`
    /// annotation names one (weft-control: its --default-inbound-policy,
    /// when not the proxy's own default), so that the proxy fails closed
    /// before its first policy exactly when weft-control's default says so.
    #[arg(skip)]
    pub default_inbound_policy: Option<String>,
}

fn host_port(s: &str) -> Result<String, String> {
    let s = s.trim();
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(s.to_owned())
        }
        _ => Err(format!("'{s}' is not host:port")),
    }
}

fn token_expiry(s: &str) -> Result<Duration, String> {
    match crate::config::duration(s)? {
        d if d < Duration::from_secs(600) => Err(format!(
            "'{s}' is under 10m, the shortest a projected token may live"
        )),
        d => Ok(d),
    }
}

/// The defaults of the flags.
const PROXY_IMAGE: &str = concat!("weft/weft-proxy:", env!("CARGO_PKG_VERSION"));
const INIT_IMAGE: &str = concat!("weft/weft-init:", env!("CARGO_PKG_VERSION"));
const CONTROL_ADDR: &str = "weft-control.weft-system.svc.cluster.local:8086";
pub const ANCHORS_CONFIGMAP: &str = "weft-trust-anchors";
const LOG_LEVEL: &str = "warn,weft_proxy=info";
const CPU_REQUEST: &str = "100m";
const MEMORY_REQUEST: &str = "20Mi";
const MEMORY_LIMIT: &str = "250Mi";

impl Default for Settings {
    /// The defaults of every flag, whatever the environment says.
    fn default() -> Self {
        Self {
            proxy_image: PROXY_IMAGE.into(),
            init_image: INIT_IMAGE.into(),
            proxy_control_addr: CONTROL_ADDR.into(),
            trust_anchors_configmap: ANCHORS_CONFIGMAP.into(),
            proxy_log_level: LOG_LEVEL.into(),
            proxy_cpu_request: Some(CPU_REQUEST.into()),
            proxy_cpu_limit: None,
            proxy_memory_request: Some(MEMORY_REQUEST.into()),
            proxy_memory_limit: Some(MEMORY_LIMIT.into()),
            proxy_native_sidecar: true,
            proxy_trace_collector_addr: None,
            token_expiry: Duration::from_secs(3600),
            trust_domain: "cluster.local".into(),
            token_audience: "weft".into(),
            default_inbound_policy: None,
        }
    }
}

/// Why a pod is left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Neither the pod nor its namespace says `weft.dev/inject: enabled`.
    NotEnabled,
    /// `weft.dev/inject: disabled` on the pod (it wins over the namespace)
    /// or, with nothing on the pod, on the namespace.
    Disabled { on: &'static str },
    /// `weft.dev/inject` is neither `enabled` nor `disabled`.
    InvalidInject { on: &'static str, value: String },
    /// The pod already has weft's containers.
    AlreadyInjected,
    /// `hostNetwork: true`: iptables would redirect the node's traffic.
    HostNetwork,
    /// `automountServiceAccountToken: false`.
    NoServiceAccountToken,
}

impl Skip {
    /// The `reason` label of the admission metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Skip::NotEnabled => "not-enabled",
            Skip::Disabled { .. } => "disabled",
            Skip::InvalidInject { .. } => "invalid-inject-annotation",
            Skip::AlreadyInjected => "already-injected",
            Skip::HostNetwork => "host-network",
            Skip::NoServiceAccountToken => "no-service-account-token",
        }
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::NotEnabled => write!(f, "{INJECT} is not enabled on the pod or its namespace"),
            Skip::Disabled { on } => write!(f, "{INJECT}: disabled on the {on}"),
            Skip::InvalidInject { on, value } => write!(
                f,
                "{INJECT}: '{value}' on the {on} is neither enabled nor disabled"
            ),
            Skip::AlreadyInjected => write!(f, "already injected"),
            Skip::HostNetwork => write!(f, "the pod uses hostNetwork"),
            Skip::NoServiceAccountToken => write!(
                f,
                "the pod does not mount its ServiceAccount token (automountServiceAccountToken: false)"
            ),
        }
    }
}

/// A bad annotation value: the admission is denied with this message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {reason}")]
pub struct Denied {
    pub annotation: String,
    pub value: String,
    pub reason: String,
}

impl Denied {
    pub fn new(annotation: &str, value: &str, reason: String) -> Self {
        Self {
            annotation: annotation.to_owned(),
            value: value.to_owned(),
            reason,
        }
    }
}

/// Whether a pod must opt in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptIn {
    /// The webhook: only pods that (or whose namespace) say
    /// `weft.dev/inject: enabled`.
    Required,
    /// `weft inject`: the user asked; only `disabled` on the pod skips.
    Assumed,
}

/// What [`inject`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The injected pod.
    Injected(Value),
    Skipped(Skip),
}

/// A pod's (or pod template's) annotations.
pub fn pod_annotations(pod: &Value) -> BTreeMap<String, String> {
    pod.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Injects `pod` (a Pod or a pod template: `metadata` and `spec`) whose
/// namespace has `namespace` annotations.
pub fn inject(
    pod: &Value,
    namespace: &BTreeMap<String, String>,
    settings: &Settings,
    opt_in: OptIn,
) -> Result<Outcome, Denied> {
    let own = pod_annotations(pod);
    if let Some(skip) = decide(&own, namespace, opt_in) {
        return Ok(Outcome::Skipped(skip));
    }
    let spec = pod.get("spec");
    let flag = |name: &str| spec.and_then(|s| s.get(name)).and_then(Value::as_bool);
    if own.contains_key(INJECTED) || has_container(pod, PROXY_CONTAINER) {
        return Ok(Outcome::Skipped(Skip::AlreadyInjected));
    }
    if flag("hostNetwork") == Some(true) {
        return Ok(Outcome::Skipped(Skip::HostNetwork));
    }
    if flag("automountServiceAccountToken") == Some(false) {
        return Ok(Outcome::Skipped(Skip::NoServiceAccountToken));
    }
    let mut plan = annotations::plan(&annotations::merged(namespace, &own), settings)?;
    plan.workload = workload(pod);
    let mut out = pod.clone();
    let proxy = render::proxy_container(&plan, settings);
    let spec = object(&mut out, "spec");
    let init = array(spec, "initContainers");
    init.insert(0, render::init_container(&plan));
    if plan.native_sidecar {
        init.insert(1, proxy);
    } else {
        array(spec, "containers").insert(0, proxy);
    }
    array(spec, "volumes").extend(render::volumes(settings));
    let metadata = object(&mut out, "metadata");
    object_in(metadata, "annotations").insert(INJECTED.into(), json!("true"));
    Ok(Outcome::Injected(out))
}

/// The workload a pod belongs to, as traces name it: its owner (a
/// ReplicaSet's name without the `pod-template-hash`, so a Deployment's
/// name), else its `generateName` so trimmed, else its
/// `app.kubernetes.io/name` or `app` label (a pod template has no owner).
fn workload(pod: &Value) -> Option<String> {
    let meta = pod.get("metadata")?;
    let label = |k: &str| meta.get("labels")?.get(k)?.as_str();
    let hash = label("pod-template-hash");
    let trim = |name: &str| {
        let name = name.trim_end_matches('-');
        let name = match hash {
            Some(h) => name
                .strip_suffix(h)
                .map_or(name, |n| n.trim_end_matches('-')),
            None => name,
        };
        (!name.is_empty()).then(|| name.to_owned())
    };
    meta.get("ownerReferences")
        .and_then(|o| o.get(0)?.get("name")?.as_str())
        .and_then(trim)
        .or_else(|| meta.get("generateName")?.as_str().and_then(trim))
        .or_else(|| {
            label("app.kubernetes.io/name")
                .or_else(|| label("app"))
                .map(str::to_owned)
        })
}

/// The opt-in rule: the pod's `weft.dev/inject` wins over its namespace's.
fn decide(
    pod: &BTreeMap<String, String>,
    namespace: &BTreeMap<String, String>,
    opt_in: OptIn,
) -> Option<Skip> {
    let said = match (pod.get(INJECT), namespace.get(INJECT), opt_in) {
        (Some(v), _, _) => Some(("pod", v)),
        (None, _, OptIn::Assumed) => None,
        (None, Some(v), OptIn::Required) => Some(("namespace", v)),
        (None, None, OptIn::Required) => return Some(Skip::NotEnabled),
    };
    match said {
        None => None,
        Some((_, v)) if v.trim() == "enabled" => None,
        Some((on, v)) if v.trim() == "disabled" => Some(Skip::Disabled { on }),
        Some((on, v)) => Some(Skip::InvalidInject {
            on,
            value: v.clone(),
        }),
    }
}

/// Removes what [`inject`] added: weft's containers and volumes (by
/// name), the `weft.dev/injected` annotation, `weft.dev/inject: enabled`
/// (which `weft inject` adds), and the lists, the annotation map and the
/// metadata left empty by that. Returns whether anything was removed.
pub fn uninject(pod: &mut Value) -> bool {
    let mut removed = false;
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        for (list, names) in [
            ("initContainers", &[INIT_CONTAINER, PROXY_CONTAINER][..]),
            ("containers", &[PROXY_CONTAINER][..]),
            ("volumes", &[TOKEN_VOLUME, ANCHORS_VOLUME][..]),
        ] {
            removed |= remove_named(spec, list, names);
        }
    }
    let Some(pod) = pod.as_object_mut() else {
        return removed;
    };
    let Some(metadata) = pod.get_mut("metadata").and_then(Value::as_object_mut) else {
        return removed;
    };
    let Some(a) = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    else {
        return removed;
    };
    let mut ours = a.remove(INJECTED).is_some();
    if a.get(INJECT).and_then(Value::as_str) == Some("enabled") {
        a.remove(INJECT);
        ours = true;
    }
    if ours && a.is_empty() {
        metadata.remove("annotations");
        if metadata.is_empty() {
            pod.remove("metadata");
        }
    }
    removed || ours
}

fn remove_named(spec: &mut Map<String, Value>, list: &str, names: &[&str]) -> bool {
    let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) else {
        return false;
    };
    let before = items.len();
    items.retain(|c| !c["name"].as_str().is_some_and(|n| names.contains(&n)));
    let removed = items.len() != before;
    if removed && items.is_empty() {
        spec.remove(list);
    }
    removed
}

fn has_container(pod: &Value, name: &str) -> bool {
    ["/spec/initContainers", "/spec/containers"]
        .iter()
        .any(|p| {
            pod.pointer(p)
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|c| c["name"] == name))
        })
}

/// `parent[key]` as an object, made (or replacing a null) if needed.
fn object<'a>(parent: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !parent.is_object() {
        *parent = json!({});
    }
    let map = parent.as_object_mut().expect("made an object");
    object_in(map, key)
}

fn object_in<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = map.entry(key).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("made an object")
}

fn array<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let slot = map.entry(key).or_insert_with(|| json!([]));
    if !slot.is_array() {
        *slot = json!([]);
    }
    slot.as_array_mut().expect("made an array")
}

#[cfg(test)]
mod tests;
