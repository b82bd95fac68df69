//! The in-memory model: every Service, EndpointSlice, Pod and Namespace the
//! sources reported, indexed, and the destinations computed from them.
//!
//! Pure and synchronous: sources feed it objects, it answers which Services
//! and pod IPs a change touched, what each Service port's destination looks
//! like now, and which pod an IP is ([`super::pods`]). Tested without any
//! I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weft_proto::discovery::v1 as pb;

use super::authz::{check, smi::TrafficTarget, DefaultPolicy, TargetInfo};
use super::keys::Keys;
use super::objects::*;
use super::pods::PodView;
use super::routes::{wire, ObjectKind, RouteObject, RouteStore, RouteTable};

/// One Service port: what a proxy watches.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct DestKey {
    pub service: ObjKey,
    pub port: u16,
}

/// A destination as watchers see it.
///
/// `profile` is what every watcher sees, its `routes` the producer set;
/// a watcher in a namespace with consumer routes sees that namespace's
/// profile in `consumers` instead (the same but for `routes`). Each
/// distinct profile is one encoding per change ([`crate::hub`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DestView {
    pub profile: pb::Profile,
    /// By client namespace; bounded by the namespaces with consumer routes
    /// attached to this Service port.
    pub consumers: BTreeMap<String, pb::Profile>,
    pub endpoints: BTreeMap<SocketAddr, pb::Endpoint>,
}

impl DestView {
    /// The profile a watcher in namespace `client_ns` sees (empty: a
    /// watcher that did not say, which sees the producer routes).
    pub fn profile_for(&self, client_ns: &str) -> &pb::Profile {
        self.consumers.get(client_ns).unwrap_or(&self.profile)
    }
}

/// A typed object from a source.
#[derive(Clone, Debug)]
pub enum Object {
    Service(Box<Service>),
    Slice(Box<EndpointSlice>),
    Pod(Box<Pod>),
    Namespace(Box<Namespace>),
    /// A TrafficSplit, HTTPRouteGroup, TCPRoute, HTTPRoute or GRPCRoute.
    Route(RouteObject),
    TrafficTarget(Box<TrafficTarget>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Service,
    Slice,
    Pod,
    Namespace,
    Route(ObjectKind),
    TrafficTarget,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Slice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::Route(k) => k.as_str(),
            Kind::TrafficTarget => "TrafficTarget",
        }
    }

    /// The key of an object of this kind with metadata `meta`: see
    /// [`Object::key`].
    pub fn key(self, meta: &ObjectMeta) -> ObjKey {
        let ns = if self == Kind::Namespace {
            String::new()
        } else {
            meta.namespace.clone().unwrap_or_else(|| "default".into())
        };
        (ns, meta.name.clone().unwrap_or_default())
    }
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Service(_) => Kind::Service,
            Object::Slice(_) => Kind::Slice,
            Object::Pod(_) => Kind::Pod,
            Object::Namespace(_) => Kind::Namespace,
            Object::Route(r) => Kind::Route(r.kind()),
            Object::TrafficTarget(_) => Kind::TrafficTarget,
        }
    }

    /// Namespace and name as the object states them (for error messages and
    /// deletes); the namespace of a Namespace is empty.
    pub fn key(&self) -> ObjKey {
        let meta = match self {
            Object::Service(o) => &o.metadata,
            Object::Slice(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Route(r) => r.meta(),
            Object::TrafficTarget(o) => &o.metadata,
        };
        self.kind().key(meta)
    }
}

/// The model's state.
#[derive(Debug, Default)]
pub struct Store {
    services: HashMap<ObjKey, ServiceInfo>,
    slices: HashMap<ObjKey, SliceInfo>,
    pub(super) pods: HashMap<ObjKey, PodInfo>,
    pub(super) namespaces: HashMap<String, NamespaceInfo>,
    slices_by_service: HashMap<ObjKey, BTreeSet<ObjKey>>,
    slices_by_pod: HashMap<ObjKey, Keys>,
    /// The pods that hold each IP (more than one only while one replaces
    /// another): one entry per pod IP, so bounded by the pods.
    pods_by_ip: HashMap<IpAddr, Keys>,
    trust_domain: String,
    cluster_domain: String,
    pub(super) routes: RouteStore,
    /// Checked TrafficTargets ([`super::authz`]).
    pub(super) targets: HashMap<ObjKey, TargetInfo>,
    /// weft-control's `--default-inbound-policy`.
    pub(super) default_policy: DefaultPolicy,
    /// Each Service port's routes as watchers see them, for the Service
    /// ports that have any (bounded by them): recomputed when a route
    /// object or a Service touches the Service, so that the frequent
    /// changes (endpoints, pods) never recompute a table.
    wire_routes: HashMap<ObjKey, BTreeMap<u16, PortRoutes>>,
}

