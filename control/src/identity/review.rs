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
//! token is refused at the latest that long after. Refused tokens are
//! remembered for [`REFUSED_TTL`] (at most [`REFUSED_SIZE`], by a keyed
//! hash), so that a client repeating a bad token costs one review, not one
//! per request; and each client (an IP) may cause at most [`CLIENT_BURST`]
//! reviews at once, then one per [`CLIENT_REFILL`] (for at most [`CLIENTS`]
//! clients remembered): beyond, Certify answers RESOURCE_EXHAUSTED without
//! asking the API server. A failed or slow API call is
//! [`ReviewError::Unavailable`], never a refusal of the token. Every review
//! is counted in `weft_control_token_reviews_total{result}`.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use kube::Client;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use super::{valid_name, Identity, ResultLabel, ReviewError, Reviewer};

/// How long an accepted token is taken without asking again.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How many accepted tokens are remembered.
pub const CACHE_SIZE: usize = 10_000;
/// How long a refused token is refused without asking again: short, since a
/// token can become valid (a ServiceAccount created a moment late).
pub const REFUSED_TTL: Duration = Duration::from_secs(5);
/// How many refused tokens are remembered (each by a 64-bit keyed hash and
/// its reason, about 150 bytes).
pub const REFUSED_SIZE: usize = 10_000;
/// How many reviews one client may cause at once.
pub const CLIENT_BURST: u32 = 10;
/// How often a client may cause one more once its burst is spent.
pub const CLIENT_REFILL: Duration = Duration::from_secs(1);
/// How many clients' budgets are remembered (about 50 bytes each).
pub const CLIENTS: usize = 10_000;
/// The longest token sent for review (a projected token is 1 to 2 KiB).
pub const MAX_TOKEN: usize = 16 * 1024;
/// How long a review may take (kube-rs retries a 503 by itself, for minutes).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The TokenReview API as a [`Reviewer`].
#[derive(Debug)]
pub struct TokenReviewer {
    api: Api<TokenReview>,
    audience: String,
    state: Mutex<State>,
    results: Family<ResultLabel, Counter>,
}

/// What the reviewer remembers, under one lock (held only for map work).
#[derive(Debug, Default)]
struct State {
    accepted: Ttl<String, Identity>,
    refused: Ttl<u64, String>,
    keys: RandomState,
    clients: Limiter,
}

