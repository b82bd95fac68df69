//! The pure routing function: one destination (Service port) and the
//! route objects in, its [`RouteTable`] out, with what only the model can
//! see (conflicts, missing Services) reported as [`Problem`]s. The rules it
//! applies are listed in the [module doc](super).

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::check::{BackendSpec, CheckedRule, MatchKind, Parent, RouteInfo, SplitInfo};
use super::store::RouteStore;
use super::table::*;
use crate::model::objects::ServiceInfo;
use crate::model::store::DestKey;
use crate::model::ObjKey;

/// Oldest first (an object without a creation time, as the files source
/// gives them, after every one that has one), then by name.
fn age_order<'a>(
    created: &'a Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    key: &'a ObjKey,
) -> impl Ord + 'a {
    (created.is_none(), created.as_ref().map(|t| t.0), key)
}

impl RouteStore {
    /// The route table of `dest`. `services` looks Services up (the model's
    /// map); the apex itself must exist (`dest` comes from it).
    pub fn table<'a>(
        &self,
        dest: &DestKey,
        services: impl Fn(&ObjKey) -> Option<&'a ServiceInfo>,
    ) -> RouteTable {
        let mut problems = Vec::new();
        let port_name = services(&dest.service)
            .and_then(|s| s.port(dest.port))
            .map(|p| p.name.clone())
            .unwrap_or_default();

        // Gateway API routes attached to this Service port, oldest first.
        let mut attached: Vec<&RouteInfo> = self
            .routes
            .values()
            .filter(|r| r.parents.iter().any(|p| attaches(p, dest, &port_name)))
            .collect();
        attached.sort_by(|a, b| age_order(&a.created, &a.key).cmp(&age_order(&b.created, &b.key)));
        let (producer_routes, consumer_routes): (Vec<&RouteInfo>, Vec<&RouteInfo>) = attached
            .into_iter()
            .partition(|r| r.key.0 == dest.service.0);

        // TrafficSplits of this apex, oldest first: the first is in force.
        let mut splits: Vec<&SplitInfo> = self
            .splits
            .values()
            .filter(|s| s.key.0 == dest.service.0 && s.apex == dest.service.1)
            .collect();
        splits.sort_by(|a, b| age_order(&a.created, &a.key).cmp(&age_order(&b.created, &b.key)));

        let mut producer = None;
        let mut tcp = None;
        let mut tcp_route = None;
        if let Some(route) = producer_routes.first() {
            for s in &splits {
                problems.push(Problem {
                    kind: "TrafficSplit",
                    object: s.key.clone(),
                    reason: format!(
                        "not in force on {}:{}: {} is attached there, and a Gateway API route wins over a TrafficSplit",
                        dest.service.1,
                        dest.port,
                        RouteRef { kind: route.kind, key: route.key.clone() }
                    ),
                });
            }
            producer = Some(gateway_set(
                dest,
                &producer_routes,
                &services,
                &mut problems,
            ));
        } else if let Some((winner, losers)) = splits.split_first() {
            for s in losers {
                problems.push(Problem {
                    kind: "TrafficSplit",
                    object: s.key.clone(),
                    reason: format!(
                        "not in force: TrafficSplit {} is older and splits apex {} already (the oldest by creation time, then name, wins)",
                        winner.key.1, winner.apex
                    ),
                });
            }
            let (set, tcp_backends) = self.split_set(dest, winner, &services, &mut problems);
            producer = set;
            tcp_route = tcp_backends.is_some().then(|| RouteRef {
                kind: RouteKind::TrafficSplit,
                key: winner.key.clone(),
            });
            tcp = tcp_backends;
        }

        let mut by_ns: BTreeMap<String, Vec<&RouteInfo>> = BTreeMap::new();
        for r in consumer_routes {
            by_ns.entry(r.key.0.clone()).or_default().push(r);
        }
        let consumers = by_ns
            .into_iter()
            .map(|(ns, routes)| {
                let set = gateway_set(dest, &routes, &services, &mut problems);
                (ns, set)
            })
            .collect();
        problems.sort();
        problems.dedup();
        RouteTable {
            dest: dest.clone(),
            producer,
            consumers,
            tcp,
            tcp_route,
            problems,
        }
    }

    /// The set of a split in force, and its TCP backends when it applies to
    /// opaque connections on this port.
    fn split_set<'a>(
        &self,
        dest: &DestKey,
        split: &SplitInfo,
        services: &impl Fn(&ObjKey) -> Option<&'a ServiceInfo>,
        problems: &mut Vec<Problem>,
    ) -> (Option<RouteSet>, Option<Vec<Backend>>) {
        let ns = &split.key.0;
        let mut report = |reason: String| {
            problems.push(Problem {
                kind: "TrafficSplit",
                object: split.key.clone(),
                reason,
            })
        };
        let mut backends = Vec::new();
        let mut without_port = 0;
        let mut invalid = Vec::new();
        for (name, weight) in &split.backends {
            let key = (ns.clone(), name.clone());
            // The apex among its own backends: its own endpoints.
            let target = if *name == split.apex {
                Target::Service(dest.clone())
            } else {
                match services(&key) {
                    None => Target::Invalid(format!("Service {ns}/{name} does not exist")),
                    Some(s) if s.port(dest.port).is_none() => {
                        without_port += 1;
                        Target::Invalid(format!(
                            "Service {ns}/{name} has no port {} (the apex's): it gets no traffic",
                            dest.port
                        ))
                    }
                    // Never through that Service's own split or routes.
                    Some(_) => Target::Service(DestKey {
                        service: key,
                        port: dest.port,
                    }),
                }
            };
            if let Target::Invalid(reason) = &target {
                if *weight > 0 {
                    invalid.push(format!("backend {name}: {reason}"));
                }
            }
            // SMI: a backend that cannot take the traffic is left out; its
            // share goes to the others.
            let weight = if matches!(target, Target::Invalid(_)) {
                0
            } else {
                *weight
            };
            backends.push(Backend {
                target,
                weight,
                filters: Vec::new(),
            });
        }

        // No backend has this port at all: the split is about the apex's
        // other ports, and this one is left alone.
        if without_port == split.backends.len() {
            return (None, None);
        }
        invalid.into_iter().for_each(&mut report);

        let mut http = Vec::new();
        let mut groups = 0;
        let mut tcp_covers = false;
        let mut tcp_refs = 0;
        for (kind, name) in &split.matches {
            let key = (ns.clone(), name.clone());
            match kind {
                MatchKind::HttpRouteGroup => {
                    groups += 1;
                    match self.groups.get(&key) {
                        Some(g) => http.extend(g.matches.iter().cloned()),
                        None => report(format!(
                            "spec.matches: HTTPRouteGroup {ns}/{name} does not exist: it matches no request"
                        )),
                    }
                }
                MatchKind::TcpRoute => {
                    tcp_refs += 1;
                    match self.tcp_routes.get(&key) {
                        Some(r) => tcp_covers |= r.ports.is_empty() || r.ports.contains(&dest.port),
                        None => report(format!(
                            "spec.matches: TCPRoute {ns}/{name} does not exist: it matches no connection"
                        )),
                    }
                }
            }
        }
        let all = groups == 0 && (tcp_refs == 0 || tcp_covers);
        if all {
            http.push(HttpMatch::default());
        }
        let tcp = (tcp_refs == 0 && groups == 0 || tcp_covers).then(|| backends.clone());
        let rule = Rule {
            route: RouteRef {
                kind: RouteKind::TrafficSplit,
                key: split.key.clone(),
            },
            index: 0,
            filters: Vec::new(),
            backends,
            timeouts: None,
            retry: None,
            policy: Default::default(),
        };
        let set = RouteSet {
            rules: vec![rule],
            http: http
                .into_iter()
                .map(|matcher| Entry { rule: 0, matcher })
                .collect(),
            grpc: Vec::new(),
            otherwise: Otherwise::Apex,
        };
        (Some(set), tcp)
    }
}

