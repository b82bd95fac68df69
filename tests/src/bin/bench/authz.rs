//! The authorization path: the mTLS path's topology (a certified client
//! proxy, a one-endpoint Service, a certified server proxy) with a server
//! whose ServiceAccount (`guarded`) twenty SMI TrafficTargets name as their
//! destination. Nineteen allow other ServiceAccounts on routes of their own
//! (`/api/v{i}/...`); the twentieth, the bench client's, comes last and
//! allows `GET` on any path: every request the bench sends is checked
//! against the whole port policy and allowed. Against the mTLS path (no
//! TrafficTarget: the default policy) it measures what enforcing costs.
//!
//! This module writes the manifests and reads back, from the server
//! proxy's `/metrics`, how many requests its policy allowed and denied.

use anyhow::Result;
use std::fmt::Write as _;
use weft_tests::Pod;

/// The guarded Service's address (it exists only in the manifests).
pub const AUTHZ_SERVICE: &str = "10.96.0.16:80";
/// The guarded server's ServiceAccount, and its pod's name.
pub const GUARDED: &str = "guarded";
pub const GUARDED_POD: &str = "guarded-0";
/// TrafficTargets naming it.
pub const AUTHORIZATIONS: usize = 20;

/// The route groups and TrafficTargets (`access.smi-spec.io/v1alpha3`,
/// `specs.smi-spec.io/v1alpha4`).
pub fn manifests() -> String {
    let mut out = String::new();
    for i in 0..AUTHORIZATIONS {
        let last = i + 1 == AUTHORIZATIONS;
        let (source, route) = if last {
            (
                "client".to_owned(),
                "{name: any, pathRegex: \".*\", methods: [GET]}".to_owned(),
            )
        } else {
            (
                format!("other-{i}"),
                format!("{{name: v{i}, pathRegex: \"/api/v{i}/.*\", methods: [GET, POST]}}"),
            )
        };
        let _ = write!(
            out,
            "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\n\
             metadata: {{name: routes-{i}, namespace: bench}}\n\
             spec:\n  matches:\n  - {route}\n---\n\
             apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\n\
             metadata: {{name: target-{i}, namespace: bench}}\n\
             spec:\n  destination: {{kind: ServiceAccount, name: {GUARDED}, namespace: bench}}\n  \
             rules: [{{kind: HTTPRouteGroup, name: routes-{i}}}]\n  \
             sources: [{{kind: ServiceAccount, name: {source}, namespace: bench}}]\n---\n"
        );
    }
    out
}

/// Requests the guarded server's proxy allowed and denied so far.
pub fn decisions(server: &Pod) -> Result<(f64, f64)> {
    let text = weft_tests::mesh::admin_get(server, "/metrics")?;
    let count = |result: &str| {
        weft_tests::mesh::sum_samples(
            &text,
            &format!("weft_inbound_authz_total{{result=\"{result}\"}}"),
        )
    };
    Ok((count("allow")?, count("deny")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_targets_the_clients_last() {
        let m = manifests();
        assert_eq!(m.matches("\nkind: TrafficTarget").count(), AUTHORIZATIONS);
        assert_eq!(m.matches("\nkind: HTTPRouteGroup").count(), AUTHORIZATIONS);
        let last = m.rfind("kind: TrafficTarget").unwrap();
        assert!(m[last..].contains("name: client"), "{}", &m[last..]);
    }
}