/// One Service port's `Profile.routes`: the producer set's, and each
/// consumer namespace's.
#[derive(Clone, Debug, Default, PartialEq)]
struct PortRoutes {
    producer: Option<pb::Routes>,
    consumers: BTreeMap<String, Option<pb::Routes>>,
}

/// What a change may have changed: the destinations of these Services, and
/// of watches on these pod IPs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    pub services: BTreeSet<ObjKey>,
    pub pod_ips: BTreeSet<IpAddr>,
}

impl Touched {
    /// These Services, no pod IP.
    pub fn services(services: impl IntoIterator<Item = ObjKey>) -> Self {
        Self {
            services: services.into_iter().collect(),
            pod_ips: BTreeSet::new(),
        }
    }
}

impl Store {
    pub fn new(cluster_domain: &str, trust_domain: &str) -> Self {
        Self {
            cluster_domain: cluster_domain.to_owned(),
            trust_domain: trust_domain.to_owned(),
            ..Self::default()
        }
    }

    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Service => self.services.len(),
            Kind::Slice => self.slices.len(),
            Kind::Pod => self.pods.len(),
            Kind::Namespace => self.namespaces.len(),
            Kind::Route(k) => self.routes.count(k),
            Kind::TrafficTarget => self.targets.len(),
        }
    }

    /// Adds or replaces an object. An invalid one is refused with the reason
    /// and changes nothing.
    pub fn apply(&mut self, obj: &Object) -> Result<Touched, String> {
        let touched = self.apply_object(obj)?;
        if matches!(obj.kind(), Kind::Service | Kind::Route(_)) {
            self.refresh_routes(&touched.services);
        }
        Ok(touched)
    }

    /// Removes an object (a missing one is not an error).
    pub fn delete(&mut self, kind: Kind, key: &ObjKey) -> Touched {
        let touched = self.delete_object(kind, key);
        if matches!(kind, Kind::Service | Kind::Route(_)) {
            self.refresh_routes(&touched.services);
        }
        touched
    }

    /// Recomputes the routes of these Services' ports (a route table
    /// depends on route objects and Services only: see
    /// [`RouteStore::apply`] and [`RouteStore::referencing`] for which
    /// Services each change touches).
    fn refresh_routes(&mut self, services: &BTreeSet<ObjKey>) {
        for svc in services {
            let ports: BTreeMap<u16, PortRoutes> = match self.services.get(svc) {
                None => BTreeMap::new(),
                Some(info) => info
                    .ports
                    .iter()
                    .map(|p| (p.port, self.port_routes(info, p.port)))
                    .filter(|(_, r)| *r != PortRoutes::default())
                    .collect(),
            };
            if ports.is_empty() {
                self.wire_routes.remove(svc);
            } else {
                self.wire_routes.insert(svc.clone(), ports);
            }
        }
    }

    fn port_routes(&self, svc: &ServiceInfo, port: u16) -> PortRoutes {
        let table = self.route_table(&DestKey {
            service: svc.key.clone(),
            port,
        });
        let cx = wire::Context {
            cluster_domain: &self.cluster_domain,
            service: &svc.policy,
        };
        PortRoutes {
            producer: wire::routes(&cx, &table, table.producer.as_ref(), ""),
            consumers: table
                .consumers
                .iter()
                .map(|(ns, set)| (ns.clone(), wire::routes(&cx, &table, Some(set), ns)))
                .collect(),
        }
    }

    fn apply_object(&mut self, obj: &Object) -> Result<Touched, String> {
        match obj {
            Object::Service(svc) => {
                let info = ServiceInfo::from_k8s(svc)?;
                let key = info.key.clone();
                self.services.insert(key.clone(), info);
                let mut touched = self.routes.referencing(&key);
                touched.insert(key);
                Ok(Touched::services(touched))
            }
            Object::Slice(slice) => {
                let info = SliceInfo::from_k8s(slice)?;
                let mut touched = self.remove_slice(&info.key);
                if let Some(svc) = &info.service {
                    self.slices_by_service
                        .entry(svc.clone())
                        .or_default()
                        .insert(info.key.clone());
                    touched.services.insert(svc.clone());
                }
                for pod in info.endpoints.iter().filter_map(|e| e.pod.clone()) {
                    self.slices_by_pod
                        .entry(pod)
                        .or_default()
                        .insert(info.key.clone());
                }
                self.slices.insert(info.key.clone(), info);
                Ok(touched)
            }
            Object::Pod(pod) => {
                let info = PodInfo::from_k8s(pod)?;
                let mut touched = Touched::services(self.services_of_pod(&info.key));
                touched.pod_ips = self.remove_pod(&info.key);
                for ip in &info.ips {
                    self.pods_by_ip
                        .entry(*ip)
                        .or_default()
                        .insert(info.key.clone());
                    touched.pod_ips.insert(*ip);
                }
                self.pods.insert(info.key.clone(), info);
                Ok(touched)
            }
            Object::Namespace(ns) => {
                let info = NamespaceInfo::from_k8s(ns)?;
                let touched = self.touched_in(&info.name);
                self.namespaces.insert(info.name.clone(), info);
                Ok(touched)
            }
            Object::Route(r) => Ok(Touched::services(self.routes.apply(r)?)),
            Object::TrafficTarget(t) => {
                let info = check::target(t)?;
                self.targets.insert(info.key.clone(), info);
                Ok(Touched::default())
            }
        }
    }

    fn delete_object(&mut self, kind: Kind, key: &ObjKey) -> Touched {
        match kind {
            Kind::Service => {
                self.services.remove(key);
                let mut touched = self.routes.referencing(key);
                touched.insert(key.clone());
                Touched::services(touched)
            }
            Kind::Slice => self.remove_slice(key),
            Kind::Pod => Touched {
                services: self.services_of_pod(key),
                pod_ips: self.remove_pod(key),
            },
            Kind::Namespace => {
                self.namespaces.remove(&key.1);
                self.touched_in(&key.1)
            }
            Kind::Route(k) => Touched::services(self.routes.delete(k, key)),
            Kind::TrafficTarget => {
                self.targets.remove(key);
                Touched::default()
            }
        }
    }

    fn remove_slice(&mut self, key: &ObjKey) -> Touched {
        let mut touched = Touched::default();
        if let Some(old) = self.slices.remove(key) {
            if let Some(svc) = &old.service {
                if let Some(set) = self.slices_by_service.get_mut(svc) {
                    set.remove(key);
                    if set.is_empty() {
                        self.slices_by_service.remove(svc);
                    }
                }
                touched.services.insert(svc.clone());
            }
            for pod in old.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
                if let Some(set) = self.slices_by_pod.get_mut(pod) {
                    set.remove(key);
                    if set.is_empty() {
                        self.slices_by_pod.remove(pod);
                    }
                }
            }
        }
        touched
    }

    /// Removes a pod and its IPs from the index; returns those IPs.
    fn remove_pod(&mut self, key: &ObjKey) -> BTreeSet<IpAddr> {
        let Some(old) = self.pods.remove(key) else {
            return BTreeSet::new();
        };
        for ip in &old.ips {
            if let Some(set) = self.pods_by_ip.get_mut(ip) {
                set.remove(key);
                if set.is_empty() {
                    self.pods_by_ip.remove(ip);
                }
            }
        }
        old.ips.into_iter().collect()
    }

    fn services_of_pod(&self, pod: &ObjKey) -> BTreeSet<ObjKey> {
        self.slices_by_pod
            .get(pod)
            .into_iter()
            .flatten()
            .filter_map(|s| self.slices.get(s)?.service.clone())
            .collect()
    }

    /// The Services and pod IPs of a namespace (whose opaque ports apply
    /// to both).
    fn touched_in(&self, ns: &str) -> Touched {
        Touched {
            services: self
                .services
                .keys()
                .filter(|k| k.0 == ns)
                .cloned()
                .collect(),
            pod_ips: self
                .pods
                .values()
                .filter(|p| p.key.0 == ns)
                .flat_map(|p| p.ips.iter().copied())
                .collect(),
        }
    }

    /// The pod whose own address `ip` is, for a watch on it. While two pods
    /// claim it (one replacing another) the one not being deleted wins,
    /// then the first by namespace and name.
    pub fn pod_at(&self, ip: IpAddr) -> Option<PodView> {
        let pod = self
            .pods_by_ip
            .get(&ip)?
            .iter()
            .filter_map(|k| self.pods.get(k))
            .min_by_key(|p| p.deleting)?;
        let mut opaque_ports = pod.opaque_ports.clone();
        if let Some(ns) = self.namespaces.get(&pod.key.0) {
            opaque_ports.extend(&ns.opaque_ports);
        }
        Some(PodView {
            key: pod.key.clone(),
            meshed: pod.meshed,
            identity: pod.meshed.then(|| self.spiffe_id(pod)),
            node: pod.node.clone(),
            opaque_ports,
        })
    }

    fn spiffe_id(&self, pod: &PodInfo) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, pod.key.0, pod.service_account
        )
    }

    /// The Service (and so the destinations) behind a ClusterIP.
    pub fn cluster_ips(&self, svc: &ObjKey) -> Vec<IpAddr> {
        match self.services.get(svc).map(|s| &s.kind) {
            Some(ServiceKind::ClusterIp(ips)) => ips.clone(),
            _ => Vec::new(),
        }
    }

    /// Every destination of a Service now: one per TCP port. Empty when the
    /// Service does not exist.
    pub fn destinations(&self, svc: &ObjKey) -> Vec<(DestKey, DestView)> {
        let Some(info) = self.services.get(svc) else {
            return Vec::new();
        };
        info.ports
            .iter()
            .map(|port| {
                (
                    DestKey {
                        service: svc.clone(),
                        port: port.port,
                    },
                    self.view(info, port),
                )
            })
            .collect()
    }

    fn view(&self, svc: &ServiceInfo, port: &ServicePort) -> DestView {
        let ns_opaque = self.namespaces.get(&svc.key.0).map(|n| &n.opaque_ports);
        let svc_opaque = svc.opaque_ports.contains(&port.port)
            || ns_opaque.is_some_and(|o| o.contains(&port.port));
        let protocol = if svc_opaque {
            pb::Protocol::Opaque
        } else {
            match port.app_protocol {
                AppProtocol::Opaque => pb::Protocol::Opaque,
                AppProtocol::Http1 => pb::Protocol::Http1,
                AppProtocol::Http2 => pb::Protocol::Http2,
                AppProtocol::Grpc => pb::Protocol::Grpc,
                AppProtocol::Unknown => pb::Protocol::Unspecified,
            }
        };
        let (ns, name) = &svc.key;
        let mut profile = pb::Profile {
            service_name: name.clone(),
            service_namespace: ns.clone(),
            fully_qualified_name: format!("{name}.{ns}.svc.{}", self.cluster_domain),
            port: u32::from(port.port),
            port_name: port.name.clone(),
            protocol: protocol as i32,
            external_name: match &svc.kind {
                ServiceKind::ExternalName(n) => n.clone(),
                _ => String::new(),
            },
            headless: svc.kind == ServiceKind::Headless,
            internal_traffic_policy: match svc.internal_traffic_local {
                None => pb::InternalTrafficPolicy::Unspecified,
                Some(true) => pb::InternalTrafficPolicy::Local,
                Some(false) => pb::InternalTrafficPolicy::Cluster,
            } as i32,
            traffic_distribution: match svc.traffic_distribution.as_deref() {
                Some("PreferClose") => pb::TrafficDistribution::PreferClose,
                Some("PreferSameZone") => pb::TrafficDistribution::PreferSameZone,
                Some("PreferSameNode") => pb::TrafficDistribution::PreferSameNode,
                _ => pb::TrafficDistribution::Unspecified,
            } as i32,
            timeouts: timeouts(&svc.policy),
            retry: svc.policy.retry.as_ref().map(retry_policy),
            routes: None,
        };
        let routes = self
            .wire_routes
            .get(&svc.key)
            .and_then(|ports| ports.get(&port.port));
        let consumers = routes
            .into_iter()
            .flat_map(|r| &r.consumers)
            .map(|(ns, routes)| {
                let profile = pb::Profile {
                    routes: routes.clone(),
                    ..profile.clone()
                };
                (ns.clone(), profile)
            })
            .collect();
        profile.routes = routes.and_then(|r| r.producer.clone());

        let mut endpoints = BTreeMap::new();
        for slice in self
            .slices_by_service
            .get(&svc.key)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k))
        {
            // The slice's port of the same name holds the target port its
            // endpoints listen on: a named targetPort resolves per slice.
            let Some(target) = slice.ports.get(&port.name) else {
                continue;
            };
            for ep in &slice.endpoints {
                let addr = SocketAddr::new(ep.ip, *target);
                let pod = ep.pod.as_ref().and_then(|k| self.pods.get(k));
                let meshed = pod.is_some_and(|p| p.meshed);
                let pod_opaque = pod.is_some_and(|p| p.opaque_ports.contains(target));
                let endpoint = pb::Endpoint {
                    addr: Some(addr.into()),
                    weight: 10_000,
                    conditions: Some(pb::EndpointConditions {
                        ready: ep.ready,
                        serving: ep.serving,
                        terminating: ep.terminating,
                    }),
                    zone: ep.zone.clone(),
                    node_name: ep.node.clone(),
                    hints: (!ep.for_zones.is_empty() || !ep.for_nodes.is_empty()).then(|| {
                        pb::TopologyHints {
                            for_zones: ep.for_zones.clone(),
                            for_nodes: ep.for_nodes.clone(),
                        }
                    }),
                    tls_identity: pod.filter(|p| p.meshed).map(|p| pb::TlsIdentity {
                        spiffe_id: self.spiffe_id(p),
                    }),
                    meshed,
                    pod_name: ep.pod.as_ref().map(|k| k.1.clone()).unwrap_or_default(),
                    pod_namespace: ep.pod.as_ref().map(|k| k.0.clone()).unwrap_or_default(),
                    // What the endpoint says beyond the profile (never a
                    // copy of it): its pod's opaque ports.
                    protocol_hint: if pod_opaque && protocol != pb::Protocol::Opaque {
                        pb::Protocol::Opaque
                    } else {
                        pb::Protocol::Unspecified
                    } as i32,
                };
                // The same address in two slices (a pod moving between
                // slices): the ready copy wins.
                match endpoints.get(&addr) {
                    Some(pb::Endpoint {
                        conditions: Some(c),
                        ..
                    }) if c.ready => {}
                    _ => {
                        endpoints.insert(addr, endpoint);
                    }
                }
            }
        }
        DestView {
            profile,
            consumers,
            endpoints,
        }
    }

    /// The route table of a Service port (see [`super::routes`]).
    pub fn route_table(&self, dest: &DestKey) -> RouteTable {
        self.routes.table(dest, |k| self.services.get(k))
    }

    /// The route tables of every port of a Service (none when it does not
    /// exist).
    pub fn route_tables(&self, svc: &ObjKey) -> Vec<RouteTable> {
        let ports = self.services.get(svc).map(|s| s.ports.as_slice());
        ports
            .unwrap_or_default()
            .iter()
            .map(|p| {
                self.route_table(&DestKey {
                    service: svc.clone(),
                    port: p.port,
                })
            })
            .collect()
    }

    /// The Service a host name names, if it exists (see [`parse_host`]).
    pub fn service_by_name(&self, host: &str, default_ns: &str) -> Option<ObjKey> {
        parse_host(host, default_ns, &self.cluster_domain).filter(|k| self.services.contains_key(k))
    }
}

