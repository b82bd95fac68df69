//! The containers and volumes injected into a pod, written from a [`Plan`]:
//! weft-init (root with NET_ADMIN and NET_RAW only, its flags from the
//! plan) and weft-proxy (uid 2102, no capabilities, configured by
//! `WEFT_PROXY_*` variables, probes on its admin port), with the projected
//! ServiceAccount token and the trust anchors it mounts.

use serde_json::{json, Value};

use super::annotations::Plan;
use super::Settings;

/// Container and volume names; `weft uninject` removes exactly these.
pub const INIT_CONTAINER: &str = "weft-init";
pub const PROXY_CONTAINER: &str = "weft-proxy";
pub const TOKEN_VOLUME: &str = "weft-identity-token";
pub const ANCHORS_VOLUME: &str = "weft-trust-anchors";

/// Where the proxy finds its token and the trust anchors.
pub const TOKEN_DIR: &str = "/var/run/weft/identity";
pub const ANCHORS_DIR: &str = "/var/run/weft/trust-anchors";

/// The fixed ports and uid (ARCHITECTURE: the chart, the injector and the
/// proxy agree on them).
pub const PROXY_UID: u32 = 2102;
pub const OUTBOUND_PORT: u16 = 4140;
pub const INBOUND_PORT: u16 = 4143;
pub const ADMIN_PORT: u16 = 4191;

/// How long a native sidecar may take to become ready before the kubelet
/// restarts it: `STARTUP_FAILURES` probes a second apart.
const STARTUP_FAILURES: u32 = 120;

/// weft-init, with the redirect the plan asks for.
pub fn init_container(plan: &Plan) -> Value {
    let mut args = vec![
        format!("--proxy-uid={PROXY_UID}"),
        format!("--inbound-port={INBOUND_PORT}"),
        format!("--outbound-port={OUTBOUND_PORT}"),
        format!("--admin-port={ADMIN_PORT}"),
    ];
    let mut list = |flag: &str, items: &[String]| {
        if !items.is_empty() {
            args.push(format!("--{flag}={}", items.join(",")));
        }
    };
    list("skip-inbound-ports", &plan.skip_inbound_ports);
    list("skip-outbound-ports", &plan.skip_outbound_ports);
    list("skip-outbound-cidrs", &plan.skip_outbound_cidrs);
    json!({
        "name": INIT_CONTAINER,
        "image": plan.init_image,
        "args": args,
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    })
}

/// weft-proxy: a native sidecar (`restartPolicy: Always`, a startup probe
/// on `/ready`) or, with `native_sidecar` off, a classic container whose
/// `postStart` hook holds the app back until `/ready`.
pub fn proxy_container(plan: &Plan, settings: &Settings) -> Value {
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let var = |name: &str, value: &str| json!({"name": name, "value": value});
    let mut env = vec![
        field("WEFT_PROXY_POD_NAME", "metadata.name"),
        field("WEFT_PROXY_POD_NAMESPACE", "metadata.namespace"),
        field("WEFT_PROXY_NODE_NAME", "spec.nodeName"),
        field("WEFT_PROXY_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        var("WEFT_PROXY_CONTROL_ADDR", &settings.proxy_control_addr),
        var(
            "WEFT_PROXY_IDENTITY_TOKEN_FILE",
            &format!("{TOKEN_DIR}/token"),
        ),
        var(
            "WEFT_PROXY_IDENTITY_TRUST_ANCHORS",
            &format!("{ANCHORS_DIR}/ca.crt"),
        ),
        var("WEFT_PROXY_TRUST_DOMAIN", &settings.trust_domain),
        var("WEFT_PROXY_LOG", &plan.log_level),
    ];
    if !plan.opaque_ports.is_empty() {
        let ports: Vec<String> = plan.opaque_ports.iter().map(u16::to_string).collect();
        env.push(var("WEFT_PROXY_OPAQUE_PORTS", &ports.join(",")));
    }
    for (name, value) in [
        ("WEFT_PROXY_SHUTDOWN_GRACE", &plan.shutdown_grace),
        (
            "WEFT_PROXY_DEFAULT_INBOUND_POLICY",
            &plan.default_inbound_policy,
        ),
        (
            "WEFT_PROXY_TRACE_SAMPLE_PERCENT",
            &plan.trace_sample_percent,
        ),
        (
            "WEFT_PROXY_TRACE_COLLECTOR_ADDR",
            &settings.proxy_trace_collector_addr,
        ),
        ("WEFT_PROXY_TRACE_SERVICE_NAME", &plan.workload),
    ] {
        if let Some(v) = value {
            env.push(var(name, v));
        }
    }
    let probe = |path: &str| json!({"httpGet": {"path": path, "port": ADMIN_PORT}});
    let mut proxy = json!({
        "name": PROXY_CONTAINER,
        "image": plan.proxy_image,
        "env": env,
        "ports": [
            {"name": "weft-inbound", "containerPort": INBOUND_PORT, "protocol": "TCP"},
            {"name": "weft-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "livenessProbe": {"periodSeconds": 10, "failureThreshold": 3, "httpGet": probe("/live")["httpGet"]},
        "readinessProbe": {"periodSeconds": 10, "failureThreshold": 3, "httpGet": probe("/ready")["httpGet"]},
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true},
            {"name": ANCHORS_VOLUME, "mountPath": ANCHORS_DIR, "readOnly": true},
        ],
    });
    let resources = resources(plan);
    if resources.as_object().is_some_and(|r| !r.is_empty()) {
        proxy["resources"] = resources;
    }
    if plan.native_sidecar {
        proxy["restartPolicy"] = json!("Always");
        proxy["startupProbe"] = json!({
            "periodSeconds": 1,
            "failureThreshold": STARTUP_FAILURES,
            "httpGet": probe("/ready")["httpGet"],
        });
    } else {
        proxy["lifecycle"] = json!({
            "postStart": {"exec": {"command": ["weft-proxy", "await", "--timeout=2m"]}},
        });
    }
    proxy
}

fn resources(plan: &Plan) -> Value {
    let pair = |cpu: &Option<String>, memory: &Option<String>| {
        let mut m = serde_json::Map::new();
        if let Some(c) = cpu {
            m.insert("cpu".into(), json!(c));
        }
        if let Some(mem) = memory {
            m.insert("memory".into(), json!(mem));
        }
        m
    };
    let mut out = serde_json::Map::new();
    let requests = pair(&plan.cpu_request, &plan.memory_request);
    let limits = pair(&plan.cpu_limit, &plan.memory_limit);
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    Value::Object(out)
}

/// The proxy's volumes: a projected ServiceAccount token for weft's
/// audience, short-lived (the kubelet renews it), and the trust anchors.
pub fn volumes(settings: &Settings) -> [Value; 2] {
    [
        json!({
            "name": TOKEN_VOLUME,
            "projected": {"sources": [{"serviceAccountToken": {
                "audience": settings.token_audience,
                "expirationSeconds": settings.token_expiry.as_secs(),
                "path": "token",
            }}]},
        }),
        json!({
            "name": ANCHORS_VOLUME,
            "configMap": {"name": settings.trust_anchors_configmap, "items": [{"key": "ca.crt", "path": "ca.crt"}]},
        }),
    ]
}
