//! `weft check` against the fake API server: a healthy installation (the
//! chart's CRDs as shipped, and the objects its templates render, with
//! the chart's names, labels and weft-control's args) passes; each failure,
//! provoked on it, gives the line and exit status a user would see; the
//! API server away or hung gives a clear error within the timeout; `--pre`
//! reads versions, kubelets and RBAC (SelfSubjectAccessReviews answered
//! from what the test grants). The binary is run once end to end.

use base64::Engine;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use weft_control::check::{
    api, control, crds, dataplane, identity, run, setup, webhook, Options, Outcome, Report,
};
use weft_control::identity::ca;
use weft_tests::fakekube::{
    Access, FakeKube, Resource, CONFIG_MAPS, CUSTOM_RESOURCE_DEFINITIONS, DEPLOYMENTS,
    ENDPOINT_SLICES, EVENTS, MUTATING_WEBHOOKS, NAMESPACES, NODES, PODS, SECRETS, SERVICES,
};

const NS: &str = "weft-system";
const DAY: Duration = Duration::from_secs(86_400);

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The chart's CRDs, as shipped, established and served.
fn install_crds(kube: &FakeKube) {
    for crd in crds::SMI {
        let file = format!(
            "{}/../charts/weft/crds/{}.yaml",
            env!("CARGO_MANIFEST_DIR"),
            crd.plural
        );
        let mut obj: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        obj["status"] = json!({"conditions": [{"type": "Established", "status": "True"}]});
        kube.apply(&CUSTOM_RESOURCE_DEFINITIONS, obj);
        kube.register(&served(&crd));
    }
}

fn served(crd: &crds::Crd) -> Resource {
    let kind = crd.plural.trim_end_matches('s');
    Resource::new(crd.group, crd.version, kind, crd.plural, true)
}

fn control_pod(name: &str, ready: bool) -> Value {
    json!({
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"app.kubernetes.io/name": "weft", "app.kubernetes.io/component": "control"}},
        "spec": {"containers": [{"name": "weft-control"}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
            "containerStatuses": [{
                "name": "weft-control", "ready": ready, "restartCount": if ready {0} else {4},
                "image": "weft/weft-control:0.1.0", "imageID": "",
                "state": if ready { json!({"running": {}}) } else { json!({"waiting": {"reason": "CrashLoopBackOff"}}) },
            }],
        },
    })
}

fn deployment(ready: i32) -> Value {
    json!({
        "metadata": {"name": "weft-control", "namespace": NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "weft", "app.kubernetes.io/component": "control"}},
            "template": {"spec": {"containers": [{
                "name": "weft-control",
                "args": ["--source=kube", "--trust-domain=cluster.local",
                         "--identity-secret=weft-system/weft-issuer", "--webhook",
                         "--webhook-dns-names=weft-control.weft-system.svc",
                         "--webhook-configuration=weft-injector",
                         "--trust-anchors-configmap=weft-trust-anchors"],
            }]}},
        },
        "status": {"replicas": 2, "readyReplicas": ready, "updatedReplicas": 2, "availableReplicas": ready},
    })
}

fn issuer_secret(issuer_pem: &str, key_pem: &str, anchors_pem: &str) -> Value {
    weft_tests::fakekube::issuer_secret(NS, "weft-issuer", issuer_pem, key_pem, anchors_pem)
}

fn anchors(ns: &str, pem: &str) -> Value {
    json!({"metadata": {"name": "weft-trust-anchors", "namespace": ns}, "data": {"ca.crt": pem}})
}

fn webhook_config(bundle_pem: &str) -> Value {
    json!({
        "metadata": {"name": "weft-injector"},
        "webhooks": [{
            "name": "weft-injector.weft.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "clientConfig": {
                "service": {"name": "weft-control", "namespace": NS, "path": "/inject", "port": 8443},
                "caBundle": b64(bundle_pem),
            },
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        }],
    })
}

