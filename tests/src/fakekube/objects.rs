//! Objects the control plane's tests apply again and again, as the chart
//! and a cluster make them.

use base64::Engine as _;
use serde_json::{json, Value};

/// The issuer Secret `namespace/name` (`kubernetes.io/tls`): the issuer
/// certificate and key and the trust anchors, as `weft identity init`
/// writes them (`tls.crt`, `tls.key`, `ca.crt`).
pub fn issuer_secret(
    namespace: &str,
    name: &str,
    cert_pem: &str,
    key_pem: &str,
    anchors_pem: &str,
) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(cert_pem), "tls.key": b64(key_pem), "ca.crt": b64(anchors_pem)},
    })
}

/// A MutatingWebhookConfiguration `name` as the chart writes it (no
/// caBundle: weft-control fills it in), calling `url` for pod CREATEs
/// outside kube-system and weft-system.
pub fn webhook_configuration(name: &str, url: &str, failure_policy: &str, timeout: u64) -> Value {
    json!({
        "metadata": {"name": name},
        "webhooks": [{
            "name": format!("{name}.weft.dev"),
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": failure_policy,
            "timeoutSeconds": timeout,
            "clientConfig": {"url": url},
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "weft-system"],
            }]},
            "rules": [{
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
            }],
        }],
    })
}