/// A parentRef names this Service port: the Service, and its port
/// (number or, with `sectionName`, name) when it gives one.
fn attaches(p: &Parent, dest: &DestKey, port_name: &str) -> bool {
    p.service == dest.service
        && p.port.is_none_or(|n| n == dest.port)
        && p.section.as_deref().is_none_or(|s| s == port_name)
}

fn resolve<'a>(
    spec: &BackendSpec,
    services: &impl Fn(&ObjKey) -> Option<&'a ServiceInfo>,
) -> (Target, u32, Vec<Filter>) {
    match spec {
        BackendSpec::Invalid { reason, weight } => {
            (Target::Invalid(reason.clone()), *weight, Vec::new())
        }
        BackendSpec::Service {
            service,
            port,
            weight,
            filters,
        } => {
            let target = match services(service) {
                None => Target::Invalid(format!(
                    "Service {}/{} does not exist",
                    service.0, service.1
                )),
                Some(s) if s.port(*port).is_none() => Target::Invalid(format!(
                    "Service {}/{} has no port {port}",
                    service.0, service.1
                )),
                Some(_) => Target::Service(DestKey {
                    service: service.clone(),
                    port: *port,
                }),
            };
            (target, *weight, filters.clone())
        }
    }
}

/// The rules of these routes (oldest first) with their matches sorted by
/// the Gateway API's precedence.
fn gateway_set<'a>(
    dest: &DestKey,
    routes: &[&RouteInfo],
    services: &impl Fn(&ObjKey) -> Option<&'a ServiceInfo>,
    problems: &mut Vec<Problem>,
) -> RouteSet {
    let mut rules = Vec::new();
    let mut http = Vec::new();
    let mut grpc = Vec::new();
    for (order, route) in routes.iter().enumerate() {
        let route_ref = RouteRef {
            kind: route.kind,
            key: route.key.clone(),
        };
        for (index, checked) in route.rules.iter().enumerate() {
            let rule_at = rules.len();
            rules.push(rule(
                dest, &route_ref, index, checked, route, services, problems,
            ));
            for (m, matcher) in checked.http.iter().enumerate() {
                http.push((
                    (http_rank(matcher), order, index, m),
                    Entry {
                        rule: rule_at,
                        matcher: matcher.clone(),
                    },
                ));
            }
            for (m, matcher) in checked.grpc.iter().enumerate() {
                grpc.push((
                    (grpc_rank(matcher), order, index, m),
                    Entry {
                        rule: rule_at,
                        matcher: matcher.clone(),
                    },
                ));
            }
        }
    }
    http.sort_by_key(|e| e.0);
    grpc.sort_by_key(|e| e.0);
    RouteSet {
        rules,
        http: http.into_iter().map(|(_, e)| e).collect(),
        grpc: grpc.into_iter().map(|(_, e)| e).collect(),
        otherwise: Otherwise::NotFound,
    }
}

