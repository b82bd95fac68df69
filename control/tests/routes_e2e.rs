//! Routes end to end on the files source: a real weft-control (its `run`,
//! on loopback port 0) over a temporary directory, and tonic clients
//! watching while a TrafficSplit and HTTPRoutes are written, edited and
//! broken. What the watchers get is `Profile.routes`, resolved for their
//! namespace.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::Streaming;
use weft_control::config::{Config, Source};
use weft_control::run::{run, Bound};
use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::discovery_client::DiscoveryClient;
use weft_proto::discovery::v1::update::Kind as U;

struct Plane {
    dir: PathBuf,
    grpc: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(name: &str) -> Plane {
    let dir =
        std::env::temp_dir().join(format!("weft-control-routes-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = Config {
        poll_interval: Duration::from_millis(50),
        ..Config::loopback(Source::Files(dir.clone()))
    };
    let bound = Bound::bind(&config).await.unwrap();
    let (grpc, admin) = bound.addrs().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(config, bound, async {
        let _ = stopped.await;
    }));
    weft_tests::until_ready(admin, Duration::from_secs(10)).await;
    Plane {
        dir,
        grpc,
        admin,
        stop: Some(stop),
        task,
    }
}

async fn shutdown(mut plane: Plane) {
    if let Some(stop) = plane.stop.take() {
        let _ = stop.send(());
    }
    let result = tokio::time::timeout(Duration::from_secs(5), &mut plane.task).await;
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "weft-control did not stop cleanly: {result:?}"
    );
}

