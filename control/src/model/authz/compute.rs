//! The pure function from the model's objects to the inbound policy of a
//! pod ([`PodPolicy`]), and from that to one of its ports
//! ([`PodPolicy::port`]).
//!
//! What a destination ServiceAccount's TrafficTargets allow ([`grants`])
//! is computed once per ServiceAccount and shared by its pods; a port's
//! message is a projection of it (which TCPRoutes cover the port).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use weft_proto::policy::v1 as pb;

use super::check::{Rule, TargetInfo};
use super::DefaultPolicy;
use crate::model::routes::check::{GroupInfo, TcpRouteInfo};
use crate::model::routes::{HttpMatch, PathMatch, ValueMatch};
use crate::model::ObjKey;

/// The route objects TrafficTarget rules refer to.
#[derive(Clone, Copy, Debug)]
pub struct Routes<'a> {
    pub groups: &'a HashMap<ObjKey, GroupInfo>,
    pub tcp_routes: &'a HashMap<ObjKey, TcpRouteInfo>,
}

/// What one TrafficTarget allows, its route references resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    /// `traffictarget/<namespace>/<name>`.
    pub name: String,
    pub clients: Vec<pb::ClientMatch>,
    /// The ports on which its TCPRoute rules allow whole connections.
    pub tcp: Ports,
    /// Its HTTPRouteGroup rules' matches (on every port).
    pub http: Vec<pb::HttpRouteMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    All,
    /// These; empty: none.
    Some(BTreeSet<u16>),
}

impl Ports {
    fn covers(&self, port: u16) -> bool {
        match self {
            Ports::All => true,
            Ports::Some(set) => set.contains(&port),
        }
    }
}

/// The inbound policy of one pod, for all its ports.
#[derive(Clone, Debug, PartialEq)]
pub struct PodPolicy {
    pub default: DefaultPolicy,
    /// `pod`, `namespace`, `cluster` or `traffictarget`.
    pub source: &'static str,
    /// Opaque ports (the pod's and its namespace's `weft.dev/opaque-ports`).
    pub opaque_ports: BTreeSet<u16>,
    /// Empty unless a TrafficTarget names the pod's ServiceAccount.
    pub grants: Arc<Vec<Grant>>,
}

impl PodPolicy {
    /// The policy of a pod that no TrafficTarget selects (or of a pod the
    /// model does not know, with `pod_default` `None`).
    pub fn default_only(
        cluster: DefaultPolicy,
        ns_default: Option<DefaultPolicy>,
        pod_default: Option<DefaultPolicy>,
    ) -> Self {
        let (default, source) = match (pod_default, ns_default) {
            (Some(p), _) => (p, "pod"),
            (None, Some(n)) => (n, "namespace"),
            (None, None) => (cluster, "cluster"),
        };
        Self {
            default,
            source,
            opaque_ports: BTreeSet::new(),
            grants: Arc::default(),
        }
    }

    /// The policy of a pod that TrafficTargets select: deny what they do
    /// not allow.
    pub fn targeted(grants: Arc<Vec<Grant>>) -> Self {
        Self {
            default: DefaultPolicy::Deny,
            source: "traffictarget",
            opaque_ports: BTreeSet::new(),
            grants,
        }
    }

    /// What the proxy of this pod is told about `port`.
    pub fn port(&self, port: u16) -> pb::InboundPolicy {
        let protocol = if self.opaque_ports.contains(&port) {
            pb::Protocol::Opaque
        } else {
            pb::Protocol::Unspecified
        };
        let authorizations = self
            .grants
            .iter()
            .filter_map(|g| {
                let http_routes = if g.tcp.covers(port) {
                    Vec::new()
                } else if !g.http.is_empty() {
                    g.http.clone()
                } else {
                    // Nothing this TrafficTarget names exists, or applies
                    // to this port: it allows nothing here (an empty
                    // list would allow everything).
                    return None;
                };
                Some(pb::Authorization {
                    name: g.name.clone(),
                    clients: g.clients.clone(),
                    http_routes,
                })
            })
            .collect();
        pb::InboundPolicy {
            default_policy: self.default.to_pb() as i32,
            protocol: protocol as i32,
            authorizations,
            default_policy_source: self.source.to_owned(),
        }
    }
}

/// What the TrafficTargets of one destination allow, in the order of
/// their keys (`targets` all name that destination).
pub fn grants<'a>(
    routes: Routes<'_>,
    targets: impl IntoIterator<Item = &'a TargetInfo>,
) -> Vec<Grant> {
    let mut targets: Vec<&TargetInfo> = targets.into_iter().collect();
    targets.sort_by(|a, b| a.key.cmp(&b.key));
    targets.into_iter().map(|t| grant(routes, t)).collect()
}

fn grant(routes: Routes<'_>, t: &TargetInfo) -> Grant {
    let ns = &t.key.0;
    let mut tcp = BTreeSet::new();
    let mut all_ports = false;
    let mut http = Vec::new();
    for rule in &t.rules {
        match rule {
            Rule::Tcp { name } => {
                let Some(route) = routes.tcp_routes.get(&(ns.clone(), name.clone())) else {
                    continue;
                };
                if route.ports.is_empty() {
                    all_ports = true;
                }
                tcp.extend(&route.ports);
            }
            Rule::Group { name, matches } => {
                let Some(group) = routes.groups.get(&(ns.clone(), name.clone())) else {
                    continue;
                };
                for (m, match_name) in group.matches.iter().zip(&group.names) {
                    if matches
                        .as_ref()
                        .is_none_or(|picked| picked.contains(match_name))
                    {
                        http.push(route_match(&format!("{name}/{match_name}"), m));
                    }
                }
            }
        }
    }
    Grant {
        name: format!("traffictarget/{ns}/{}", t.key.1),
        clients: t
            .sources
            .iter()
            .map(|(namespace, name)| pb::ClientMatch {
                kind: Some(pb::client_match::Kind::ServiceAccount(
                    pb::ServiceAccountRef {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    },
                )),
            })
            .collect(),
        tcp: if all_ports {
            Ports::All
        } else {
            Ports::Some(tcp)
        },
        http,
    }
}

/// An HTTPRouteGroup match as the policy API says it. The group's path
/// regex is anchored at the start of the path only (as for routing), and
/// the API's regexes match the whole path: `.*` follows.
fn route_match(name: &str, m: &HttpMatch) -> pb::HttpRouteMatch {
    use pb::path_match::Kind as P;
    let path = m.path.as_ref().map(|p| pb::PathMatch {
        kind: Some(match p {
            PathMatch::Exact(s) => P::Exact(s.clone()),
            PathMatch::Prefix(s) => P::Prefix(s.clone()),
            PathMatch::Regex(re) => P::Regex(format!("{re}(?s:.*)")),
        }),
    });
    pb::HttpRouteMatch {
        name: name.to_owned(),
        path,
        methods: m.methods.clone(),
        headers: m
            .headers
            .iter()
            .map(|h| pb::HeaderMatch {
                name: h.name.clone(),
                value: Some(match &h.value {
                    ValueMatch::Exact(v) => pb::header_match::Value::Exact(v.clone()),
                    ValueMatch::Regex(v) => pb::header_match::Value::Regex(v.clone()),
                }),
            })
            .collect(),
    }
}
