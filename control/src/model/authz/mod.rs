//! Inbound authorization: SMI TrafficTarget (`access.smi-spec.io/v1alpha3`)
//! and the default inbound policy, turned into the `weft.policy.v1`
//! policy of each pod port.
//!
//! [`smi`] has the type as written; [`check`] checks one TrafficTarget
//! alone (a bad one is refused and its last good version stays);
//! [`compute`] is the pure function from the model's objects to one pod's
//! [`PodPolicy`], and from that to one port's `InboundPolicy`.
//!
//! # The rules weft applies
//!
//! - A TrafficTarget allows its `sources` (ServiceAccounts) to call the
//!   pods of its `destination` ServiceAccount with what its `rules` name:
//!   an HTTPRouteGroup's `matches` listed by name (none listed: every
//!   match of the group), or a TCPRoute (the whole connection, on its
//!   ports; none listed: every port). Rules are ORed, and so are the
//!   TrafficTargets of one destination.
//! - **Deny by default, per destination**: once a TrafficTarget names a
//!   ServiceAccount as destination, its pods take only what some
//!   TrafficTarget allows; clients without a mesh identity are denied.
//! - A reference to an HTTPRouteGroup or TCPRoute that does not exist, or
//!   to a match name the group does not have, allows nothing: it never
//!   widens access (the destination is still deny-by-default).
//! - A pod no TrafficTarget selects gets the default policy: the pod's
//!   `weft.dev/default-inbound-policy` annotation, else its namespace's,
//!   else weft-control's `--default-inbound-policy`. An annotation whose
//!   value is not one of the four below means `deny` (fail closed).

pub mod check;
pub mod compute;
mod model;
pub mod smi;
#[cfg(test)]
mod tests;

use weft_proto::policy::v1 as pb;

pub use check::TargetInfo;
pub use compute::PodPolicy;

/// The annotation, on a Namespace or a Pod, overriding the default policy.
pub const DEFAULT_POLICY_ANNOTATION: &str = "weft.dev/default-inbound-policy";

/// What happens to inbound traffic no TrafficTarget speaks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DefaultPolicy {
    /// Everyone, TLS or not (the mesh as if it were not there).
    #[default]
    AllUnauthenticated,
    /// Every client with a certificate the trust anchors verify.
    AllAuthenticated,
    /// Every client with an identity in this cluster's trust domain.
    ClusterAuthenticated,
    /// No one.
    Deny,
}

impl DefaultPolicy {
    pub const NAMES: &'static str =
        "all-unauthenticated, all-authenticated, cluster-authenticated, deny";

    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::AllUnauthenticated => "all-unauthenticated",
            DefaultPolicy::AllAuthenticated => "all-authenticated",
            DefaultPolicy::ClusterAuthenticated => "cluster-authenticated",
            DefaultPolicy::Deny => "deny",
        }
    }

    pub fn to_pb(self) -> pb::DefaultPolicy {
        match self {
            DefaultPolicy::AllUnauthenticated => pb::DefaultPolicy::AllowAll,
            DefaultPolicy::AllAuthenticated => pb::DefaultPolicy::AllowAuthenticated,
            DefaultPolicy::ClusterAuthenticated => pb::DefaultPolicy::AllowMeshed,
            DefaultPolicy::Deny => pb::DefaultPolicy::Deny,
        }
    }
}

impl std::str::FromStr for DefaultPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim() {
            "all-unauthenticated" => DefaultPolicy::AllUnauthenticated,
            "all-authenticated" => DefaultPolicy::AllAuthenticated,
            "cluster-authenticated" => DefaultPolicy::ClusterAuthenticated,
            "deny" => DefaultPolicy::Deny,
            other => return Err(format!("'{other}' is not one of {}", Self::NAMES)),
        })
    }
}

/// The `weft.dev/default-inbound-policy` annotation of an object: `None`
/// without one, [`DefaultPolicy::Deny`] for a value that does not parse.
pub fn annotated_default(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<DefaultPolicy> {
    let value = meta.annotations.as_ref()?.get(DEFAULT_POLICY_ANNOTATION)?;
    Some(value.parse().unwrap_or(DefaultPolicy::Deny))
}
