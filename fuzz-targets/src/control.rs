//! What the control plane reads from files and from the API server: the
//! directory source's manifests (`weft_control::sources::parse`) and the
//! admission webhook's AdmissionReview bodies (`weft_control::webhook`).

use serde_json::{json, Value};
use weft_control::inject::Settings;
use weft_control::model::routes::RouteObject;
use weft_control::model::Object;
use weft_control::sources::parse;
use weft_control::webhook::Injector;

/// A manifest file. Splitting keeps every line that is not a `---`, in
/// order; each object read, written back as JSON inside a `List`, reads
/// back the same.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let docs = parse::documents(text);
    // A carriage return ending a line is a YAML line break: kept or not,
    // the line reads the same (the splitter may drop a bare one at a
    // document's end).
    let kept: Vec<&str> = docs
        .iter()
        .flat_map(|d| d.lines())
        .map(|l| l.trim_end_matches('\r'))
        .collect();
    let want: Vec<&str> = text
        .lines()
        .filter(|l| !(*l == "---" || l.starts_with("--- ")))
        .map(|l| l.trim_end_matches('\r'))
        .collect();
    assert_eq!(kept, want, "splitting lost or moved lines");
    for doc in &docs {
        let Ok(objects) = parse::objects(doc) else {
            continue;
        };
        let items: Vec<Value> = objects.iter().map(as_json).collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
        let again = parse::objects(&list).unwrap_or_else(|e| panic!("{list}: {e}"));
        let again: Vec<Value> = again.iter().map(as_json).collect();
        assert_eq!(again, items, "an object changed on its way back");
    }
}

fn as_json(object: &Object) -> Value {
    let v = match object {
        Object::Service(o) => serde_json::to_value(o),
        Object::Slice(o) => serde_json::to_value(o),
        Object::Pod(o) => serde_json::to_value(o),
        Object::Namespace(o) => serde_json::to_value(o),
        Object::TrafficTarget(o) => serde_json::to_value(o),
        Object::Route(RouteObject::TrafficSplit(o)) => serde_json::to_value(o),
        Object::Route(RouteObject::HttpRouteGroup(o)) => serde_json::to_value(o),
        Object::Route(RouteObject::TcpRoute(o)) => serde_json::to_value(o),
        Object::Route(RouteObject::HttpRoute(o)) => serde_json::to_value(o),
        Object::Route(RouteObject::GrpcRoute(o)) => serde_json::to_value(o),
    };
    v.expect("a typed object serializes")
}

/// An AdmissionReview body, answered as the webhook answers it (no
/// cluster: namespaces have no annotations). A pod that gets a patch,
/// patched and reviewed again, gets none: injection happens once.
pub fn admission_review(data: &[u8]) {
    let injector = Injector::new(
        Settings::default(),
        None,
        None,
        &mut prometheus_client::registry::Registry::default(),
    );
    let rt = crate::detect::runtime();
    let Ok(review) = rt.block_on(injector.review(data)) else {
        return;
    };
    let response = review.response.expect("a review answered has a response");
    let Some(patch) = response.patch else {
        return;
    };
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("the patch is JSON Patch");
    // The typed review skips unknown fields without checking their UTF-8;
    // a body that is not valid JSON as a whole cannot be patched here.
    let Ok(mut body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let pod = body
        .pointer_mut("/request/object")
        .expect("a patched review has an object");
    json_patch::patch(pod, &patch).expect("the patch applies to its own pod");
    let again = serde_json::to_vec(&body).expect("JSON");
    let review = rt
        .block_on(injector.review(&again))
        .expect("the patched pod is a review too");
    let response = review.response.expect("a response");
    assert!(
        response.patch.is_none(),
        "an injected pod injected again: {}",
        String::from_utf8_lossy(&again)
    );
}
