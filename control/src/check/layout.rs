//! Where the installation keeps what `weft check` looks at: the names the
//! chart gives (its fixed names, `charts/weft/templates/_helpers.tpl`),
//! overridden by what the weft-control Deployment actually runs with (its
//! container's flags and `WEFT_CONTROL_*` env), so an issuer from
//! `identity.issuer.externalSecret` is the one checked.

use k8s_openapi::api::apps::v1::Deployment;

/// The Deployment, Service and container of the control plane.
pub const CONTROL: &str = "weft-control";
/// The labels the chart's Deployment selects its pods by.
pub const CONTROL_SELECTOR: &str =
    "app.kubernetes.io/name=weft,app.kubernetes.io/component=control";
/// The injector's webhook port on the Service.
pub const WEBHOOK_PORT: i32 = 8443;
/// The injector's path.
pub const WEBHOOK_PATH: &str = crate::webhook::PATH;
/// The injected proxy's container.
pub const PROXY: &str = "weft-proxy";

/// Names of one installation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The control plane's namespace.
    pub namespace: String,
    /// The issuer Secret, `namespace/name`.
    pub issuer_namespace: String,
    pub issuer_name: String,
    /// The trust anchors ConfigMap (in the control plane's namespace and in
    /// every injected one).
    pub anchors_configmap: String,
    /// The injector's MutatingWebhookConfiguration; empty when weft-control
    /// leaves its caBundle to someone else (`--webhook-configuration=`).
    pub webhook_configuration: String,
    /// Whether weft-control serves the webhook (`--webhook`).
    pub webhook: bool,
    pub trust_domain: String,
}

impl Layout {
    /// The chart's defaults in `namespace`.
    pub fn chart(namespace: &str) -> Self {
        Layout {
            namespace: namespace.to_owned(),
            issuer_namespace: namespace.to_owned(),
            issuer_name: "weft-issuer".into(),
            anchors_configmap: crate::inject::ANCHORS_CONFIGMAP.into(),
            webhook_configuration: "weft-injector".into(),
            webhook: true,
            trust_domain: "cluster.local".into(),
        }
    }

    /// The chart's defaults as the Deployment's weft-control container
    /// overrides them.
    pub fn from_deployment(namespace: &str, deploy: Option<&Deployment>) -> Self {
        let mut layout = Self::chart(namespace);
        let Some(container) = deploy
            .and_then(|d| d.spec.as_ref())
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.iter().find(|c| c.name == CONTROL))
        else {
            return layout;
        };
        let args = container.args.clone().unwrap_or_default();
        let env = container.env.clone().unwrap_or_default();
        let setting = |flag: &str, var: &str| -> Option<String> {
            flag_value(&args, flag).or_else(|| {
                env.iter()
                    .find(|e| e.name == var)
                    .and_then(|e| e.value.clone())
            })
        };
        if let Some(secret) = setting("--identity-secret", "WEFT_CONTROL_IDENTITY_SECRET") {
            if let Ok(r) = crate::identity::issuer::SecretRef::parse(&secret) {
                layout.issuer_namespace = r.namespace;
                layout.issuer_name = r.name;
            }
        }
        if let Some(v) = setting(
            "--trust-anchors-configmap",
            "WEFT_CONTROL_TRUST_ANCHORS_CONFIGMAP",
        ) {
            layout.anchors_configmap = v;
        }
        if let Some(v) = setting(
            "--webhook-configuration",
            "WEFT_CONTROL_WEBHOOK_CONFIGURATION",
        ) {
            layout.webhook_configuration = v;
        }
        if let Some(v) = setting("--trust-domain", "WEFT_CONTROL_TRUST_DOMAIN") {
            layout.trust_domain = v;
        }
        layout.webhook = args
            .iter()
            .any(|a| a == "--webhook" || a == "--webhook=true")
            || env
                .iter()
                .any(|e| e.name == "WEFT_CONTROL_WEBHOOK" && e.value.as_deref() == Some("true"));
        layout
    }
}

/// The value of `--flag=value` or `--flag value` in `args`, the last one
/// winning as with clap.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.to_owned());
        } else if a == flag {
            found = it.next().cloned();
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_deployment_overrides_the_chart() {
        let deploy: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "weft-control"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{
                "name": "weft-control",
                "args": ["--identity-secret=weft-system/from-cert-manager", "--webhook",
                         "--webhook-configuration", "mine"],
                "env": [{"name": "WEFT_CONTROL_TRUST_DOMAIN", "value": "example.org"}],
            }]}}},
        }))
        .unwrap();
        let l = Layout::from_deployment("weft-system", Some(&deploy));
        assert_eq!(l.issuer_name, "from-cert-manager");
        assert_eq!(l.webhook_configuration, "mine");
        assert_eq!(l.trust_domain, "example.org");
        assert_eq!(l.anchors_configmap, "weft-trust-anchors");
        assert!(l.webhook);
        assert_eq!(Layout::from_deployment("x", None), Layout::chart("x"));
        assert_eq!(
            flag_value(
                &["--webhook-configuration=".into()],
                "--webhook-configuration"
            ),
            Some(String::new())
        );
    }
}
