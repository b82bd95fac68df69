//! The route objects the model holds, checked ([`super::check`]), and
//! which Services' tables each one touches.

use std::collections::{BTreeSet, HashMap};

use super::check::{self, BackendSpec, GroupInfo, MatchKind, RouteInfo, SplitInfo, TcpRouteInfo};
use super::table::RouteKind;
use super::{gateway, smi};
use crate::model::ObjKey;

/// A route object from a source (older TrafficSplit versions already
/// turned into v1alpha4, HTTPRoute v1beta1 read as v1).
#[derive(Clone, Debug)]
pub enum RouteObject {
    TrafficSplit(Box<smi::TrafficSplit>),
    HttpRouteGroup(Box<smi::HTTPRouteGroup>),
    TcpRoute(Box<smi::TCPRoute>),
    HttpRoute(Box<gateway::HTTPRoute>),
    GrpcRoute(Box<gateway::GRPCRoute>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    TrafficSplit,
    HttpRouteGroup,
    TcpRoute,
    HttpRoute,
    GrpcRoute,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 5] = [
        ObjectKind::TrafficSplit,
        ObjectKind::HttpRouteGroup,
        ObjectKind::TcpRoute,
        ObjectKind::HttpRoute,
        ObjectKind::GrpcRoute,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::TrafficSplit => "TrafficSplit",
            ObjectKind::HttpRouteGroup => "HTTPRouteGroup",
            ObjectKind::TcpRoute => "TCPRoute",
            ObjectKind::HttpRoute => "HTTPRoute",
            ObjectKind::GrpcRoute => "GRPCRoute",
        }
    }
}

impl RouteObject {
    pub fn kind(&self) -> ObjectKind {
        match self {
            RouteObject::TrafficSplit(_) => ObjectKind::TrafficSplit,
            RouteObject::HttpRouteGroup(_) => ObjectKind::HttpRouteGroup,
            RouteObject::TcpRoute(_) => ObjectKind::TcpRoute,
            RouteObject::HttpRoute(_) => ObjectKind::HttpRoute,
            RouteObject::GrpcRoute(_) => ObjectKind::GrpcRoute,
        }
    }

    pub fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            RouteObject::TrafficSplit(o) => &o.metadata,
            RouteObject::HttpRouteGroup(o) => &o.metadata,
            RouteObject::TcpRoute(o) => &o.metadata,
            RouteObject::HttpRoute(o) => &o.metadata,
            RouteObject::GrpcRoute(o) => &o.metadata,
        }
    }
}

/// Every checked route object. Tables are computed by scanning the splits
/// and routes of one namespace's Services (bounded by the route objects
/// in the cluster).
#[derive(Debug, Default)]
pub struct RouteStore {
    pub(super) splits: HashMap<ObjKey, SplitInfo>,
    pub(in crate::model) groups: HashMap<ObjKey, GroupInfo>,
    pub(in crate::model) tcp_routes: HashMap<ObjKey, TcpRouteInfo>,
    pub(super) routes: HashMap<(RouteKind, ObjKey), RouteInfo>,
}

impl RouteStore {
    pub fn count(&self, kind: ObjectKind) -> usize {
        match kind {
            ObjectKind::TrafficSplit => self.splits.len(),
            ObjectKind::HttpRouteGroup => self.groups.len(),
            ObjectKind::TcpRoute => self.tcp_routes.len(),
            ObjectKind::HttpRoute => self
                .routes
                .keys()
                .filter(|k| k.0 == RouteKind::HttpRoute)
                .count(),
            ObjectKind::GrpcRoute => self
                .routes
                .keys()
                .filter(|k| k.0 == RouteKind::GrpcRoute)
                .count(),
        }
    }

