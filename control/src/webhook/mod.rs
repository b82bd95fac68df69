//! The injector: a mutating admission webhook (`admission.k8s.io/v1`) on
//! HTTPS port 8443. For each Pod CREATE the API server sends, it reads the
//! pod's namespace's annotations, runs [`crate::inject::inject`] and
//! answers: the JSONPatch from the pod to the injected pod, the pod
//! unchanged (skipped; a warning when the namespace or pod asked for
//! injection and it could not be done), or a denial naming the bad
//! annotation and value. Anything else (another kind, another operation)
//! is allowed unchanged.
//!
//! Its certificate is from weft's own CA ([`cert`]), and it keeps the
//! `caBundle` of its MutatingWebhookConfiguration in sync ([`bundle`]).
//! Admissions are counted by result
//! (`weft_control_admissions_total{result, reason}`).
//!
//! A pod that asked for injection and did not get it (a denial, or a skip
//! such as `hostNetwork`) also gets a Warning Event on its owner.
//!
//! Touches: its listener, the Namespace objects it reads (get), Events it
//! writes (create), and its own MutatingWebhookConfiguration (get, patch).

pub mod bundle;
pub mod cert;
mod events;
mod server;

pub use server::serve;

use k8s_openapi::api::core::v1::Namespace;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use tracing::{debug, info, warn};

use crate::events::Events;
use crate::identity::anchors::Publisher;
use crate::inject::{self, OptIn, Outcome, Settings, Skip};

/// The path the API server posts AdmissionReviews to.
pub const PATH: &str = "/inject";

/// The reason of the Warning Event on the owner of a pod that asked for
/// injection and was skipped (`weft check` reads it back).
pub const NOT_INJECTED: &str = "WeftNotInjected";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    /// injected, skipped, denied, error
    result: &'static str,
    /// why skipped or denied (the annotation), else empty
    reason: String,
}

/// What answers admissions.
#[derive(Clone)]
pub struct Injector {
    settings: Settings,
    /// Namespaces are read from here; none: every namespace has no annotations.
    client: Option<kube::Client>,
    /// Where Events on skipped and denied pods' owners go (with a cluster).
    events: Option<Events>,
    /// Asked for the trust anchors ConfigMap in each namespace where a pod is
    /// injected (its proxy mounts it).
    anchors: Option<Publisher>,
    admissions: Family<AdmissionLabels, Counter>,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector")
            .field("settings", &self.settings)
            .field("reads_namespaces", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

/// A review that could not be answered: the API server applies the
/// webhook's `failurePolicy`.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("not an AdmissionReview with a request: {0}")]
    Malformed(String),
    #[error("cannot read Namespace {0}: {1}")]
    Namespace(String, kube::Error),
}

impl Injector {
    pub fn new(
        settings: Settings,
        client: Option<kube::Client>,
        events: Option<Events>,
        registry: &mut Registry,
    ) -> Self {
        let admissions = Family::default();
        registry.sub_registry_with_prefix("weft_control").register(
            "admissions",
            "Pod admissions the injector answered, by result (injected, skipped, denied, error) and reason",
            admissions.clone(),
        );
        Self {
            settings,
            client,
            events,
            anchors: None,
            admissions,
        }
    }

    /// Asks `publisher` for the trust anchors ConfigMap in the namespace of
    /// every pod injected.
    #[must_use]
    pub fn with_anchors(mut self, publisher: Option<Publisher>) -> Self {
        self.anchors = publisher;
        self
    }

    fn count(&self, result: &'static str, reason: &str) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                result,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Answers one AdmissionReview (its JSON body).
    pub async fn review(&self, body: &[u8]) -> Result<AdmissionReview<DynamicObject>, ReviewError> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).map_err(|e| {
            self.count("error", "malformed");
            ReviewError::Malformed(e.to_string())
        })?;
        let request: AdmissionRequest<DynamicObject> = review.try_into().map_err(|_| {
            self.count("error", "malformed");
            ReviewError::Malformed("no request".into())
        })?;
        let response = AdmissionResponse::from(&request);
        let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
        let Some(object) = request
            .object
            .as_ref()
            .filter(|_| is_pod && request.operation == Operation::Create)
        else {
            return Ok(response.into_review());
        };
        let namespace = request
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let ns_annotations = self
            .namespace_annotations(&namespace)
            .await
            .inspect_err(|_| {
                self.count("error", "namespace");
            })?;
        let pod =
            serde_json::to_value(object).map_err(|e| ReviewError::Malformed(e.to_string()))?;
        let name = match pod.pointer("/metadata/name").and_then(|n| n.as_str()) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => pod
                .pointer("/metadata/generateName")
                .and_then(|n| n.as_str())
                .map_or_else(|| "(unnamed)".into(), |g| format!("{g}*")),
        };
        let response = match inject::inject(&pod, &ns_annotations, &self.settings, OptIn::Required)
        {
            Ok(Outcome::Injected(injected)) => {
                let patch = json_patch::diff(&pod, &injected);
                info!(pod = %name, %namespace, "injected");
                self.count("injected", "");
                if let Some(anchors) = &self.anchors {
                    anchors.ensure(&namespace);
                }
                response
                    .with_patch(patch)
                    .map_err(|e| ReviewError::Malformed(e.to_string()))?
            }
            Ok(Outcome::Skipped(skip)) => {
                self.count("skipped", skip.label());
                // Worth telling: it asked, and could not be injected.
                let asked = !matches!(
                    skip,
                    Skip::NotEnabled | Skip::Disabled { .. } | Skip::AlreadyInjected
                );
                if asked {
                    warn!(pod = %name, %namespace, reason = %skip, "not injected");
                    let message = format!("weft: not injected: {skip}");
                    self.report(&pod, &namespace, NOT_INJECTED, &message);
                    let mut response = response;
                    response.warnings = Some(vec![message]);
                    response
                } else {
                    debug!(pod = %name, %namespace, reason = %skip, "not injected");
                    response
                }
            }
            Err(denied) => {
                warn!(pod = %name, %namespace, reason = %denied, "denied");
                self.count("denied", &denied.annotation);
                let message = format!("weft: {denied}");
                self.report(&pod, &namespace, "WeftInjectionDenied", &message);
                response.deny(message)
            }
        };
        Ok(response.into_review())
    }

    /// A Warning Event on the pod's owner (its controller, else the pod
    /// itself when it has a name), queued so that the admission is not held
    /// up; nothing without a cluster.
    fn report(&self, pod: &serde_json::Value, namespace: &str, reason: &str, message: &str) {
        if let (Some(sink), Some(owner)) = (&self.events, events::on_owner(pod, namespace)) {
            sink.publish(owner, reason, message, "Admit");
        }
    }

    async fn namespace_annotations(
        &self,
        name: &str,
    ) -> Result<BTreeMap<String, String>, ReviewError> {
        let Some(client) = &self.client else {
            return Ok(BTreeMap::new());
        };
        let api = kube::Api::<Namespace>::all(client.clone());
        match api.get_opt(name).await {
            Ok(ns) => Ok(ns.and_then(|n| n.metadata.annotations).unwrap_or_default()),
            Err(e) => Err(ReviewError::Namespace(name.to_owned(), e)),
        }
    }
}
