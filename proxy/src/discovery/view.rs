//! What one discovery stream has said about its destination, applied to the
//! destination's balancer, policy and resolution as each update arrives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::warn;
use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::update::Kind as U;

use super::policy::Policy;
use super::{Dest, Resolution, Resolver};
use crate::balance::{EndpointInfo, Locality, Prefer};
use crate::outbound::table::{self, RouteMetrics, RouteTable};

/// What a stream has said so far about its destination.
#[derive(Debug, Default)]
pub(super) struct View {
    endpoints: HashMap<SocketAddr, EndpointInfo>,
    locality: Locality,
    opaque: bool,
    /// The routes last compiled (an original destination's only).
    routes: Option<pb::Routes>,
}

impl View {
    pub(super) fn apply(&mut self, kind: U, dest: &Dest, resolver: &Arc<Resolver>) {
        let resolution = match kind {
            U::Snapshot(s) => {
                if let Some(p) = &s.profile {
                    self.profile(p, dest, resolver);
                }
                self.endpoints = s.endpoints.iter().filter_map(endpoint).collect();
                Resolution::Service {
                    opaque: self.opaque,
                }
            }
            U::Add(a) => {
                self.endpoints
                    .extend(a.endpoints.iter().filter_map(endpoint));
                Resolution::Service {
                    opaque: self.opaque,
                }
            }
            U::Remove(r) => {
                for addr in &r.addrs {
                    if let Ok(addr) = SocketAddr::try_from(addr) {
                        self.endpoints.remove(&addr);
                    }
                }
                Resolution::Service {
                    opaque: self.opaque,
                }
            }
            U::NoEndpoints(_) => {
                self.endpoints.clear();
                Resolution::Service {
                    opaque: self.opaque,
                }
            }
            U::DoesNotExist(_) => {
                self.endpoints.clear();
                self.routes = None;
                dest.routes.store(None);
                Resolution::NotAService
            }
            U::Profile(p) => {
                self.profile(&p, dest, resolver);
                Resolution::Service {
                    opaque: self.opaque,
                }
            }
        };
        let list: Vec<EndpointInfo> = self.endpoints.values().cloned().collect();
        dest.balancer.update(&list, self.locality);
        dest.state.send_if_modified(|r| {
            let changed = *r != resolution;
            *r = resolution;
            changed
        });
    }

    fn profile(&mut self, p: &pb::Profile, dest: &Dest, resolver: &Arc<Resolver>) {
        if dest.name.is_none() && self.routes != p.routes {
            self.routes = p.routes.clone();
            let env = Env {
                resolver,
                dest,
                dst: dest.label(),
            };
            let table = p.routes.as_ref().and_then(|r| RouteTable::compile(r, &env));
            dest.routes.store(table.map(Arc::new));
        }
        let policy = Policy::from_profile(p);
        if **dest.policy.load() != policy {
            dest.policy.store(Arc::new(policy));
        }
        self.opaque = p.protocol() == pb::Protocol::Opaque;
        self.locality = Locality {
            node_local: p.internal_traffic_policy() == pb::InternalTrafficPolicy::Local,
            prefer: match p.traffic_distribution() {
                pb::TrafficDistribution::PreferClose | pb::TrafficDistribution::PreferSameZone => {
                    Prefer::SameZone
                }
                pb::TrafficDistribution::PreferSameNode => Prefer::SameNode,
                pb::TrafficDistribution::Unspecified => Prefer::Any,
            },
        };
    }
}

/// An endpoint message as the balancer wants it; one without a valid
/// address is skipped (and logged).
fn endpoint(e: &pb::Endpoint) -> Option<(SocketAddr, EndpointInfo)> {
    let addr = match e.addr.as_ref().map(SocketAddr::try_from) {
        Some(Ok(a)) => a,
        Some(Err(error)) => {
            warn!(%error, "discovery sent an endpoint with a bad address: skipped");
            return None;
        }
        None => {
            warn!("discovery sent an endpoint without an address: skipped");
            return None;
        }
    };
    let conditions = e.conditions.unwrap_or_default();
    let hints = e.hints.clone().unwrap_or_default();
    Some((
        addr,
        EndpointInfo {
            addr: Some(addr),
            weight: e.weight,
            ready: conditions.ready,
            serving: conditions.serving,
            terminating: conditions.terminating,
            zone: e.zone.clone(),
            node: e.node_name.clone(),
            for_zones: hints.for_zones,
            for_nodes: hints.for_nodes,
            // Only a meshed endpoint's proxy can prove an identity.
            identity: e
                .tls_identity
                .as_ref()
                .filter(|_| e.meshed)
                .map(|t| Arc::from(t.spiffe_id.as_str())),
            meshed: e.meshed,
        },
    ))
}

/// What compiling a destination's routes needs from the resolver.
struct Env<'a> {
    resolver: &'a Arc<Resolver>,
    dest: &'a Dest,
    dst: String,
}

impl table::Backends for Env<'_> {
    fn backend(&self, authority: &str) -> Arc<Dest> {
        self.resolver.backend(authority, self.dest.addr)
    }

    fn metrics(&self, route: &str, backend: &str) -> RouteMetrics {
        self.resolver.route_metrics(&self.dst, route, backend)
    }
}