    /// Adds or replaces an object; returns the Services whose tables it
    /// may change. A refused object changes nothing: its last good
    /// version stays.
    pub fn apply(&mut self, obj: &RouteObject) -> Result<BTreeSet<ObjKey>, String> {
        match obj {
            RouteObject::TrafficSplit(o) => {
                let info = check::split(o)?;
                let mut touched = self.delete(ObjectKind::TrafficSplit, &info.key);
                touched.insert((info.key.0.clone(), info.apex.clone()));
                self.splits.insert(info.key.clone(), info);
                Ok(touched)
            }
            RouteObject::HttpRouteGroup(o) => {
                let info = check::group(o)?;
                let touched = self.splits_using(MatchKind::HttpRouteGroup, &info.key);
                self.groups.insert(info.key.clone(), info);
                Ok(touched)
            }
            RouteObject::TcpRoute(o) => {
                let info = check::tcp_route(o)?;
                let touched = self.splits_using(MatchKind::TcpRoute, &info.key);
                self.tcp_routes.insert(info.key.clone(), info);
                Ok(touched)
            }
            RouteObject::HttpRoute(o) => self.put_route(check::http_route(o)?),
            RouteObject::GrpcRoute(o) => self.put_route(check::grpc_route(o)?),
        }
    }

    fn put_route(&mut self, info: RouteInfo) -> Result<BTreeSet<ObjKey>, String> {
        let kind = match info.kind {
            RouteKind::GrpcRoute => ObjectKind::GrpcRoute,
            _ => ObjectKind::HttpRoute,
        };
        let mut touched = self.delete(kind, &info.key);
        touched.extend(info.parents.iter().map(|p| p.service.clone()));
        self.routes.insert((info.kind, info.key.clone()), info);
        Ok(touched)
    }

    /// Removes an object (a missing one is not an error); returns the
    /// Services whose tables it was in.
    pub fn delete(&mut self, kind: ObjectKind, key: &ObjKey) -> BTreeSet<ObjKey> {
        match kind {
            ObjectKind::TrafficSplit => self
                .splits
                .remove(key)
                .map(|s| (key.0.clone(), s.apex))
                .into_iter()
                .collect(),
            ObjectKind::HttpRouteGroup => {
                self.groups.remove(key);
                self.splits_using(MatchKind::HttpRouteGroup, key)
            }
            ObjectKind::TcpRoute => {
                self.tcp_routes.remove(key);
                self.splits_using(MatchKind::TcpRoute, key)
            }
            ObjectKind::HttpRoute | ObjectKind::GrpcRoute => {
                let kind = if kind == ObjectKind::HttpRoute {
                    RouteKind::HttpRoute
                } else {
                    RouteKind::GrpcRoute
                };
                self.routes
                    .remove(&(kind, key.clone()))
                    .into_iter()
                    .flat_map(|r| r.parents.into_iter().map(|p| p.service))
                    .collect()
            }
        }
    }

    /// The apexes of the splits that reference this group or TCPRoute.
    fn splits_using(&self, kind: MatchKind, key: &ObjKey) -> BTreeSet<ObjKey> {
        self.splits
            .values()
            .filter(|s| {
                s.key.0 == key.0 && s.matches.iter().any(|(k, n)| *k == kind && *n == key.1)
            })
            .map(|s| (s.key.0.clone(), s.apex.clone()))
            .collect()
    }

    /// The Services whose tables name `svc` as a backend or mirror (their
    /// tables change when it appears, goes, or changes its ports).
    pub fn referencing(&self, svc: &ObjKey) -> BTreeSet<ObjKey> {
        let mut out: BTreeSet<ObjKey> = self
            .splits
            .values()
            .filter(|s| s.key.0 == svc.0 && s.backends.iter().any(|(b, _)| *b == svc.1))
            .map(|s| (s.key.0.clone(), s.apex.clone()))
            .collect();
        for r in self.routes.values() {
            let names = |b: &BackendSpec| matches!(b, BackendSpec::Service { service, .. } if service == svc);
            let uses = r.rules.iter().any(|rule| {
                rule.backends.iter().any(names) || rule.mirrors.iter().any(|(b, _, _)| names(b))
            });
            if uses {
                out.extend(r.parents.iter().map(|p| p.service.clone()));
            }
        }
        out
    }
}
