//! The injector in a cluster, end to end: a real weft-control (`run`, the
//! kube source, --webhook) against the fake API server, whose
//! mutating-admission hop calls it over HTTPS on every pod create. Pods
//! are created through kube-rs, as a controller creates them.
//!
//! Proved: weft-control writes the caBundle of its own
//! MutatingWebhookConfiguration (nobody else does here), and the fake API
//! server trusts only that bundle; a pod in an enabled namespace is stored
//! injected; a bad annotation value fails the create with the annotation
//! and the value; the namespaceSelector, failurePolicy and timeout of a
//! webhook are honoured.

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::Api;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::oneshot;
use weft_control::config::{Config, Source};
use weft_control::identity::ca;
use weft_control::run::{run, Bound};
use weft_tests::fakekube::{
    webhook_configuration, FakeKube, EVENTS, MUTATING_WEBHOOKS, NAMESPACES,
};

const WAIT: Duration = Duration::from_secs(10);

struct Plane {
    dir: std::path::PathBuf,
    _stop: oneshot::Sender<()>,
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(kube: &FakeKube) -> Plane {
    let dir = std::env::temp_dir().join(format!("weft-inject-kube-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let day = Duration::from_secs(24 * 3600);
    ca::generate("cluster.local", 365 * day, 30 * day)
        .unwrap()
        .write(&dir)
        .unwrap();
    let config = Config {
        kube_api_server: Some(kube.url()),
        identity_dir: Some(dir.clone()),
        webhook: true,
        webhook_dns_names: vec!["localhost".into()],
        webhook_configuration: "weft-injector".into(),
        ..Config::loopback(Source::Kube)
    };
    let bound = Bound::bind(&config).await.unwrap();
    let webhook = bound.webhook_addr().unwrap().unwrap();
    // Installed before weft-control starts, as the chart does.
    let url = format!("https://localhost:{}/inject", webhook.port());
    kube.apply(
        &MUTATING_WEBHOOKS,
        webhook_configuration("weft-injector", &url, "Fail", 10),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        run(config, bound, async {
            let _ = stopped.await;
        })
        .await
        .expect("weft-control runs")
    });
    Plane { dir, _stop: stop }
}

fn pod(name: &str, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations, "labels": {"app": name}},
        "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "web:1"}]},
    }))
    .unwrap()
}

fn names(list: &Option<Vec<k8s_openapi::api::core::v1::Container>>) -> Vec<String> {
    list.iter().flatten().map(|c| c.name.clone()).collect()
}

