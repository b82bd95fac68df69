//! The files source end to end: a real weft-control (its `run`, on
//! loopback port 0) over a temporary directory, and a tonic client watching
//! while files are added, edited, broken, fixed and deleted.

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
    let dir = std::env::temp_dir().join(format!("weft-control-test-{}-{name}", std::process::id()));
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
    // Watches are refused (UNAVAILABLE) until the first scan is in.
    wait_ready(admin).await;
    Plane {
        dir,
        grpc,
        admin,
        stop: Some(stop),
        task,
    }
}

/// Waits (with a deadline) until the admin port says ready.
async fn wait_ready(admin: std::net::SocketAddr) {
    weft_tests::until_ready(admin, Duration::from_secs(10)).await;
}

fn write(dir: &Path, name: &str, text: &str) {
    // Write then rename, as an editor or a ConfigMap update does.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  clusterIP: {ip}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n"
    )
}

fn slice(name: &str, service: &str, port: u16, ips: &[&str]) -> String {
    let eps: Vec<String> = ips
        .iter()
        .map(|ip| format!("{{addresses: [{ip}]}}"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}, namespace: shop, labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{}]\n",
        eps.join(", ")
    )
}

async fn watch(
    plane: &Plane,
    destination: pb::watch_request::Destination,
) -> Streaming<pb::Update> {
    let mut client = DiscoveryClient::connect(format!("http://{}", plane.grpc))
        .await
        .unwrap();
    client
        .watch(pb::WatchRequest {
            destination: Some(destination),
            context: Some(pb::ProxyContext {
                pod_namespace: "shop".into(),
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

/// The first Snapshot, after a DoesNotExist if the file written before the
/// watch was not read yet.
async fn snapshot(stream: &mut Streaming<pb::Update>) -> pb::Snapshot {
    loop {
        match next(stream).await {
            U::DoesNotExist(_) => continue,
            U::Snapshot(s) => return s,
            other => panic!("a snapshot first, not {other:?}"),
        }
    }
}

fn addrs(endpoints: &[pb::Endpoint]) -> Vec<String> {
    let mut v: Vec<String> = endpoints
        .iter()
        .map(|e| {
            std::net::SocketAddr::try_from(e.addr.as_ref().unwrap())
                .unwrap()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

fn authority(a: &str) -> pb::watch_request::Destination {
    pb::watch_request::Destination::Authority(a.into())
}

#[tokio::test]
async fn watchers_follow_file_edits_and_breakage() {
    let plane = start("edits").await;
    let dir = plane.dir.clone();
    write(
        &dir,
        "web.yaml",
        &format!(
            "{}---\n{}",
            service("web", "10.96.0.20"),
            slice("web-a", "web", 8080, &["10.244.0.2"])
        ),
    );

    let mut by_name = watch(&plane, authority("web:80")).await;
    let s = snapshot(&mut by_name).await;
    assert_eq!(
        s.profile.unwrap().fully_qualified_name,
        "web.shop.svc.cluster.local"
    );
    assert_eq!(addrs(&s.endpoints), ["10.244.0.2:8080"]);
    let mut by_ip = watch(
        &plane,
        pb::watch_request::Destination::Addr(
            "10.96.0.20:80"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        ),
    )
    .await;
    snapshot(&mut by_ip).await;

    // A second slice in another file: an Add with just the new endpoint.
    write(
        &dir,
        "web-b.yaml",
        &slice("web-b", "web", 8081, &["10.244.0.3"]),
    );
    let U::Add(a) = next(&mut by_name).await else {
        panic!("add")
    };
    assert_eq!(addrs(&a.endpoints), ["10.244.0.3:8081"]);
    assert!(matches!(next(&mut by_ip).await, U::Add(_)));

    // Break the first file: nothing changes for watchers; the objects stay.
    write(
        &dir,
        "web.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: [oops\n",
    );
    // Edit the second: endpoint replaced (Remove + Add).
    write(
        &dir,
        "web-b.yaml",
        &slice("web-b", "web", 8081, &["10.244.0.4"]),
    );
    let U::Remove(r) = next(&mut by_name).await else {
        panic!("remove")
    };
    assert_eq!(r.addrs.len(), 1);
    let U::Add(a) = next(&mut by_name).await else {
        panic!("add")
    };
    assert_eq!(addrs(&a.endpoints), ["10.244.0.4:8081"]);
    // The scan that applied web-b.yaml may not have reached web.yaml yet
    // (files are read in order, off the runtime): wait until the broken
    // file was seen and refused before fixing it.
    let refused = "weft_control_source_errors_total{source=\"files\",kind=\"file\"} 1";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !weft_tests::http_get(plane.admin, "/metrics")
        .await
        .contains(refused)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken file was never refused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Fix the first file with one endpoint less.
    write(
        &dir,
        "web.yaml",
        &format!(
            "{}---\n{}",
            service("web", "10.96.0.20"),
            slice("web-a", "web", 8080, &[])
        ),
    );
    let U::Remove(r) = next(&mut by_name).await else {
        panic!("remove")
    };
    assert_eq!(
        std::net::SocketAddr::try_from(&r.addrs[0])
            .unwrap()
            .to_string(),
        "10.244.0.2:8080"
    );

    // Delete the second file: no endpoints left, said explicitly.
    std::fs::remove_file(dir.join("web-b.yaml")).unwrap();
    assert!(matches!(next(&mut by_name).await, U::NoEndpoints(_)));

    // Delete the Service: the destination no longer exists.
    std::fs::remove_file(dir.join("web.yaml")).unwrap();
    assert!(matches!(next(&mut by_name).await, U::DoesNotExist(_)));
    // The ClusterIP watcher is told too.
    loop {
        match next(&mut by_ip).await {
            U::DoesNotExist(_) => break,
            _ => continue,
        }
    }

    // Metrics count the broken file; the plane is ready.
    let metrics = weft_tests::http_get(plane.admin, "/metrics").await;
    assert!(
        metrics.contains("weft_control_source_errors_total{source=\"files\",kind=\"file\"} 1"),
        "{metrics}"
    );
    let rss = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(rss.is_some_and(|b| b > 1e6), "no process RSS in {metrics}");
    assert!(metrics.contains("process_cpu_seconds_total "), "{metrics}");
    assert!(weft_tests::http_get(plane.admin, "/ready")
        .await
        .starts_with("ready"));
    drop((by_name, by_ip));
    shutdown(plane).await;
}

#[tokio::test]
async fn destinations_appear_after_the_watch_started() {
    let plane = start("appear").await;
    let mut by_ip = watch(
        &plane,
        pb::watch_request::Destination::Addr(
            "10.96.0.30:80"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        ),
    )
    .await;
    let mut by_name = watch(&plane, authority("api.shop.svc.cluster.local:80")).await;
    assert!(matches!(next(&mut by_ip).await, U::DoesNotExist(_)));
    assert!(matches!(next(&mut by_name).await, U::DoesNotExist(_)));
    write(
        &plane.dir,
        "api.yaml",
        &format!(
            "{}---\n{}",
            service("api", "10.96.0.30"),
            slice("api-a", "api", 9000, &["10.244.1.2", "10.244.1.3"])
        ),
    );
    for stream in [&mut by_ip, &mut by_name] {
        // The Service may be applied before its slice: a snapshot, maybe
        // empty, then the endpoints.
        let U::Snapshot(s) = next(stream).await else {
            panic!("snapshot")
        };
        let mut seen = addrs(&s.endpoints);
        while seen.len() < 2 {
            let U::Add(a) = next(stream).await else {
                panic!("add")
            };
            seen.extend(addrs(&a.endpoints));
        }
        seen.sort();
        assert_eq!(seen, ["10.244.1.2:9000", "10.244.1.3:9000"]);
    }
    // A request that is not a destination is refused with the reason.
    let mut client = DiscoveryClient::connect(format!("http://{}", plane.grpc))
        .await
        .unwrap();
    let err = client
        .watch(pb::WatchRequest {
            destination: Some(authority("api")),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("has no port"), "{}", err.message());
    drop((by_name, by_ip));
    shutdown(plane).await;
}

async fn shutdown(mut plane: Plane) {
    if let Some(stop) = plane.stop.take() {
        let _ = stop.send(());
    }
    // Shutdown is graceful: it waits for open streams, which the callers
    // dropped.
    let result = tokio::time::timeout(Duration::from_secs(5), &mut plane.task).await;
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "weft-control did not stop cleanly: {result:?}"
    );
}

#[tokio::test]
async fn shutdown_ends_open_watches() {
    let plane = start("shutdown").await;
    write(&plane.dir, "web.yaml", &service("web", "10.96.0.20"));
    let mut open = watch(&plane, authority("web:80")).await;
    snapshot(&mut open).await;
    let mut plane = plane;
    let _ = plane.stop.take().unwrap().send(());
    // The watcher is told, and weft-control exits though the stream was
    // never dropped.
    let end = tokio::time::timeout(Duration::from_secs(5), open.message())
        .await
        .expect("the watch ends within 5 s");
    let status = end.expect_err("the watch ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("shutting down"),
        "{}",
        status.message()
    );
    shutdown(plane).await;
}

/// The value of one series on /metrics (0 when absent).
async fn metric(admin: std::net::SocketAddr, series: &str) -> u64 {
    weft_tests::admin_metric(admin, series)
        .await
        .map_or(0, |v| v as u64)
}

#[tokio::test]
async fn a_misspelled_kind_is_reported_and_keeps_the_files_objects() {
    let plane = start("typo").await;
    let errors = "weft_control_source_errors_total{source=\"files\",kind=\"file\"}";
    write(&plane.dir, "web.yaml", &service("web", "10.96.0.20"));
    let mut by_name = watch(&plane, authority("web:80")).await;
    snapshot(&mut by_name).await;

    // The same file, now also holding a kind Kubernetes has not got: the
    // file is refused as if it did not parse, counted, and the Service stays.
    write(
        &plane.dir,
        "web.yaml",
        &format!(
            "{}---\napiVersion: v1\nkind: Sevrice\nmetadata: {{name: api, namespace: shop}}\n",
            service("web", "10.96.0.21")
        ),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(plane.admin, errors).await < 1 {
        assert!(tokio::time::Instant::now() < deadline, "not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // An unknown apiVersion in a new file: counted too.
    write(
        &plane.dir,
        "api.yaml",
        "apiVersion: app/v1\nkind: Deployment\nmetadata: {name: api}\n",
    );
    while metric(plane.admin, errors).await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Fixed: applied (the ClusterIP moved), so the typo was what held it.
    write(&plane.dir, "web.yaml", &service("web", "10.96.0.21"));
    let mut moved = watch(
        &plane,
        pb::watch_request::Destination::Addr(
            "10.96.0.21:80"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        ),
    )
    .await;
    snapshot(&mut moved).await;
    assert_eq!(metric(plane.admin, errors).await, 2);
    drop((by_name, moved));
    shutdown(plane).await;
}

/// One raw HTTP/2 call to weft-control's gRPC port: the `grpc-status` it
/// answers (trailers-only) and its message.
async fn raw_call(plane: &Plane, path: &str, body: &'static [u8]) -> (String, String) {
    use http_body_util::{BodyExt, Full};
    let tcp = tokio::net::TcpStream::connect(plane.grpc).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}{path}", plane.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(bytes::Bytes::from_static(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let mut headers = resp.headers().clone();
    if let Ok(collected) = resp.into_body().collect().await {
        if let Some(trailers) = collected.trailers() {
            headers.extend(trailers.clone());
        }
    }
    let get = |h: &str| {
        headers
            .get(h)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (get("grpc-status"), percent_decoded(&get("grpc-message")))
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2).
fn percent_decoded(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).expect("percent-encoding"));
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

#[tokio::test]
async fn calls_that_are_not_one_watch_request_are_refused_with_a_reason() {
    let plane = start("raw").await;
    let watch = "/weft.discovery.v1.Discovery/Watch";
    let (code, message) = raw_call(&plane, "/weft.discovery.v1.Discovery/Nope", b"").await;
    assert_eq!(code, "12", "{code} {message}");
    assert!(message.contains("no method"), "{message}");
    let (code, message) = raw_call(&plane, watch, &[1, 0, 0, 0, 0]).await;
    assert_eq!(code, "12", "{message}");
    assert!(message.contains("compressed"), "{message}");
    // A length that is not the body's, and no message at all.
    let (code, message) = raw_call(&plane, watch, &[0, 0, 0, 0, 9, 1]).await;
    assert_eq!(code, "3", "{message}");
    assert!(message.contains("not one gRPC message"), "{message}");
    let (code, _) = raw_call(&plane, watch, b"").await;
    assert_eq!(code, "3");
    // Bytes that are not a WatchRequest.
    let (code, message) = raw_call(&plane, watch, &[0, 0, 0, 0, 2, 0xff, 0xff]).await;
    assert_eq!(code, "3", "{message}");
    assert!(message.contains("WatchRequest"), "{message}");
    // An empty message is a request without a destination.
    let (code, message) = raw_call(&plane, watch, &[0, 0, 0, 0, 0]).await;
    assert_eq!(code, "3", "{message}");
    assert!(message.contains("no destination"), "{message}");
    shutdown(plane).await;
}

fn split(api: &str, weight: &str) -> String {
    format!(
        "apiVersion: {api}\nkind: TrafficSplit\nmetadata: {{name: canary, namespace: shop}}\n\
         spec:\n  service: web\n  matches: []\n  backends: [{{service: web, weight: {weight}}}]\n"
    )
}

#[tokio::test]
async fn routing_objects_are_read_and_bad_ones_refused() {
    let plane = start("routes").await;
    let splits = "weft_control_objects{kind=\"TrafficSplit\"}";
    let groups = "weft_control_objects{kind=\"HTTPRouteGroup\"}";
    let file_errors = "weft_control_source_errors_total{source=\"files\",kind=\"file\"}";
    let refused = "weft_control_source_errors_total{source=\"files\",kind=\"TrafficSplit\"}";
    let group = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\n\
                 metadata: {name: ab, namespace: shop}\n\
                 spec: {matches: [{name: ff, headers: {user-agent: '.*Firefox.*'}}]}\n";
    write(
        &plane.dir,
        "routes.yaml",
        &format!(
            "{}---\n{}---\n{group}",
            service("web", "10.96.0.20"),
            split("split.smi-spec.io/v1alpha4", "1")
        ),
    );
    weft_tests::until_admin_metric(plane.admin, splits, 1.0, Duration::from_secs(10)).await;
    assert_eq!(metric(plane.admin, groups).await, 1);

    // A version weft does not read: the file is refused whole.
    write(
        &plane.dir,
        "routes.yaml",
        &format!(
            "{}---\n{}",
            service("web", "10.96.0.20"),
            split("split.smi-spec.io/v1alpha3", "1")
        ),
    );
    weft_tests::until_admin_metric(plane.admin, file_errors, 1.0, Duration::from_secs(10)).await;
    assert_eq!(
        metric(plane.admin, groups).await,
        1,
        "the file's objects stay"
    );

    // A weight of -1: the model refuses the split and keeps the last good one.
    write(
        &plane.dir,
        "routes.yaml",
        &format!(
            "{}---\n{}---\n{group}",
            service("web", "10.96.0.20"),
            split("split.smi-spec.io/v1alpha4", "-1")
        ),
    );
    weft_tests::until_admin_metric(plane.admin, refused, 1.0, Duration::from_secs(10)).await;
    assert_eq!(metric(plane.admin, splits).await, 1);

    // The file goes: so do its objects.
    std::fs::remove_file(plane.dir.join("routes.yaml")).unwrap();
    weft_tests::until_admin_metric(plane.admin, splits, 0.0, Duration::from_secs(10)).await;
    assert_eq!(metric(plane.admin, groups).await, 0);
    shutdown(plane).await;
}
