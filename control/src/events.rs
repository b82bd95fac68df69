//! Kubernetes Events about the objects weft-control refuses (an invalid
//! route, a bad annotation) or reports (a split not in force, a backend that
//! does not exist), so that `kubectl describe` on the object says what is
//! wrong with it, next to the log line and the metric.
//!
//! Published with kube-runtime's `Recorder` (`events.k8s.io/v1`: a repeat
//! within minutes becomes a count on the same Event) by a task of its own,
//! from a bounded queue: the model task never waits for the API server, and
//! when the queue is full an Event is dropped (the log line and the metric
//! still say it), counted in `weft_control_events_dropped_total`.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tracing::debug;

use crate::model::routes::ObjectKind;
use crate::model::store::Kind;

/// Events waiting to be published, at most.
const QUEUE: usize = 256;
/// The API server's limit on an Event's note.
const MAX_NOTE: usize = 1024;

/// Where events go: a queue to the publishing task.
#[derive(Clone, Debug)]
pub struct Events {
    tx: mpsc::Sender<(ObjectReference, Event)>,
    dropped: Counter,
}

impl Events {
    /// Starts the publishing task on `client`, reporting as weft-control
    /// `instance` (the pod's name, when known).
    pub fn spawn(client: kube::Client, instance: Option<String>, dropped: Counter) -> Self {
        let (tx, mut rx) = mpsc::channel::<(ObjectReference, Event)>(QUEUE);
        let reporter = Reporter {
            controller: "weft-control".into(),
            instance,
        };
        let recorder = Recorder::new(client, reporter);
        tokio::spawn(async move {
            while let Some((reference, event)) = rx.recv().await {
                if let Err(error) = recorder.publish(&event, &reference).await {
                    debug!(%error, kind = ?reference.kind, name = ?reference.name, "cannot publish an Event");
                }
            }
        });
        Self { tx, dropped }
    }

    /// A Warning on object `ns/name` of `kind`: `reason` (PascalCase) and
    /// what is wrong.
    pub fn warn(&self, kind: Kind, ns: &str, name: &str, reason: &str, note: &str) {
        let reference = ObjectReference {
            api_version: Some(api_version(kind).into()),
            kind: Some(kind.as_str().into()),
            namespace: (!ns.is_empty()).then(|| ns.to_string()),
            name: Some(name.to_string()),
            ..Default::default()
        };
        self.publish(reference, reason, note, "Validate");
    }

    /// A Warning on `regarding`, for `action` (PascalCase, as `reason`).
    pub fn publish(&self, regarding: ObjectReference, reason: &str, note: &str, action: &str) {
        let mut note = note.to_string();
        if note.len() > MAX_NOTE {
            let mut end = MAX_NOTE - 3;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
            note.push_str("...");
        }
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if self.tx.try_send((regarding, event)).is_err() {
            self.dropped.inc();
        }
    }
}

/// The kind named `name` (`TrafficSplit`, …), as problems name it.
pub fn kind_named(name: &str) -> Option<Kind> {
    let fixed = [
        Kind::Service,
        Kind::Slice,
        Kind::Pod,
        Kind::Namespace,
        Kind::TrafficTarget,
    ];
    fixed
        .into_iter()
        .chain(ObjectKind::ALL.map(Kind::Route))
        .find(|k| k.as_str() == name)
}

/// The API version an object of `kind` is read at.
fn api_version(kind: Kind) -> &'static str {
    match kind {
        Kind::Service | Kind::Pod | Kind::Namespace => "v1",
        Kind::Slice => "discovery.k8s.io/v1",
        Kind::TrafficTarget => "access.smi-spec.io/v1alpha3",
        Kind::Route(k) => match k {
            ObjectKind::TrafficSplit => "split.smi-spec.io/v1alpha4",
            ObjectKind::HttpRouteGroup | ObjectKind::TcpRoute => "specs.smi-spec.io/v1alpha4",
            ObjectKind::HttpRoute | ObjectKind::GrpcRoute => "gateway.networking.k8s.io/v1",
        },
    }
}
