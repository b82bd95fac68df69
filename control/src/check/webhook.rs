//! The `weft-webhook` group: the injector's MutatingWebhookConfiguration
//! exists, sends admissions to the weft-control Service (its name,
//! namespace, port 8443 and path `/inject`), that Service has ready
//! endpoints on the webhook port, and each webhook's `caBundle` verifies
//! the serving certificate weft-control presents.
//!
//! The serving certificate itself cannot be fetched from here: the pod
//! network is not reachable from where kubectl runs. What is verified is
//! what the API server will do with it: weft-control signs its serving
//! certificate with the issuer of its Secret (24 h, renewed), so the API
//! server accepts it when the issuer chains to a certificate of the
//! `caBundle`. weft-control keeps the bundle equal to the trust anchors;
//! a bundle that differs but still verifies (cert-manager's) is a success
//! with a note.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeSet;

use super::certs::{chains_to, pem_certs};
use super::identity::IssuerCerts;
use super::kube::Kube;
use super::layout::{Layout, CONTROL, WEBHOOK_PATH, WEBHOOK_PORT};
use super::report::{Check, Group};

pub const GROUP: &str = "weft-webhook";
pub const CONFIG: &str = "the injector's MutatingWebhookConfiguration exists";
pub const TARGET: &str = "it sends pod admissions to the weft-control Service";
pub const ENDPOINTS: &str = "the weft-control Service has ready webhook endpoints";
pub const BUNDLE: &str = "its caBundle verifies weft-control's serving certificate";
pub const DESCRIPTIONS: &[&str] = &[CONFIG, TARGET, ENDPOINTS, BUNDLE];

/// The webhook configuration weft's chart makes (`weft-injector` unless
/// weft-control is told another).
fn configuration_name(layout: &Layout) -> &str {
    if layout.webhook_configuration.is_empty() {
        "weft-injector"
    } else {
        &layout.webhook_configuration
    }
}

pub async fn check(kube: &Kube, layout: &Layout, issuer: Option<&IssuerCerts>) -> Group {
    let name = configuration_name(layout);
    let config = match kube.get_cluster::<MutatingWebhookConfiguration>(name).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            let mut g = Group::skipped(
                GROUP,
                &DESCRIPTIONS[1..],
                "there is no webhook configuration",
            );
            g.checks.insert(
                0,
                Check::error(
                    CONFIG,
                    format!("no MutatingWebhookConfiguration {name}: pods are not injected"),
                    "install with webhook.enabled=true (the chart's default)",
                ),
            );
            return g;
        }
        Err(e) => {
            let mut g = Group::skipped(
                GROUP,
                &DESCRIPTIONS[1..],
                "the webhook configuration could not be read",
            );
            g.checks.insert(
                0,
                Check::error(
                    CONFIG,
                    e.to_string(),
                    "may you read MutatingWebhookConfigurations?",
                ),
            );
            return g;
        }
    };
    let mut g = Group::new(GROUP);
    let webhooks = config.webhooks.clone().unwrap_or_default();
    if webhooks.is_empty() {
        g.push(Check::error(
            CONFIG,
            format!("{name} has no webhooks"),
            "helm upgrade weft charts/weft",
        ));
        g.checks
            .extend(Group::skipped(GROUP, &DESCRIPTIONS[1..], "it has no webhooks").checks);
        return g;
    }
    g.push(Check::success(CONFIG, Some(name.to_owned())));
    let wrong: Vec<String> = webhooks
        .iter()
        .filter_map(|w| target_problem(&w.name, &w.client_config, &layout.namespace))
        .collect();
    let service = kube.get::<Service>(&layout.namespace, CONTROL).await;
    let service_port = match &service {
        Ok(Some(s)) => s
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .find(|p| p.port == WEBHOOK_PORT)
            .cloned(),
        _ => None,
    };
    let mut target_problems = wrong;
    match (&service, &service_port) {
        (Ok(Some(_)), Some(_)) => {}
        (Ok(Some(_)), None) => target_problems.push(format!(
            "the Service {}/{CONTROL} has no port {WEBHOOK_PORT}",
            layout.namespace
        )),
        (Ok(None), _) => target_problems.push(format!(
            "there is no Service {}/{CONTROL}",
            layout.namespace
        )),
        (Err(e), _) => target_problems.push(e.to_string()),
    }
    let target_ok = target_problems.is_empty();
    if target_ok {
        g.push(Check::success(
            TARGET,
            Some(format!(
                "{CONTROL}.{}.svc:{WEBHOOK_PORT}{WEBHOOK_PATH}",
                layout.namespace
            )),
        ));
    } else {
        g.push(Check::error(
            TARGET,
            target_problems.join("\n"),
            "helm upgrade weft charts/weft (the chart's webhook configuration and Service agree)",
        ));
    }
    if target_ok {
        g.push(endpoints(kube, &layout.namespace, service_port.and_then(|p| p.name)).await);
    } else {
        g.push(Check::skipped(
            ENDPOINTS,
            "the webhook does not point at the weft-control Service",
        ));
    }
    match issuer {
        Some(issuer) => g.push(bundle(&webhooks, issuer)),
        None => g.push(Check::skipped(
            BUNDLE,
            "there is no valid issuer to verify it with",
        )),
    }
    g
}

