//! The real kube-rs 5 client and kube-runtime watcher against weft-tests'
//! fake Kubernetes API server: what the control plane's watchers rely on.

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::time::Duration;
use weft_tests::fakekube::{
    FakeKube, Options, CONFIG_MAPS, ENDPOINT_SLICES, NAMESPACES, PODS, SERVICES,
};

const WAIT: Duration = Duration::from_secs(10);

fn client(kube: &FakeKube) -> Client {
    let config = kube::Config::new(kube.url().parse().unwrap());
    Client::try_from(config).unwrap()
}

fn svc(ns: &str, name: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}]},
    })
}

type Events<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// The next event as `Init`, `InitApply(name)`, `InitDone`, `Apply(name)`,
/// `Delete(name)`; errors (which the watcher recovers from) are skipped.
async fn next<K: kube::Resource>(events: &mut Events<K>) -> String {
    loop {
        match tokio::time::timeout(WAIT, events.next())
            .await
            .expect("an event in time")
        {
            Some(Ok(e)) => return e.to_string(),
            Some(Err(e)) => eprintln!("watcher error (recovering): {e}"),
            None => panic!("the watcher ended"),
        }
    }
}

async fn nexts<K: kube::Resource>(events: &mut Events<K>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next(events).await);
    }
    out
}

#[tokio::test]
async fn the_client_lists_pages_and_gets() {
    let kube = FakeKube::start();
    for name in ["a", "b", "c"] {
        kube.apply(&SERVICES, svc("shop", name));
    }
    let client = client(&kube);
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "35")
    );

    let api: Api<Service> = Api::namespaced(client.clone(), "shop");
    let page = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("a continue token");
    let rest = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        rest.items.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        ["c"]
    );
    assert_eq!(
        rest.metadata.resource_version,
        page.metadata.resource_version
    );

    let a = api.get("a").await.unwrap();
    assert_eq!(a.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.10"));
    match api.get("nope").await {
        Err(kube::Error::Api(status)) => assert!(status.is_not_found()),
        other => panic!("expected 404, got {other:?}"),
    }
    let ns: Api<Namespace> = Api::all(client);
    kube.apply(&NAMESPACES, json!({"metadata": {"name": "shop"}}));
    assert_eq!(
        ns.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
}

#[tokio::test]
async fn the_watcher_lists_pages_then_watches_and_resumes_after_a_cut() {
    let kube = FakeKube::start();
    for name in ["a", "b", "c"] {
        kube.apply(&SERVICES, svc("shop", name));
    }
    let api: Api<Service> = Api::all(client(&kube));
    let mut events: Events<Service> = watcher(api, watcher::Config::default().page_size(2)).boxed();
    assert_eq!(
        nexts(&mut events, 5).await,
        [
            "Init",
            "InitApply(a)",
            "InitApply(b)",
            "InitApply(c)",
            "InitDone"
        ]
    );
    assert_eq!(kube.lists(&SERVICES), 2, "two pages");

    kube.apply(&SERVICES, svc("shop", "d"));
    assert_eq!(next(&mut events).await, "Apply(d)");
    kube.delete(&SERVICES, "shop", "a");
    assert_eq!(next(&mut events).await, "Delete(a)");

    // A cut watch resumes from its resourceVersion: no relist, nothing lost.
    kube.break_watches();
    kube.apply(&SERVICES, svc("shop", "e"));
    assert_eq!(next(&mut events).await, "Apply(e)");
    assert_eq!(kube.lists(&SERVICES), 2, "no relist after a cut");
    assert!(kube.watches(&SERVICES) >= 2, "watched again");
}

#[tokio::test]
async fn the_watcher_relists_when_its_resource_version_is_compacted() {
    // No bookmarks within the test, so the watcher's resourceVersion stays at
    // its last event's.
    let kube = FakeKube::start_with(Options {
        bookmark_interval: Duration::from_secs(3600),
        ..Options::default()
    });
    kube.apply(&SERVICES, svc("shop", "a"));
    let api: Api<Service> = Api::all(client(&kube));
    let mut events: Events<Service> = watcher(api, watcher::Config::default()).boxed();
    assert_eq!(
        nexts(&mut events, 3).await,
        ["Init", "InitApply(a)", "InitDone"]
    );
    kube.apply(&SERVICES, svc("shop", "b"));
    assert_eq!(next(&mut events).await, "Apply(b)");

    kube.apply(
        &PODS,
        json!({"metadata": {"name": "p", "namespace": "shop"}}),
    );
    kube.compact();
    kube.break_watches();
    // 410 Expired on the new watch: the watcher starts over with a list.
    assert_eq!(
        nexts(&mut events, 4).await,
        ["Init", "InitApply(a)", "InitApply(b)", "InitDone"]
    );
    assert_eq!(kube.lists(&SERVICES), 2);
}

#[tokio::test]
async fn the_watcher_with_streaming_lists() {
    let kube = FakeKube::start();
    kube.apply(&PODS, json!({"metadata": {"name": "p", "namespace": "a"}}));
    let api: Api<Pod> = Api::all(client(&kube));
    let mut events: Events<Pod> =
        watcher(api, watcher::Config::default().streaming_lists()).boxed();
    assert_eq!(
        nexts(&mut events, 3).await,
        ["Init", "InitApply(p)", "InitDone"]
    );
    kube.apply(&PODS, json!({"metadata": {"name": "q", "namespace": "a"}}));
    assert_eq!(next(&mut events).await, "Apply(q)");
    assert_eq!((kube.lists(&PODS), kube.watches(&PODS)), (0, 1));
}

#[tokio::test]
async fn a_reflector_follows_endpointslices_of_one_namespace() {
    let kube = FakeKube::start();
    let slice = |ns: &str, name: &str| {
        json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}}],
            "ports": [{"port": 8080, "protocol": "TCP"}],
        })
    };
    kube.apply(&ENDPOINT_SLICES, slice("a", "web-1"));
    kube.apply(&ENDPOINT_SLICES, slice("b", "web-1"));
    let api: Api<EndpointSlice> = Api::namespaced(client(&kube), "a");
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels("kubernetes.io/service-name=web");
    let run = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(run.for_each(|_| async {}));
    tokio::time::timeout(WAIT, store.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.state().len(), 1);

    kube.apply(&ENDPOINT_SLICES, slice("a", "web-2"));
    kube.delete(&ENDPOINT_SLICES, "a", "web-1");
    let deadline = tokio::time::Instant::now() + WAIT;
    while store
        .state()
        .iter()
        .map(|s| s.name_any())
        .collect::<Vec<_>>()
        != ["web-2"]
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "store: {:?}",
            store.state()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
}

