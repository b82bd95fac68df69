//! The routing model's cases: the specs' own examples, each precedence
//! and conflict rule, each bad input. Objects go in as YAML through the
//! files source's parser, as an operator writes them.

use std::collections::BTreeMap;

use super::eval::{route, route_tcp, Outcome, Request};
use super::*;
use crate::model::store::DestKey;
use crate::model::{Kind, Store};
use crate::sources::parse;

mod bad_input;
mod conflicts;
mod gateway;
mod publish;
mod smi;
mod wire;

fn svc(ns: &str, name: &str, ports: &[u16]) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|p| format!("{{name: p{p}, port: {p}}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  clusterIP: 10.96.0.{}\n  ports: [{}]\n",
        name.len() + ns.len(),
        ports.join(", ")
    )
}

/// Applies every object of `yaml`; the first error (parse or model) is
/// returned, after the objects before it were applied.
fn load(store: &mut Store, yaml: &str) -> Result<(), String> {
    for doc in parse::documents(yaml) {
        for obj in parse::objects(&doc)? {
            store.apply(&obj)?;
        }
    }
    Ok(())
}

fn store(yaml: &str) -> Store {
    let mut s = Store::new("cluster.local", "cluster.local");
    load(&mut s, yaml).unwrap();
    s
}

fn dest(ns: &str, name: &str, port: u16) -> DestKey {
    DestKey {
        service: (ns.into(), name.into()),
        port,
    }
}

fn table(s: &Store, ns: &str, name: &str, port: u16) -> RouteTable {
    s.route_table(&dest(ns, name, port))
}

fn all_ready(_: &DestKey) -> bool {
    true
}

/// What `rolls` requests get: backend Service name, or the status.
fn outcome(o: &Outcome<'_>) -> String {
    match o {
        Outcome::Forward { backend, .. } => backend.service.1.clone(),
        Outcome::Redirect { .. } => "redirect".into(),
        Outcome::Respond { status, .. } => status.to_string(),
    }
}

fn spread(t: &RouteTable, client_ns: &str, req: &Request, rolls: u64) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for roll in 0..rolls {
        *out.entry(outcome(&route(t, client_ns, req, roll, &all_ready)))
            .or_default() += 1;
    }
    out
}

fn one(t: &RouteTable, client_ns: &str, req: &Request) -> String {
    outcome(&route(t, client_ns, req, 0, &all_ready))
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn refused(store: &mut Store, yaml: &str) -> String {
    load(store, yaml).expect_err("refused")
}

fn foobar() -> String {
    [
        svc("shop", "foobar", &[80]),
        svc("shop", "foobar-v1", &[80]),
        svc("shop", "foobar-v2", &[80]),
    ]
    .join("---\n")
}

fn website() -> String {
    [
        svc("default", "website", &[80]),
        svc("default", "website-v1", &[80]),
        svc("default", "website-v2", &[80]),
    ]
    .join("---\n")
}

fn shop() -> String {
    [
        svc("shop", "web", &[80, 9000]),
        svc("shop", "web-v1", &[80]),
        svc("shop", "web-v2", &[80]),
        svc("shop", "web-canary", &[80]),
    ]
    .join("---\n")
}

fn http_route(ns: &str, name: &str, created: Option<&str>, rules: &str) -> String {
    let created = created
        .map(|c| format!(", creationTimestamp: \"{c}\""))
        .unwrap_or_default();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}{created}}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: web, namespace: shop, port: 80}}]
  rules:
{rules}"
    )
}

/// A good object, then a bad version of it: refused with the reason, and
/// the good one stays in force.
fn keeps_last_good(good: &str, bad: &str) -> String {
    let mut s = store(&format!("{}---\n{good}", shop()));
    let before = table(&s, "shop", "web", 80);
    assert!(before.producer.is_some(), "the good version applies");
    let err = refused(&mut s, bad);
    assert_eq!(
        table(&s, "shop", "web", 80),
        before,
        "the last good version stays: {err}"
    );
    err
}
