//! The HTTP side: accepts connections on the bound listener (HTTP/1.1 and
//! HTTP/2), counts each request, holds it for the latency set, answers 503
//! while the server is set away, routes GETs to discovery, list, get or
//! watch, POSTs of TokenReviews to `review` and of SelfSubjectAccessReviews
//! to `access`, other POSTs and PATCHes to
//! `create`. Every failure is a `Status` object, as the API server sends.

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HOST};
use http::{Method, Request};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use super::request::{Api, Query, Route};
use super::shared::Shared;
use super::{
    access, create, discovery, list, object, review, watch, SELF_SUBJECT_ACCESS_REVIEWS,
    TOKEN_REVIEWS,
};

/// The body of every answer: a whole JSON document, or a watch stream.
pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;
/// An answer.
pub(crate) type Response = http::Response<Body>;

/// Serves connections from `listener` until `shutdown` completes.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors or similar: back off, keep serving.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            // A client that goes away mid-request is no error of ours.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Answers one request.
async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response {
    let route = Route::parse(req.uri().path());
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let is_watch = query.flag("watch");
    let is_post = req.method() == Method::POST;
    match &route {
        Route::Collection { api, .. } => count(shared, api, |c| {
            if is_post {
                c.creates += 1;
            } else if is_watch {
                c.watches += 1;
            } else {
                c.lists += 1;
            }
        }),
        Route::Object { api, .. } => count(shared, api, |c| c.gets += 1),
        _ => {}
    }
    let latency = shared.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if shared.unavailable() {
        return status_response(
            503,
            "ServiceUnavailable",
            "the API server is unavailable (fakekube: set_unavailable)",
        );
    }
    let reviews = |r: &super::Resource| {
        matches!(&route, Route::Collection { api, namespace: None }
            if r.is(&api.group, &api.version, &api.plural))
    };
    let (token_review, access_review) = (
        reviews(&TOKEN_REVIEWS),
        reviews(&SELF_SUBJECT_ACCESS_REVIEWS),
    );
    match (req.method(), token_review || access_review) {
        (&Method::POST, true) => match req.into_body().collect().await {
            Ok(body) if token_review => review::review(&shared.tokens(), &body.to_bytes()),
            Ok(body) => access::review(&shared.granted(), &body.to_bytes()),
            Err(e) => status_response(400, "BadRequest", &format!("unreadable body: {e}")),
        },
        (&Method::GET, false) => get(shared, &req, route, &query),
        (&Method::POST, false) | (&Method::PATCH, false) => write(shared, req, route, &query).await,
        (method, _) => {
            let msg = format!(
                "the fake API server serves GET, POST and PATCH; not {method} {}",
                req.uri().path()
            );
            status_response(405, "MethodNotAllowed", &msg)
        }
    }
}

/// Answers a POST (create into a collection) or a PATCH (of an object).
async fn write(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    route: Route,
    query: &Query,
) -> Response {
    let is_post = req.method() == Method::POST;
    let content_type = header(&req, CONTENT_TYPE).to_owned();
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return status_response(400, "BadRequest", &format!("unreadable body: {e}")),
    };
    match route {
        Route::Collection { api, namespace } if is_post => {
            match table(shared, &api, namespace.as_deref()) {
                Some(t) => create::create(shared, t, namespace, &body).await,
                None => not_found(),
            }
        }
        Route::Object {
            api,
            namespace,
            name,
        } if !is_post => match table(shared, &api, namespace.as_deref()) {
            Some(t) => {
                let manager = query.get("fieldManager");
                create::patch(shared, t, namespace, &name, &content_type, manager, &body)
            }
            None => not_found(),
        },
        _ => status_response(
            405,
            "MethodNotAllowed",
            "POST creates in a collection, PATCH changes an object",
        ),
    }
}

/// Answers a GET.
fn get(shared: &Arc<Shared>, req: &Request<Incoming>, route: Route, query: &Query) -> Response {
    let is_watch = query.flag("watch");
    // `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`
    let partial = header(req, ACCEPT).contains("as=PartialObjectMetadata");
    match route {
        Route::Version => {
            let (major, minor) = shared.version().clone();
            json_response(200, &discovery::version(&major, &minor))
        }
        Route::CoreVersions => json_response(200, &discovery::core_versions(header(req, HOST))),
        Route::Groups => json_response(200, &discovery::groups(&shared.store())),
        Route::Resources { group, version } => {
            match discovery::resources(&shared.store(), &group, &version) {
                Some(list) => json_response(200, &list),
                None => not_found(),
            }
        }
        Route::Collection { api, namespace } => match table(shared, &api, namespace.as_deref()) {
            Some(t) if is_watch => watch::watch(shared, t, namespace, query, partial),
            Some(t) => list::list(shared, t, namespace, query, partial),
            None => not_found(),
        },
        Route::Object {
            api,
            namespace,
            name,
        } => match table(shared, &api, namespace.as_deref()) {
            Some(t) => list::get(shared, t, namespace, &name, partial),
            None => not_found(),
        },
        Route::Unknown => not_found(),
    }
}

fn count(shared: &Shared, api: &Api, f: impl FnOnce(&mut super::shared::Counts)) {
    shared.count(&api.group, &api.version, &api.plural, f);
}

/// The table a URL names, if served and if the URL's scope fits it.
fn table(shared: &Shared, api: &Api, namespace: Option<&str>) -> Option<usize> {
    let store = shared.store();
    let t = store.find(&api.group, &api.version, &api.plural)?;
    (namespace.is_none() || store.tables[t].resource.namespaced).then_some(t)
}

fn header(req: &Request<Incoming>, name: http::HeaderName) -> &str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A JSON answer.
pub(crate) fn json_response(code: u16, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).expect("JSON values serialize");
    http::Response::builder()
        .status(code)
        .header(CONTENT_TYPE, "application/json")
        .body(
            Full::new(Bytes::from(bytes))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .expect("a valid response")
}

/// A failure as a `Status` object.
pub(crate) fn status_response(code: u16, reason: &str, message: &str) -> Response {
    json_response(code, &object::status(code, reason, message))
}

/// 404 for a path the server does not serve.
pub(crate) fn not_found() -> Response {
    let mut status = object::status(
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    status["details"] = serde_json::json!({});
    json_response(404, &status)
}
