//! `POST /apis/authentication.k8s.io/v1/tokenreviews`: the TokenReview API,
//! answered from the tokens the test registered ([`FakeKube::add_token`]).
//!
//! As the API server does for ServiceAccount tokens: a review names the
//! audiences it wants (none: the API server's own, [`API_AUDIENCE`]); a
//! token is authenticated when it is known and one of its audiences is
//! wanted, and the answer carries the user (ServiceAccounts get their
//! groups) and those common audiences. An unknown token or one for other
//! audiences is not an error of the request: `201 Created` with
//! `status.authenticated` unset and `status.error` saying why.
//!
//! [`FakeKube::add_token`]: super::FakeKube::add_token

use serde_json::{json, Value};
use std::collections::HashMap;

use super::server::{json_response, status_response, Response};
use super::TOKEN_REVIEWS;

/// The audience of a review that names none: the API server's own.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// A token the fake API server knows.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub(crate) username: String,
    pub(crate) audiences: Vec<String>,
}

/// Tokens by their text.
pub(crate) type Tokens = HashMap<String, Token>;

/// The discovery entry of `tokenreviews`.
pub(crate) fn discovery_entry() -> Value {
    json!({
        "name": TOKEN_REVIEWS.plural,
        "singularName": "",
        "namespaced": false,
        "kind": TOKEN_REVIEWS.kind,
        "verbs": ["create"],
    })
}

/// Answers a POSTed TokenReview (`body`, JSON).
pub(crate) fn review(tokens: &Tokens, body: &[u8]) -> Response {
    let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
        return status_response(400, "BadRequest", "the body is not a JSON TokenReview");
    };
    if review["kind"] != TOKEN_REVIEWS.kind.as_ref()
        || review["apiVersion"] != TOKEN_REVIEWS.api_version()
    {
        let msg = format!(
            "expected a TokenReview of {}, got kind {} apiVersion {}",
            TOKEN_REVIEWS.api_version(),
            review["kind"],
            review["apiVersion"]
        );
        return status_response(400, "BadRequest", &msg);
    }
    let token = review["spec"]["token"].as_str().unwrap_or("");
    if token.is_empty() {
        return status_response(
            422,
            "Invalid",
            "TokenReview.authentication.k8s.io \"\" is invalid: spec.token: Required value",
        );
    }
    let wanted: Vec<String> = match review["spec"]["audiences"].as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => vec![API_AUDIENCE.to_owned()],
    };
    review["status"] = status(tokens.get(token), &wanted);
    review["metadata"] = json!({"creationTimestamp": null});
    json_response(201, &review)
}

/// The `status` of a review of `token` for the `wanted` audiences.
fn status(token: Option<&Token>, wanted: &[String]) -> Value {
    let Some(token) = token else {
        return json!({"user": {}, "error": "invalid bearer token"});
    };
    let common: Vec<&String> = token
        .audiences
        .iter()
        .filter(|a| wanted.contains(a))
        .collect();
    if common.is_empty() {
        return json!({
            "user": {},
            "error": format!(
                "invalid bearer token, token audiences {} is invalid for the target audiences {}",
                json!(token.audiences),
                json!(wanted)
            ),
        });
    }
    let mut groups = Vec::new();
    if let Some((ns, _)) = token
        .username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        groups.push("system:serviceaccounts".to_owned());
        groups.push(format!("system:serviceaccounts:{ns}"));
    }
    groups.push("system:authenticated".to_owned());
    json!({
        "authenticated": true,
        "user": {"username": token.username, "groups": groups},
        "audiences": common,
    })
}
