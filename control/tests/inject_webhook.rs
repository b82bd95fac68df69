//! weft-control's injector over HTTPS, in process: its certificate chains
//! to weft's trust anchors for the DNS name asked; an AdmissionReview of an
//! annotated Pod gets a JSONPatch that makes exactly the pod `weft inject
//! --manual` makes; a bad annotation value is denied with the annotation
//! and the value; other pods and other kinds are allowed unchanged; and
//! the admissions are counted by result.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

use weft_control::config::{Config, Source};
use weft_control::identity::ca;
use weft_control::inject::{self, OptIn, Outcome};
use weft_control::run::{run, Bound};

struct Plane {
    dir: std::path::PathBuf,
    webhook: SocketAddr,
    admin: SocketAddr,
    anchors: String,
    _stop: oneshot::Sender<()>,
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(name: &str) -> Plane {
    let dir = std::env::temp_dir().join(format!("weft-webhook-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (manifests, ca_dir) = (dir.join("manifests"), dir.join("ca"));
    std::fs::create_dir_all(&manifests).unwrap();
    let day = Duration::from_secs(24 * 3600);
    ca::generate("cluster.local", 365 * day, 30 * day)
        .unwrap()
        .write(&ca_dir)
        .unwrap();
    let tokens = dir.join("tokens.yaml");
    std::fs::write(&tokens, "a-token-of-twenty-chars: shop/web\n").unwrap();
    let config = Config {
        identity_dir: Some(ca_dir.clone()),
        identity_tokens: Some(tokens),
        webhook: true,
        webhook_dns_names: vec!["weft-control.weft-system.svc".into()],
        ..Config::loopback(Source::Files(manifests))
    };
    let bound = Bound::bind(&config).await.unwrap();
    let (_, admin) = bound.addrs().unwrap();
    let webhook = bound.webhook_addr().unwrap().expect("the webhook is bound");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        if let Err(e) = run(config, bound, async {
            let _ = stopped.await;
        })
        .await
        {
            panic!("weft-control failed: {e:#}");
        }
    });
    Plane {
        anchors: std::fs::read_to_string(ca_dir.join("ca.crt")).unwrap(),
        dir,
        webhook,
        admin,
        _stop: stop,
    }
}

/// POSTs `body` to `path` over TLS, trusting only `anchors`, as `server_name`.
async fn post(
    addr: SocketAddr,
    anchors: &str,
    server_name: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for der in ca::all_der(anchors, "CERTIFICATE") {
        roots.add(der.into()).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header("host", server_name)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let rsp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes().to_vec()))
}

/// The webhook's answer to `review`, once weft-control is ready (its
/// readiness waits for the serving certificate, issued at start).
async fn review(plane: &Plane, review: &Value) -> Value {
    weft_tests::until_ready(plane.admin, Duration::from_secs(10)).await;
    let body = serde_json::to_vec(review).unwrap();
    match post(
        plane.webhook,
        &plane.anchors,
        "weft-control.weft-system.svc",
        "/inject",
        body,
    )
    .await
    {
        Ok((200, body)) => serde_json::from_slice(&body).unwrap(),
        Ok((status, body)) => panic!("{status}: {}", String::from_utf8_lossy(&body)),
        Err(e) => panic!("no answer once ready: {e}"),
    }
}

fn admission(kind: &str, operation: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "7c3f9a1e-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
        },
    })
}

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-7d4b9c-", "namespace": "shop", "annotations": annotations},
        "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "web:1"}]},
    })
}