#[tokio::test]
async fn the_watcher_rides_out_an_outage() {
    let kube = FakeKube::start();
    let mut config = kube::Config::new(kube.url().parse().unwrap());
    config.default_retry = false; // see errors now, not after the client's own retries
    let api: Api<Service> = Api::all(Client::try_from(config).unwrap());
    let mut events: Events<Service> = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    assert_eq!(nexts(&mut events, 2).await, ["Init", "InitDone"]);

    kube.set_unavailable(true);
    kube.apply(&SERVICES, svc("shop", "during"));
    let seen = kube.watches(&SERVICES);
    // The watcher keeps trying (and failing) while the server is away.
    let poll = async {
        loop {
            if let Some(Ok(e)) = events.next().await {
                panic!("no event while away, got {e}");
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), poll).await;
    assert!(kube.watches(&SERVICES) > seen, "retried while away");
    kube.set_unavailable(false);
    assert_eq!(next(&mut events).await, "Apply(during)");
}

#[tokio::test]
async fn a_metadata_watcher() {
    let kube = FakeKube::start();
    kube.apply(
        &PODS,
        json!({"metadata": {"name": "p", "namespace": "a"}, "spec": {"nodeName": "n"}}),
    );
    let api: Api<PartialObjectMeta<Pod>> = Api::all(client(&kube));
    let mut events: Events<PartialObjectMeta<Pod>> =
        watcher(api, watcher::Config::default()).boxed();
    assert_eq!(
        nexts(&mut events, 3).await,
        ["Init", "InitApply(p)", "InitDone"]
    );
    kube.delete(&PODS, "a", "p");
    assert_eq!(next(&mut events).await, "Delete(p)");
}

#[tokio::test]
async fn server_side_apply_creates_then_merges_and_needs_a_field_manager() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Patch, PatchParams};
    let kube = FakeKube::start();
    let api: Api<ConfigMap> = Api::namespaced(client(&kube), "shop");
    let applied = |data: serde_json::Value| {
        Patch::Apply(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "shop"}, "data": data,
        }))
    };
    let pp = PatchParams::apply("weft-control");
    let made = api
        .patch("cm", &pp, &applied(json!({"a": "1"})))
        .await
        .unwrap();
    assert_eq!(made.data.unwrap()["a"], "1");
    let changed = api
        .patch("cm", &pp, &applied(json!({"a": "2"})))
        .await
        .unwrap();
    assert_eq!(changed.data.unwrap()["a"], "2");
    assert_ne!(
        made.metadata.resource_version,
        changed.metadata.resource_version
    );
    assert_eq!(
        kube.get(&CONFIG_MAPS, "shop", "cm").unwrap()["data"]["a"],
        "2"
    );
    let err = api
        .patch("cm", &PatchParams::default(), &applied(json!({})))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("fieldManager is required"),
        "{err}"
    );
}