fn meshed_pod(name: &str, ready: bool) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "shop", "annotations": {"weft.dev/injected": "true"}},
        "spec": {
            "initContainers": [{"name": "weft-init"}, {"name": "weft-proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "web"}],
        },
        "status": {
            "phase": if ready {"Running"} else {"Pending"},
            "initContainerStatuses": [
                {"name": "weft-init", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "weft-proxy", "ready": ready, "restartCount": 0, "image": "p", "imageID": "",
                 "state": {"running": {}}},
            ],
        },
    })
}

/// A healthy installation in `kube`, with the issuer `ca` made.
fn healthy(kube: &FakeKube, ca: &ca::Generated) {
    kube.apply(&NAMESPACES, json!({"metadata": {"name": NS}}));
    kube.apply(
        &NAMESPACES,
        json!({"metadata": {"name": "shop", "annotations": {"weft.dev/inject": "enabled"}}}),
    );
    install_crds(kube);
    kube.apply(&DEPLOYMENTS, deployment(2));
    kube.apply(&PODS, control_pod("weft-control-a", true));
    kube.apply(&PODS, control_pod("weft-control-b", true));
    kube.apply(
        &SECRETS,
        issuer_secret(&ca.issuer_pem, &ca.issuer_key_pem, &ca.anchor_pem),
    );
    kube.apply(&CONFIG_MAPS, anchors(NS, &ca.anchor_pem));
    kube.apply(&CONFIG_MAPS, anchors("shop", &ca.anchor_pem));
    kube.apply(&MUTATING_WEBHOOKS, webhook_config(&ca.anchor_pem));
    kube.apply(
        &SERVICES,
        json!({
            "metadata": {"name": "weft-control", "namespace": NS},
            "spec": {"ports": [{"name": "grpc", "port": 8086}, {"name": "webhook", "port": 8443},
                               {"name": "admin", "port": 9990}]},
        }),
    );
    kube.apply(
        &ENDPOINT_SLICES,
        json!({
            "metadata": {"name": "weft-control-x1", "namespace": NS,
                         "labels": {"kubernetes.io/service-name": "weft-control"}},
            "addressType": "IPv4",
            "ports": [{"name": "webhook", "port": 8443}, {"name": "grpc", "port": 8086}],
            "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}},
                          {"addresses": ["10.244.1.7"], "conditions": {"ready": true}}],
        }),
    );
    kube.apply(&PODS, meshed_pod("web-1", true));
}

fn new_ca(issuer_life: Duration) -> ca::Generated {
    ca::generate("cluster.local", 3650 * DAY, issuer_life).unwrap()
}

fn options(url: String, pre: bool) -> Options {
    Options {
        pre,
        namespace: NS.into(),
        api_server: Some(url),
        timeout: Duration::from_secs(5),
    }
}

async fn check(kube: &FakeKube) -> Report {
    run(&options(kube.url(), false)).await
}

/// The outcome of check `description`, and its detail.
fn outcome(report: &Report, description: &str) -> (Outcome, String) {
    let c = report
        .find(description)
        .unwrap_or_else(|| panic!("no check {description:?} in\n{}", report.text()));
    (c.result, c.detail.clone().unwrap_or_default())
}

/// Every check but `except` succeeded.
fn others_succeed(report: &Report, except: &[&str]) {
    for c in report.groups.iter().flat_map(|g| &g.checks) {
        if !except.contains(&c.description.as_str()) {
            assert_eq!(
                c.result,
                Outcome::Success,
                "{}\n{}",
                c.description,
                report.text()
            );
        }
    }
}

#[tokio::test]
async fn a_healthy_installation_passes() {
    let kube = FakeKube::start();
    healthy(&kube, &new_ca(365 * DAY));
    let report = check(&kube).await;
    println!("{}", report.text());
    others_succeed(&report, &[]);
    assert!(report.success);
    let names: Vec<&str> = report.groups.iter().map(|g| g.name).collect();
    assert_eq!(
        names,
        [
            "kubernetes-api",
            "weft-control",
            "weft-identity",
            "weft-webhook",
            "weft-data-plane"
        ]
    );
    assert!(outcome(&report, identity::EXPIRY)
        .1
        .ends_with(", in 364 days"));
    assert_eq!(outcome(&report, dataplane::PROXIES).1, "1 meshed pod(s)");
}

