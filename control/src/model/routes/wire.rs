//! A [`RouteTable`] as the discovery API carries it: `weft.discovery.v1.Routes`,
//! one message per route set a watcher can see (the producer set, and one
//! per namespace with consumer routes: see `discovery.proto`).
//!
//! Pure conversion: the table already holds the decisions (precedence,
//! anchored regexes, resolved backends); this only names each backend
//! Service port by the authority the proxy watches, and folds the route
//! object's and the Service's annotation policy into each rule's timeouts
//! and retry, so that the proxy reads one of each.

use weft_proto::discovery::v1 as pb;

use super::table::*;
use crate::model::policy::{self, RoutePolicy};
use crate::model::store::{proto_duration, retry_policy, DestKey};

/// What a conversion needs besides the table.
#[derive(Debug)]
pub struct Context<'a> {
    pub cluster_domain: &'a str,
    /// The Service's own annotation policy: the last fallback of a rule's
    /// unset timeouts and retry limit and budget.
    pub service: &'a RoutePolicy,
}

/// The routes a client sees through `set` (the producer set, or one
/// namespace's consumer set, named by `consumer_ns`; empty: producer), with
/// the table's TCP split. `None` when neither applies.
pub fn routes(
    cx: &Context<'_>,
    table: &RouteTable,
    set: Option<&RouteSet>,
    consumer_ns: &str,
) -> Option<pb::Routes> {
    let tcp = table.tcp.as_ref().map(|backends| pb::TcpRoutes {
        backends: backends.iter().map(|b| backend(cx, b)).collect(),
        route: table.tcp_route.as_ref().map(route_name),
    });
    if set.is_none() && tcp.is_none() {
        return None;
    }
    Some(pb::Routes {
        consumer_namespace: consumer_ns.to_owned(),
        http: set.map(|s| http_routes(cx, s)),
        tcp,
    })
}

fn http_routes(cx: &Context<'_>, set: &RouteSet) -> pb::HttpRoutes {
    pb::HttpRoutes {
        rules: set.rules.iter().map(|r| rule(cx, r)).collect(),
        matches: set
            .http
            .iter()
            .map(|e| pb::HttpRouteMatch {
                rule: e.rule as u32,
                path: e.matcher.path.as_ref().map(|p| pb::PathMatch {
                    kind: Some(match p {
                        PathMatch::Exact(v) => pb::path_match::Kind::Exact(v.clone()),
                        PathMatch::Prefix(v) => pb::path_match::Kind::Prefix(v.clone()),
                        PathMatch::Regex(v) => pb::path_match::Kind::Regex(v.clone()),
                    }),
                }),
                methods: e.matcher.methods.clone(),
                headers: e.matcher.headers.iter().map(named).collect(),
                query_params: e.matcher.query.iter().map(named).collect(),
            })
            .collect(),
        grpc_matches: set
            .grpc
            .iter()
            .map(|e| pb::GrpcRouteMatch {
                rule: e.rule as u32,
                service: e.matcher.service.as_ref().map(value),
                method: e.matcher.method.as_ref().map(value),
                headers: e.matcher.headers.iter().map(named).collect(),
            })
            .collect(),
        unmatched: match set.otherwise {
            Otherwise::NotFound => pb::Unmatched::NotFound,
            Otherwise::Apex => pb::Unmatched::Service,
        } as i32,
    }
}

fn rule(cx: &Context<'_>, r: &Rule) -> pb::HttpRule {
    let retry = r.retry.as_ref();
    pb::HttpRule {
        route: Some(route_name(&r.route)),
        index: r.index as u32,
        filters: r.filters.iter().map(|f| filter(cx, f)).collect(),
        backends: r.backends.iter().map(|b| backend(cx, b)).collect(),
        timeouts: rule_timeouts(r, cx.service),
        retry: rule_retry(r, cx.service),
        retry_backoff: retry.and_then(|r| r.backoff).map(proto_duration),
    }
}

/// Each field: the rule's, else the route object's annotations, else the
/// Service's; `None` when neither the rule nor the route object speaks
/// (the Profile's timeouts apply as they are).
fn rule_timeouts(r: &Rule, service: &RoutePolicy) -> Option<pb::Timeouts> {
    let rule = r.timeouts.clone().unwrap_or_default();
    let request = rule.request.or(r.policy.timeout);
    let per_try = rule.backend_request.or(r.policy.per_try);
    (request.is_some() || per_try.is_some()).then(|| pb::Timeouts {
        request: request.or(service.timeout).map(proto_duration),
        per_try: per_try.or(service.per_try).map(proto_duration),
    })
}

