//! What the proxy compiles from the control plane's protobuf and applies
//! to every request: outbound routes (path, header and query matches with
//! regexes, filters, redirects, weighted backends) and the retry and
//! timeout profile (`weft_proxy::outbound`, `weft_proxy::discovery`), and
//! inbound authorization (`weft_proxy::inbound::authorize`).

use prost::Message;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use weft_proto::discovery::v1 as discovery;
use weft_proto::policy::v1 as policy;
use weft_proxy::discovery::policy::{Outcome, Policy};
use weft_proxy::discovery::{Dest, Resolution, Resolved};
use weft_proxy::http::Target;
use weft_proxy::inbound::authorize::{self, PortPolicy, Scope};
use weft_proxy::outbound::route::{self, Answer, Plan};
use weft_proxy::outbound::table::{Backends, RouteMetrics, RouteTable};

use crate::input::{request, split_len16};

const ORIG: &str = "10.96.0.10:80";

/// Backend destinations by authority, made on first use, never watched.
#[derive(Default)]
struct Env(Mutex<HashMap<String, Arc<Dest>>>);

impl Backends for Env {
    fn backend(&self, authority: &str) -> Arc<Dest> {
        let mut dests = self.0.lock().expect("not poisoned");
        let orig: SocketAddr = ORIG.parse().expect("an address");
        dests
            .entry(authority.to_owned())
            .or_insert_with(|| Dest::detached(orig, Resolution::Service { opaque: false }))
            .clone()
    }

    fn metrics(&self, _route: &str, _backend: &str) -> RouteMetrics {
        RouteMetrics::default()
    }
}

/// A `Routes` message (length-prefixed, 2 bytes) and a request as text
/// (see [`request`]). The message is compiled as the proxy compiles it;
/// the request, routed, goes to the apex or to a backend the table holds,
/// keeps a URI that parses again, or is answered with a redirect whose
/// status is 3xx. The same bytes read as a `Profile` make a policy.
pub fn route(data: &[u8]) {
    let (message, rest) = split_len16(data);
    if let Ok(profile) = discovery::Profile::decode(message) {
        let policy = Policy::from_profile(&profile);
        assert!(policy.timeout.is_none_or(|t| !t.is_zero()));
        if let Some(retry) = &policy.retry {
            assert!(
                (0.0..=1000.0).contains(&retry.ratio),
                "ratio {}",
                retry.ratio
            );
            let failed = Outcome::Status(http::StatusCode::BAD_GATEWAY, Some(14));
            let _ = retry.retryable(failed, &http::Method::POST);
        }
    }
    let Ok(routes) = discovery::Routes::decode(message) else {
        return;
    };
    let Some(mut req) = request(rest) else {
        return;
    };
    let env = Env::default();
    let table = RouteTable::compile(&routes, &env);
    let orig: SocketAddr = ORIG.parse().expect("an address");
    let apex = Resolved::Service(Dest::detached(orig, Resolution::Service { opaque: false }));
    let Resolved::Service(apex_dest) = &apex else {
        unreachable!()
    };
    let known: Vec<*const Dest> = env
        .0
        .lock()
        .expect("not poisoned")
        .values()
        .map(Arc::as_ptr)
        .chain([Arc::as_ptr(apex_dest)])
        .collect();
    match route::route(&apex, table.as_ref(), orig, &mut req) {
        Plan::Forward(routed) => {
            match routed.target {
                Target::Balanced(d) => {
                    assert!(
                        known.contains(&(d as *const Dest)),
                        "a backend from nowhere"
                    )
                }
                Target::Addr(a) => panic!("a Service's request sent to an address {a}"),
            }
            let uri = req.uri().to_string();
            assert!(uri.parse::<http::Uri>().is_ok(), "rewritten to {uri:?}");
            let mut rsp = http::Response::new(());
            routed.respond(&mut rsp);
        }
        Plan::Answer(Answer::Redirect(rsp)) => {
            assert!(
                rsp.status().is_redirection(),
                "redirect with {}",
                rsp.status()
            );
        }
        Plan::Answer(Answer::Error(_)) => {}
    }
    let _ = route::route_tcp(&apex, table.as_ref(), orig);
}

/// An `InboundPolicy` message (length-prefixed, 2 bytes), then a line
/// with the client's identity (empty: no mesh TLS), then a request as
/// text (none: an opaque connection). An allowed request names the
/// default or one of the policy's authorizations; a denied one can be
/// explained.
pub fn inbound_policy(data: &[u8]) {
    let (message, rest) = split_len16(data);
    let Ok(p) = policy::InboundPolicy::decode(message) else {
        return;
    };
    let (client, rest) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(client) = std::str::from_utf8(client) else {
        return;
    };
    let client = (!client.is_empty()).then_some(client);
    let req = if rest.is_empty() {
        None
    } else {
        let Some(req) = request(rest) else { return };
        Some(req)
    };
    let scope = Scope {
        trust_domain: "cluster.local".into(),
        pod_namespace: "shop".into(),
    };
    let compiled = PortPolicy::compile(&p, &scope);
    match authorize::authorize(&compiled, client, req.as_ref()) {
        Ok(allowed) => {
            let named =
                allowed.by == "default" || p.authorizations.iter().any(|a| a.name == allowed.by);
            assert!(
                named,
                "allowed by {:?}, which the policy does not name",
                allowed.by
            );
            if !allowed.route.is_empty() {
                assert!(req.is_some(), "a route allowed an opaque connection");
            }
        }
        Err(denied) => {
            let why = authorize::missing(&compiled, client, req.as_ref(), denied);
            assert!(!why.is_empty());
        }
    }
}
