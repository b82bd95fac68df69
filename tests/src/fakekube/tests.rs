//! The fake API server over real HTTP, with a plain hyper client: what
//! kube-rs' `Api::list`, `Api::watch` and kube-runtime's watcher rely on.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

/// How long a test waits for something that must happen.
const WAIT: Duration = Duration::from_secs(5);

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET path` with `accept`, as status and the whole body as JSON.
async fn get_as(kube: &FakeKube, path: &str, accept: &str) -> (u16, Value) {
    let req = http::Request::get(format!("{}{path}", kube.url()))
        .header(http::header::ACCEPT, accept)
        .body(Empty::new())
        .unwrap();
    let res = client()
        .request(req)
        .await
        .expect("the fake server answers");
    let code = res.status().as_u16();
    let body = res
        .into_body()
        .collect()
        .await
        .expect("a whole body")
        .to_bytes();
    (code, serde_json::from_slice(&body).expect("a JSON body"))
}

async fn get(kube: &FakeKube, path: &str) -> (u16, Value) {
    get_as(kube, path, "application/json").await
}

/// `POST path` with a JSON body, as status and the whole body as JSON.
async fn post(kube: &FakeKube, path: &str, body: &Value) -> (u16, Value) {
    let req = http::Request::post(format!("{}{path}", kube.url()))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let res = Client::builder(TokioExecutor::new())
        .build_http()
        .request(req)
        .await
        .expect("the fake server answers");
    let code = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&body).expect("a JSON body"))
}

/// How a watch stream went on.
#[derive(Debug)]
enum Next {
    Event(Value),
    /// The stream ended cleanly (final chunk).
    End,
    /// The connection broke mid-body; `resumable` if kube-rs would treat it
    /// as the end of the watch (an `UnexpectedEof` in the error chain).
    Broken {
        resumable: bool,
    },
}

/// An open watch stream read line by line.
struct Watch {
    body: Incoming,
    buf: Vec<u8>,
}

impl Watch {
    async fn open(kube: &FakeKube, path: &str) -> Watch {
        let res = client()
            .get(format!("{}{path}", kube.url()).parse().unwrap())
            .await
            .expect("the fake server answers");
        assert_eq!(res.status(), 200, "watch {path}");
        Watch {
            body: res.into_body(),
            buf: Vec::new(),
        }
    }

    async fn next(&mut self) -> Next {
        tokio::time::timeout(WAIT, self.next_now())
            .await
            .expect("the watch stream goes on")
    }

    async fn next_now(&mut self) -> Next {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Next::Event(serde_json::from_slice(&line).expect("a JSON event"));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => self
                    .buf
                    .extend_from_slice(&frame.into_data().unwrap_or_default()),
                Some(Err(e)) => {
                    return Next::Broken {
                        resumable: unexpected_eof(&e),
                    }
                }
                None => return Next::End,
            }
        }
    }

    /// The next event, skipping bookmarks.
    async fn event(&mut self) -> Value {
        loop {
            match self.next().await {
                Next::Event(e) if e["type"] == "BOOKMARK" => continue,
                Next::Event(e) => return e,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }
}

/// What kube-client's `request_events` checks to end a watch quietly
/// (kube-client-5.0.0/src/client/mod.rs, `error_chain_contains_unexpected_eof`).
fn unexpected_eof(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut err = Some(e);
    while let Some(e) = err {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
            || e.to_string().contains("unexpected EOF during chunk")
        {
            return true;
        }
        err = e.source();
    }
    false
}

/// Waits until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still not {what} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn svc(ns: &str, name: &str, labels: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"ports": [{"port": 80}]},
    })
}

fn names(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|o| format!("{}/{}", object::namespace(o), object::name(o)))
        .collect()
}

fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn list_pages_show_every_object_exactly_once() {
    let kube = FakeKube::start();
    for i in 0..25 {
        kube.apply(
            &SERVICES,
            svc(
                if i % 2 == 0 { "a" } else { "b" },
                &format!("s{i:02}"),
                json!({}),
            ),
        );
    }
    let (mut seen, mut rvs, mut token, mut pages) = (Vec::new(), BTreeSet::new(), String::new(), 0);
    loop {
        let (code, list) = get(
            &kube,
            &format!("/api/v1/services?&limit=7&continue={token}"),
        )
        .await;
        assert_eq!(code, 200, "{list}");
        assert_eq!(
            (list["apiVersion"].as_str(), list["kind"].as_str()),
            (Some("v1"), Some("ServiceList"))
        );
        seen.extend(names(&list["items"]));
        rvs.insert(
            list["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        pages += 1;
        // Changes between pages do not show: every page is the first one's snapshot.
        kube.apply(&SERVICES, svc("a", &format!("late{pages}"), json!({})));
        kube.delete(&SERVICES, "b", "s23");
        match list["metadata"]["continue"].as_str() {
            Some(t) => token = t.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(rvs.len(), 1, "one resourceVersion for every page: {rvs:?}");
    assert_eq!(seen.len(), 25);
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        25,
        "no object twice: {seen:?}"
    );
    assert!(seen.contains(&"b/s23".to_owned()));
    assert_eq!(kube.lists(&SERVICES), 4);

    let (_, list) = get(&kube, "/api/v1/namespaces/b/services").await;
    assert_eq!(names(&list["items"]).len(), 11, "12 in b, s23 gone");
    assert!(list["metadata"].get("continue").is_none());
    let (_, list) = get(&kube, "/api/v1/namespaces/a/services?labelSelector=x%3Dy").await;
    assert_eq!(names(&list["items"]).len(), 0);
}

#[tokio::test]
async fn lists_select_by_label_and_field() {
    let kube = FakeKube::start();
    kube.apply(
        &SERVICES,
        svc("a", "web", json!({"app": "web", "tier": "front"})),
    );
    kube.apply(&SERVICES, svc("a", "db", json!({"app": "db"})));
    kube.apply(&SERVICES, svc("b", "web", json!({"app": "web"})));
    let list = |q: &'static str| {
        let kube = kube.clone();
        async move { names(&get(&kube, &format!("/api/v1/services?{q}")).await.1["items"]) }
    };
    assert_eq!(list("labelSelector=app%3Dweb").await, ["a/web", "b/web"]);
    assert_eq!(
        list("labelSelector=app%3Dweb%2Ctier%3Dfront").await,
        ["a/web"]
    );
    assert_eq!(list("labelSelector=app+in+%28db%29").await, ["a/db"]);
    assert_eq!(
        list("fieldSelector=metadata.name%3Dweb").await,
        ["a/web", "b/web"]
    );
    assert_eq!(
        list("fieldSelector=metadata.namespace%21%3Da").await,
        ["b/web"]
    );
}

#[tokio::test]
async fn lists_at_a_resource_version() {
    let kube = FakeKube::start();
    let first = kube.apply(&SERVICES, svc("a", "x", json!({})));
    kube.apply(&SERVICES, svc("a", "y", json!({})));
    let rv = rv_of(&first);
    let (code, list) = get(
        &kube,
        &format!("/api/v1/services?resourceVersion={rv}&resourceVersionMatch=Exact"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(names(&list["items"]), ["a/x"]);
    // What kube-runtime sends with `ListSemantic::Any`: served from "cache".
    let (_, list) = get(
        &kube,
        "/api/v1/services?limit=500&resourceVersion=0&resourceVersionMatch=NotOlderThan",
    )
    .await;
    assert_eq!(names(&list["items"]).len(), 2);
    let (code, status) = get(
        &kube,
        "/api/v1/services?resourceVersion=999&resourceVersionMatch=NotOlderThan",
    )
    .await;
    assert_eq!((code, status["reason"].as_str()), (504, Some("Timeout")));
    let (code, _) = get(&kube, "/api/v1/services?resourceVersionMatch=Exact").await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn compaction_expires_old_resource_versions_and_continue_tokens() {
    let kube = FakeKube::start();
    for i in 0..3 {
        kube.apply(
            &PODS,
            json!({"metadata": {"name": format!("p{i}"), "namespace": "a"}}),
        );
    }
    let old = kube.resource_version() - 1;
    let (_, page) = get(&kube, "/api/v1/pods?limit=1").await;
    let token = page["metadata"]["continue"].as_str().unwrap().to_owned();
    kube.apply(
        &PODS,
        json!({"metadata": {"name": "later", "namespace": "a"}}),
    );
    kube.compact();

    let (code, status) = get(&kube, &format!("/api/v1/pods?limit=1&continue={token}")).await;
    assert_eq!(code, 410, "{status}");
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("Expired"))
    );
    let (code, _) = get(
        &kube,
        &format!("/api/v1/pods?resourceVersion={old}&resourceVersionMatch=Exact"),
    )
    .await;
    assert_eq!(code, 410);

    // A watch from before the compaction: 200, one ERROR event, a clean end.
    let mut w = Watch::open(
        &kube,
        &format!("/api/v1/pods?watch=true&resourceVersion={old}"),
    )
    .await;
    let Next::Event(e) = w.next().await else {
        panic!("an ERROR event")
    };
    assert_eq!(e["type"], "ERROR");
    let status = &e["object"];
    assert_eq!(
        (status["kind"].as_str(), status["apiVersion"].as_str()),
        (Some("Status"), Some("v1"))
    );
    assert_eq!(
        (status["code"].as_u64(), status["reason"].as_str()),
        (Some(410), Some("Expired"))
    );
    assert_eq!(status["status"], "Failure");
    let now = kube.resource_version();
    assert_eq!(
        status["message"],
        format!("too old resource version: {old} ({now})")
    );
    assert!(matches!(w.next().await, Next::End));

    // From the compaction point on, watches work.
    let mut w = Watch::open(
        &kube,
        &format!("/api/v1/pods?watch=true&resourceVersion={now}"),
    )
    .await;
    kube.delete(&PODS, "a", "later");
    assert_eq!(w.event().await["type"], "DELETED");
}

#[tokio::test]
async fn a_full_history_ring_expires_the_oldest() {
    let kube = FakeKube::start_with(Options {
        history: 3,
        ..Options::default()
    });
    let start = kube.resource_version();
    for i in 0..5 {
        kube.apply(
            &PODS,
            json!({"metadata": {"name": format!("p{i}"), "namespace": "a"}}),
        );
    }
    let mut w = Watch::open(
        &kube,
        &format!("/api/v1/pods?watch=true&resourceVersion={start}"),
    )
    .await;
    assert_eq!(w.event().await["object"]["code"], 410);
    let recent = kube.resource_version() - 3;
    let mut w = Watch::open(
        &kube,
        &format!("/api/v1/pods?watch=true&resourceVersion={recent}"),
    )
    .await;
    for i in 2..5 {
        assert_eq!(
            w.event().await["object"]["metadata"]["name"],
            format!("p{i}")
        );
    }
}

#[tokio::test]
async fn a_watch_replays_later_changes_then_streams_live_ones() {
    let kube = FakeKube::start();
    let a = kube.apply(&SERVICES, svc("shop", "a", json!({})));
    kube.apply(&SERVICES, svc("shop", "b", json!({})));
    kube.apply(
        &PODS,
        json!({"metadata": {"name": "p", "namespace": "shop"}}),
    );
    kube.apply(&SERVICES, svc("other", "c", json!({})));
    let mut a2 = svc("shop", "a", json!({"v": "2"}));
    a2["spec"]["ports"][0]["port"] = json!(81);
    kube.apply(&SERVICES, a2);

    let path = format!("/api/v1/namespaces/shop/services?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion={}", rv_of(&a));
    let mut w = Watch::open(&kube, &path).await;
    let e = w.event().await;
    assert_eq!(
        (e["type"].as_str(), object::name(&e["object"])),
        (Some("ADDED"), "b")
    );
    assert_eq!(e["object"]["apiVersion"], "v1");
    assert_eq!(e["object"]["kind"], "Service");
    let e = w.event().await;
    assert_eq!(
        (e["type"].as_str(), object::name(&e["object"])),
        (Some("MODIFIED"), "a")
    );
    assert_eq!(e["object"]["metadata"]["labels"]["v"], "2");
    assert_eq!(e["object"]["metadata"]["generation"], 2);
    assert_eq!(e["object"]["metadata"]["uid"], a["metadata"]["uid"]);

    let c = kube.apply(&SERVICES, svc("shop", "c", json!({})));
    let e = w.event().await;
    assert_eq!(
        (e["type"].as_str(), object::name(&e["object"])),
        (Some("ADDED"), "c")
    );
    assert_eq!(e["object"], c);
    let gone = kube.delete(&SERVICES, "shop", "b").unwrap();
    let e = w.event().await;
    assert_eq!(e["type"], "DELETED");
    assert_eq!(e["object"], gone);
    assert_eq!(rv_of(&e["object"]), kube.resource_version());
    assert_eq!(kube.watches(&SERVICES), 1);
    assert_eq!(kube.open_watches(&SERVICES), 1);
}

#[tokio::test]
async fn a_watch_from_now_starts_with_every_object() {
    let kube = FakeKube::start();
    kube.apply(&NAMESPACES, json!({"metadata": {"name": "a"}}));
    kube.apply(&NAMESPACES, json!({"metadata": {"name": "b"}}));
    let mut w = Watch::open(&kube, "/api/v1/namespaces?watch=true&resourceVersion=0").await;
    for name in ["a", "b"] {
        let e = w.event().await;
        assert_eq!(
            (e["type"].as_str(), object::name(&e["object"])),
            (Some("ADDED"), name)
        );
        assert!(e["object"]["metadata"].get("namespace").is_none());
    }
    kube.apply(&NAMESPACES, json!({"metadata": {"name": "c"}}));
    assert_eq!(object::name(&w.event().await["object"]), "c");
}

#[tokio::test]
async fn objects_moving_out_of_a_selector_are_deleted_from_its_watch() {
    let kube = FakeKube::start();
    let rv = kube.resource_version();
    let mut w = Watch::open(
        &kube,
        &format!("/api/v1/services?watch=true&labelSelector=app%3Dweb&resourceVersion={rv}"),
    )
    .await;
    kube.apply(&SERVICES, svc("a", "s", json!({"app": "db"})));
    kube.apply(&SERVICES, svc("a", "s", json!({"app": "web"})));
    assert_eq!(w.event().await["type"], "ADDED");
    kube.apply(&SERVICES, svc("a", "s", json!({"app": "web", "x": "y"})));
    assert_eq!(w.event().await["type"], "MODIFIED");
    kube.apply(&SERVICES, svc("a", "s", json!({"app": "db"})));
    let e = w.event().await;
    assert_eq!(e["type"], "DELETED");
    assert_eq!(rv_of(&e["object"]), kube.resource_version());
}

#[tokio::test]
async fn bookmarks_arrive_with_only_a_resource_version() {
    let options = Options {
        bookmark_interval: Duration::from_millis(50),
        ..Options::default()
    };
    let kube = FakeKube::start_with(options);
    let rv = kube.resource_version();
    let path = format!("/apis/discovery.k8s.io/v1/endpointslices?watch=true&allowWatchBookmarks=true&resourceVersion={rv}");
    let mut w = Watch::open(&kube, &path).await;
    let Next::Event(e) = w.next().await else {
        panic!("a bookmark")
    };
    assert_eq!(e["type"], "BOOKMARK");
    assert_eq!(
        e["object"],
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"resourceVersion": rv.to_string()}})
    );
    // Changes of other resources move the bookmark on.
    kube.apply(&PODS, json!({"metadata": {"name": "p"}}));
    let want = kube.resource_version().to_string();
    loop {
        let Next::Event(e) = w.next().await else {
            panic!("bookmarks")
        };
        assert_eq!(e["type"], "BOOKMARK", "no event for a pod");
        if e["object"]["metadata"]["resourceVersion"] == want.as_str() {
            break;
        }
    }
    // Without allowWatchBookmarks, none.
    let mut quiet = Watch::open(
        &kube,
        &format!("/apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion={want}"),
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), quiet.next_now())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_timeout_ends_the_stream_cleanly_after_a_bookmark() {
    // No periodic bookmark: the one seen is the last one.
    let kube = FakeKube::start_with(Options {
        bookmark_interval: Duration::from_secs(3600),
        ..Options::default()
    });
    let mut w = Watch::open(
        &kube,
        "/api/v1/pods?watch=true&timeoutSeconds=1&allowWatchBookmarks=true&resourceVersion=1",
    )
    .await;
    let started = tokio::time::Instant::now();
    let Next::Event(e) = w.next().await else {
        panic!("a last bookmark")
    };
    assert_eq!(e["type"], "BOOKMARK");
    assert!(matches!(w.next().await, Next::End));
    assert!(started.elapsed() >= Duration::from_millis(900));
    until("the watch is closed", || kube.open_watches(&PODS) == 0).await;
}

#[tokio::test]
async fn break_watches_aborts_every_open_stream() {
    let kube = FakeKube::start();
    let mut pods = Watch::open(&kube, "/api/v1/pods?watch=true&resourceVersion=1").await;
    let mut slices = Watch::open(
        &kube,
        "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices?watch=true&resourceVersion=1",
    )
    .await;
    kube.apply(&PODS, json!({"metadata": {"name": "p", "namespace": "a"}}));
    assert_eq!(pods.event().await["type"], "ADDED");
    until("both watches are open", || {
        kube.open_watches(&PODS) == 1 && kube.open_watches(&ENDPOINT_SLICES) == 1
    })
    .await;

    kube.break_watches();
    for w in [&mut pods, &mut slices] {
        match w.next().await {
            Next::Broken { resumable } => {
                assert!(resumable, "kube-rs resumes a watch cut like this")
            }
            other => panic!("expected a broken stream, got {other:?}"),
        }
    }
    until("no watch is open", || {
        kube.open_watches(&PODS) + kube.open_watches(&ENDPOINT_SLICES) == 0
    })
    .await;
    // Watching again from the last resourceVersion seen misses nothing.
    let rv = kube.resource_version();
    kube.apply(&PODS, json!({"metadata": {"name": "q", "namespace": "a"}}));
    let mut again = Watch::open(
        &kube,
        &format!("/api/v1/pods?watch=true&resourceVersion={rv}"),
    )
    .await;
    assert_eq!(object::name(&again.event().await["object"]), "q");
}

#[tokio::test]
async fn unavailable_answers_503_to_everything() {
    let kube = FakeKube::start();
    let mut w = Watch::open(&kube, "/api/v1/services?watch=true&resourceVersion=1").await;
    kube.set_unavailable(true);
    assert!(matches!(w.next().await, Next::Broken { .. }));
    for path in [
        "/version",
        "/api/v1/services",
        "/api/v1/services?watch=true",
        "/nothing",
    ] {
        let (code, status) = get(&kube, path).await;
        assert_eq!(
            (code, status["reason"].as_str()),
            (503, Some("ServiceUnavailable")),
            "{path}"
        );
    }
    let late = kube.apply(&SERVICES, svc("a", "late", json!({})));
    kube.set_unavailable(false);
    let mut w = Watch::open(&kube, "/api/v1/services?watch=true&resourceVersion=1").await;
    assert_eq!(w.event().await["object"], late);
    assert_eq!(
        kube.lists(&SERVICES),
        1,
        "requests are counted also when refused"
    );
    assert_eq!(kube.watches(&SERVICES), 3);
}

#[tokio::test]
async fn a_latency_holds_every_request_until_it_is_turned_off() {
    let kube = FakeKube::start();
    kube.apply(&SERVICES, svc("a", "web", json!({})));
    let latency = Duration::from_millis(300);
    kube.set_latency(latency);
    for path in [
        "/api/v1/services",
        "/api/v1/services?watch=true&resourceVersion=1",
    ] {
        let t = std::time::Instant::now();
        let res = client()
            .get(format!("{}{path}", kube.url()).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(
            t.elapsed() >= latency,
            "{path} answered in {:?}",
            t.elapsed()
        );
    }
    kube.set_latency(Duration::ZERO);
    let t = std::time::Instant::now();
    assert_eq!(get(&kube, "/api/v1/services").await.0, 200);
    // Well under the latency even on a loaded machine.
    assert!(t.elapsed() < latency, "answered in {:?}", t.elapsed());
    assert_eq!(kube.lists(&SERVICES), 2);
}

#[tokio::test]
async fn streaming_lists_end_their_initial_events_with_a_bookmark() {
    let kube = FakeKube::start();
    kube.apply(&PODS, json!({"metadata": {"name": "p", "namespace": "a"}}));
    kube.apply(&PODS, json!({"metadata": {"name": "q", "namespace": "b"}}));
    // As kube-runtime sends it with `watcher::Config::streaming_lists()`.
    let path = "/api/v1/namespaces/a/pods?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0";
    let mut w = Watch::open(&kube, path).await;
    let e = w.event().await;
    assert_eq!(
        (e["type"].as_str(), object::name(&e["object"])),
        (Some("ADDED"), "p")
    );
    let Next::Event(end) = w.next().await else {
        panic!("the end bookmark")
    };
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(rv_of(&end["object"]), kube.resource_version());
    kube.apply(&PODS, json!({"metadata": {"name": "r", "namespace": "a"}}));
    assert_eq!(object::name(&w.event().await["object"]), "r");

    let path = "/api/v1/pods?watch=true&sendInitialEvents=false&resourceVersionMatch=NotOlderThan";
    let mut w = Watch::open(&kube, path).await;
    kube.apply(&PODS, json!({"metadata": {"name": "s", "namespace": "a"}}));
    assert_eq!(
        object::name(&w.event().await["object"]),
        "s",
        "no initial events"
    );

    let (code, status) = get(
        &kube,
        "/api/v1/pods?watch=true&sendInitialEvents=true&resourceVersion=0",
    )
    .await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")));
}

#[tokio::test]
async fn metadata_only_clients_get_partial_objects() {
    let kube = FakeKube::start();
    kube.apply(
        &PODS,
        json!({"metadata": {"name": "p", "namespace": "a"}, "spec": {"nodeName": "n"}}),
    );
    let accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    let (_, list) = get_as(&kube, "/api/v1/pods", accept).await;
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
    assert!(list["items"][0].get("spec").is_none());
    assert_eq!(list["items"][0]["metadata"]["name"], "p");
}

#[tokio::test]
async fn gets_discovery_version_and_unknown_paths() {
    let kube = FakeKube::start();
    let (code, v) = get(&kube, "/version").await;
    assert_eq!(
        (code, v["major"].as_str(), v["minor"].as_str()),
        (200, Some("1"), Some("35"))
    );

    let (code, status) = get(&kube, "/api/v1/namespaces/a/nothings").await;
    assert_eq!(
        (code, status["kind"].as_str(), status["reason"].as_str()),
        (404, Some("Status"), Some("NotFound"))
    );
    let (code, _) = get(&kube, "/api/v1/namespaces/a/namespaces").await;
    assert_eq!(code, 404, "namespaces are cluster-scoped");

    let split = Resource::new(
        "split.smi-spec.io",
        "v1alpha4",
        "TrafficSplit",
        "trafficsplits",
        true,
    );
    let path = split.path(Some("a"));
    assert_eq!(get(&kube, &path).await.0, 404, "a CRD not installed");
    kube.apply(
        &split,
        json!({"metadata": {"name": "t", "namespace": "a"}, "spec": {"service": "web"}}),
    );
    let (code, list) = get(&kube, &path).await;
    assert_eq!(
        (code, list["kind"].as_str()),
        (200, Some("TrafficSplitList"))
    );
    assert_eq!(list["items"][0]["apiVersion"], "split.smi-spec.io/v1alpha4");
    let (code, obj) = get(&kube, &format!("{path}/t")).await;
    assert_eq!((code, obj["spec"]["service"].as_str()), (200, Some("web")));
    assert_eq!(get(&kube, &format!("{path}/u")).await.0, 404);
    assert_eq!(kube.lists(&split), 2);
    assert_eq!(kube.gets(&split), 2);

    let (_, groups) = get(&kube, "/apis").await;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "authentication.k8s.io",
            "authorization.k8s.io",
            "discovery.k8s.io",
            "split.smi-spec.io"
        ]
    );
    let (_, core) = get(&kube, "/api/v1").await;
    assert_eq!(core["resources"].as_array().unwrap().len(), 5);
    let (code, list) = get(&kube, "/api/v1/namespaces/a/secrets").await;
    assert_eq!((code, list["kind"].as_str()), (200, Some("SecretList")));
    let (_, auth) = get(&kube, "/apis/authentication.k8s.io/v1").await;
    assert_eq!(auth["resources"][0]["name"], "tokenreviews");
    assert_eq!(auth["resources"][0]["verbs"], json!(["create"]));
    let (_, authz) = get(&kube, "/apis/authorization.k8s.io/v1").await;
    assert_eq!(authz["resources"][0]["name"], "selfsubjectaccessreviews");
    let (_, version) = get(&kube, "/version").await;
    assert_eq!(version["gitVersion"], "v1.35.0-weft-fakekube");
    kube.set_version("1", "28");
    let (_, version) = get(&kube, "/version").await;
    assert_eq!(
        (version["major"].as_str(), version["minor"].as_str()),
        (Some("1"), Some("28"))
    );
}

#[tokio::test]
async fn token_reviews_answer_from_the_tokens_added() {
    const WEB: &str = "system:serviceaccount:shop:web";
    let kube = FakeKube::start();
    kube.add_token("web-token", WEB, &["weft", "other"]);
    kube.add_token("api-token", WEB, &[API_AUDIENCE]);
    let path = TOKEN_REVIEWS.path(None);
    assert_eq!(path, "/apis/authentication.k8s.io/v1/tokenreviews");
    let review = |token: &str, audiences: Value| {
        let kube = kube.clone();
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "metadata": {}, "spec": {"token": token, "audiences": audiences},
        });
        let path = path.clone();
        async move { post(&kube, &path, &body).await }
    };

    let (code, r) = review("web-token", json!(["weft"])).await;
    assert_eq!((code, r["kind"].as_str()), (201, Some("TokenReview")));
    assert_eq!(r["spec"]["token"], "web-token");
    assert_eq!(
        r["status"],
        json!({
            "authenticated": true,
            "user": {"username": WEB, "groups": [
                "system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"
            ]},
            "audiences": ["weft"],
        })
    );
    // No audiences named: the API server's own.
    let (_, r) = review("api-token", Value::Null).await;
    assert_eq!(r["status"]["audiences"], json!([API_AUDIENCE]));
    // Another audience, an unknown token: 201 all the same, not authenticated.
    let (code, r) = review("web-token", json!(["vault"])).await;
    assert_eq!(code, 201);
    assert_eq!(r["status"]["authenticated"], Value::Null);
    assert_eq!(
        r["status"]["error"],
        r#"invalid bearer token, token audiences ["weft","other"] is invalid for the target audiences ["vault"]"#
    );
    let (_, r) = review("web-token", Value::Null).await;
    assert!(r["status"]["error"]
        .as_str()
        .unwrap()
        .contains(API_AUDIENCE));
    let (_, r) = review("nobody", json!(["weft"])).await;
    assert_eq!(
        r["status"],
        json!({"user": {}, "error": "invalid bearer token"})
    );
    assert!(kube.remove_token("web-token"));
    let (_, r) = review("web-token", json!(["weft"])).await;
    assert_eq!(r["status"]["error"], "invalid bearer token");
    // Requests that are not reviews.
    assert_eq!(review("", json!(["weft"])).await.0, 422);
    let (code, _) = post(&kube, &path, &json!({"kind": "Pod", "apiVersion": "v1"})).await;
    assert_eq!(code, 400);
    assert_eq!(kube.creates(&TOKEN_REVIEWS), 8);
    let (code, status) = get(&kube, &path).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
    let (code, _) = post(
        &kube,
        "/api/v1/namespaces/a/services",
        &svc("a", "x", json!({})),
    )
    .await;
    assert_eq!(code, 201, "clients create objects (through admission)");
    assert_eq!(kube.objects(&SERVICES).len(), 1);
    assert_eq!(kube.creates(&SERVICES), 1);
    let (code, status) = post(
        &kube,
        "/api/v1/namespaces/a/services",
        &svc("a", "x", json!({})),
    )
    .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    kube.delete(&SERVICES, "a", "x");
    // Away: 503 as everything else.
    kube.set_unavailable(true);
    assert_eq!(review("api-token", Value::Null).await.0, 503);
}

#[test]
fn the_handle_works_without_a_runtime_and_stops_the_server_when_dropped() {
    let kube = FakeKube::start();
    let addr = kube.addr();
    assert!(addr.ip().is_loopback());
    kube.apply(&SERVICES, svc("a", "x", json!({})));
    assert_eq!(kube.objects(&SERVICES).len(), 1);
    assert_eq!(
        kube.get(&SERVICES, "a", "x").unwrap()["metadata"]["resourceVersion"],
        "2"
    );
    let clone = kube.clone();
    drop(kube);
    assert!(
        std::net::TcpStream::connect(addr).is_ok(),
        "a clone keeps it running"
    );
    drop(clone);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "stopped with the last handle"
    );
}
