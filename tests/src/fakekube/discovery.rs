//! `/version` and API discovery (`/api`, `/api/v1`, `/apis`,
//! `/apis/{group}/{version}`), built from the resources the store serves
//! and `tokenreviews` and `selfsubjectaccessreviews` (always served,
//! create only), so `kube::discovery` and
//! `Client::apiserver_version` work against the fake server.

use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::store::Store;
use super::{access, review, Resource, SELF_SUBJECT_ACCESS_REVIEWS, TOKEN_REVIEWS};

/// The Kubernetes release the fake server claims to be, until the test says
/// another (`FakeKube::set_version`).
pub(crate) const VERSION: (&str, &str) = ("1", "35");

/// `GET /version`, claiming release `major.minor`.
pub(crate) fn version(major: &str, minor: &str) -> Value {
    json!({
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "gitVersion": format!("v{major}.{minor}.0-weft-fakekube"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `GET /api`: the core group's versions.
pub(crate) fn core_versions(host: &str) -> Value {
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": host }],
    })
}

/// `GET /apis`: every named group with a served resource.
pub(crate) fn groups(store: &Store) -> Value {
    let reviews = [TOKEN_REVIEWS, SELF_SUBJECT_ACCESS_REVIEWS];
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let served = store.tables.iter().map(|t| &t.resource);
    for r in served.chain(&reviews) {
        if !r.group.is_empty() {
            let versions = groups.entry(&r.group).or_default();
            if !versions.contains(&&*r.version) {
                versions.push(&r.version);
            }
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(name, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| json!({ "groupVersion": format!("{name}/{v}"), "version": v }))
                .collect();
            json!({ "name": name, "versions": versions, "preferredVersion": versions[0] })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `GET /api/v1` or `/apis/{group}/{version}`; `None` if nothing is served there.
pub(crate) fn resources(store: &Store, group: &str, version: &str) -> Option<Value> {
    let here = |r: &Resource| r.group == group && r.version == version;
    let mut resources: Vec<Value> = store
        .tables
        .iter()
        .map(|t| &t.resource)
        .filter(|r| here(r))
        .map(|r| {
            json!({
                "name": r.plural,
                "singularName": r.kind.to_lowercase(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "list", "watch"],
            })
        })
        .collect();
    if here(&TOKEN_REVIEWS) {
        resources.push(review::discovery_entry());
    }
    if here(&SELF_SUBJECT_ACCESS_REVIEWS) {
        resources.push(access::discovery_entry());
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    (!resources.is_empty() || group.is_empty() && version == "v1").then(|| {
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        })
    })
}