#[tokio::test]
async fn pods_created_through_the_api_server_are_injected() {
    let kube = FakeKube::start();
    for (ns, inject) in [
        ("shop", Some("enabled")),
        ("plain", None),
        ("kube-system", Some("enabled")),
    ] {
        let annotations = inject.map_or(json!({}), |v| json!({"weft.dev/inject": v}));
        kube.apply(
            &NAMESPACES,
            json!({"metadata": {"name": ns, "annotations": annotations}}),
        );
    }
    kube.register(&EVENTS);
    let plane = start(&kube).await;

    // weft-control fills in the caBundle with its trust anchors.
    let anchors = std::fs::read_to_string(plane.dir.join("ca.crt")).unwrap();
    let bundle = kube
        .until_some(
            || {
                let c = kube.get(&MUTATING_WEBHOOKS, "", "weft-injector")?;
                c["webhooks"][0]["clientConfig"]["caBundle"]
                    .as_str()
                    .map(str::to_owned)
            },
            WAIT,
        )
        .await
        .expect("weft-control fills in the caBundle");
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(bundle)
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), anchors);

    let client = kube::Client::try_from(kube::Config::new(kube.url().parse().unwrap())).unwrap();
    let shop: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let created = shop
        .create(
            &PostParams::default(),
            &pod("web", json!({"weft.dev/opaque-ports": "5432"})),
        )
        .await
        .unwrap();
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(names(&spec.init_containers), ["weft-init", "weft-proxy"]);
    assert_eq!(names(&Some(spec.containers.clone())), ["app"]);
    let proxy = &spec.init_containers.as_ref().unwrap()[1];
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert!(proxy
        .env
        .iter()
        .flatten()
        .any(|e| e.name == "WEFT_PROXY_OPAQUE_PORTS" && e.value.as_deref() == Some("5432")));
    // What was stored is what was answered.
    let stored = kube
        .get(&weft_tests::fakekube::PODS, "shop", "web")
        .unwrap();
    assert_eq!(
        stored["metadata"]["annotations"]["weft.dev/injected"],
        "true"
    );

    // A bad value: the create fails, naming the annotation and the value.
    let err = shop
        .create(
            &PostParams::default(),
            &pod("bad", json!({"weft.dev/proxy-memory-limit": "lots"})),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 400);
    assert_eq!(
        status.message,
        "admission webhook \"weft-injector.weft.dev\" denied the request: weft: annotation weft.dev/proxy-memory-limit: 'lots' is not a quantity (like 100m, 0.5, 64Mi or 1G)"
    );
    assert!(kube
        .get(&weft_tests::fakekube::PODS, "shop", "bad")
        .is_none());
    // A Warning Event says so on the pod (it has no owner).
    let denied = |e: &serde_json::Value| {
        e["reason"] == "WeftInjectionDenied"
            && e["regarding"]["kind"] == "Pod"
            && e["regarding"]["name"] == "bad"
    };
    let event = kube
        .until(&EVENTS, denied, WAIT)
        .await
        .expect("an Event on the denied pod");
    let note = event["note"].as_str().unwrap();
    assert!(note.contains("weft.dev/proxy-memory-limit"), "{note}");

    // Not enabled: stored as sent. Excluded by the namespaceSelector: not even asked.
    let plain = Api::<Pod>::namespaced(client.clone(), "plain")
        .create(&PostParams::default(), &pod("web", json!({})))
        .await
        .unwrap();
    assert!(plain.spec.unwrap().init_containers.is_none());
    let calls_before = kube.webhook_calls().len();
    let system = Api::<Pod>::namespaced(client.clone(), "kube-system")
        .create(&PostParams::default(), &pod("dns", json!({})))
        .await
        .unwrap();
    assert!(system.spec.unwrap().init_containers.is_none());
    assert_eq!(
        kube.webhook_calls().len(),
        calls_before,
        "kube-system is not sent"
    );
    let outcomes: Vec<String> = kube
        .webhook_calls()
        .iter()
        .map(|c| c.outcome.clone())
        .collect();
    assert_eq!(outcomes, ["patched", "denied", "allowed"]);
}

#[tokio::test]
async fn failure_policy_and_timeout_are_honoured() {
    let kube = FakeKube::start();
    kube.apply(
        &NAMESPACES,
        json!({"metadata": {"name": "shop", "annotations": {"weft.dev/inject": "enabled"}}}),
    );
    // A webhook that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!(
        "https://localhost:{}/inject",
        silent.local_addr().unwrap().port()
    );
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let bundle = {
        use base64::Engine as _;
        let g = ca::generate(
            "cluster.local",
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        )
        .unwrap();
        base64::engine::general_purpose::STANDARD.encode(g.anchor_pem)
    };
    let mut ignore = webhook_configuration("a-ignore", &silent_url, "Ignore", 1);
    ignore["webhooks"][0]["clientConfig"]["caBundle"] = json!(bundle);
    kube.apply(&MUTATING_WEBHOOKS, ignore);

    let client = kube::Client::try_from(kube::Config::new(kube.url().parse().unwrap())).unwrap();
    let shop: Api<Pod> = Api::namespaced(client, "shop");
    let started = std::time::Instant::now();
    let created = shop
        .create(&PostParams::default(), &pod("one", json!({})))
        .await
        .unwrap();
    assert!(created.spec.unwrap().init_containers.is_none());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited out its timeout"
    );
    let calls = kube.webhook_calls();
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0]
            .outcome
            .starts_with("ignored: context deadline exceeded"),
        "{calls:?}"
    );

    // The same with failurePolicy Fail: no pod.
    let mut fail = webhook_configuration("a-ignore", &silent_url, "Fail", 1);
    fail["webhooks"][0]["clientConfig"]["caBundle"] = json!(bundle);
    kube.apply(&MUTATING_WEBHOOKS, fail);
    let err = shop
        .create(&PostParams::default(), &pod("two", json!({})))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 500);
    assert!(
        status
            .message
            .contains("failed calling webhook \"a-ignore.weft.dev\""),
        "{}",
        status.message
    );
    held.abort();
}
