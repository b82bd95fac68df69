//! Mutating admission, as the API server does it on a create: every
//! webhook of every stored MutatingWebhookConfiguration (in name order)
//! whose rules name the operation and resource, whose `namespaceSelector`
//! matches the namespace's labels (with `kubernetes.io/metadata.name`, as
//! the API server sets it) and whose `objectSelector` matches the object,
//! is sent an `admission.k8s.io/v1` AdmissionReview: POST over HTTPS to its
//! `clientConfig.url`, trusting only its `caBundle`, within its
//! `timeoutSeconds` (default 10). A JSONPatch answer is applied before the
//! next webhook and before storing; a denial is the create's answer; a
//! failed call follows the webhook's `failurePolicy` (default `Fail`:
//! the create fails; `Ignore`: the webhook is skipped).
//!
//! Only `clientConfig.url` is called (a `service` reference would need
//! cluster DNS). Every call is recorded for the test ([`Call`]).

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

use super::selector::Selector;
use super::shared::Shared;
use super::{Resource, MUTATING_WEBHOOKS, NAMESPACES};

/// One call to a webhook, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The webhook's `name`.
    pub webhook: String,
    /// `patched`, `allowed`, `denied`, or `failed` / `ignored` (with the reason).
    pub outcome: String,
}

/// Why a create is refused: the HTTP status, reason and message of the
/// `Status` the API server answers with.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

/// Runs `obj` (to be created as `r` in `namespace`) through the mutating
/// webhooks; returns it as mutated.
pub(crate) async fn admit(
    shared: &Arc<Shared>,
    r: &Resource,
    namespace: &str,
    mut obj: Value,
) -> Result<Value, Refused> {
    let (configs, ns_labels) = {
        let store = shared.store();
        let configs: Vec<Value> = store
            .find(
                &MUTATING_WEBHOOKS.group,
                &MUTATING_WEBHOOKS.version,
                &MUTATING_WEBHOOKS.plural,
            )
            .map(|t| store.tables[t].objects.values().cloned().collect())
            .unwrap_or_default();
        let ns = store
            .find(&NAMESPACES.group, &NAMESPACES.version, &NAMESPACES.plural)
            .and_then(|t| {
                store.tables[t]
                    .objects
                    .get(&(String::new(), namespace.to_owned()))
                    .cloned()
            });
        let mut labels = ns
            .and_then(|n| n["metadata"]["labels"].as_object().cloned())
            .unwrap_or_default();
        labels.insert("kubernetes.io/metadata.name".into(), json!(namespace));
        (configs, json!({"metadata": {"labels": labels}}))
    };
    for webhook in configs
        .iter()
        .flat_map(|c| c["webhooks"].as_array().into_iter().flatten())
    {
        let name = webhook["name"].as_str().unwrap_or("").to_owned();
        let selected = |key: &str, target: &Value| {
            Selector::label_selector(&webhook[key]).map(|s| s.matches(target))
        };
        let applies = rules_match(webhook, r)
            && selected("namespaceSelector", &ns_labels).unwrap_or(false)
            && selected("objectSelector", &obj).unwrap_or(false);
        if !applies {
            continue;
        }
        let ignore = webhook["failurePolicy"] == "Ignore";
        let record = |outcome: String| {
            shared.record_call(Call {
                webhook: name.clone(),
                outcome,
            })
        };
        let answer = match call(webhook, r, namespace, &obj).await {
            Ok(answer) => answer,
            Err(reason) if ignore => {
                record(format!("ignored: {reason}"));
                continue;
            }
            Err(reason) => {
                record(format!("failed: {reason}"));
                return Err(Refused {
                    code: 500,
                    reason: "InternalError",
                    message: format!(
                        "Internal error occurred: failed calling webhook \"{name}\": {reason}"
                    ),
                });
            }
        };
        let response = &answer["response"];
        if response["allowed"] != true {
            record("denied".into());
            let code = response["status"]["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..600).contains(c))
                .unwrap_or(400);
            let message = response["status"]["message"].as_str().unwrap_or("");
            return Err(Refused {
                code,
                reason: "BadRequest",
                message: format!("admission webhook \"{name}\" denied the request: {message}"),
            });
        }
        match patch(response) {
            Ok(None) => record("allowed".into()),
            Ok(Some(ops)) => match json_patch::patch(&mut obj, &ops) {
                Ok(()) => record("patched".into()),
                Err(e) => {
                    record(format!("failed: the patch does not apply: {e}"));
                    return Err(Refused {
                        code: 500,
                        reason: "InternalError",
                        message: format!("Internal error occurred: webhook \"{name}\"'s patch does not apply: {e}"),
                    });
                }
            },
            Err(reason) => {
                record(format!("failed: {reason}"));
                return Err(Refused {
                    code: 500,
                    reason: "InternalError",
                    message: format!("Internal error occurred: webhook \"{name}\": {reason}"),
                });
            }
        }
    }
    Ok(obj)
}

/// Whether one of the webhook's rules names a CREATE of `r`.
fn rules_match(webhook: &Value, r: &Resource) -> bool {
    let has = |list: &Value, want: &str| {
        list.as_array()
            .is_some_and(|l| l.iter().any(|v| v == "*" || v == want))
    };
    webhook["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|rule| {
            has(&rule["operations"], "CREATE")
                && has(&rule["apiGroups"], &r.group)
                && has(&rule["apiVersions"], &r.version)
                && has(&rule["resources"], &r.plural)
        })
}