/// The Service a host names: `svc`, `svc.ns`, `svc.ns.svc`,
/// `svc.ns.svc.<cluster domain>` (case and a trailing dot ignored); `svc`
/// alone is looked up in `default_ns`.
pub fn parse_host(host: &str, default_ns: &str, cluster_domain: &str) -> Option<ObjKey> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let parts: Vec<&str> = host.split('.').collect();
    let domain: Vec<&str> = cluster_domain.split('.').collect();
    let (ns, svc) = match parts.as_slice() {
        [svc] => (default_ns, *svc),
        [svc, ns] | [svc, ns, "svc"] => (*ns, *svc),
        [svc, ns, "svc", rest @ ..] if rest == domain.as_slice() => (*ns, *svc),
        _ => return None,
    };
    (!svc.is_empty() && !ns.is_empty()).then(|| (ns.to_owned(), svc.to_owned()))
}

pub(crate) fn proto_duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn timeouts(p: &super::policy::RoutePolicy) -> Option<pb::Timeouts> {
    (p.timeout.is_some() || p.per_try.is_some()).then(|| pb::Timeouts {
        request: p.timeout.map(proto_duration),
        per_try: p.per_try.map(proto_duration),
    })
}

pub(crate) fn retry_policy(r: &super::policy::Retry) -> pb::RetryPolicy {
    pb::RetryPolicy {
        http: Some(pb::HttpRetryConditions {
            server_error: r.server_error,
            gateway_error: r.gateway_error,
            connect_failure: r.connect_failure,
            status_codes: r.status_codes.clone(),
        }),
        grpc: (!r.grpc_codes.is_empty()).then(|| pb::GrpcRetryConditions {
            status_codes: r.grpc_codes.clone(),
        }),
        limit: r.limit,
        budget: Some(pb::RetryBudget {
            retry_ratio: f64::from(r.budget_permille) / 1000.0,
            min_retries_per_second: r.min_per_second,
            ttl: Some(proto_duration(std::time::Duration::from_secs(10))),
        }),
        non_idempotent: r.non_idempotent,
    }
}