/// What is wrong with where webhook `name` sends its calls.
fn target_problem(
    name: &str,
    client: &k8s_openapi::api::admissionregistration::v1::WebhookClientConfig,
    namespace: &str,
) -> Option<String> {
    let Some(s) = &client.service else {
        return Some(format!(
            "webhook {name}: calls a URL, not the weft-control Service"
        ));
    };
    let port = s.port.unwrap_or(443);
    let path = s.path.as_deref().unwrap_or("/");
    let want = format!("{namespace}/{CONTROL}:{WEBHOOK_PORT}{WEBHOOK_PATH}");
    let got = format!("{}/{}:{port}{path}", s.namespace, s.name);
    (got != want).then(|| format!("webhook {name}: calls {got}, not {want}"))
}

async fn endpoints(kube: &Kube, namespace: &str, port_name: Option<String>) -> Check {
    let selector = format!("kubernetes.io/service-name={CONTROL}");
    let slices = match kube.list_in::<EndpointSlice>(namespace, &selector).await {
        Ok(s) => s,
        Err(e) => {
            return Check::error(
                ENDPOINTS,
                e.to_string(),
                "may you list EndpointSlices there?",
            )
        }
    };
    let has_port = |s: &EndpointSlice| {
        s.ports
            .iter()
            .flatten()
            .any(|p| p.port == Some(WEBHOOK_PORT) || (port_name.is_some() && p.name == port_name))
    };
    let ready: BTreeSet<String> = slices
        .iter()
        .filter(|s| has_port(s))
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    if ready.is_empty() {
        Check::error(
            ENDPOINTS,
            format!("no ready endpoint behind {namespace}/{CONTROL}:{WEBHOOK_PORT}: with failurePolicy Ignore, pods start without a proxy"),
            &format!("kubectl -n {namespace} get endpointslices -l {selector}; are the weft-control pods ready?"),
        )
    } else {
        Check::success(ENDPOINTS, Some(format!("{} ready", ready.len())))
    }
}

/// Each webhook's bundle verifies the issuer's chain.
fn bundle(
    webhooks: &[k8s_openapi::api::admissionregistration::v1::MutatingWebhook],
    issuer: &IssuerCerts,
) -> Check {
    let hint = "weft-control fills in the caBundle within a minute of starting (--webhook-configuration); is it running? With webhook.manageCABundle=false, whoever manages it (cert-manager's ca-injector) must put the trust anchors there";
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    for w in webhooks {
        let text = w
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default();
        let bundle = pem_certs(&text);
        if bundle.is_empty() {
            problems.push(format!(
                "webhook {}: caBundle is empty: the API server cannot call it over TLS",
                w.name
            ));
        } else if !chains_to(&issuer.chain[0], &issuer.chain[1..], &bundle) {
            problems.push(format!("webhook {}: caBundle does not verify certificates of the issuer (it holds {} certificate(s), none of them the issuer's trust anchor)", w.name, bundle.len()));
        } else if bundle.iter().collect::<BTreeSet<_>>() != issuer.anchors.iter().collect() {
            notes.push(format!(
                "webhook {}: verifies, but is not exactly the trust anchors",
                w.name
            ));
        }
    }
    if !problems.is_empty() {
        return Check::error(BUNDLE, problems.join("\n"), hint);
    }
    Check::success(
        BUNDLE,
        Some(if notes.is_empty() {
            "the trust anchors, which sign the issuer that signs it".to_owned()
        } else {
            notes.join("; ")
        }),
    )
}