fn rule<'a>(
    dest: &DestKey,
    route_ref: &RouteRef,
    index: usize,
    checked: &CheckedRule,
    route: &RouteInfo,
    services: &impl Fn(&ObjKey) -> Option<&'a ServiceInfo>,
    problems: &mut Vec<Problem>,
) -> Rule {
    let mut report = |reason: String| {
        problems.push(Problem {
            kind: route.kind.as_str(),
            object: route.key.clone(),
            reason,
        })
    };
    let mut backends = Vec::new();
    for (j, spec) in checked.backends.iter().enumerate() {
        let (target, weight, filters) = resolve(spec, services);
        if let Target::Invalid(reason) = &target {
            report(format!(
                "spec.rules[{index}].backendRefs[{j}]: {reason}: its share gets 500"
            ));
        }
        backends.push(Backend {
            target,
            weight,
            filters,
        });
    }
    let redirect = checked
        .filters
        .iter()
        .any(|f| matches!(f, Filter::Redirect { .. }));
    if backends.is_empty() && !redirect {
        // GAMMA, as Linkerd and Istio read it: a rule without backendRefs
        // sends to the parent Service itself.
        backends.push(Backend {
            target: Target::Service(dest.clone()),
            weight: 1,
            filters: Vec::new(),
        });
    }
    let mut filters = checked.filters.clone();
    for (j, (spec, numerator, denominator)) in checked.mirrors.iter().enumerate() {
        let (target, _, _) = resolve(spec, services);
        if let Target::Invalid(reason) = &target {
            report(format!(
                "spec.rules[{index}] RequestMirror {j}: {reason}: nothing is mirrored"
            ));
        }
        filters.push(Filter::Mirror {
            backend: target,
            numerator: *numerator,
            denominator: *denominator,
        });
    }
    Rule {
        route: route_ref.clone(),
        index,
        filters,
        backends,
        timeouts: checked.timeouts.clone(),
        retry: checked.retry.clone(),
        policy: route.policy.clone(),
    }
}

/// Smaller first: Exact path (longer first), then RegularExpression
/// (longer pattern first), then PathPrefix (longer first); then a method;
/// then more headers; then more query parameters.
fn http_rank(m: &HttpMatch) -> (u8, Reverse<usize>, bool, Reverse<usize>, Reverse<usize>) {
    let (class, len) = match &m.path {
        Some(PathMatch::Exact(p)) => (0, p.len()),
        Some(PathMatch::Regex(p)) => (1, p.len()),
        Some(PathMatch::Prefix(p)) => (2, p.trim_end_matches('/').len()),
        None => (3, 0),
    };
    (
        class,
        Reverse(len),
        m.methods.is_empty(),
        Reverse(m.headers.len()),
        Reverse(m.query.len()),
    )
}

/// Smaller first: an Exact service (longer first), then a regex one, then
/// none; the same for the method; then more headers.
/// An exact or regex value's rank: class, then length (longer first).
type ValueRank = (u8, Reverse<usize>);

fn grpc_rank(m: &GrpcMatch) -> (ValueRank, ValueRank, Reverse<usize>) {
    let rank = |v: &Option<ValueMatch>| match v {
        Some(ValueMatch::Exact(s)) => (0, Reverse(s.len())),
        Some(ValueMatch::Regex(s)) => (1, Reverse(s.len())),
        None => (2, Reverse(0)),
    };
    (rank(&m.service), rank(&m.method), Reverse(m.headers.len()))
}
