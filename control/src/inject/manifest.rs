//! `weft inject` and `weft uninject` on Kubernetes YAML: every pod template
//! of the documents (Pods, Deployments, StatefulSets, DaemonSets,
//! ReplicaSets, ReplicationControllers, Jobs, CronJobs, also inside a
//! `List`) goes through [`super::inject`] or [`super::uninject`]; every
//! other object, and every field, is written back as it was read. Pure:
//! text in, text and a report out.
//!
//! The YAML is read into JSON values and written anew, so comments are
//! dropped and keys come out sorted (as from `kubectl get -o yaml`);
//! values are kept exactly.

use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::annotations::INJECT;
use super::{inject, pod_annotations, uninject, OptIn, Outcome, Settings};

/// What to do to each pod template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Add `weft.dev/inject: enabled` where absent: the webhook injects at
    /// admission (like `linkerd inject`).
    Annotate,
    /// Write the whole sidecar into the template (`--manual`).
    Manual,
    /// Remove what either added.
    Uninject,
}

/// One line of the summary: which object, and what happened to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// `deployment/web` (kind lowercased, and name).
    pub object: String,
    pub namespace: String,
    pub what: String,
    /// Whether the object was changed.
    pub changed: bool,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (namespace {}): {}",
            self.object, self.namespace, self.what
        )
    }
}

/// The documents of one input, processed, and what happened to each
/// workload. `Err` when a document is not YAML or a workload has a bad
/// annotation value (each reason on its own line, naming the document and
/// the object): then nothing should be written.
pub fn process(text: &str, settings: &Settings, mode: Mode) -> Result<(String, Vec<Line>), String> {
    let mut docs = Vec::new();
    for (i, doc) in crate::sources::parse::documents(text).iter().enumerate() {
        let value: Value = serde_saphyr::from_str(doc)
            .map_err(|e| format!("document {}: not valid YAML: {e}", i + 1))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    // Namespaces in the same input lend their annotations to --manual.
    let mut namespaces = BTreeMap::new();
    for doc in &docs {
        each_object(doc, &mut |o| {
            if o["kind"] == "Namespace" {
                if let Some(name) = o.pointer("/metadata/name").and_then(Value::as_str) {
                    namespaces.insert(name.to_owned(), pod_annotations(o));
                }
            }
        });
    }
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in docs.iter_mut().enumerate() {
        each_object_mut(
            doc,
            &mut |o| match workload(o, &namespaces, settings, mode) {
                Ok(Some(line)) => lines.push(line),
                Ok(None) => {}
                Err(e) => errors.push(format!("document {}: {e}", i + 1)),
            },
        );
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    let mut out = String::new();
    for doc in &docs {
        if !out.is_empty() {
            out.push_str("---\n");
        }
        let yaml = serde_saphyr::to_string(doc).map_err(|e| format!("cannot write YAML: {e}"))?;
        out.push_str(&yaml);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok((out, lines))
}

/// Where a kind keeps its pod template.
pub fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// One object: `None` when it is not a workload.
fn workload(
    object: &mut Value,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    settings: &Settings,
    mode: Mode,
) -> Result<Option<Line>, String> {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let Some(pointer) = template_pointer(&kind) else {
        return Ok(None);
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("(no name)")
        .to_owned();
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    let line = |what: String, changed: bool| Line {
        object: format!("{}/{name}", kind.to_lowercase()),
        namespace: namespace.clone(),
        what,
        changed,
    };
    let Some(template) = object.pointer_mut(pointer).filter(|t| t.is_object()) else {
        return Ok(Some(line(
            format!("skipped: no pod template at {pointer}"),
            false,
        )));
    };
    if mode == Mode::Uninject {
        let removed = uninject(template);
        let what = if removed {
            "uninjected"
        } else {
            "nothing of weft's to remove"
        };
        return Ok(Some(line(what.into(), removed)));
    }
    let empty = BTreeMap::new();
    let ns_annotations = namespaces.get(&namespace).unwrap_or(&empty);
    let outcome = inject(template, ns_annotations, settings, OptIn::Assumed).map_err(|denied| {
        format!(
            "{}/{name} (namespace {namespace}): {denied}",
            kind.to_lowercase()
        )
    })?;
    Ok(Some(match (outcome, mode) {
        (Outcome::Skipped(why), _) => line(format!("skipped: {why}"), false),
        (Outcome::Injected(injected), Mode::Manual) => {
            *template = injected;
            line("injected (manual: the full sidecar)".into(), true)
        }
        (Outcome::Injected(_), _) => {
            if pod_annotations(template).get(INJECT).map(String::as_str) == Some("enabled") {
                line(format!("already annotated {INJECT}: enabled"), false)
            } else {
                annotate(template);
                line(format!("injected (annotated {INJECT}: enabled)"), true)
            }
        }
    }))
}

fn annotate(template: &mut Value) {
    let metadata = &mut template["metadata"];
    if !metadata.is_object() {
        *metadata = json!({});
    }
    let annotations = &mut metadata["annotations"];
    if !annotations.is_object() {
        *annotations = json!({});
    }
    annotations[INJECT] = json!("enabled");
}

/// Every object of a document: itself, or the items of a `List`.
fn each_object(doc: &Value, f: &mut dyn FnMut(&Value)) {
    match doc["items"].as_array() {
        Some(items) if doc["kind"] == "List" => items.iter().for_each(|i| each_object(i, f)),
        _ => f(doc),
    }
}

fn each_object_mut(doc: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    if doc["kind"] == "List" {
        if let Some(items) = doc["items"].as_array_mut() {
            items.iter_mut().for_each(|i| each_object_mut(i, f));
            return;
        }
    }
    f(doc)
}
