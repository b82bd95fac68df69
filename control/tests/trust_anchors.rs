//! The trust anchors ConfigMap in a cluster, end to end: a real
//! weft-control (`run`, the kube source, its issuer from a watched Secret,
//! --webhook) against the fake API server. Injected proxies mount
//! `weft-trust-anchors` from their own namespace; weft-control keeps it:
//!
//! - in every namespace annotated `weft.dev/inject: enabled`, present at
//!   start or annotated later, and in no other;
//! - in the namespace of a pod injected one by one (pod annotation), once
//!   the webhook has injected it (the pod is created through kube-rs and the
//!   fake API server's admission hop);
//! - with the new anchors everywhere once the issuer Secret's `ca.crt`
//!   changes; and not at all with `--publish-trust-anchors=false`.

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::Api;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use weft_control::config::{Config, SecretRef, Source};
use weft_control::identity::ca::{self, Generated};
use weft_control::run::{run, Bound};
use weft_tests::fakekube::{
    issuer_secret, webhook_configuration, FakeKube, CONFIG_MAPS, MUTATING_WEBHOOKS, NAMESPACES,
    SECRETS,
};

const WAIT: Duration = Duration::from_secs(10);
const DAY: Duration = Duration::from_secs(24 * 3600);
const NAME: &str = "weft-trust-anchors";

struct Plane {
    admin: SocketAddr,
    _stop: oneshot::Sender<()>,
}

fn authority() -> Generated {
    ca::generate("cluster.local", 365 * DAY, 30 * DAY).unwrap()
}

fn issuer_of(g: &Generated) -> Value {
    issuer_secret(
        "weft-system",
        "weft-issuer",
        &g.issuer_pem,
        &g.issuer_key_pem,
        &g.anchor_pem,
    )
}

fn namespace(name: &str, inject: Option<&str>) -> Value {
    let annotations = inject.map_or(json!({}), |v| json!({"weft.dev/inject": v}));
    json!({"metadata": {"name": name, "annotations": annotations}})
}

/// weft-control on `kube`, its issuer from `weft-system/weft-issuer`, its
/// webhook registered in the fake API server as the chart does.
async fn start(kube: &FakeKube, publish: bool) -> Plane {
    let config = Config {
        kube_api_server: Some(kube.url()),
        identity_secret: Some(SecretRef::parse("weft-system/weft-issuer").unwrap()),
        webhook: true,
        webhook_dns_names: vec!["localhost".into()],
        webhook_configuration: "weft-injector".into(),
        publish_trust_anchors: publish,
        ..Config::loopback(Source::Kube)
    };
    let bound = Bound::bind(&config).await.unwrap();
    let (_, admin) = bound.addrs().unwrap();
    let webhook = bound.webhook_addr().unwrap().unwrap();
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
    Plane { admin, _stop: stop }
}

/// The `ca.crt` of the anchors ConfigMap in `ns`, once it equals `want`.
async fn until_anchors(kube: &FakeKube, ns: &str, want: &str) -> Result<(), Option<Value>> {
    let found = kube
        .until_some(
            || {
                let cm = kube.get(&CONFIG_MAPS, ns, NAME)?;
                (cm["data"]["ca.crt"] == want).then_some(cm)
            },
            WAIT,
        )
        .await;
    match found {
        Some(cm) => {
            assert_eq!(
                cm["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                "weft-control"
            );
            Ok(())
        }
        None => Err(kube.get(&CONFIG_MAPS, ns, NAME)),
    }
}

#[tokio::test]
async fn anchors_follow_opted_in_namespaces_injected_pods_and_rotation() {
    let kube = FakeKube::start();
    let first = authority();
    kube.apply(&SECRETS, issuer_of(&first));
    kube.apply(&NAMESPACES, namespace("shop", Some("enabled")));
    kube.apply(&NAMESPACES, namespace("plain", None));
    kube.apply(&NAMESPACES, namespace("off", Some("disabled")));
    let plane = start(&kube, true).await;
    weft_tests::until_ready(plane.admin, WAIT).await;

    until_anchors(&kube, "shop", &first.anchor_pem)
        .await
        .expect("published in the opted-in namespace");
    kube.apply(&NAMESPACES, namespace("late", Some("enabled")));
    until_anchors(&kube, "late", &first.anchor_pem)
        .await
        .expect("published in a namespace annotated later");

    // A pod that opts in alone, in a namespace that does not.
    let client = kube::Client::try_from(kube::Config::new(kube.url().parse().unwrap())).unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "annotations": {"weft.dev/inject": "enabled"}},
        "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "web:1"}]},
    }))
    .unwrap();
    let created = Api::<Pod>::namespaced(client, "plain")
        .create(&PostParams::default(), &pod)
        .await
        .expect("the pod is admitted");
    let spec = created.spec.unwrap();
    assert!(
        spec.init_containers
            .iter()
            .flatten()
            .any(|c| c.name == "weft-proxy")
            || spec.containers.iter().any(|c| c.name == "weft-proxy"),
        "the pod was injected"
    );
    until_anchors(&kube, "plain", &first.anchor_pem)
        .await
        .expect("published where a pod was injected");
    assert!(kube.get(&CONFIG_MAPS, "off", NAME).is_none());

    // New anchors: every ConfigMap follows.
    let second = authority();
    assert_ne!(first.anchor_pem, second.anchor_pem);
    kube.apply(&SECRETS, issuer_of(&second));
    for ns in ["shop", "late", "plain"] {
        until_anchors(&kube, ns, &second.anchor_pem)
            .await
            .unwrap_or_else(|cm| panic!("{ns} has the new anchors; has {cm:?}"));
    }
    let metrics = weft_tests::http_get(plane.admin, "/metrics").await;
    assert!(
        metrics.contains("weft_control_trust_anchors_published_total{result=\"applied\"}"),
        "{metrics}"
    );
    assert!(kube.get(&CONFIG_MAPS, "off", NAME).is_none());
}

#[tokio::test]
async fn nothing_is_published_when_turned_off() {
    let kube = FakeKube::start();
    kube.apply(&SECRETS, issuer_of(&authority()));
    kube.apply(&NAMESPACES, namespace("shop", Some("enabled")));
    let plane = start(&kube, false).await;
    weft_tests::until_ready(plane.admin, WAIT).await;
    // The publisher registers its counter when it starts: none here.
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
        .await;
    assert!(bundle.is_some(), "weft-control is running");
    let metrics = weft_tests::http_get(plane.admin, "/metrics").await;
    assert!(!metrics.contains("trust_anchors_published"), "{metrics}");
    assert!(kube.objects(&CONFIG_MAPS).is_empty());
}