#[tokio::test]
async fn a_missing_crd_fails_and_skips_the_served_check() {
    let kube = FakeKube::start();
    healthy(&kube, &new_ca(365 * DAY));
    kube.delete(
        &CUSTOM_RESOURCE_DEFINITIONS,
        "",
        "tcproutes.specs.smi-spec.io",
    );
    let report = check(&kube).await;
    assert_eq!(
        outcome(&report, crds::INSTALLED),
        (
            Outcome::Error,
            "tcproutes.specs.smi-spec.io: not installed".into()
        )
    );
    assert_eq!(outcome(&report, crds::SERVED).0, Outcome::Skipped);
    others_succeed(&report, &[crds::INSTALLED, crds::SERVED]);
    assert!(!report.success);
    assert!(report.text().contains(
        "× the SMI CRDs are installed\n    tcproutes.specs.smi-spec.io: not installed\n    hint: kubectl apply -f charts/weft/crds/"
    ));
}

#[tokio::test]
async fn an_unready_replica_is_named() {
    let kube = FakeKube::start();
    healthy(&kube, &new_ca(365 * DAY));
    kube.apply(&DEPLOYMENTS, deployment(1));
    kube.apply(&PODS, control_pod("weft-control-b", false));
    let report = check(&kube).await;
    println!("{}", report.text());
    let (result, detail) = outcome(&report, control::REPLICAS);
    assert_eq!(result, Outcome::Error);
    assert_eq!(
        detail,
        "1 of 2 ready (2 up to date, 2 pods)\nweft-system/weft-control-b: weft-control not ready (waiting: CrashLoopBackOff, 4 restarts)"
    );
    others_succeed(&report, &[control::REPLICAS]);
}

#[tokio::test]
async fn an_issuer_expiring_in_10_days_is_a_warning() {
    let kube = FakeKube::start();
    healthy(&kube, &new_ca(10 * DAY));
    let report = check(&kube).await;
    let (result, detail) = outcome(&report, identity::EXPIRY);
    assert_eq!(result, Outcome::Warning);
    assert!(detail.ends_with(", in 9 days: under 30 days"), "{detail}");
    others_succeed(&report, &[identity::EXPIRY]);
    assert!(report.success, "a warning does not fail");
}

/// A trust anchor and an issuer that expired yesterday.
fn expired_ca() -> ca::Generated {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let now = time::OffsetDateTime::now_utc();
    let params = |cn: &str, not_after: time::OffsetDateTime| {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = now - time::Duration::days(30);
        p.not_after = not_after;
        p
    };
    let anchor_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let anchor_params = params("anchor", now + time::Duration::days(3650));
    let anchor = anchor_params.self_signed(&anchor_key).unwrap();
    let issuer_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let signer = rcgen::Issuer::new(anchor_params, anchor_key);
    let issuer = params("issuer", now - time::Duration::days(1))
        .signed_by(&issuer_key, &signer)
        .unwrap();
    ca::Generated {
        anchor_pem: anchor.pem(),
        anchor_key_pem: String::new(),
        issuer_pem: issuer.pem(),
        issuer_key_pem: issuer_key.serialize_pem(),
    }
}

#[tokio::test]
async fn an_expired_issuer_fails() {
    let kube = FakeKube::start();
    healthy(&kube, &expired_ca());
    let report = check(&kube).await;
    let (result, detail) = outcome(&report, identity::EXPIRY);
    assert_eq!(result, Outcome::Error);
    assert!(detail.starts_with("expired at "), "{detail}");
    others_succeed(&report, &[identity::EXPIRY]);
    assert!(!report.success);
}

