//! What the model keeps of each Kubernetes object: the fields discovery
//! needs, checked. An object that does not make sense (no name, a port out
//! of range, an address that is not an IP) is refused with a reason that
//! names the field, and the model keeps what it had.

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::authz::{annotated_default, DefaultPolicy};

/// Namespace and name.
pub type ObjKey = (String, String);

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Ports whose traffic is opaque TCP (on a Service, a Pod or a Namespace).
pub const OPAQUE_PORTS_ANNOTATION: &str = "weft.dev/opaque-ports";
/// The container the injector adds: a pod that has it is meshed.
pub const PROXY_CONTAINER: &str = "weft-proxy";

fn name_of(meta: &ObjectMeta, kind: &str) -> Result<ObjKey, String> {
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{kind} without metadata.name"))?;
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    Ok((ns, name))
}

fn port(n: i32, field: &str) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{field} {n} is out of range 1-65535"))
}

/// Parses `weft.dev/opaque-ports: "3306,5432,9000-9010"`.
pub fn opaque_ports(meta: &ObjectMeta) -> Result<BTreeSet<u16>, String> {
    let mut ports = BTreeSet::new();
    let Some(value) = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(OPAQUE_PORTS_ANNOTATION))
    else {
        return Ok(ports);
    };
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parse = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("annotation {OPAQUE_PORTS_ANNOTATION}: '{s}' is not a port"))
        };
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse(a)?, parse(b)?);
                if a > b {
                    return Err(format!(
                        "annotation {OPAQUE_PORTS_ANNOTATION}: range {item} is reversed"
                    ));
                }
                ports.extend(a..=b);
            }
            None => {
                ports.insert(parse(item)?);
            }
        }
    }
    Ok(ports)
}

/// How a port's traffic should be treated, from `appProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppProtocol {
    Unknown,
    Opaque,
    Http1,
    Http2,
    Grpc,
}

