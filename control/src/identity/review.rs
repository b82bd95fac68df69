//! ServiceAccount tokens checked by the Kubernetes TokenReview API
//! (`authentication.k8s.io/v1`): the API server says whether a token is
//! valid for weft's audience and whose it is.
//!
//! The proxy sends a projected ServiceAccount token requested for that
//! audience (`--identity-token-audience`, `weft` by default), so a token
//! stolen from a proxy is no key to the API server, and the pod's
//! API-server token is no key to weft. weft-control needs `create` on
//! `tokenreviews` (the `system:auth-delegator` ClusterRole).
//!
//! A token is accepted when the API server authenticates it, names the
//! audience among the token's, and its user is a ServiceAccount
//! (`system:serviceaccount:<namespace>:<name>`). Accepted tokens are
//! remembered for [`CACHE_TTL`] (at most [`CACHE_SIZE`] of them), so that
//! proxies renewing and restarting do not each cost an API call; a revoked
//! token is refused at the latest that long after. A failed or slow API
//! call is [`ReviewError::Unavailable`], never a refusal of the token.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use kube::Client;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use super::{valid_name, Identity, ReviewError, Reviewer};

/// How long an accepted token is taken without asking again.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How many accepted tokens are remembered.
pub const CACHE_SIZE: usize = 10_000;
/// How long a review may take (kube-rs retries a 503 by itself, for minutes).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The TokenReview API as a [`Reviewer`].
#[derive(Debug)]
pub struct TokenReviewer {
    api: Api<TokenReview>,
    audience: String,
    cache: Mutex<Cache>,
}

impl TokenReviewer {
    /// Reviews tokens with `client` for `audience`.
    pub fn new(client: Client, audience: &str) -> Self {
        Self {
            api: Api::all(client),
            audience: audience.to_owned(),
            cache: Mutex::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[tonic::async_trait]
impl Reviewer for TokenReviewer {
    async fn review(&self, token: &str) -> Result<Identity, ReviewError> {
        if token.is_empty() {
            return Err(ReviewError::Invalid("the request has no token".into()));
        }
        if let Some(identity) = self.cache().get(token, Instant::now()) {
            return Ok(identity);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let answer =
            tokio::time::timeout(TIMEOUT, self.api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| {
                    ReviewError::Unavailable(format!(
                        "the TokenReview API did not answer within {TIMEOUT:?}"
                    ))
                })?
                .map_err(|e| {
                    ReviewError::Unavailable(format!("the TokenReview API failed: {e}"))
                })?;
        let identity = judge(answer.status.unwrap_or_default(), &self.audience)
            .map_err(ReviewError::Invalid)?;
        self.cache().insert(token, identity.clone(), Instant::now());
        Ok(identity)
    }
}

/// Whose token a review's `status` says it is, for `audience`.
pub fn judge(status: TokenReviewStatus, audience: &str) -> Result<Identity, String> {
    if status.authenticated != Some(true) {
        let why = status.error.filter(|e| !e.is_empty());
        return Err(format!(
            "the API server does not authenticate it for the audience {audience:?}{}",
            why.map(|e| format!(": {e}")).unwrap_or_default()
        ));
    }
    let audiences = status.audiences.unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return Err(format!(
            "the API server authenticates it for the audiences {audiences:?}, not for {audience:?}"
        ));
    }
    let username = status.user.and_then(|u| u.username).unwrap_or_default();
    service_account(&username)
}

/// The ServiceAccount of a username `system:serviceaccount:<namespace>:<name>`.
pub fn service_account(username: &str) -> Result<Identity, String> {
    username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| valid_name(ns) && valid_name(sa))
        .map(|(ns, sa)| Identity {
            namespace: ns.to_owned(),
            service_account: sa.to_owned(),
        })
        .ok_or_else(|| {
            format!(
                "it is the token of {username:?}, not of a ServiceAccount (system:serviceaccount:<namespace>:<name>)"
            )
        })
}

/// Accepted tokens and until when they stay accepted.
#[derive(Debug, Default)]
struct Cache(HashMap<String, (Identity, Instant)>);

impl Cache {
    fn get(&self, token: &str, now: Instant) -> Option<Identity> {
        match self.0.get(token) {
            Some((identity, until)) if *until > now => Some(identity.clone()),
            _ => None,
        }
    }

    /// Remembers `token`; when full, forgets the expired ones first, and
    /// everything if none expired.
    fn insert(&mut self, token: &str, identity: Identity, now: Instant) {
        if self.0.len() >= CACHE_SIZE {
            self.0.retain(|_, (_, until)| *until > now);
            if self.0.len() >= CACHE_SIZE {
                self.0.clear();
            }
        }
        self.0.insert(token.to_owned(), (identity, now + CACHE_TTL));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    fn web() -> Identity {
        Identity {
            namespace: "shop".into(),
            service_account: "web".into(),
        }
    }

    #[test]
    fn usernames_of_service_accounts() {
        assert_eq!(service_account("system:serviceaccount:shop:web"), Ok(web()));
        for bad in [
            "alice",
            "system:admin",
            "system:serviceaccount:shop",
            "system:serviceaccount::web",
            "system:serviceaccount:shop:",
            "system:serviceaccount:shop:web:x",
            "system:serviceaccount:Shop:web",
            "system:serviceaccounts:shop:web",
            "",
        ] {
            let err = service_account(bad).unwrap_err();
            assert!(err.contains("not of a ServiceAccount"), "{bad}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    fn status(authenticated: Option<bool>, user: &str, audiences: &[&str]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated,
            user: Some(UserInfo {
                username: Some(user.into()),
                ..UserInfo::default()
            }),
            audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
            error: None,
        }
    }

    #[test]
    fn reviews_are_judged_for_the_audience() {
        let sa = "system:serviceaccount:shop:web";
        assert_eq!(judge(status(Some(true), sa, &["weft"]), "weft"), Ok(web()));
        let err = judge(status(Some(true), sa, &["other"]), "weft").unwrap_err();
        assert_eq!(
            err,
            r#"the API server authenticates it for the audiences ["other"], not for "weft""#
        );
        // An API server that ignores audiences says none.
        assert!(judge(status(Some(true), sa, &[]), "weft").is_err());
        let mut refused = status(None, "", &[]);
        refused.error = Some("invalid bearer token".into());
        assert_eq!(
            judge(refused, "weft").unwrap_err(),
            r#"the API server does not authenticate it for the audience "weft": invalid bearer token"#
        );
        assert!(judge(status(Some(false), sa, &["weft"]), "weft").is_err());
        assert!(judge(TokenReviewStatus::default(), "weft").is_err());
        let err = judge(status(Some(true), "alice", &["weft"]), "weft").unwrap_err();
        assert!(err.contains("\"alice\", not of a ServiceAccount"), "{err}");
    }

    #[test]
    fn the_cache_forgets_after_its_ttl_and_stays_bounded() {
        let now = Instant::now();
        let mut cache = Cache::default();
        cache.insert("t", web(), now);
        assert_eq!(cache.get("t", now + CACHE_TTL / 2), Some(web()));
        assert_eq!(cache.get("t", now + CACHE_TTL), None);
        assert_eq!(cache.get("u", now), None);
        for i in 0..CACHE_SIZE {
            cache.insert(&i.to_string(), web(), now + CACHE_TTL);
        }
        assert_eq!(cache.0.len(), CACHE_SIZE, "the expired one made room");
        cache.insert("one more", web(), now + CACHE_TTL);
        assert_eq!(cache.0.len(), 1, "full of live tokens: started again");
    }
}