#[tokio::test]
async fn missing_trust_anchors_warn_in_the_control_plane_and_fail_in_injected_namespaces() {
    let kube = FakeKube::start();
    healthy(&kube, &new_ca(365 * DAY));
    kube.delete(&CONFIG_MAPS, NS, "weft-trust-anchors");
    kube.delete(&CONFIG_MAPS, "shop", "weft-trust-anchors");
    let report = check(&kube).await;
    assert_eq!(
        outcome(&report, identity::ANCHORS),
        (
            Outcome::Warning,
            "no ConfigMap weft-system/weft-trust-anchors (no proxy runs in the control plane's namespace)"
                .into()
        )
    );
    let (result, detail) = outcome(&report, identity::NAMESPACES);
    assert_eq!(result, Outcome::Error);
    assert!(
        detail.starts_with("shop: no ConfigMap weft-trust-anchors"),
        "{detail}"
    );
    others_succeed(&report, &[identity::ANCHORS, identity::NAMESPACES]);

    // Anchors of another CA in the injected namespace: they differ.
    kube.apply(&CONFIG_MAPS, anchors(NS, &new_ca(DAY).anchor_pem));
    let report = check(&kube).await;
    assert!(outcome(&report, identity::ANCHORS)
        .1
        .contains("differs from the issuer Secret's"));
}

#[tokio::test]
async fn a_wrong_ca_bundle_fails() {
    let kube = FakeKube::start();
    healthy(&kube, &new_ca(365 * DAY));
    kube.apply(&MUTATING_WEBHOOKS, webhook_config(&new_ca(DAY).anchor_pem));
    let report = check(&kube).await;
    let (result, detail) = outcome(&report, webhook::BUNDLE);
    assert_eq!(result, Outcome::Error);
    assert!(
        detail.starts_with(
            "webhook weft-injector.weft.dev: caBundle does not verify certificates of the issuer"
        ),
        "{detail}"
    );
    others_succeed(&report, &[webhook::BUNDLE]);

    // Empty, as before weft-control filled it in.
    let mut empty = webhook_config("");
    empty["webhooks"][0]["clientConfig"]
        .as_object_mut()
        .unwrap()
        .remove("caBundle");
    kube.apply(&MUTATING_WEBHOOKS, empty);
    let report = check(&kube).await;
    assert!(outcome(&report, webhook::BUNDLE)
        .1
        .contains("caBundle is empty"));
}

#[tokio::test]
async fn a_webhook_pointing_elsewhere_fails_and_skips_its_endpoints() {
    let kube = FakeKube::start();
    let ca = new_ca(365 * DAY);
    healthy(&kube, &ca);
    let mut elsewhere = webhook_config(&ca.anchor_pem);
    elsewhere["webhooks"][0]["clientConfig"]["service"]["port"] = json!(443);
    kube.apply(&MUTATING_WEBHOOKS, elsewhere);
    let report = check(&kube).await;
    assert_eq!(
        outcome(&report, webhook::TARGET),
        (
            Outcome::Error,
            "webhook weft-injector.weft.dev: calls weft-system/weft-control:443/inject, not weft-system/weft-control:8443/inject".into()
        )
    );
    assert_eq!(outcome(&report, webhook::ENDPOINTS).0, Outcome::Skipped);
}

#[tokio::test]
async fn a_meshed_pods_unready_proxy_fails() {
    let kube = FakeKube::start();
    healthy(&kube, &new_ca(365 * DAY));
    kube.apply(&PODS, meshed_pod("web-2", false));
    let report = check(&kube).await;
    assert_eq!(
        outcome(&report, dataplane::PROXIES),
        (
            Outcome::Error,
            "1 of 2 meshed pod(s) not ready:\nshop/web-2: weft-proxy not ready (running, readiness probe failing)".into()
        )
    );
    others_succeed(&report, &[dataplane::PROXIES]);
}