impl AppProtocol {
    fn parse(app: Option<&str>) -> Self {
        match app.map(str::to_ascii_lowercase).as_deref() {
            Some("http") => Self::Http1,
            Some("kubernetes.io/h2c" | "h2c" | "http2") => Self::Http2,
            Some("grpc") => Self::Grpc,
            Some("tcp") => Self::Opaque,
            _ => Self::Unknown,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub app_protocol: AppProtocol,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    ExternalName(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub key: ObjKey,
    pub kind: ServiceKind,
    pub ports: Vec<ServicePort>,
    pub opaque_ports: BTreeSet<u16>,
    pub internal_traffic_local: Option<bool>,
    pub traffic_distribution: Option<String>,
    /// Retries and timeouts from the `weft.dev/retry-*` and
    /// `weft.dev/timeout` annotations.
    pub policy: super::policy::RoutePolicy,
}

impl ServiceInfo {
    pub fn from_k8s(svc: &Service) -> Result<Self, String> {
        let key = name_of(&svc.metadata, "Service")?;
        let spec = svc.spec.clone().unwrap_or_default();
        let kind = if spec.type_.as_deref() == Some("ExternalName") {
            let name = spec
                .external_name
                .filter(|n| !n.is_empty())
                .ok_or("type ExternalName without spec.externalName")?;
            ServiceKind::ExternalName(name)
        } else if spec.cluster_ip.as_deref() == Some("None") {
            ServiceKind::Headless
        } else {
            let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
            if ips.is_empty() {
                ips.extend(spec.cluster_ip.clone().filter(|ip| !ip.is_empty()));
            }
            let ips = ips
                .iter()
                .map(|ip| {
                    ip.parse::<IpAddr>()
                        .map_err(|_| format!("spec.clusterIPs: '{ip}' is not an IP address"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            ServiceKind::ClusterIp(ips)
        };
        let ports = spec
            .ports
            .clone()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|(_, p)| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .map(|(i, p)| {
                Ok(ServicePort {
                    name: p.name.clone().unwrap_or_default(),
                    port: port(p.port, &format!("spec.ports[{i}].port"))?,
                    app_protocol: AppProtocol::parse(p.app_protocol.as_deref()),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        for p in spec.ports.iter().flatten() {
            if let Some(IntOrString::Int(n)) = &p.target_port {
                port(*n, "spec.ports[].targetPort")?;
            }
        }
        Ok(Self {
            key,
            kind,
            ports,
            opaque_ports: opaque_ports(&svc.metadata)?,
            policy: super::policy::RoutePolicy::from_meta(&svc.metadata)?,
            internal_traffic_local: spec
                .internal_traffic_policy
                .as_deref()
                .map(|p| p == "Local"),
            traffic_distribution: spec.traffic_distribution,
        })
    }

    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub ip: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub zone: String,
    pub node: String,
    pub for_zones: Vec<String>,
    pub for_nodes: Vec<String>,
    pub pod: Option<ObjKey>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    pub key: ObjKey,
    /// The Service it belongs to (from its label), if any.
    pub service: Option<ObjKey>,
    /// Port name → port number in this slice.
    pub ports: BTreeMap<String, u16>,
    pub endpoints: Vec<SliceEndpoint>,
}

impl SliceInfo {
    pub fn from_k8s(slice: &EndpointSlice) -> Result<Self, String> {
        let key = name_of(&slice.metadata, "EndpointSlice")?;
        let family = slice.address_type.as_str();
        if !matches!(family, "IPv4" | "IPv6" | "FQDN") {
            return Err(format!("addressType '{family}' is not IPv4, IPv6 or FQDN"));
        }
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(|name| (key.0.clone(), name.clone()));
        let mut ports = BTreeMap::new();
        for (i, p) in slice.ports.iter().flatten().enumerate() {
            if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            if let Some(n) = p.port {
                ports.insert(
                    p.name.clone().unwrap_or_default(),
                    port(n, &format!("ports[{i}].port"))?,
                );
            }
        }
        let mut endpoints = Vec::new();
        if family != "FQDN" {
            for (i, ep) in slice.endpoints.iter().enumerate() {
                let Some(addr) = ep.addresses.first() else {
                    return Err(format!("endpoints[{i}] has no addresses"));
                };
                let ip: IpAddr = addr.parse().map_err(|_| {
                    format!("endpoints[{i}].addresses[0] '{addr}' is not an IP address")
                })?;
                if ip.is_ipv4() != (family == "IPv4") {
                    return Err(format!(
                        "endpoints[{i}] address {ip} is not of addressType {family}"
                    ));
                }
                let c = ep.conditions.clone().unwrap_or_default();
                // Kubernetes: an unset `ready` means ready; `serving` defaults to `ready`.
                let ready = c.ready.unwrap_or(true);
                let hints = ep.hints.clone().unwrap_or_default();
                endpoints.push(SliceEndpoint {
                    ip,
                    ready,
                    serving: c.serving.unwrap_or(ready),
                    terminating: c.terminating.unwrap_or(false),
                    zone: ep.zone.clone().unwrap_or_default(),
                    node: ep.node_name.clone().unwrap_or_default(),
                    for_zones: hints
                        .for_zones
                        .unwrap_or_default()
                        .into_iter()
                        .map(|z| z.name)
                        .collect(),
                    for_nodes: hints
                        .for_nodes
                        .unwrap_or_default()
                        .into_iter()
                        .map(|n| n.name)
                        .collect(),
                    pod: ep
                        .target_ref
                        .as_ref()
                        .filter(|r| r.kind.as_deref() == Some("Pod"))
                        .and_then(|r| {
                            Some((
                                r.namespace.clone().unwrap_or_else(|| key.0.clone()),
                                r.name.clone()?,
                            ))
                        }),
                });
            }
        }
        Ok(Self {
            key,
            service,
            ports,
            endpoints,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub key: ObjKey,
    pub service_account: String,
    pub meshed: bool,
    pub opaque_ports: BTreeSet<u16>,
    /// The pod's own addresses (`status.podIPs`, else `status.podIP`), when
    /// they are the pod's alone: empty for a pod on the host's network
    /// (its IP is the node's, shared by every such pod) and for a pod that
    /// finished (Succeeded or Failed: its IP may be given to another pod).
    pub ips: Vec<IpAddr>,
    /// `spec.nodeName`.
    pub node: String,
    /// It has a `deletionTimestamp`: another pod may already hold its IP.
    pub deleting: bool,
    /// Its `weft.dev/default-inbound-policy` annotation.
    pub default_policy: Option<DefaultPolicy>,
}

impl PodInfo {
    pub fn from_k8s(pod: &Pod) -> Result<Self, String> {
        let key = name_of(&pod.metadata, "Pod")?;
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let mut listed: Vec<(String, String)> = status
            .pod_ips
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, p)| (format!("status.podIPs[{i}]"), p.ip.clone()))
            .collect();
        if listed.is_empty() {
            listed.extend(
                status
                    .pod_ip
                    .filter(|ip| !ip.is_empty())
                    .map(|ip| ("status.podIP".to_owned(), ip)),
            );
        }
        let mut ips = listed
            .iter()
            .map(|(field, ip)| {
                ip.parse::<IpAddr>()
                    .map_err(|_| format!("{field} '{ip}' is not an IP address"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let finished = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
        if spec.host_network == Some(true) || finished {
            ips.clear();
        }
        Ok(Self {
            key,
            service_account: spec
                .service_account_name
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
            // A classic sidecar is a container; a native one an init
            // container that keeps running (`restartPolicy: Always`).
            meshed: spec.containers.iter().any(|c| c.name == PROXY_CONTAINER)
                || spec.init_containers.iter().flatten().any(|c| {
                    c.name == PROXY_CONTAINER && c.restart_policy.as_deref() == Some("Always")
                }),
            opaque_ports: opaque_ports(&pod.metadata)?,
            ips,
            node: spec.node_name.unwrap_or_default(),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            default_policy: annotated_default(&pod.metadata),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub opaque_ports: BTreeSet<u16>,
    /// Its `weft.dev/default-inbound-policy` annotation.
    pub default_policy: Option<DefaultPolicy>,
}

impl NamespaceInfo {
    pub fn from_k8s(ns: &Namespace) -> Result<Self, String> {
        let name = ns
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or("Namespace without metadata.name")?;
        Ok(Self {
            name,
            opaque_ports: opaque_ports(&ns.metadata)?,
            default_policy: annotated_default(&ns.metadata),
        })
    }
}
