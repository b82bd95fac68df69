//! `weft check`: is the cluster ready for weft (`--pre`), and is the
//! installation healthy, in the words `linkerd check` users know: groups
//! of checks, one line each, `√` / `‼` / `×`, a hint for each problem.
//!
//! Everything is read from the API server, each call bounded by
//! `--timeout`; nothing is changed. A check whose prerequisite failed is
//! reported as skipped (when the API server does not answer, every later
//! check is). Groups, in order: `kubernetes-api` (both modes);
//! `pre-kubernetes-setup` (`--pre`); `weft-control`, `weft-identity`,
//! `weft-webhook`, `weft-data-plane` (after the install).
//!
//! Files: `api` and `setup` (the first two groups), `crds`, `control`,
//! `identity`, `webhook`, `dataplane` (one group each), `layout` (the
//! names of an installation), `kube` (the client and its timeouts),
//! `report` (results and their text and JSON), `pods`, `certs` and
//! `version` (pure helpers).

pub mod api;
pub mod certs;
pub mod control;
pub mod crds;
pub mod dataplane;
pub mod identity;
pub mod kube;
pub mod layout;
pub mod pods;
pub mod report;
pub mod setup;
pub mod version;
pub mod webhook;

use k8s_openapi::api::core::v1::Namespace;
use std::time::{Duration, SystemTime};

pub use report::{Check, Group, Outcome, Report};

use self::kube::Kube;
use layout::Layout;

/// What to check, and where.
#[derive(Clone, Debug)]
pub struct Options {
    /// Before an install (`--pre`) rather than after it.
    pub pre: bool,
    /// The control plane's namespace.
    pub namespace: String,
    /// The API server's URL; `None`: the kubeconfig's current context or
    /// the in-cluster configuration.
    pub api_server: Option<String>,
    /// The limit on each API call.
    pub timeout: Duration,
}

/// Runs the checks of `options` (the clock read once, for certificates).
pub async fn run(options: &Options) -> Report {
    let connected = Kube::connect(options.api_server.as_deref(), options.timeout).await;
    let (api_group, kube) = api::check(connected, options.pre).await;
    let mut groups = vec![api_group];
    let Some(kube) = kube else {
        let why = "the Kubernetes API is not usable";
        groups.extend(if options.pre {
            vec![Group::skipped(
                setup::GROUP,
                &[setup::CLUSTER, setup::NAMESPACED, setup::CRDS],
                why,
            )]
        } else {
            vec![
                Group::skipped(control::GROUP, control::DESCRIPTIONS, why),
                Group::skipped(identity::GROUP, identity::DESCRIPTIONS, why),
                Group::skipped(webhook::GROUP, webhook::DESCRIPTIONS, why),
                Group::skipped(dataplane::GROUP, dataplane::DESCRIPTIONS, why),
            ]
        });
        return Report::new(groups);
    };
    if options.pre {
        groups.push(setup::check(&kube, &options.namespace).await);
        return Report::new(groups);
    }
    let (control_group, deploy) = control::check(&kube, &options.namespace).await;
    groups.push(control_group);
    let layout = Layout::from_deployment(&options.namespace, deploy.as_ref());
    // Namespaces: which are injected (for the anchors and the data plane).
    let namespaces = kube.list_all::<Namespace>("").await;
    let (namespaces, ns_error) = match namespaces {
        Ok(n) => (n, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let injected = dataplane::injected(&namespaces);
    let (mut identity_group, issuer) =
        identity::check(&kube, &layout, &injected, SystemTime::now()).await;
    if let Some(e) = &ns_error {
        replace(&mut identity_group, identity::NAMESPACES, e);
    }
    groups.push(identity_group);
    if layout.webhook {
        groups.push(webhook::check(&kube, &layout, issuer.as_ref()).await);
    } else {
        groups.push(Group::skipped(
            webhook::GROUP,
            webhook::DESCRIPTIONS,
            "weft-control runs without --webhook (webhook.enabled=false)",
        ));
    }
    let mut data = dataplane::check(&kube, &namespaces).await;
    if let Some(e) = &ns_error {
        replace(&mut data, dataplane::SKIPPED, e);
    }
    groups.push(data);
    Report::new(groups)
}

/// Makes check `description` of `group` a failure to list namespaces.
fn replace(group: &mut Group, description: &str, error: &str) {
    if let Some(c) = group
        .checks
        .iter_mut()
        .find(|c| c.description == description)
    {
        *c = Check::error(description, error.to_owned(), "may you list namespaces?");
    }
}