#[tokio::test]
async fn a_skipped_pod_in_an_injected_namespace_is_a_warning_with_the_injectors_reason() {
    let kube = FakeKube::start();
    healthy(&kube, &new_ca(365 * DAY));
    kube.apply(
        &PODS,
        json!({
            "metadata": {"name": "agent-x1", "namespace": "shop",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent",
                                              "uid": "u1", "controller": true}]},
            "spec": {"hostNetwork": true, "containers": [{"name": "agent"}]},
            "status": {"phase": "Running"},
        }),
    );
    // What weft-control's Recorder writes on the pod's owner.
    kube.apply(
        &EVENTS,
        json!({
            "metadata": {"name": "agent.1", "namespace": "shop"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "type": "Warning", "reason": "WeftNotInjected", "action": "Admit",
            "reportingController": "weft-control", "reportingInstance": "weft-control-a",
            "note": "weft: not injected: the pod uses hostNetwork",
            "regarding": {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "namespace": "shop"},
        }),
    );
    // A pod created before the namespace was enabled: no Event, the reason worked out.
    kube.apply(
        &PODS,
        json!({"metadata": {"name": "old", "namespace": "shop"},
               "spec": {"containers": [{"name": "app"}]}, "status": {"phase": "Running"}}),
    );
    let report = check(&kube).await;
    println!("{}", report.text());
    let (result, detail) = outcome(&report, dataplane::SKIPPED);
    assert_eq!(result, Outcome::Warning);
    assert_eq!(
        detail,
        "2 pod(s) without a proxy:\n\
         shop/agent-x1: not injected: the pod uses hostNetwork\n\
         shop/old: not injected at admission: created before weft.dev/inject was enabled, or while the webhook did not answer (failurePolicy: Ignore)"
    );
    others_succeed(&report, &[dataplane::SKIPPED]);
    assert!(report.success);
}

