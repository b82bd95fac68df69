//! What the Helm chart renders is what weft-control runs: the objects of
//! `charts/weft` for default values (rendered by `scripts/chart-test` with
//! the Helm SDK into `target/chart-render/default.json`, with a real issuer
//! from `weft identity init`) applied to the fake API server, and a real
//! weft-control (`run`) started with exactly the Deployment's args, only
//! its API server and listeners moved to loopback.
//!
//! Proved: those args parse and validate; weft-control loads its issuer
//! from the chart's Secret (the name and namespace `--identity-secret`
//! says, the keys it reads) and becomes ready; it fills in the caBundle of
//! the chart's MutatingWebhookConfiguration with the trust anchors the
//! chart publishes in its ConfigMap.
//!
//! Without the rendered file (a `cargo test` without `scripts/chart-test`
//! before it) the test says so and passes, unless WEFT_CHART_RENDER_DIR is
//! set (`scripts/test` sets it): then a missing file fails it.

use base64::Engine;
use clap::Parser;
use std::time::Duration;
use tokio::sync::oneshot;
use weft_control::config::Config;
use weft_control::run::{run, Bound};
use weft_tests::chart::{one, rendered};
use weft_tests::fakekube::{FakeKube, MUTATING_WEBHOOKS, NAMESPACES, SECRETS};

const WAIT: Duration = Duration::from_secs(15);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

#[tokio::test]
async fn weft_control_runs_with_what_the_chart_renders() {
    let Some(objects) = rendered("default") else {
        return;
    };
    let deploy = one(&objects, "Deployment");
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("an arg").to_owned())
        .collect();
    let namespace = deploy["metadata"]["namespace"].as_str().unwrap();

    let kube = FakeKube::start();
    kube.apply(
        &NAMESPACES,
        serde_json::json!({"metadata": {"name": namespace}}),
    );
    kube.apply(&SECRETS, one(&objects, "Secret").clone());
    let webhook = one(&objects, "MutatingWebhookConfiguration");
    kube.apply(&MUTATING_WEBHOOKS, webhook.clone());

    let mut argv = vec!["weft-control".to_owned()];
    argv.extend(args.iter().cloned());
    argv.extend([
        format!("--kube-api-server={}", kube.url()),
        "--grpc-addr=127.0.0.1:0".into(),
        "--admin-addr=127.0.0.1:0".into(),
        "--webhook-addr=127.0.0.1:0".into(),
    ]);
    let config = Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("the chart's args {args:?}: {e}"))
        .config;
    config.validate().expect("the chart's args work together");
    assert!(config.webhook);
    let bound = Bound::bind(&config).await.unwrap();
    let (_, admin) = bound.addrs().unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        run(config, bound, async {
            let _ = stopped.await;
        })
        .await
        .expect("weft-control runs")
    });

    // Ready: every source listed, the issuer loaded from the chart's
    // Secret, the webhook's serving certificate issued.
    weft_tests::until_ready(admin, WAIT).await;

    // The caBundle is the trust anchors of the chart's ConfigMap.
    let anchors = one(&objects, "ConfigMap")["data"]["ca.crt"]
        .as_str()
        .unwrap()
        .trim()
        .to_owned();
    let name = webhook["metadata"]["name"].as_str().unwrap();
    let bundle = kube
        .until_some(
            || {
                let c = kube.get(&MUTATING_WEBHOOKS, "", name)?;
                c["webhooks"][0]["clientConfig"]["caBundle"]
                    .as_str()
                    .map(str::to_owned)
            },
            WAIT,
        )
        .await
        .expect("weft-control fills in the caBundle of the chart's webhook configuration");
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(bundle)
        .unwrap();
    assert_eq!(String::from_utf8(bundle).unwrap().trim(), anchors);
}