/// The rule's `retry`, else the route object's `weft.dev/retry-*`; `None`
/// when neither speaks (the Profile's retry applies).
fn rule_retry(r: &Rule, service: &RoutePolicy) -> Option<pb::RetryPolicy> {
    let annotated = r.policy.retry.as_ref();
    let Some(rule) = &r.retry else {
        return annotated.map(retry_policy);
    };
    let base = annotated.or(service.retry.as_ref());
    let budget_of = base.cloned().unwrap_or(policy::Retry {
        limit: policy::DEFAULT_LIMIT,
        budget_permille: policy::DEFAULT_BUDGET_PERMILLE,
        min_per_second: policy::DEFAULT_MIN_PER_SECOND,
        ..Default::default()
    });
    Some(retry_policy(&policy::Retry {
        server_error: false,
        gateway_error: false,
        connect_failure: false,
        status_codes: rule.codes.iter().map(|c| u32::from(*c)).collect(),
        grpc_codes: Vec::new(),
        limit: rule.attempts.unwrap_or(budget_of.limit),
        ..budget_of
    }))
}

fn route_name(r: &RouteRef) -> pb::RouteName {
    pb::RouteName {
        kind: r.kind.as_str().to_owned(),
        namespace: r.key.0.clone(),
        name: r.key.1.clone(),
    }
}

fn value(v: &ValueMatch) -> pb::ValueMatch {
    pb::ValueMatch {
        kind: Some(match v {
            ValueMatch::Exact(s) => pb::value_match::Kind::Exact(s.clone()),
            ValueMatch::Regex(s) => pb::value_match::Kind::Regex(s.clone()),
        }),
    }
}

fn named(m: &NamedMatch) -> pb::NamedValueMatch {
    pb::NamedValueMatch {
        name: m.name.clone(),
        value: Some(value(&m.value)),
    }
}

fn headers(e: &HeaderEdit) -> pb::HeaderModifier {
    let pairs = |v: &[(String, String)]| {
        v.iter()
            .map(|(name, value)| pb::Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    };
    pb::HeaderModifier {
        set: pairs(&e.set),
        add: pairs(&e.add),
        remove: e.remove.clone(),
    }
}

fn path(p: &PathRewrite) -> pb::PathModifier {
    pb::PathModifier {
        kind: Some(match p {
            PathRewrite::Full(v) => pb::path_modifier::Kind::Full(v.clone()),
            PathRewrite::Prefix(v) => pb::path_modifier::Kind::Prefix(v.clone()),
        }),
    }
}

fn filter(cx: &Context<'_>, f: &Filter) -> pb::HttpFilter {
    use pb::http_filter::Kind as F;
    let kind = match f {
        Filter::RequestHeaders(e) => F::RequestHeaders(headers(e)),
        Filter::ResponseHeaders(e) => F::ResponseHeaders(headers(e)),
        Filter::Redirect {
            scheme,
            hostname,
            path: p,
            port,
            status,
        } => F::Redirect(pb::RequestRedirect {
            scheme: scheme.clone().unwrap_or_default(),
            hostname: hostname.clone().unwrap_or_default(),
            path: p.as_ref().map(path),
            port: port.map(u32::from).unwrap_or_default(),
            status: u32::from(*status),
        }),
        Filter::Rewrite { hostname, path: p } => F::Rewrite(pb::UrlRewrite {
            hostname: hostname.clone().unwrap_or_default(),
            path: p.as_ref().map(path),
        }),
        Filter::Mirror {
            backend: b,
            numerator,
            denominator,
        } => F::Mirror(pb::RequestMirror {
            backend: Some(target(cx, b)),
            numerator: *numerator,
            denominator: *denominator,
        }),
    };
    pb::HttpFilter { kind: Some(kind) }
}

fn backend(cx: &Context<'_>, b: &Backend) -> pb::WeightedBackend {
    pb::WeightedBackend {
        backend: Some(target(cx, &b.target)),
        weight: b.weight,
        filters: b.filters.iter().map(|f| filter(cx, f)).collect(),
    }
}

fn target(cx: &Context<'_>, t: &Target) -> pb::Backend {
    use pb::backend::Target as T;
    pb::Backend {
        target: Some(match t {
            Target::Service(dest) => T::Service(service_port(cx, dest)),
            Target::Invalid(reason) => T::Invalid(reason.clone()),
        }),
    }
}

fn service_port(cx: &Context<'_>, dest: &DestKey) -> pb::ServicePort {
    let (ns, name) = &dest.service;
    pb::ServicePort {
        name: name.clone(),
        namespace: ns.clone(),
        port: u32::from(dest.port),
        authority: format!("{name}.{ns}.svc.{}:{}", cx.cluster_domain, dest.port),
    }
}