/// The response's patch: Go's `[]byte`, which the API server reads from a
/// base64 string or (as kube-rs writes it) an array of byte values.
fn patch_of(response: &Value) -> json_patch::Patch {
    use base64::Engine as _;
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes: Vec<u8> = match &response["patch"] {
        Value::String(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
        other => serde_json::from_value(other.clone()).expect("a patch"),
    };
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn the_webhook_injects_denies_and_lets_be() {
    let plane = start("review").await;

    // Enabled: the patch makes the same pod as `weft inject --manual`.
    let annotated = pod(json!({"weft.dev/inject": "enabled", "weft.dev/opaque-ports": "5432"}));
    let answer = review(&plane, &admission("Pod", "CREATE", annotated.clone())).await;
    let response = &answer["response"];
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(response["uid"], "7c3f9a1e-0000-4000-8000-000000000001");
    assert_eq!(response["allowed"], true);
    let mut patched = annotated.clone();
    json_patch::patch(&mut patched, &patch_of(response)).unwrap();
    let expected = match inject::inject(
        &annotated,
        &BTreeMap::new(),
        &inject::Settings::default(),
        OptIn::Required,
    ) {
        Ok(Outcome::Injected(p)) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(patched, expected);

    // A bad value: denied, naming the annotation and the value.
    let bad =
        pod(json!({"weft.dev/inject": "enabled", "weft.dev/skip-outbound-cidrs": "10.0.0.0/33"}));
    let answer = review(&plane, &admission("Pod", "CREATE", bad)).await;
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(
        answer["response"]["status"]["message"],
        "weft: annotation weft.dev/skip-outbound-cidrs: '10.0.0.0/33' is not a CIDR: prefix length '33' must be 0-32"
    );

    // Not asked for, asked for but impossible, not a create, not a pod: unchanged.
    let answer = review(&plane, &admission("Pod", "CREATE", pod(json!({})))).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());
    let mut host = pod(json!({"weft.dev/inject": "enabled"}));
    host["spec"]["hostNetwork"] = json!(true);
    let answer = review(&plane, &admission("Pod", "CREATE", host)).await;
    assert!(answer["response"].get("patch").is_none());
    assert_eq!(
        answer["response"]["warnings"],
        json!(["weft: not injected: the pod uses hostNetwork"])
    );
    let answer = review(&plane, &admission("Pod", "UPDATE", annotated.clone())).await;
    assert!(answer["response"].get("patch").is_none());
    let answer = review(
        &plane,
        &admission("Service", "CREATE", json!({"metadata": {"name": "s"}})),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], true);

    // Counted by result.
    let metrics = admin_metrics(plane.admin).await;
    for line in [
        r#"weft_control_admissions_total{result="injected",reason=""} 1"#,
        r#"weft_control_admissions_total{result="denied",reason="weft.dev/skip-outbound-cidrs"} 1"#,
        r#"weft_control_admissions_total{result="skipped",reason="not-enabled"} 1"#,
        r#"weft_control_admissions_total{result="skipped",reason="host-network"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn the_certificate_is_for_the_service_name_and_anchored_in_weft_s_ca() {
    let plane = start("cert").await;
    // Wait until it serves at all.
    let _ = review(&plane, &admission("Pod", "CREATE", pod(json!({})))).await;
    let other = post(
        plane.webhook,
        &plane.anchors,
        "evil.example",
        "/inject",
        b"{}".to_vec(),
    )
    .await;
    assert!(
        other.unwrap_err().contains("certificate"),
        "another name is refused"
    );
    let stranger = ca::generate(
        "cluster.local",
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    )
    .unwrap();
    let other = post(
        plane.webhook,
        &stranger.anchor_pem,
        "weft-control.weft-system.svc",
        "/inject",
        b"{}".to_vec(),
    )
    .await;
    assert!(other.is_err(), "another CA does not verify it");
    let (status, body) = post(
        plane.webhook,
        &plane.anchors,
        "weft-control.weft-system.svc",
        "/inject",
        b"{".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _) = post(
        plane.webhook,
        &plane.anchors,
        "weft-control.weft-system.svc",
        "/other",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
}

/// GET /metrics of the admin port, in plain HTTP.
async fn admin_metrics(admin: SocketAddr) -> String {
    let tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/metrics")
        .header("host", "weft")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}
