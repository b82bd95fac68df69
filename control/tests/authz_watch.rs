//! `weft.policy.v1.Policy/WatchInbound` end to end: a real weft-control
//! (its `run`, on loopback port 0) over the files source and over the
//! kube source against the fake API server, and a tonic client watching
//! a pod port while TrafficTargets, route groups, Namespaces and Pods
//! change.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::{Code, Streaming};
use weft_control::config::{Config, Source};
use weft_control::model::authz::DefaultPolicy;
use weft_control::run::{run, Bound};
use weft_proto::policy::v1 as pb;
use weft_proto::policy::v1::policy_client::PolicyClient;
use weft_tests::fakekube::{FakeKube, Resource, HTTP_ROUTE_GROUPS, PODS};

struct Plane {
    grpc: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Plane {
    async fn start(config: Config) -> Self {
        let bound = Bound::bind(&config).await.unwrap();
        let (grpc, admin) = bound.addrs().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, bound, async {
            let _ = stopped.await;
        }));
        weft_tests::until_ready(admin, Duration::from_secs(15)).await;
        Self {
            grpc,
            stop: Some(stop),
            task,
        }
    }

    async fn watch(
        &self,
        ns: &str,
        pod: &str,
        port: u32,
    ) -> Result<Streaming<pb::InboundPolicy>, tonic::Status> {
        let mut client = PolicyClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap();
        let req = pb::InboundRequest {
            pod_namespace: ns.into(),
            pod_name: pod.into(),
            port,
        };
        client.watch_inbound(req).await.map(|r| r.into_inner())
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// The stream's next policy, within a deadline.
async fn next(stream: &mut Streaming<pb::InboundPolicy>) -> pb::InboundPolicy {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a policy within 10 s")
        .expect("the stream is up")
        .expect("the stream is open")
}

/// `(default, source, [(authorization, [route])])`.
fn summary(p: &pb::InboundPolicy) -> (pb::DefaultPolicy, String, Vec<(String, Vec<String>)>) {
    (
        p.default_policy(),
        p.default_policy_source.clone(),
        p.authorizations
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    a.http_routes.iter().map(|r| r.name.clone()).collect(),
                )
            })
            .collect(),
    )
}

fn s(v: &str) -> String {
    v.to_owned()
}

fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const PODS_YAML: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: shop}
spec: {serviceAccountName: api, containers: [{name: app}]}
";

fn group(matches: &[&str]) -> String {
    let m: Vec<String> = matches
        .iter()
        .map(|n| format!("  - {{name: {n}, pathRegex: /{n}}}\n"))
        .collect();
    format!(
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {{name: api-routes, namespace: shop}}\nspec:\n  matches:\n{}",
        m.concat()
    )
}

