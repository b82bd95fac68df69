//! The kube source and objects that do not fit their schema, against the
//! fake API server: one such object (a TrafficSplit weight that is not a
//! number, an HTTPRouteGroup whose `matches` is a string) is refused alone
//! with a `Refused` Event naming the field error, every other object is
//! applied and weft-control becomes ready; a v1alpha1 TrafficSplit served
//! at v1alpha4 (quantity weights) is read; a good object updated into one
//! that does not fit keeps its last good version, through a relist too.

use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weft_control::config::{Config, Source};
use weft_control::run::{run, Bound};
use weft_tests::fakekube::{FakeKube, EVENTS, HTTP_ROUTE_GROUPS, SERVICES, TRAFFIC_SPLITS};

const WITHIN: Duration = Duration::from_secs(30);
const SPLITS: &str = r#"weft_control_objects{kind="TrafficSplit"}"#;
const SPLIT_ERRORS: &str = r#"weft_control_source_errors_total{source="kube",kind="TrafficSplit"}"#;

fn split(name: &str, apex: &str, weights: [serde_json::Value; 2]) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"service": apex, "backends": [
            {"service": format!("{apex}-v1"), "weight": weights[0]},
            {"service": format!("{apex}-v2"), "weight": weights[1]}
        ]}
    })
}

fn group(name: &str, matches: serde_json::Value) -> serde_json::Value {
    json!({"metadata": {"name": name, "namespace": "shop"}, "spec": {"matches": matches}})
}

/// Services for the apexes `apps` and their `-v1`/`-v2` backends.
fn services(kube: &FakeKube, apps: &[&str]) {
    let mut ip = 20;
    for app in apps {
        for name in [app.to_string(), format!("{app}-v1"), format!("{app}-v2")] {
            ip += 1;
            kube.apply(&SERVICES, json!({
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"clusterIP": format!("10.96.0.{ip}"), "ports": [{"name": "http", "port": 80}]}
            }));
        }
    }
}

/// weft-control on its kube source against `kube`: its admin address, a
/// stop, and its task.
async fn start(
    kube: &FakeKube,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<anyhow::Result<()>>,
) {
    let config = Config {
        kube_api_server: Some(kube.url()),
        ..Config::loopback(Source::Kube)
    };
    let bound = Bound::bind(&config).await.unwrap();
    let (_, admin) = bound.addrs().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let plane = tokio::spawn(run(config, bound, async {
        let _ = stopped.await;
    }));
    (admin, stop, plane)
}

/// The note of the Refused Event on `kind` shop/`name`, waiting for it.
async fn refused(kube: &FakeKube, kind: &str, name: &str) -> String {
    let event = kube
        .until(
            &EVENTS,
            |e| {
                e["type"] == "Warning"
                    && e["reason"] == "Refused"
                    && e["regarding"]["kind"] == kind
                    && e["regarding"]["namespace"] == "shop"
                    && e["regarding"]["name"] == name
            },
            WITHIN,
        )
        .await
        .unwrap_or_else(|| panic!("a Refused Event on {kind} shop/{name}"));
    event["note"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_does_not_fit_is_refused_and_the_rest_syncs() {
    let kube = FakeKube::start();
    kube.register(&EVENTS);
    services(&kube, &["web", "api", "old"]);
    kube.apply(
        &TRAFFIC_SPLITS,
        split("canary", "web", [json!(900), json!(100)]),
    );
    kube.apply(
        &TRAFFIC_SPLITS,
        split("broken", "api", [json!(1), json!("heavy")]),
    );
    // Written at v1alpha1, served as written at v1alpha4.
    kube.apply(
        &TRAFFIC_SPLITS,
        split("legacy", "old", [json!("500m"), json!(1)]),
    );
    kube.apply(
        &HTTP_ROUTE_GROUPS,
        group("reads", json!([{"name": "get", "methods": ["GET"]}])),
    );
    kube.apply(&HTTP_ROUTE_GROUPS, group("writes", json!("x")));
    let (admin, stop, plane) = start(&kube).await;

    weft_tests::until_ready(admin, WITHIN).await;
    weft_tests::until_admin_metric(admin, SPLITS, 2.0, WITHIN).await;
    let groups = r#"weft_control_objects{kind="HTTPRouteGroup"}"#;
    weft_tests::until_admin_metric(admin, groups, 1.0, WITHIN).await;
    weft_tests::until_admin_metric(admin, SPLIT_ERRORS, 1.0, WITHIN).await;
    let group_errors = r#"weft_control_source_errors_total{source="kube",kind="HTTPRouteGroup"}"#;
    weft_tests::until_admin_metric(admin, group_errors, 1.0, WITHIN).await;

    let note = refused(&kube, "TrafficSplit", "broken").await;
    assert!(
        note.contains("spec.backends[1].weight: 'heavy' is not a quantity"),
        "{note}"
    );
    let note = refused(&kube, "HTTPRouteGroup", "writes").await;
    assert!(
        note.contains("HTTPRouteGroup does not fit its schema: invalid type: string \"x\""),
        "{note}"
    );
    assert!(
        kube.objects(&EVENTS)
            .iter()
            .all(|e| e["reason"] != "Refused"
                || ["broken", "writes"].contains(&e["regarding"]["name"].as_str().unwrap())),
        "only the two are refused: {:?}",
        kube.objects(&EVENTS)
    );

    let _ = stop.send(());
    plane.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_object_updated_to_one_that_does_not_fit_keeps_its_last_good_version() {
    let kube = FakeKube::start();
    kube.register(&EVENTS);
    services(&kube, &["web", "api"]);
    kube.apply(
        &TRAFFIC_SPLITS,
        split("canary", "web", [json!(900), json!(100)]),
    );
    let (admin, stop, plane) = start(&kube).await;
    weft_tests::until_ready(admin, WITHIN).await;
    weft_tests::until_admin_metric(admin, SPLITS, 1.0, WITHIN).await;

    kube.apply(
        &TRAFFIC_SPLITS,
        split("canary", "web", [json!(900), json!({"much": 1})]),
    );
    weft_tests::until_admin_metric(admin, SPLIT_ERRORS, 1.0, WITHIN).await;
    let note = refused(&kube, "TrafficSplit", "canary").await;
    assert!(
        note.contains("last good version") && note.contains("expected i64"),
        "{note}"
    );
    assert_eq!(weft_tests::admin_metric(admin, SPLITS).await, Some(1.0));

    // A relist (history compacted while the API server was away) sees the
    // object as it is now: refused, and not taken for deleted. Once a
    // change made after the relist is in, the relist's deletes are too.
    kube.set_unavailable(true);
    let deadline = tokio::time::Instant::now() + WITHIN;
    while kube.open_watches(&TRAFFIC_SPLITS) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "watches not cut");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kube.apply(&TRAFFIC_SPLITS, split("other", "api", [json!(1), json!(1)]));
    kube.compact();
    kube.set_unavailable(false);
    weft_tests::until_admin_metric(admin, SPLITS, 2.0, WITHIN).await;
    kube.apply(&TRAFFIC_SPLITS, split("third", "api", [json!(1), json!(2)]));
    weft_tests::until_admin_metric(admin, SPLITS, 3.0, WITHIN).await;

    // Deleted while refused: its last good version goes too.
    kube.delete(&TRAFFIC_SPLITS, "shop", "canary");
    weft_tests::until_admin_metric(admin, SPLITS, 2.0, WITHIN).await;

    let _ = stop.send(());
    plane.await.unwrap().unwrap();
}
