//! The kube source and the routing CRDs, against the fake API server: a
//! cluster without them syncs and is ready; once served, routing objects
//! reach the model, a bad version is refused (logged and counted) and the
//! model keeps the last good one; a deleted one goes.

use serde_json::json;
use std::time::Duration;
use tokio::sync::oneshot;
use weft_control::config::{Config, Source};
use weft_control::run::{run, Bound};
use weft_tests::fakekube::{FakeKube, EVENTS, HTTP_ROUTES, SERVICES, TRAFFIC_SPLITS};

/// Whether `e` is a Warning Event with `reason` on the TrafficSplit.
fn on_split(e: &serde_json::Value, reason: &str) -> bool {
    e["type"] == "Warning"
        && e["reason"] == reason
        && e["regarding"]["kind"] == "TrafficSplit"
        && e["regarding"]["namespace"] == "shop"
        && e["regarding"]["name"] == "canary"
}

fn split(weight: i64) -> serde_json::Value {
    json!({
        "metadata": {"name": "canary", "namespace": "shop"},
        "spec": {"service": "web", "backends": [
            {"service": "web-v1", "weight": 1000},
            {"service": "web-v2", "weight": weight}
        ]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_crds_are_optional_and_watched_once_served() {
    let kube = FakeKube::start();
    kube.register(&EVENTS);
    for name in ["web", "web-v1", "web-v2"] {
        kube.apply(&SERVICES, json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"clusterIP": format!("10.96.0.{}", 20 + name.len()), "ports": [{"name": "http", "port": 80}]}
        }));
    }
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

    // No routing CRD is served: the source syncs all the same.
    weft_tests::until_ready(admin, Duration::from_secs(15)).await;
    let errors = r#"weft_control_source_errors_total{source="kube",kind="TrafficSplit"}"#;
    assert_eq!(
        weft_tests::admin_metric(admin, errors).await,
        Some(1.0),
        "said once"
    );

    // The CRDs appear with objects: the watchers, retrying, find them.
    kube.apply(&TRAFFIC_SPLITS, split(500));
    kube.apply(
        &HTTP_ROUTES,
        json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web"}],
                     "rules": [{"backendRefs": [{"name": "web-v2", "port": 80}]}]}
        }),
    );
    let splits = r#"weft_control_objects{kind="TrafficSplit"}"#;
    let routes = r#"weft_control_objects{kind="HTTPRoute"}"#;
    weft_tests::until_admin_metric(admin, splits, 1.0, Duration::from_secs(15)).await;
    weft_tests::until_admin_metric(admin, routes, 1.0, Duration::from_secs(15)).await;
    // The split and the route on one Service: the conflict is reported,
    // once; a new version of the split with the same conflict is not
    // reported again.
    let problems = r#"weft_control_route_problems_total{kind="TrafficSplit"}"#;
    assert_eq!(weft_tests::admin_metric(admin, problems).await, Some(1.0));
    // ... and left as a Warning Event on the split.
    let event = kube
        .until(
            &EVENTS,
            |e| on_split(e, "RouteProblem"),
            Duration::from_secs(15),
        )
        .await
        .expect("a RouteProblem Event on the split");
    let note = event["note"].as_str().unwrap();
    assert!(note.contains("HTTPRoute shop/web"), "{note}");
    let applied = r#"weft_control_model_apply_seconds_count"#;
    let before = weft_tests::admin_metric(admin, applied).await.unwrap();
    kube.apply(&TRAFFIC_SPLITS, split(400));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while weft_tests::admin_metric(admin, applied).await.unwrap() <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new version is applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(weft_tests::admin_metric(admin, problems).await, Some(1.0));

    // A bad version (weight -1) is refused and counted; the good one stays.
    kube.apply(&TRAFFIC_SPLITS, split(-1));
    weft_tests::until_admin_metric(admin, errors, 2.0, Duration::from_secs(15)).await;
    assert_eq!(weft_tests::admin_metric(admin, splits).await, Some(1.0));
    let event = kube
        .until(&EVENTS, |e| on_split(e, "Refused"), Duration::from_secs(15))
        .await
        .expect("a Refused Event on the split");
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("weight") && note.contains("last good version"),
        "{note}"
    );

    // Deleted: gone from the model.
    kube.delete(&TRAFFIC_SPLITS, "shop", "canary");
    weft_tests::until_admin_metric(admin, splits, 0.0, Duration::from_secs(15)).await;

    let _ = stop.send(());
    plane.await.unwrap().unwrap();
}
