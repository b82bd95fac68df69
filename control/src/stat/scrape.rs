//! Reading proxies' `/metrics`: one `GET` over plain HTTP/1.1 to an admin
//! address, and, in a cluster, finding the admin addresses of meshed pods
//! (a container named `weft-proxy`, running, with a pod IP) through the
//! API server.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::net::SocketAddr;
use std::time::Duration;

use super::PodRef;

/// The proxy's admin port (ARCHITECTURE.md).
pub const ADMIN_PORT: u16 = 4191;

/// The text of `GET /metrics` at `addr`, within `timeout`.
pub async fn metrics(addr: SocketAddr, timeout: Duration) -> Result<String> {
    tokio::time::timeout(timeout, get(addr))
        .await
        .with_context(|| format!("{addr}: no answer within {timeout:?}"))?
        .with_context(|| format!("GET http://{addr}/metrics"))
}

async fn get(addr: SocketAddr) -> Result<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/metrics")
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let rsp = send.send_request(req).await?;
    let status = rsp.status();
    let body = rsp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("answered {status}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The meshed pods of `namespace` (every namespace when none), with the
/// admin address of each one's proxy (`POD_IP:port`).
pub async fn cluster_proxies(
    client: kube::Client,
    namespace: Option<&str>,
    port: u16,
) -> Result<Vec<(PodRef, SocketAddr)>> {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let pods = api
        .list(&ListParams::default())
        .await
        .context("cannot list pods")?;
    Ok(pods.items.iter().filter_map(|p| meshed(p, port)).collect())
}

/// A pod's proxy admin address and name, if it runs a weft-proxy.
fn meshed(pod: &Pod, port: u16) -> Option<(PodRef, SocketAddr)> {
    let spec = pod.spec.as_ref()?;
    let has_proxy = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == "weft-proxy");
    let status = pod.status.as_ref()?;
    if !has_proxy || status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ip: std::net::IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    let meta = &pod.metadata;
    let name = meta.name.clone()?;
    Some((
        PodRef {
            namespace: meta.namespace.clone().unwrap_or_default(),
            workload: workload(pod).unwrap_or_else(|| name.clone()),
            pod: name,
        },
        SocketAddr::new(ip, port),
    ))
}

/// The workload that owns a pod: a ReplicaSet's Deployment (its name less
/// the pod-template-hash), else the controller's name.
fn workload(pod: &Pod) -> Option<String> {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    match hash {
        Some(h) if owner.kind == "ReplicaSet" => owner
            .name
            .strip_suffix(h.as_str())
            .and_then(|n| n.strip_suffix('-'))
            .map(str::to_owned)
            .or_else(|| Some(owner.name.clone())),
        _ => Some(owner.name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_pod_is_named_by_its_deployment() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "books-v1-6d4b9c7f5-x2x9k", "namespace": "shop",
                "labels": {"pod-template-hash": "6d4b9c7f5"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "books-v1-6d4b9c7f5", "uid": "1", "controller": true}]},
            "spec": {"containers": [{"name": "app"}],
                     "initContainers": [{"name": "weft-init"}, {"name": "weft-proxy"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.7"}
        }))
        .unwrap();
        let (r, addr) = meshed(&pod, ADMIN_PORT).unwrap();
        assert_eq!(r.workload, "books-v1");
        assert_eq!(r.namespace, "shop");
        assert_eq!(addr, "10.244.1.7:4191".parse().unwrap());

        let mut unmeshed = pod.clone();
        unmeshed.spec.as_mut().unwrap().init_containers = None;
        assert!(meshed(&unmeshed, ADMIN_PORT).is_none());
        let mut pending = pod;
        pending.status.as_mut().unwrap().phase = Some("Pending".into());
        assert!(meshed(&pending, ADMIN_PORT).is_none());
    }
}