/// The response's JSONPatch, if any: Go's `[]byte`, a base64 string or an
/// array of byte values.
fn patch(response: &Value) -> Result<Option<json_patch::Patch>, String> {
    let bytes: Vec<u8> = match &response["patch"] {
        Value::Null => return Ok(None),
        Value::String(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("the patch is not base64: {e}"))?,
        other => serde_json::from_value(other.clone())
            .map_err(|e| format!("the patch is not bytes: {e}"))?,
    };
    if response["patchType"] != "JSONPatch" {
        return Err(format!(
            "patchType {} is not JSONPatch",
            response["patchType"]
        ));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("the patch is not a JSONPatch: {e}"))
}

/// POSTs the AdmissionReview; the answer, or why there is none.
async fn call(
    webhook: &Value,
    r: &Resource,
    namespace: &str,
    obj: &Value,
) -> Result<Value, String> {
    let url: http::Uri = webhook["clientConfig"]["url"]
        .as_str()
        .ok_or("fakekube calls clientConfig.url only")?
        .parse()
        .map_err(|e| format!("clientConfig.url: {e}"))?;
    let bundle = webhook["clientConfig"]["caBundle"].as_str().unwrap_or("");
    let pem = base64::engine::general_purpose::STANDARD
        .decode(bundle)
        .map_err(|e| format!("caBundle is not base64: {e}"))?;
    let timeout = Duration::from_secs(webhook["timeoutSeconds"].as_u64().unwrap_or(10));
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("fakekube-{}", std::process::id()),
            "kind": {"group": r.group, "version": r.version, "kind": r.kind},
            "resource": {"group": r.group, "version": r.version, "resource": r.plural},
            "requestKind": {"group": r.group, "version": r.version, "kind": r.kind},
            "requestResource": {"group": r.group, "version": r.version, "resource": r.plural},
            "name": obj["metadata"]["name"],
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "fakekube", "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    });
    let body = serde_json::to_vec(&review).map_err(|e| e.to_string())?;
    tokio::time::timeout(timeout, post(&url, &pem, body))
        .await
        .map_err(|_| format!("context deadline exceeded (timeout {}s)", timeout.as_secs()))?
}

async fn post(url: &http::Uri, ca_pem: &[u8], body: Vec<u8>) -> Result<Value, String> {
    if url.scheme_str() != Some("https") {
        return Err(format!("{url}: a webhook URL must be https"));
    }
    let host = url.host().ok_or("clientConfig.url has no host")?.to_owned();
    let port = url.port_u16().unwrap_or(443);
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
    }
    if roots.is_empty() {
        return Err("caBundle holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let req = http::Request::post(path)
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let rsp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = rsp.status();
    let bytes = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("the answer is not an AdmissionReview: {e}"))
}
