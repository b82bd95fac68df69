//! Keeps the `caBundle` of weft's own MutatingWebhookConfiguration equal to
//! the trust anchors that verify the webhook's serving certificate, the
//! way istiod and OSM do, so that no cert-manager is needed: at each new
//! serving certificate, and every minute (someone may have re-applied the
//! configuration with an empty bundle). Only that one object is touched
//! (get, patch); a configuration that does not exist yet is waited for.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

use super::cert::ServingCert;

/// How often the bundle is checked between certificates.
pub const RECHECK: Duration = Duration::from_secs(60);

/// What one sync did.
#[derive(Debug, PartialEq, Eq)]
pub enum Synced {
    /// Every webhook of the configuration already had the bundle.
    Unchanged,
    /// These webhooks' bundles were replaced.
    Patched(Vec<String>),
    /// The configuration does not exist (yet).
    Missing,
    /// No serving certificate yet.
    NoCertificate,
}

/// Makes every webhook of configuration `name` carry the anchors of `cert`.
pub async fn sync(
    client: &kube::Client,
    name: &str,
    cert: &ServingCert,
) -> Result<Synced, kube::Error> {
    let Some(anchors) = cert.anchors() else {
        return Ok(Synced::NoCertificate);
    };
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let Some(config) = api.get_opt(name).await? else {
        return Ok(Synced::Missing);
    };
    let want = anchors.as_bytes();
    let mut ops = Vec::new();
    let mut names = Vec::new();
    for (i, webhook) in config.webhooks.iter().flatten().enumerate() {
        if webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice())
            != Some(want)
        {
            ops.push(json!({
                "op": "add",
                "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                "value": k8s_openapi::ByteString(want.to_vec()),
            }));
            names.push(webhook.name.clone());
        }
    }
    if ops.is_empty() {
        return Ok(Synced::Unchanged);
    }
    // Only if nobody changed the configuration since it was read.
    if let Some(rv) = &config.metadata.resource_version {
        ops.insert(
            0,
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}),
        );
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).expect("well-formed operations");
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await?;
    Ok(Synced::Patched(names))
}

/// Runs [`sync`] at each new certificate and every [`RECHECK`], until the
/// task is dropped.
pub async fn keep_synced(client: kube::Client, name: String, cert: Arc<ServingCert>) {
    let mut issued = cert.issued();
    loop {
        match sync(&client, &name, &cert).await {
            Ok(Synced::Patched(webhooks)) => {
                info!(configuration = %name, ?webhooks, "caBundle updated")
            }
            Ok(Synced::Missing) => {
                debug!(configuration = %name, "MutatingWebhookConfiguration not found; waiting")
            }
            Ok(_) => {}
            Err(error) => {
                warn!(configuration = %name, %error, "caBundle not synced; trying again")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RECHECK) => {}
            changed = issued.changed() => if changed.is_err() {
                return;
            },
        }
    }
}