fn write(dir: &Path, name: &str, text: &str) {
    // Write then rename, as an editor or a ConfigMap update does.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// A watch of `authority` by a proxy in namespace `client_ns`.
async fn watch(plane: &Plane, authority: &str, client_ns: &str) -> Streaming<pb::Update> {
    let mut client = DiscoveryClient::connect(format!("http://{}", plane.grpc))
        .await
        .unwrap();
    client
        .watch(pb::WatchRequest {
            destination: Some(pb::watch_request::Destination::Authority(authority.into())),
            context: Some(pb::ProxyContext {
                pod_namespace: client_ns.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn next(stream: &mut Streaming<pb::Update>) -> U {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("an update within 5 s")
        .unwrap()
        .expect("the stream is open")
        .kind
        .unwrap()
}

/// Nothing arrives on `stream` for a while (the changes before were read
/// by weft-control: the caller waited on their metric).
async fn quiet(stream: &mut Streaming<pb::Update>, what: &str) {
    if let Ok(got) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        panic!("{what}: nothing expected, got {got:?}");
    }
}

/// The routes of the watch's first update, a Snapshot.
async fn first_routes(stream: &mut Streaming<pb::Update>) -> pb::Routes {
    match next(stream).await {
        U::Snapshot(s) => s.profile.unwrap().routes.expect("routes in the snapshot"),
        other => panic!("a snapshot first, not {other:?}"),
    }
}

/// Each rule's backends as `name=weight`.
fn rules(routes: &pb::Routes) -> Vec<Vec<String>> {
    let http = routes.http.as_ref().expect("HTTP routes");
    http.rules
        .iter()
        .map(|r| {
            r.backends
                .iter()
                .map(
                    |b| match b.backend.as_ref().and_then(|b| b.target.as_ref()) {
                        Some(pb::backend::Target::Service(s)) => format!("{}={}", s.name, b.weight),
                        other => format!("{other:?}={}", b.weight),
                    },
                )
                .collect()
        })
        .collect()
}

fn services() -> String {
    [
        "web", "web-v1", "web-v2", "api", "api-v1", "api-v2", "api-mine",
    ]
    .iter()
    .enumerate()
    .map(|(i, name)| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n\
                 spec:\n  clusterIP: 10.96.0.{}\n  ports: [{{name: http, port: 80}}]\n",
            20 + i
        )
    })
    .collect::<Vec<_>>()
    .join("---\n")
}

fn split(v1: &str) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\n\
         metadata: {{name: canary, namespace: shop}}\n\
         spec:\n  service: web\n  backends: [{{service: web-v1, weight: {v1}}}, {{service: web-v2, weight: 100}}]\n"
    )
}

fn http_routes(path_regex: &str, mine: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: api, namespace: shop}}\n\
         spec:\n  parentRefs: [{{group: \"\", kind: Service, name: api, port: 80}}]\n  rules:\n\
         \x20 - matches: [{{path: {{type: RegularExpression, value: '{path_regex}'}}}}]\n\
         \x20   backendRefs: [{{name: api-v2, port: 80}}]\n\
         \x20 - backendRefs: [{{name: api-v1, port: 80}}]\n\
         ---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: mine, namespace: checkout}}\n\
         spec:\n  parentRefs: [{{group: \"\", kind: Service, name: api, namespace: shop, port: 80}}]\n  rules:\n\
         \x20 - backendRefs: [{{name: {mine}, namespace: shop, port: 80}}]\n"
    )
}

#[tokio::test]
async fn routes_reach_watchers_and_bad_edits_keep_the_last_good_version() {
    let plane = start("routes").await;
    let splits = "weft_control_objects{kind=\"TrafficSplit\"}";
    let http = "weft_control_objects{kind=\"HTTPRoute\"}";
    write(&plane.dir, "services.yaml", &services());
    write(&plane.dir, "split.yaml", &split("900"));
    write(
        &plane.dir,
        "routes.yaml",
        &http_routes("/v2/.*", "api-mine"),
    );
    weft_tests::until_admin_metric(plane.admin, splits, 1.0, Duration::from_secs(10)).await;
    weft_tests::until_admin_metric(plane.admin, http, 2.0, Duration::from_secs(10)).await;

    // The split and the routes arrive with the destination.
    let mut web = watch(&plane, "web:80", "shop").await;
    let routes = first_routes(&mut web).await;
    assert_eq!(rules(&routes), [["web-v1=900", "web-v2=100"]]);
    let http_routes_of = |r: &pb::Routes| r.http.clone().unwrap();
    assert_eq!(http_routes_of(&routes).unmatched(), pb::Unmatched::Service);
    let tcp = routes
        .tcp
        .as_ref()
        .expect("a split without matches splits TCP too");
    assert_eq!(tcp.backends.len(), 2);
    let mut api = watch(&plane, "api:80", "shop").await;
    let routes = first_routes(&mut api).await;
    assert_eq!(rules(&routes), [["api-v2=1"], ["api-v1=1"]]);
    let h = http_routes_of(&routes);
    assert_eq!(h.unmatched(), pb::Unmatched::NotFound);
    assert_eq!(
        h.matches[0].path.as_ref().unwrap().kind,
        Some(pb::path_match::Kind::Regex("^(?:/v2/.*)$".into()))
    );
    let backend = h.rules[0].backends[0].backend.clone().unwrap().target;
    let Some(pb::backend::Target::Service(port)) = backend else {
        panic!("a Service backend: {backend:?}")
    };
    assert_eq!(port.authority, "api-v2.shop.svc.cluster.local:80");
    // A proxy in `checkout` sees that namespace's consumer route instead.
    let mut mine = watch(&plane, "api.shop:80", "checkout").await;
    let routes = first_routes(&mut mine).await;
    assert_eq!(routes.consumer_namespace, "checkout");
    assert_eq!(rules(&routes), [["api-mine=1"]]);

    // A weight is edited: the split's watchers get one Profile update,
    // the others nothing.
    write(&plane.dir, "split.yaml", &split("500"));
    match next(&mut web).await {
        U::Profile(p) => assert_eq!(
            rules(p.routes.as_ref().unwrap()),
            [["web-v1=500", "web-v2=100"]]
        ),
        other => panic!("a Profile update, not {other:?}"),
    }
    quiet(&mut web, "one update for one edit").await;
    quiet(&mut api, "api's routes did not change").await;
    quiet(&mut mine, "api's routes did not change").await;

    // The consumer route is edited: only the proxies of its namespace hear.
    write(&plane.dir, "routes.yaml", &http_routes("/v2/.*", "api-v2"));
    match next(&mut mine).await {
        U::Profile(p) => assert_eq!(rules(p.routes.as_ref().unwrap()), [["api-v2=1"]]),
        other => panic!("a Profile update, not {other:?}"),
    }
    quiet(&mut mine, "one update for one edit").await;
    quiet(&mut api, "the producer routes did not change").await;

    // Broken objects are refused: nothing reaches the watchers, and the
    // last good versions stay in force for new watches too.
    let refused = |kind: &str| {
        format!("weft_control_source_errors_total{{source=\"files\",kind=\"{kind}\"}}")
    };
    write(&plane.dir, "split.yaml", &split("-1"));
    weft_tests::until_admin_metric(
        plane.admin,
        &refused("TrafficSplit"),
        1.0,
        Duration::from_secs(10),
    )
    .await;
    write(
        &plane.dir,
        "routes.yaml",
        &http_routes("/v2/(unclosed", "api-v1"),
    );
    weft_tests::until_admin_metric(
        plane.admin,
        &refused("HTTPRoute"),
        1.0,
        Duration::from_secs(10),
    )
    .await;
    quiet(&mut web, "a refused split changes nothing").await;
    quiet(&mut api, "a refused route changes nothing").await;
    let mut again = watch(&plane, "web:80", "shop").await;
    assert_eq!(
        rules(&first_routes(&mut again).await),
        [["web-v1=500", "web-v2=100"]]
    );
    let mut again = watch(&plane, "api.shop:80", "frontend").await;
    let routes = first_routes(&mut again).await;
    assert_eq!(routes.consumer_namespace, "", "producer routes elsewhere");
    assert_eq!(rules(&routes), [["api-v2=1"], ["api-v1=1"]]);

    // The split's file goes: its watchers are told there are no routes.
    std::fs::remove_file(plane.dir.join("split.yaml")).unwrap();
    match next(&mut web).await {
        U::Profile(p) => assert!(p.routes.is_none(), "{p:?}"),
        other => panic!("a Profile update, not {other:?}"),
    }
    drop((web, api, mine, again));
    shutdown(plane).await;
}
