//! The `kubernetes-api` group: a client, an answer from `/version`, a
//! release weft supports, and (before an install) native sidecars.
//!
//! Native sidecars (init containers with `restartPolicy: Always`) are the
//! `SidecarContainers` feature gate: beta and on by default from 1.29, GA
//! in 1.33. Feature gates are not visible through the API, so what is
//! checked is that the API server and every node's kubelet are 1.29 or
//! later (the kubelet runs the sidecar; a node older than its control
//! plane would run the proxy as a plain init container that never ends).
//! A cluster whose admin turned the gate off is not caught.

use k8s_openapi::api::core::v1::Node;

use super::kube::{CallError, Kube};
use super::report::{Check, Group};
use super::version::{Release, MINIMUM};

pub const GROUP: &str = "kubernetes-api";
pub const CLIENT: &str = "can initialize the client";
pub const QUERY: &str = "can query the Kubernetes API";
pub const VERSION: &str = "is running Kubernetes 1.29 or later";
pub const SIDECARS: &str = "native sidecars are available on every node";

/// The group, and the client when the API server answered.
pub async fn check(client: Result<Kube, String>, pre: bool) -> (Group, Option<Kube>) {
    let mut g = Group::new(GROUP);
    let rest: &[&str] = if pre {
        &[QUERY, VERSION, SIDECARS]
    } else {
        &[QUERY, VERSION]
    };
    let kube = match client {
        Ok(k) => {
            g.push(Check::success(CLIENT, None));
            k
        }
        Err(e) => {
            g.push(Check::error(
                CLIENT,
                e,
                "set KUBECONFIG or the current context (kubectl config current-context), or pass --kube-api-server",
            ));
            g.checks
                .extend(rest.iter().map(|d| Check::skipped(d, "no client")));
            return (g, None);
        }
    };
    let info = match kube
        .call("GET /version", kube.client.apiserver_version())
        .await
    {
        Ok(info) => info,
        Err(e) => {
            g.push(Check::error(
                QUERY,
                format!("{}: {e}", kube.server),
                "is the API server up and reachable from here? (kubectl version; --timeout for a slow one)",
            ));
            g.checks.extend(
                rest[1..]
                    .iter()
                    .map(|d| Check::skipped(d, "the API server did not answer")),
            );
            return (g, None);
        }
    };
    g.push(Check::success(QUERY, Some(kube.server.clone())));
    let release = match Release::from_info(&info.major, &info.minor, &info.git_version) {
        Ok(r) => r,
        Err(e) => {
            g.push(Check::error(
                VERSION,
                e,
                "weft needs Kubernetes 1.29 or later",
            ));
            if pre {
                g.push(Check::skipped(
                    SIDECARS,
                    "the Kubernetes version is unknown",
                ));
            }
            return (g, Some(kube));
        }
    };
    let version_ok = release >= MINIMUM;
    g.push(version_check(release, &info.git_version));
    if pre {
        if version_ok {
            g.push(sidecars(&kube).await);
        } else {
            g.push(Check::skipped(
                SIDECARS,
                "the API server is older than 1.29",
            ));
        }
    }
    (g, Some(kube))
}

/// Whether `release` (from `git_version`) is one weft runs on.
pub fn version_check(release: Release, git_version: &str) -> Check {
    if release >= MINIMUM {
        Check::success(VERSION, Some(git_version.to_owned()))
    } else {
        Check::error(
            VERSION,
            format!(
                "the API server is {release} ({git_version}); weft needs {MINIMUM} or later (native sidecars, and the chart's kubeVersion)"
            ),
            "upgrade the cluster to Kubernetes 1.29 or later",
        )
    }
}

/// Every node's kubelet is 1.29 or later.
async fn sidecars(kube: &Kube) -> Check {
    let nodes = match kube.list_all::<Node>("").await {
        Ok(nodes) => nodes,
        Err(e @ CallError::Forbidden { .. }) => {
            return Check::warning(
                SIDECARS,
                format!("the API server is 1.29+ (SidecarContainers on by default), but the kubelets' versions cannot be read: {e}"),
                "make sure every node runs a kubelet of 1.29 or later (kubectl get nodes)",
            )
        }
        Err(e) => {
            return Check::error(SIDECARS, e.to_string(), "is the API server healthy?");
        }
    };
    let old: Vec<String> = nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            let v = n
                .status
                .as_ref()?
                .node_info
                .as_ref()?
                .kubelet_version
                .clone();
            match Release::from_git_version(&v) {
                Ok(r) if r >= MINIMUM => None,
                _ => Some(format!("{name}: kubelet {v}")),
            }
        })
        .collect();
    if old.is_empty() {
        Check::success(
            SIDECARS,
            Some(format!(
                "API server and {} kubelet(s) 1.29+: SidecarContainers is on by default",
                nodes.len()
            )),
        )
    } else {
        Check::error(
            SIDECARS,
            format!(
                "kubelets older than 1.29 do not run native sidecars:\n{}",
                old.join("\n")
            ),
            "upgrade those nodes, or install with proxy.nativeSidecar=false (classic sidecars)",
        )
    }
}