fn target(dest_ns: &str) -> String {
    format!(
        "apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {{name: web-to-api, namespace: shop}}
spec:
  destination: {{kind: ServiceAccount, name: api, namespace: {dest_ns}}}
  rules: [{{kind: HTTPRouteGroup, name: api-routes}}]
  sources: [{{kind: ServiceAccount, name: web, namespace: shop}}]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_port_hears_every_change_and_bad_input_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("weft-authz-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    write(&dir, "pods.yaml", PODS_YAML);
    write(&dir, "routes.yaml", &group(&["public"]));
    let plane = Plane::start(Config {
        poll_interval: Duration::from_millis(50),
        ..Config::loopback(Source::Files(dir.clone()))
    })
    .await;

    for (ns, pod, port) in [
        ("", "api-1", 80),
        ("shop", "", 80),
        ("shop", "api-1", 0),
        ("shop", "api-1", 70_000),
    ] {
        let err = plane.watch(ns, pod, port).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{ns}/{pod}:{port}");
    }

    let mut api = plane.watch("shop", "api-1", 8080).await.unwrap();
    assert_eq!(
        summary(&next(&mut api).await),
        (pb::DefaultPolicy::AllowAll, s("cluster"), vec![])
    );

    // A TrafficTarget names api: deny by default, web allowed on /public.
    write(&dir, "target.yaml", &target("shop"));
    let tt = s("traffictarget/shop/web-to-api");
    assert_eq!(
        summary(&next(&mut api).await),
        (
            pb::DefaultPolicy::Deny,
            s("traffictarget"),
            vec![(tt.clone(), vec![s("api-routes/public")])]
        )
    );

    // A bad version (destination in another namespace) is refused; the
    // next message is the next good change, the authorization kept.
    write(&dir, "target.yaml", &target("other"));
    write(&dir, "routes.yaml", &group(&["public", "status"]));
    assert_eq!(
        summary(&next(&mut api).await),
        (
            pb::DefaultPolicy::Deny,
            s("traffictarget"),
            vec![(
                tt.clone(),
                vec![s("api-routes/public"), s("api-routes/status")]
            )]
        )
    );

    // The group deleted: nothing allowed, still deny by default.
    std::fs::remove_file(dir.join("routes.yaml")).unwrap();
    assert_eq!(
        summary(&next(&mut api).await),
        (pb::DefaultPolicy::Deny, s("traffictarget"), vec![])
    );

    // The TrafficTarget deleted: the default again.
    std::fs::remove_file(dir.join("target.yaml")).unwrap();
    assert_eq!(
        summary(&next(&mut api).await),
        (pb::DefaultPolicy::AllowAll, s("cluster"), vec![])
    );

    // A pod the model does not know gets its namespace's default, which
    // follows the Namespace's annotation.
    let mut ghost = plane.watch("shop", "ghost", 80).await.unwrap();
    assert_eq!(next(&mut ghost).await.default_policy_source, "cluster");
    write(
        &dir,
        "pods.yaml",
        &PODS_YAML.replace(
            "metadata: {name: shop}",
            "metadata: {name: shop, annotations: {weft.dev/default-inbound-policy: all-authenticated}}",
        ),
    );
    assert_eq!(
        summary(&next(&mut ghost).await),
        (
            pb::DefaultPolicy::AllowAuthenticated,
            s("namespace"),
            vec![]
        )
    );
    assert_eq!(
        summary(&next(&mut api).await),
        (
            pb::DefaultPolicy::AllowAuthenticated,
            s("namespace"),
            vec![]
        )
    );
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_targets_come_through_the_kube_source() {
    let kube = FakeKube::start();
    let targets = Resource::new(
        "access.smi-spec.io",
        "v1alpha3",
        "TrafficTarget",
        "traffictargets",
        true,
    );
    kube.apply(
        &PODS,
        json!({
            "metadata": {"name": "api-1", "namespace": "shop"},
            "spec": {"serviceAccountName": "api", "containers": [{"name": "app"}]}
        }),
    );
    let plane = Plane::start(Config {
        kube_api_server: Some(kube.url()),
        default_inbound_policy: DefaultPolicy::Deny,
        ..Config::loopback(Source::Kube)
    })
    .await;
    let mut api = plane.watch("shop", "api-1", 8080).await.unwrap();
    assert_eq!(
        summary(&next(&mut api).await),
        (pb::DefaultPolicy::Deny, s("cluster"), vec![])
    );
    kube.apply(
        &HTTP_ROUTE_GROUPS,
        json!({
            "metadata": {"name": "api-routes", "namespace": "shop"},
            "spec": {"matches": [{"name": "public", "pathRegex": "/public"}]}
        }),
    );
    kube.apply(
        &targets,
        json!({
            "metadata": {"name": "web-to-api", "namespace": "shop"},
            "spec": {
                "destination": {"kind": "ServiceAccount", "name": "api", "namespace": "shop"},
                "rules": [{"kind": "HTTPRouteGroup", "name": "api-routes", "matches": ["public"]}],
                "sources": [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}]
            }
        }),
    );
    let want = (
        pb::DefaultPolicy::Deny,
        s("traffictarget"),
        vec![(
            s("traffictarget/shop/web-to-api"),
            vec![s("api-routes/public")],
        )],
    );
    // The group and the target may arrive in either order: the target
    // without its group allows nothing (and denies the rest).
    let mut got = summary(&next(&mut api).await);
    if got != want {
        assert_eq!(got, (pb::DefaultPolicy::Deny, s("traffictarget"), vec![]));
        got = summary(&next(&mut api).await);
    }
    assert_eq!(got, want);
    kube.delete(&targets, "shop", "web-to-api");
    assert_eq!(
        summary(&next(&mut api).await),
        (pb::DefaultPolicy::Deny, s("cluster"), vec![])
    );
    plane.stop().await;
}
