//! Workload identity: the CA that signs proxies' certificates and the
//! `weft.identity.v1.Identity/Certify` service.
//!
//! A proxy sends a CSR for `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` with
//! its pod's ServiceAccount token. The token says who the proxy is (a
//! [`Reviewer`] checks it: [`review`], the TokenReview API, in a cluster;
//! [`tokens`], a file, without one); the CSR must ask for exactly that
//! identity; the leaf is signed by the issuer of [`ca`] for
//! `--leaf-lifetime`. The issuer comes from files or a Secret and follows
//! their changes ([`issuer`]). Refusals are precise and counted
//! (`weft_control_certify_total{result}`).

pub mod anchors;
pub mod ca;
pub mod issuer;
pub mod review;
pub mod service;
pub mod tokens;

use prometheus_client::encoding::EncodeLabelSet;

/// A ServiceAccount: the identity of every pod that runs as it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
}

impl Identity {
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }

    /// Parses `spiffe://<trust_domain>/ns/<ns>/sa/<sa>`.
    pub fn from_spiffe(id: &str, trust_domain: &str) -> Result<Self, String> {
        let rest = id
            .strip_prefix("spiffe://")
            .ok_or_else(|| format!("identity {id:?} is not a spiffe:// URI"))?;
        let (domain, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("identity {id:?} has no path"))?;
        if domain != trust_domain {
            return Err(format!(
                "identity {id:?} is not in the trust domain {trust_domain}"
            ));
        }
        match path.split('/').collect::<Vec<_>>()[..] {
            ["ns", ns, "sa", sa] if valid_name(ns) && valid_name(sa) => Ok(Self {
                namespace: ns.to_owned(),
                service_account: sa.to_owned(),
            }),
            _ => Err(format!(
                "identity {id:?} is not of the form spiffe://{trust_domain}/ns/<namespace>/sa/<serviceaccount>"
            )),
        }
    }
}

/// A Kubernetes object name: lowercase alphanumerics, `-` and `.`, at most 253.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Why a token was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    /// The token is not valid (unknown, expired, for another audience, not
    /// a ServiceAccount's): Certify answers UNAUTHENTICATED.
    #[error("{0}")]
    Invalid(String),
    /// The token could not be checked (the TokenReview API failed or did
    /// not answer): Certify answers UNAVAILABLE, worth a retry.
    #[error("{0}")]
    Unavailable(String),
    /// The client asked for too many reviews: Certify answers
    /// RESOURCE_EXHAUSTED, worth a retry later.
    #[error("{0}")]
    Limited(String),
}

/// Checks a ServiceAccount token and says whose it is.
#[tonic::async_trait]
pub trait Reviewer: Send + Sync + std::fmt::Debug + 'static {
    /// `client` is the address the request came from (`None` when it came
    /// over something that is not TCP), for per-client limits.
    async fn review(
        &self,
        token: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<Identity, ReviewError>;
}

/// The `result` label of the identity counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub(crate) result: &'static str,
}

#[cfg(test)]
mod tests;