impl TokenReviewer {
    /// Reviews tokens with `client` for `audience`; counts reviews in
    /// `registry`.
    pub fn new(client: Client, audience: &str, registry: &mut Registry) -> Self {
        let results = Family::<ResultLabel, Counter>::default();
        registry.sub_registry_with_prefix("weft_control").register(
            "token_reviews",
            "ServiceAccount tokens checked, by result (accepted, refused: the TokenReview API said; cached_accepted, cached_refused: remembered; rate_limited: the client asked too often; unavailable: the API failed)",
            results.clone(),
        );
        Self {
            api: Api::all(client),
            audience: audience.to_owned(),
            state: Mutex::default(),
            results,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count<T>(&self, result: &'static str, r: Result<T, ReviewError>) -> Result<T, ReviewError> {
        self.results.get_or_create(&ResultLabel { result }).inc();
        r
    }

    async fn ask(&self, token: &str) -> Result<TokenReviewStatus, ReviewError> {
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
        Ok(answer.status.unwrap_or_default())
    }
}

#[tonic::async_trait]
impl Reviewer for TokenReviewer {
    async fn review(&self, token: &str, client: Option<IpAddr>) -> Result<Identity, ReviewError> {
        if token.is_empty() {
            return Err(ReviewError::Invalid("the request has no token".into()));
        }
        if token.len() > MAX_TOKEN {
            return Err(ReviewError::Invalid(format!(
                "the token is longer than {MAX_TOKEN} bytes"
            )));
        }
        let now = Instant::now();
        let key;
        {
            let mut state = self.state();
            if let Some(identity) = state.accepted.get(token, now) {
                return self.count("cached_accepted", Ok(identity));
            }
            key = state.keys.hash_one(token);
            if let Some(reason) = state.refused.get(&key, now) {
                return self.count("cached_refused", Err(ReviewError::Invalid(reason)));
            }
            if !state.clients.allow(client, now) {
                let who = client.map_or("this client".to_owned(), |ip| ip.to_string());
                let limited = ReviewError::Limited(format!(
                    "too many token reviews from {who}: at most {CLIENT_BURST} at once, then one per {CLIENT_REFILL:?}; retry later"
                ));
                return self.count("rate_limited", Err(limited));
            }
        }
        let status = match self.ask(token).await {
            Ok(s) => s,
            Err(e) => return self.count("unavailable", Err(e)),
        };
        let now = Instant::now();
        match judge(status, &self.audience) {
            Ok(identity) => {
                self.state().accepted.insert(
                    token.to_owned(),
                    identity.clone(),
                    now,
                    CACHE_TTL,
                    CACHE_SIZE,
                );
                self.count("accepted", Ok(identity))
            }
            Err(reason) => {
                self.state()
                    .refused
                    .insert(key, reason.clone(), now, REFUSED_TTL, REFUSED_SIZE);
                self.count("refused", Err(ReviewError::Invalid(reason)))
            }
        }
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

/// Values remembered until a deadline, at most `size` of them: when full,
/// the expired ones are forgotten first, and everything if none expired
/// (the cost of a full cache is one review more per entry, never a wrong
/// answer).
#[derive(Debug)]
struct Ttl<K, V>(HashMap<K, (V, Instant)>);

impl<K, V> Default for Ttl<K, V> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<K: Hash + Eq, V: Clone> Ttl<K, V> {
    fn get<Q>(&self, key: &Q, now: Instant) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.0.get(key) {
            Some((value, until)) if *until > now => Some(value.clone()),
            _ => None,
        }
    }

    fn insert(&mut self, key: K, value: V, now: Instant, ttl: Duration, size: usize) {
        if self.0.len() >= size {
            self.0.retain(|_, (_, until)| *until > now);
            if self.0.len() >= size {
                self.0.clear();
            }
        }
        self.0.insert(key, (value, now + ttl));
    }
}

/// A token bucket per client: [`CLIENT_BURST`] reviews, one more each
/// [`CLIENT_REFILL`]. Requests without a peer address share one bucket.
#[derive(Debug, Default)]
struct Limiter(HashMap<Option<IpAddr>, Bucket>);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Reviews left, as of `at`.
    left: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> f64 {
        let earned =
            now.saturating_duration_since(self.at).as_secs_f64() / CLIENT_REFILL.as_secs_f64();
        (self.left + earned).min(f64::from(CLIENT_BURST))
    }
}

impl Limiter {
    /// Takes one review from `client`'s budget, if it has one left.
    fn allow(&mut self, client: Option<IpAddr>, now: Instant) -> bool {
        if !self.0.contains_key(&client) && self.0.len() >= CLIENTS {
            // Clients with a full bucket are as good as new: forget them.
            let full = f64::from(CLIENT_BURST);
            self.0.retain(|_, b| b.refilled(now) < full);
            if self.0.len() >= CLIENTS {
                self.0.clear();
            }
        }
        let bucket = self.0.entry(client).or_insert(Bucket {
            left: f64::from(CLIENT_BURST),
            at: now,
        });
        let left = bucket.refilled(now);
        let allowed = left >= 1.0;
        *bucket = Bucket {
            left: if allowed { left - 1.0 } else { left },
            at: now,
        };
        allowed
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
    fn the_caches_forget_after_their_ttl_and_stay_bounded() {
        let now = Instant::now();
        let mut cache = Ttl::<String, Identity>::default();
        cache.insert("t".into(), web(), now, CACHE_TTL, CACHE_SIZE);
        assert_eq!(cache.get("t", now + CACHE_TTL / 2), Some(web()));
        assert_eq!(cache.get("t", now + CACHE_TTL), None);
        assert_eq!(cache.get("u", now), None);
        let later = now + CACHE_TTL;
        for i in 0..CACHE_SIZE {
            cache.insert(i.to_string(), web(), later, CACHE_TTL, CACHE_SIZE);
        }
        assert_eq!(cache.0.len(), CACHE_SIZE, "the expired one made room");
        cache.insert("one more".into(), web(), later, CACHE_TTL, CACHE_SIZE);
        assert_eq!(cache.0.len(), 1, "full of live tokens: started again");

        let mut refused = Ttl::<u64, String>::default();
        refused.insert(7, "no".into(), now, REFUSED_TTL, REFUSED_SIZE);
        assert_eq!(
            refused.get(&7, now + REFUSED_TTL / 2).as_deref(),
            Some("no")
        );
        assert_eq!(refused.get(&7, now + REFUSED_TTL), None);
    }

    #[test]
    fn each_client_has_a_burst_then_one_review_per_refill() {
        let now = Instant::now();
        let mut limiter = Limiter::default();
        let a = Some("10.244.0.2".parse().unwrap());
        let b = Some("10.244.0.3".parse().unwrap());
        for i in 0..CLIENT_BURST {
            assert!(limiter.allow(a, now), "review {i} of the burst");
        }
        assert!(!limiter.allow(a, now), "the burst is spent");
        assert!(!limiter.allow(a, now + CLIENT_REFILL / 2));
        assert!(limiter.allow(b, now), "another client has its own budget");
        assert!(
            limiter.allow(a, now + CLIENT_REFILL),
            "one more after a refill"
        );
        assert!(!limiter.allow(a, now + CLIENT_REFILL));
        // Idle long enough, the whole burst is back (and no more).
        let idle = now + CLIENT_REFILL * (CLIENT_BURST * 10);
        for _ in 0..CLIENT_BURST {
            assert!(limiter.allow(a, idle));
        }
        assert!(!limiter.allow(a, idle));
    }

    #[test]
    fn the_limiter_forgets_idle_clients_when_full() {
        let now = Instant::now();
        let mut limiter = Limiter::default();
        let ip = |i: usize| Some(IpAddr::from(std::net::Ipv4Addr::from(i as u32)));
        for i in 0..CLIENTS {
            limiter.allow(ip(i), now);
        }
        assert_eq!(limiter.0.len(), CLIENTS);
        // A refill later every bucket is full again: all are forgotten.
        limiter.allow(ip(CLIENTS), now + CLIENT_REFILL);
        assert_eq!(limiter.0.len(), 1);
        // A client that spent its burst is kept while idle ones are dropped.
        let mut limiter = Limiter::default();
        for _ in 0..CLIENT_BURST {
            limiter.allow(ip(0), now);
        }
        for i in 1..CLIENTS {
            limiter.allow(ip(i), now);
        }
        limiter.allow(ip(CLIENTS + 1), now + CLIENT_REFILL);
        assert_eq!(limiter.0.len(), 2, "the spent one and the new one");
        assert!(limiter.allow(ip(0), now + CLIENT_REFILL), "its one refill");
        assert!(!limiter.allow(ip(0), now + CLIENT_REFILL), "still limited");
    }
}