#[tokio::test]
async fn an_unreachable_api_server_fails_once_and_skips_the_rest() {
    let url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let started = Instant::now();
    let report = run(&options(url.clone(), false)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let (result, detail) = outcome(&report, api::QUERY);
    assert_eq!(result, Outcome::Error);
    assert!(
        detail.starts_with(&format!("{url}: GET /version: ")),
        "{detail}"
    );
    let later: Vec<Outcome> = report.groups[1..]
        .iter()
        .flat_map(|g| &g.checks)
        .map(|c| c.result)
        .collect();
    assert!(
        later.len() > 10 && later.iter().all(|r| *r == Outcome::Skipped),
        "{later:?}"
    );
    assert_eq!(outcome(&report, api::VERSION).0, Outcome::Skipped);
    assert!(!report.success);
}

#[tokio::test]
async fn a_hung_api_server_times_out_within_the_limit() {
    let kube = FakeKube::start();
    kube.set_latency(Duration::from_secs(60));
    let started = Instant::now();
    let report = run(&Options {
        timeout: Duration::from_millis(500),
        ..options(kube.url(), false)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let (result, detail) = outcome(&report, api::QUERY);
    assert_eq!(result, Outcome::Error);
    assert!(
        detail.ends_with("GET /version: no answer within 500ms"),
        "{detail}"
    );
}

#[tokio::test]
async fn kubernetes_1_28_fails_the_version_check() {
    let kube = FakeKube::start();
    healthy(&kube, &new_ca(365 * DAY));
    kube.set_version("1", "28");
    let report = check(&kube).await;
    let (result, detail) = outcome(&report, api::VERSION);
    assert_eq!(result, Outcome::Error);
    assert!(
        detail.starts_with("the API server is 1.28 (v1.28.0-weft-fakekube); weft needs 1.29"),
        "{detail}"
    );
    let pre = run(&options(kube.url(), true)).await;
    assert_eq!(outcome(&pre, api::VERSION).0, Outcome::Error);
    assert_eq!(outcome(&pre, api::SIDECARS).0, Outcome::Skipped);
}

fn node(name: &str, kubelet: &str) -> Value {
    json!({"metadata": {"name": name}, "status": {"nodeInfo": {
        "kubeletVersion": kubelet, "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
        "kernelVersion": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux",
        "osImage": "", "systemUUID": ""}}})
}

#[tokio::test]
async fn pre_checks_an_admin_on_an_empty_cluster() {
    let kube = FakeKube::start();
    kube.allow(Access::all());
    kube.apply(&NODES, node("n1", "v1.35.0"));
    let report = run(&options(kube.url(), true)).await;
    println!("{}", report.text());
    others_succeed(&report, &[]);
    assert_eq!(
        outcome(&report, api::SIDECARS).1,
        "API server and 1 kubelet(s) 1.29+: SidecarContainers is on by default"
    );
    // The namespace is missing, so creating it is asked too.
    assert!(outcome(&report, setup::CLUSTER).1.ends_with("namespaces"));
}

#[tokio::test]
async fn pre_names_what_rbac_denies_old_kubelets_and_leftover_crds() {
    let kube = FakeKube::start();
    kube.apply(&NAMESPACES, json!({"metadata": {"name": NS}}));
    // A namespace admin: everything in weft-system, nothing cluster-wide
    // but creating CRDs.
    kube.allow(Access::in_namespace("*", "*", "*", NS));
    kube.allow(Access::everywhere(
        "create",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
    ));
    kube.allow(Access::everywhere("list", "", "nodes"));
    kube.apply(&NODES, node("n1", "v1.35.0"));
    kube.apply(&NODES, node("old", "v1.28.15"));
    kube.apply(
        &CUSTOM_RESOURCE_DEFINITIONS,
        json!({"metadata": {"name": "traffictargets.access.smi-spec.io"},
               "spec": {"group": "access.smi-spec.io", "scope": "Namespaced",
                        "names": {"kind": "TrafficTarget", "plural": "traffictargets"},
                        "versions": [{"name": "v1alpha2", "served": true, "storage": true}]}}),
    );
    let report = run(&options(kube.url(), true)).await;
    let (result, detail) = outcome(&report, setup::CLUSTER);
    assert_eq!(result, Outcome::Error);
    assert_eq!(
        detail.lines().collect::<Vec<_>>(),
        [
            "create clusterroles.rbac.authorization.k8s.io: not allowed (fakekube: no rule the test granted covers it)",
            "create clusterrolebindings.rbac.authorization.k8s.io: not allowed (fakekube: no rule the test granted covers it)",
            "create mutatingwebhookconfigurations.admissionregistration.k8s.io: not allowed (fakekube: no rule the test granted covers it)",
        ]
    );
    assert_eq!(outcome(&report, setup::NAMESPACED).0, Outcome::Success);
    assert_eq!(
        outcome(&report, setup::CRDS),
        (
            Outcome::Error,
            "traffictargets.access.smi-spec.io: does not serve v1alpha3 (versions v1alpha2); weft reads v1alpha3".into()
        )
    );
    assert_eq!(
        outcome(&report, api::SIDECARS),
        (
            Outcome::Error,
            "kubelets older than 1.29 do not run native sidecars:\nold: kubelet v1.28.15".into()
        )
    );
}

/// The chart's own objects, as `scripts/chart-test` rendered them for
/// default values (skipped, as `chart.rs`, when not rendered), plus what a
/// running cluster adds (the Deployment's status and pods with its
/// template's labels, the Service's EndpointSlice, the caBundle weft-control
/// fills in with the chart's anchors, an injected namespace): the check
/// finds everything under the names, labels and args the chart gives.
#[tokio::test]
async fn the_charts_rendered_objects_pass_once_running() {
    for case in ["default", "one-replica", "classic-sidecars", "tracing"] {
        let Some(report) = rendered_and_running(case).await else {
            return;
        };
        others_succeed(&report, &[]);
        assert!(report.success, "{case}");
    }
    // Without the webhook its checks are skipped, saying why.
    let Some(report) = rendered_and_running("no-webhook").await else {
        return;
    };
    others_succeed(&report, webhook::DESCRIPTIONS);
    assert_eq!(
        report.find(webhook::CONFIG).unwrap().detail.as_deref(),
        Some("weft-control runs without --webhook (webhook.enabled=false)")
    );
}

/// The report on chart `case` installed and running; `None` when it was
/// not rendered.
async fn rendered_and_running(case: &str) -> Option<Report> {
    let objects = weft_tests::chart::rendered(case)?;
    let kube = FakeKube::start();
    kube.apply(&NAMESPACES, json!({"metadata": {"name": NS}}));
    install_crds(&kube);
    for o in &objects {
        let r = match o["kind"].as_str().unwrap_or("") {
            "Deployment" => DEPLOYMENTS,
            "Service" => SERVICES,
            "Secret" => SECRETS,
            "ConfigMap" => CONFIG_MAPS,
            "MutatingWebhookConfiguration" => MUTATING_WEBHOOKS,
            // Not read by the check (ServiceAccount, RBAC, the PDB), or
            // installed above from crds/.
            _ => continue,
        };
        kube.apply(&r, o.clone());
    }
    let deploy = weft_tests::chart::one(&objects, "Deployment");
    assert_eq!(deploy["metadata"]["namespace"], NS);
    let replicas = deploy["spec"]["replicas"].as_i64().unwrap();
    let mut running = deploy.clone();
    running["status"] =
        json!({"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas});
    kube.apply(&DEPLOYMENTS, running);
    for i in 0..replicas {
        let mut pod = control_pod(&format!("weft-control-{i}"), true);
        pod["metadata"]["labels"] = deploy["spec"]["template"]["metadata"]["labels"].clone();
        kube.apply(&PODS, pod);
    }
    let service = weft_tests::chart::one(&objects, "Service");
    kube.apply(
        &ENDPOINT_SLICES,
        json!({
            "metadata": {"name": "weft-control-r1", "namespace": NS,
                         "labels": {"kubernetes.io/service-name": service["metadata"]["name"]}},
            "addressType": "IPv4",
            "ports": service["spec"]["ports"].as_array().unwrap().iter()
                .map(|p| json!({"name": p["name"], "port": p["port"]})).collect::<Vec<_>>(),
            "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}}],
        }),
    );
    let anchors_pem = weft_tests::chart::one(&objects, "ConfigMap")["data"]["ca.crt"]
        .as_str()
        .unwrap()
        .to_owned();
    let webhooks = objects
        .iter()
        .filter(|o| o["kind"] == "MutatingWebhookConfiguration");
    for webhook in webhooks {
        let mut webhook = webhook.clone();
        for w in webhook["webhooks"].as_array_mut().unwrap() {
            w["clientConfig"]["caBundle"] = json!(b64(&anchors_pem));
        }
        kube.apply(&MUTATING_WEBHOOKS, webhook);
    }
    kube.apply(
        &NAMESPACES,
        json!({"metadata": {"name": "shop", "annotations": {"weft.dev/inject": "enabled"}}}),
    );
    kube.apply(&CONFIG_MAPS, anchors("shop", &anchors_pem));
    kube.apply(&PODS, meshed_pod("web-1", true));
    Some(check(&kube).await)
}

/// The binary, end to end: JSON on stdout, exit 0 when healthy, 1 once a
/// check fails, 64 for a bad flag.
#[test]
fn the_cli_writes_json_and_exits_1_on_a_failure() {
    let kube = FakeKube::start();
    healthy(&kube, &new_ca(365 * DAY));
    let weft = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["check", "--kube-api-server", &kube.url()])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = weft(&["-o", "json", "--timeout", "5s"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["success"], true);
    assert_eq!(json["categories"][0]["categoryName"], "kubernetes-api");
    assert_eq!(
        json["categories"][4]["checks"][0]["description"],
        dataplane::PROXIES
    );

    kube.delete(&SECRETS, NS, "weft-issuer");
    let out = weft(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("× the issuer Secret holds a valid issuer\n    no Secret weft-system/weft-issuer\n    hint: "), "{text}");
    assert!(text.contains("- the issuer certificate is within its validity (skipped: there is no valid issuer Secret)"), "{text}");
    assert!(text.ends_with("Status check results are ×\n"), "{text}");

    let out = weft(&["--timeout", "0s"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be above 0"));
}
