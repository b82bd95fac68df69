use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::manifest::{process, Mode};
use super::*;

fn pod(annotations: Value) -> Value {
    json!({
        "metadata": {"name": "web", "annotations": annotations, "labels": {"app": "web"}},
        "spec": {
            "serviceAccountName": "web",
            "initContainers": [{"name": "migrate", "image": "app:1"}],
            "containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "someFutureField": {"kept": true},
        },
    })
}

fn ns(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn injected(pod: &Value, namespace: &[(&str, &str)]) -> Value {
    match inject(pod, &ns(namespace), &Settings::default(), OptIn::Required) {
        Ok(Outcome::Injected(p)) => p,
        other => panic!("not injected: {other:?}"),
    }
}

fn skipped(pod: &Value, namespace: &[(&str, &str)]) -> Skip {
    match inject(pod, &ns(namespace), &Settings::default(), OptIn::Required) {
        Ok(Outcome::Skipped(s)) => s,
        other => panic!("not skipped: {other:?}"),
    }
}

fn denied(annotations: Value) -> Denied {
    let mut a = annotations;
    a["weft.dev/inject"] = json!("enabled");
    match inject(
        &pod(a),
        &BTreeMap::new(),
        &Settings::default(),
        OptIn::Required,
    ) {
        Err(d) => d,
        other => panic!("not denied: {other:?}"),
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|l| l.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|l| pod["spec"][l].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str()
}

fn args(c: &Value) -> Vec<&str> {
    c["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn the_defaults_are_the_flags_defaults() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }
    let parsed = <Cli as clap::Parser>::try_parse_from(["weft"])
        .unwrap()
        .settings;
    // The environment of the test run may set WEFT_CONTROL_* variables.
    if std::env::vars().all(|(k, _)| !k.starts_with("WEFT_CONTROL_")) {
        assert_eq!(parsed, Settings::default());
    }
    let err = <Cli as clap::Parser>::try_parse_from(["weft", "--proxy-token-expiry=5m"])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("under 10m"), "{err}");
}

#[test]
fn a_native_sidecar_comes_after_weft_init_and_before_the_apps_init_containers() {
    let p = injected(&pod(json!({"weft.dev/inject": "enabled"})), &[]);
    assert_eq!(
        names(&p["spec"]["initContainers"]),
        ["weft-init", "weft-proxy", "migrate"]
    );
    assert_eq!(names(&p["spec"]["containers"]), ["app"]);
    assert_eq!(
        names(&p["spec"]["volumes"]),
        ["data", "weft-identity-token", "weft-trust-anchors"]
    );
    assert_eq!(p["metadata"]["annotations"]["weft.dev/injected"], "true");
    // Nothing of the app's changed.
    assert_eq!(p["spec"]["someFutureField"], json!({"kept": true}));
    assert_eq!(p["metadata"]["labels"], json!({"app": "web"}));
    let proxy = container(&p, "weft-proxy");
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(proxy["startupProbe"]["httpGet"]["port"], 4191);
    assert_eq!(proxy["livenessProbe"]["httpGet"]["path"], "/live");
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/ready");
    assert!(proxy.get("lifecycle").is_none());
}

#[test]
fn the_proxy_runs_as_2102_without_capabilities_and_weft_init_as_root_with_two() {
    let p = injected(&pod(json!({"weft.dev/inject": "enabled"})), &[]);
    let proxy = &container(&p, "weft-proxy")["securityContext"];
    assert_eq!(proxy["runAsUser"], 2102);
    assert_eq!(proxy["runAsNonRoot"], true);
    assert_eq!(proxy["readOnlyRootFilesystem"], true);
    assert_eq!(proxy["allowPrivilegeEscalation"], false);
    assert_eq!(proxy["capabilities"], json!({"drop": ["ALL"]}));
    let init = container(&p, "weft-init");
    let sc = &init["securityContext"];
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(
        sc["capabilities"],
        json!({"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]})
    );
    assert_eq!(
        args(init),
        [
            "--proxy-uid=2102",
            "--inbound-port=4143",
            "--outbound-port=4140",
            "--admin-port=4191"
        ]
    );
}

#[test]
fn the_proxy_gets_its_identity_and_the_downward_api() {
    let s = Settings::default();
    let p = injected(&pod(json!({"weft.dev/inject": "enabled"})), &[]);
    let proxy = container(&p, "weft-proxy");
    assert_eq!(proxy["image"], s.proxy_image);
    assert_eq!(
        env(proxy, "WEFT_PROXY_CONTROL_ADDR"),
        Some("weft-control.weft-system.svc.cluster.local:8086")
    );
    assert_eq!(
        env(proxy, "WEFT_PROXY_IDENTITY_TOKEN_FILE"),
        Some("/var/run/weft/identity/token")
    );
    assert_eq!(
        env(proxy, "WEFT_PROXY_IDENTITY_TRUST_ANCHORS"),
        Some("/var/run/weft/trust-anchors/ca.crt")
    );
    assert_eq!(env(proxy, "WEFT_PROXY_TRUST_DOMAIN"), Some("cluster.local"));
    let from_field = |name: &str| {
        proxy["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
    };
    assert_eq!(
        from_field("WEFT_PROXY_POD_NAME"),
        Some(json!("metadata.name"))
    );
    assert_eq!(
        from_field("WEFT_PROXY_POD_NAMESPACE"),
        Some(json!("metadata.namespace"))
    );
    assert_eq!(
        from_field("WEFT_PROXY_NODE_NAME"),
        Some(json!("spec.nodeName"))
    );
    assert_eq!(
        from_field("WEFT_PROXY_SERVICE_ACCOUNT"),
        Some(json!("spec.serviceAccountName"))
    );
    let token = &p["spec"]["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "weft");
    assert_eq!(token["expirationSeconds"], 3600);
    assert_eq!(
        p["spec"]["volumes"][2]["configMap"]["name"],
        "weft-trust-anchors"
    );
    assert_eq!(
        proxy["resources"],
        json!({"requests": {"cpu": "100m", "memory": "20Mi"}, "limits": {"memory": "250Mi"}})
    );
}

#[test]
fn every_annotation_reaches_its_flag() {
    let p = injected(
        &pod(json!({
            "weft.dev/inject": "enabled",
            "weft.dev/proxy-image": "registry.local/weft-proxy:dev",
            "weft.dev/proxy-log-level": "debug",
            "weft.dev/proxy-cpu-request": "50m",
            "weft.dev/proxy-cpu-limit": "1",
            "weft.dev/proxy-memory-request": "32Mi",
            "weft.dev/proxy-memory-limit": "64Mi",
            "weft.dev/skip-inbound-ports": "9000-9100, 8081",
            "weft.dev/skip-outbound-ports": "3306",
            "weft.dev/skip-outbound-cidrs": "169.254.169.254, 10.1.2.3/8",
            "weft.dev/opaque-ports": "3306,25",
            "weft.dev/shutdown-grace": "45s",
            "weft.dev/default-inbound-policy": "all-authenticated",
            "weft.dev/trace-sample-percent": "12.5",
        })),
        &[],
    );
    let proxy = container(&p, "weft-proxy");
    assert_eq!(proxy["image"], "registry.local/weft-proxy:dev");
    assert_eq!(env(proxy, "WEFT_PROXY_LOG"), Some("debug"));
    assert_eq!(
        proxy["resources"],
        json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "64Mi"}})
    );
    assert_eq!(env(proxy, "WEFT_PROXY_OPAQUE_PORTS"), Some("3306,25"));
    assert_eq!(env(proxy, "WEFT_PROXY_SHUTDOWN_GRACE"), Some("45s"));
    assert_eq!(
        env(proxy, "WEFT_PROXY_DEFAULT_INBOUND_POLICY"),
        Some("all-authenticated")
    );
    assert_eq!(env(proxy, "WEFT_PROXY_TRACE_SAMPLE_PERCENT"), Some("12.5"));
    let init = container(&p, "weft-init");
    let a = args(init);
    assert!(a.contains(&"--skip-inbound-ports=9000-9100,8081"), "{a:?}");
    assert!(a.contains(&"--skip-outbound-ports=3306"), "{a:?}");
    // CIDRs in weft-init's normalised form.
    assert!(
        a.contains(&"--skip-outbound-cidrs=169.254.169.254/32,10.0.0.0/8"),
        "{a:?}"
    );
}

#[test]
fn without_native_sidecars_the_proxy_is_the_first_container_and_awaits_ready() {
    let p = injected(
        &pod(json!({"weft.dev/inject": "enabled", "weft.dev/proxy-native-sidecar": "false"})),
        &[],
    );
    assert_eq!(
        names(&p["spec"]["initContainers"]),
        ["weft-init", "migrate"]
    );
    assert_eq!(names(&p["spec"]["containers"]), ["weft-proxy", "app"]);
    let proxy = container(&p, "weft-proxy");
    assert!(proxy.get("restartPolicy").is_none());
    assert!(proxy.get("startupProbe").is_none());
    assert_eq!(
        proxy["lifecycle"]["postStart"]["exec"]["command"],
        json!(["weft-proxy", "await", "--timeout=2m"])
    );
}

#[test]
fn namespace_annotations_are_inherited_and_the_pods_win() {
    let p = injected(
        &pod(json!({"weft.dev/proxy-log-level": "trace"})),
        &[
            ("weft.dev/inject", "enabled"),
            ("weft.dev/proxy-log-level", "info"),
            ("weft.dev/opaque-ports", "5432"),
            ("unrelated.io/x", "y"),
        ],
    );
    let proxy = container(&p, "weft-proxy");
    assert_eq!(env(proxy, "WEFT_PROXY_LOG"), Some("trace"));
    assert_eq!(env(proxy, "WEFT_PROXY_OPAQUE_PORTS"), Some("5432"));
    // Namespace annotations are read, not copied onto the pod.
    assert!(p["metadata"]["annotations"]
        .get("weft.dev/opaque-ports")
        .is_none());
}

#[test]
fn who_is_skipped_and_why() {
    let enabled = [("weft.dev/inject", "enabled")];
    assert_eq!(skipped(&pod(json!({})), &[]), Skip::NotEnabled);
    assert_eq!(
        skipped(&pod(json!({"weft.dev/inject": "disabled"})), &enabled),
        Skip::Disabled { on: "pod" }
    );
    assert_eq!(
        skipped(&pod(json!({})), &[("weft.dev/inject", "disabled")]),
        Skip::Disabled { on: "namespace" }
    );
    let bad = skipped(&pod(json!({"weft.dev/inject": "yes"})), &[]);
    assert_eq!(
        bad.to_string(),
        "weft.dev/inject: 'yes' on the pod is neither enabled nor disabled"
    );
    let once = injected(&pod(json!({})), &enabled);
    assert_eq!(skipped(&once, &enabled), Skip::AlreadyInjected);
    let mut host = pod(json!({}));
    host["spec"]["hostNetwork"] = json!(true);
    assert_eq!(skipped(&host, &enabled), Skip::HostNetwork);
    let mut tokenless = pod(json!({}));
    tokenless["spec"]["automountServiceAccountToken"] = json!(false);
    assert_eq!(skipped(&tokenless, &enabled), Skip::NoServiceAccountToken);
    // A pod that names weft-proxy itself (written by hand) counts as injected.
    let mut by_hand = pod(json!({}));
    by_hand["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "weft-proxy", "image": "x"}));
    assert_eq!(skipped(&by_hand, &enabled), Skip::AlreadyInjected);
}

#[test]
fn bad_values_deny_with_the_annotation_and_the_value() {
    let d = denied(json!({"weft.dev/skip-inbound-ports": "80,70000"}));
    assert_eq!(d.annotation, "weft.dev/skip-inbound-ports");
    assert_eq!(d.value, "80,70000");
    assert_eq!(
        d.to_string(),
        "annotation weft.dev/skip-inbound-ports: port 70000 is out of range 1-65535"
    );
    let d = denied(json!({"weft.dev/skip-outbound-cidrs": "10.0.0.0/33"}));
    assert_eq!(
        d.to_string(),
        "annotation weft.dev/skip-outbound-cidrs: '10.0.0.0/33' is not a CIDR: prefix length '33' must be 0-32"
    );
    let d = denied(json!({"weft.dev/proxy-memory-limit": "lots"}));
    assert_eq!(
        d.to_string(),
        "annotation weft.dev/proxy-memory-limit: 'lots' is not a quantity (like 100m, 0.5, 64Mi or 1G)"
    );
    for (name, value, says) in [
        (
            "weft.dev/skip-outbound-ports",
            "http",
            "'http' is not a port number",
        ),
        (
            "weft.dev/opaque-ports",
            "3306-3310",
            "opaque ports are single ports",
        ),
        (
            "weft.dev/proxy-native-sidecar",
            "yes",
            "'yes' is neither true nor false",
        ),
        ("weft.dev/shutdown-grace", "30", "needs a unit"),
        (
            "weft.dev/default-inbound-policy",
            "allow",
            "one of all-unauthenticated",
        ),
        ("weft.dev/trace-sample-percent", "101", "from 0 to 100"),
        ("weft.dev/proxy-log-level", "info,[", "is not a log filter"),
        ("weft.dev/proxy-image", "a b", "not an image reference"),
        ("weft.dev/proxy-cpu-request", "-1", "negative"),
    ] {
        let d = denied(json!({ name: value }));
        assert_eq!((d.annotation.as_str(), d.value.as_str()), (name, value));
        assert!(d.to_string().contains(says), "{name}: {d}");
    }
    let d = denied(json!({"weft.dev/proxy-memory-request": "1Gi"}));
    assert_eq!(
        d.to_string(),
        "annotation weft.dev/proxy-memory-request: '1Gi' is more than the limit '250Mi'"
    );
    // A bad value on a pod that is not injected denies nothing.
    let quiet = pod(json!({"weft.dev/proxy-memory-limit": "lots"}));
    assert_eq!(skipped(&quiet, &[]), Skip::NotEnabled);
}

#[test]
fn uninject_removes_exactly_what_inject_added() {
    for native in ["true", "false"] {
        let original = pod(json!({"weft.dev/proxy-native-sidecar": native}));
        let mut p = injected(&original, &[("weft.dev/inject", "enabled")]);
        assert!(uninject(&mut p));
        assert_eq!(p, original, "native {native}");
        assert!(!uninject(&mut p));
    }
    // Lists and maps that inject made are gone again.
    let bare = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app"}]}});
    let mut p = injected(&bare, &[("weft.dev/inject", "enabled")]);
    uninject(&mut p);
    assert_eq!(p, bare);
}

const WORKLOADS: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  annotations:
    weft.dev/opaque-ports: \"5432\"
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: web:1, futureField: 7}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: shop}
spec:
  schedule: '@daily'
  jobTemplate:
    spec:
      template:
        spec: {restartPolicy: Never, containers: [{name: job, image: job:1}]}
---
apiVersion: v1
kind: List
items:
- {apiVersion: apps/v1, kind: StatefulSet, metadata: {name: db}, spec: {template: {spec: {containers: [{name: db}]}}}}
- {apiVersion: apps/v1, kind: DaemonSet, metadata: {name: agent}, spec: {template: {spec: {hostNetwork: true, containers: [{name: a}]}}}}
- {apiVersion: apps/v1, kind: ReplicaSet, metadata: {name: rs}, spec: {template: {spec: {containers: [{name: r}]}}}}
- {apiVersion: batch/v1, kind: Job, metadata: {name: once}, spec: {template: {metadata: {annotations: {weft.dev/inject: disabled}}, spec: {containers: [{name: j}]}}}}
- {apiVersion: v1, kind: Pod, metadata: {name: solo}, spec: {containers: [{name: s}]}}
";

fn docs(text: &str) -> Vec<Value> {
    crate::sources::parse::documents(text)
        .iter()
        .map(|d| serde_saphyr::from_str::<Value>(d).unwrap())
        .filter(|d| !d.is_null())
        .collect()
}

#[test]
fn weft_inject_annotates_every_kind_of_workload_and_leaves_the_rest() {
    let (out, lines) = process(WORKLOADS, &Settings::default(), Mode::Annotate).unwrap();
    let summary: Vec<String> = lines.iter().map(ToString::to_string).collect();
    assert_eq!(
        summary,
        [
            "deployment/web (namespace shop): injected (annotated weft.dev/inject: enabled)",
            "cronjob/nightly (namespace shop): injected (annotated weft.dev/inject: enabled)",
            "statefulset/db (namespace default): injected (annotated weft.dev/inject: enabled)",
            "daemonset/agent (namespace default): skipped: the pod uses hostNetwork",
            "replicaset/rs (namespace default): injected (annotated weft.dev/inject: enabled)",
            "job/once (namespace default): skipped: weft.dev/inject: disabled on the pod",
            "pod/solo (namespace default): injected (annotated weft.dev/inject: enabled)",
        ]
    );
    let before = docs(WORKLOADS);
    let after = docs(&out);
    assert_eq!(after.len(), before.len());
    assert_eq!(after[0], before[0]); // the Namespace
    assert_eq!(after[1], before[1]); // the Service
    let template = &after[2]["spec"]["template"];
    assert_eq!(
        template["metadata"]["annotations"]["weft.dev/inject"],
        "enabled"
    );
    assert_eq!(template["spec"]["containers"][0]["futureField"], 7);
    assert_eq!(
        after[3].pointer("/spec/jobTemplate/spec/template/metadata/annotations/weft.dev~1inject"),
        Some(&json!("enabled"))
    );
    assert_eq!(
        after[4]["items"][4]["metadata"]["annotations"]["weft.dev/inject"],
        "enabled"
    );
    // Idempotent.
    let (again, lines) = process(&out, &Settings::default(), Mode::Annotate).unwrap();
    assert_eq!(again, out);
    assert!(lines.iter().all(|l| !l.changed));
    // And undone.
    let (undone, _) = process(&out, &Settings::default(), Mode::Uninject).unwrap();
    assert_eq!(docs(&undone), before);
}

#[test]
fn weft_inject_manual_writes_the_sidecar_with_the_namespace_annotations() {
    let (out, lines) = process(WORKLOADS, &Settings::default(), Mode::Manual).unwrap();
    assert!(lines[0].changed, "{lines:?}");
    let after = docs(&out);
    let template = &after[2]["spec"]["template"];
    assert_eq!(
        names(&template["spec"]["initContainers"]),
        ["weft-init", "weft-proxy"]
    );
    let proxy = container(template, "weft-proxy");
    // The Namespace in the same input lent its annotation.
    assert_eq!(env(proxy, "WEFT_PROXY_OPAQUE_PORTS"), Some("5432"));
    let cron = after[3].pointer("/spec/jobTemplate/spec/template").unwrap();
    assert_eq!(
        names(&cron["spec"]["initContainers"]),
        ["weft-init", "weft-proxy"]
    );
    let (again, lines) = process(&out, &Settings::default(), Mode::Manual).unwrap();
    assert_eq!(again, out);
    assert!(lines.iter().all(|l| !l.changed), "{lines:?}");
    let (undone, _) = process(&out, &Settings::default(), Mode::Uninject).unwrap();
    assert_eq!(docs(&undone), docs(WORKLOADS));
}

#[test]
fn weft_inject_refuses_bad_input_with_the_place() {
    let err = process("kind: [", &Settings::default(), Mode::Annotate).unwrap_err();
    assert!(err.starts_with("document 1: not valid YAML"), "{err}");
    let bad = "kind: Service\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {weft.dev/skip-outbound-cidrs: 10.0.0.0/33}\nspec: {containers: [{name: a}]}\n";
    let err = process(bad, &Settings::default(), Mode::Manual).unwrap_err();
    assert_eq!(
        err,
        "document 2: pod/p (namespace default): annotation weft.dev/skip-outbound-cidrs: '10.0.0.0/33' is not a CIDR: prefix length '33' must be 0-32"
    );
}

#[test]
fn the_proxy_gets_weft_controls_default_inbound_policy_unless_annotated() {
    let settings = Settings {
        default_inbound_policy: Some("deny".into()),
        ..Settings::default()
    };
    let policy = |annotations: Value| {
        let mut a = annotations;
        a["weft.dev/inject"] = json!("enabled");
        let Ok(Outcome::Injected(p)) =
            inject(&pod(a), &BTreeMap::new(), &settings, OptIn::Required)
        else {
            panic!("not injected")
        };
        env(
            container(&p, "weft-proxy"),
            "WEFT_PROXY_DEFAULT_INBOUND_POLICY",
        )
        .map(str::to_owned)
    };
    assert_eq!(policy(json!({})).as_deref(), Some("deny"));
    assert_eq!(
        policy(json!({"weft.dev/default-inbound-policy": "all-authenticated"})).as_deref(),
        Some("all-authenticated")
    );
    // weft inject (no weft-control default): the proxy's own.
    let plain = injected(&pod(json!({"weft.dev/inject": "enabled"})), &[]);
    assert_eq!(
        env(
            container(&plain, "weft-proxy"),
            "WEFT_PROXY_DEFAULT_INBOUND_POLICY"
        ),
        None
    );
}

#[test]
fn the_proxy_names_its_spans_after_the_workload_and_exports_where_weft_control_says() {
    let mut p = pod(json!({"weft.dev/inject": "enabled"}));
    p["metadata"]["generateName"] = json!("web-7d9f8c6b5-");
    p["metadata"]["labels"]["pod-template-hash"] = json!("7d9f8c6b5");
    p["metadata"]["ownerReferences"] =
        json!([{"kind": "ReplicaSet", "name": "web-7d9f8c6b5", "uid": "1"}]);
    let settings = Settings {
        proxy_trace_collector_addr: Some("jaeger.tracing:4317".into()),
        ..Settings::default()
    };
    let Ok(Outcome::Injected(out)) = inject(&p, &BTreeMap::new(), &settings, OptIn::Required)
    else {
        panic!("not injected")
    };
    let proxy = container(&out, "weft-proxy");
    assert_eq!(env(proxy, "WEFT_PROXY_TRACE_SERVICE_NAME"), Some("web"));
    assert_eq!(
        env(proxy, "WEFT_PROXY_TRACE_COLLECTOR_ADDR"),
        Some("jaeger.tracing:4317")
    );
    // A StatefulSet's pod: its owner's name as it is.
    let mut p = pod(json!({"weft.dev/inject": "enabled"}));
    p["metadata"]["ownerReferences"] = json!([{"kind": "StatefulSet", "name": "db", "uid": "2"}]);
    let proxy = container(&injected(&p, &[]), "weft-proxy").clone();
    assert_eq!(env(&proxy, "WEFT_PROXY_TRACE_SERVICE_NAME"), Some("db"));
    assert_eq!(env(&proxy, "WEFT_PROXY_TRACE_COLLECTOR_ADDR"), None);
    // A template without an owner: its app label.
    let proxy = container(
        &injected(&pod(json!({"weft.dev/inject": "enabled"})), &[]),
        "weft-proxy",
    )
    .clone();
    assert_eq!(env(&proxy, "WEFT_PROXY_TRACE_SERVICE_NAME"), Some("web"));
    assert!(host_port("jaeger:notaport").is_err() && host_port(":4317").is_err());
}
