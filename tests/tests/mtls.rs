//! Automatic mutual TLS as a mesh really runs it: weft-control (files
//! source, with a CA made by `weft identity init` and a token file) in a pod
//! of its own; meshed pods with weft-init applied and a proxy that gets its
//! certificate with the pod's token; Services whose ClusterIPs exist only in
//! the manifests, whose endpoints name Pods (meshed or not, and as which
//! ServiceAccount) so that discovery tells each proxy what to expect.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use weft_tests::mesh::{
    admin_get, app, app_served, contains, curl, get_ok, metric, shop_id, spawn_proxy,
};
use weft_tests::*;

/// The series of mesh TLS handshakes with `peer` that ended in `result`.
fn handshakes(direction: &str, peer: &str, result: &str) -> String {
    format!(
        "weft_tls_handshake_total{{direction=\"{direction}\",peer_id=\"{peer}\",result=\"{result}\"}}"
    )
}

/// A Service: its ClusterIP, and the pod behind it as the manifests
/// describe it (its ServiceAccount; meshed or not).
struct Svc<'a> {
    name: &'a str,
    ip: &'a str,
    pod: &'a Pod,
    sa: &'a str,
    meshed: bool,
}

/// A node with weft-control serving discovery and Certify.
struct Plane {
    node: Node,
    dir: PathBuf,
    control_pod: Pod,
    control: Proc,
}

impl Plane {
    fn new(name: &str, leaf_lifetime: &str) -> Self {
        let node = Node::new().unwrap();
        let dir = std::env::temp_dir().join(format!("weft-mtls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        weft_tests::mesh::identity(&dir, &["client", "web", "other"]);
        let control_pod = node.pod().unwrap();
        let cmd = weft_tests::mesh::control_command(
            &control_pod,
            &dir,
            &["--leaf-lifetime", leaf_lifetime],
        );
        let control = Proc::spawn("weft-control", cmd).unwrap();
        eventually(WAIT, || {
            curl(&control_pod, Some(APP_UID), "http://127.0.0.1:9990/ready")
                .filter(|(code, _)| *code == 200)
                .ok_or_else(|| anyhow::anyhow!("weft-control not ready"))
        })
        .unwrap();
        Self {
            node,
            dir,
            control_pod,
            control,
        }
    }

    /// Writes the Services and their pods; waits until the control plane's
    /// model holds them (and has published them to discovery).
    fn services(&self, services: &[Svc<'_>]) {
        let mut yaml = String::new();
        for s in services {
            let containers = if s.meshed {
                "[{name: app, image: app}, {name: weft-proxy, image: weft}]"
            } else {
                "[{name: app, image: app}]"
            };
            yaml += &format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n\
                 spec:\n  clusterIP: {ip}\n  clusterIPs: [\"{ip}\"]\n  \
                 ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]\n---\n\
                 apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata:\n  name: {name}-1\n  namespace: shop\n  labels: {{kubernetes.io/service-name: {name}}}\n\
                 addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n\
                 - addresses: [\"{pod_ip}\"]\n  conditions: {{ready: true, serving: true, terminating: false}}\n  \
                 targetRef: {{kind: Pod, name: {name}-0, namespace: shop}}\n---\n\
                 apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}-0, namespace: shop}}\n\
                 spec:\n  serviceAccountName: {sa}\n  containers: {containers}\n---\n",
                name = s.name,
                ip = s.ip,
                pod_ip = s.pod.ip,
                sa = s.sa,
            );
        }
        let applied = "weft_control_model_apply_seconds_count";
        let before = self.control_metric(applied).unwrap();
        let tmp = self.dir.join("manifests/.all.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, self.dir.join("manifests/all.yaml")).unwrap();
        // Three objects per Service, each applied (and published before the
        // object gauges move): the model holds exactly these.
        let n = services.len() as f64;
        eventually(WAIT, || {
            let changes = self.control_metric(applied)? - before;
            anyhow::ensure!(changes >= 3.0 * n, "{changes} changes applied");
            for kind in ["Service", "EndpointSlice", "Pod"] {
                let held =
                    self.control_metric(&format!("weft_control_objects{{kind=\"{kind}\"}}"))?;
                anyhow::ensure!(held == n, "{held} {kind} objects in the model");
            }
            Ok(())
        })
        .unwrap();
    }

    /// A sample of weft-control's `/metrics` (summed as [`metric`] does).
    fn control_metric(&self, series: &str) -> anyhow::Result<f64> {
        let (_, text) = curl(
            &self.control_pod,
            Some(APP_UID),
            "http://127.0.0.1:9990/metrics",
        )
        .ok_or_else(|| anyhow::anyhow!("weft-control's /metrics did not answer"))?;
        weft_tests::mesh::sum_samples(&text, series)
    }

    /// The Service `web` (10.96.0.20) with `pod` behind it, which discovery
    /// names meshed as ServiceAccount `web`.
    fn web_behind(&self, pod: &Pod) {
        self.services(&[Svc {
            name: "web",
            ip: "10.96.0.20",
            pod,
            sa: "web",
            meshed: true,
        }]);
    }

    /// The proxy environment of a meshed pod running as `sa` (with the
    /// token of `token_sa`).
    fn proxy_env(&self, sa: &str, token_sa: &str) -> Vec<(String, String)> {
        vec![
            (
                "WEFT_PROXY_CONTROL_ADDR".into(),
                format!("{}:8086", self.control_pod.ip),
            ),
            (
                "WEFT_PROXY_IDENTITY_TOKEN_FILE".into(),
                self.dir
                    .join(format!("{token_sa}.token"))
                    .display()
                    .to_string(),
            ),
            (
                "WEFT_PROXY_IDENTITY_TRUST_ANCHORS".into(),
                self.dir.join("ca/ca.crt").display().to_string(),
            ),
            ("WEFT_PROXY_POD_NAMESPACE".into(), "shop".into()),
            ("WEFT_PROXY_SERVICE_ACCOUNT".into(), sa.into()),
        ]
    }

    /// A meshed pod running as `sa`, ready; `extra` is more proxy environment.
    fn meshed(&self, pod: &Pod, sa: &str, extra: &[(&str, &str)]) -> Proc {
        self.proxy(pod, sa, sa, extra, true)
    }

    /// A proxy in `pod` running as `sa` with the token of `token_sa`;
    /// waits until it is ready when `wait`.
    fn proxy(
        &self,
        pod: &Pod,
        sa: &str,
        token_sa: &str,
        extra: &[(&str, &str)],
        wait: bool,
    ) -> Proc {
        let env = self.proxy_env(sa, token_sa);
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend_from_slice(extra);
        if wait {
            start_proxy(pod, &[], &env)
        } else {
            spawn_proxy(pod, &[], &env)
        }
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn meshed_pods_speak_mtls_and_unmeshed_peers_plaintext() {
    if netns_or_skip("mtls_wire") {
        return;
    }
    let plane = Plane::new("wire", "24h");
    let client = plane.node.pod().unwrap();
    let web = plane.node.pod().unwrap();
    let plain = plane.node.pod().unwrap();
    let outsider = plane.node.pod().unwrap();
    plane.services(&[
        Svc {
            name: "web",
            ip: "10.96.0.20",
            pod: &web,
            sa: "web",
            meshed: true,
        },
        Svc {
            name: "plain",
            ip: "10.96.0.21",
            pod: &plain,
            sa: "web",
            meshed: false,
        },
    ]);
    let _apps = [app(&web), app(&plain)];
    let _web_proxy = plane.meshed(&web, "web", &[]);
    let _client_proxy = plane.meshed(&client, "client", &[]);
    assert!(admin_get(&client, "/identity")
        .unwrap()
        .contains(&shop_id("client")));

    // Capture everything on the node's bridge while the client calls a
    // meshed Service and an unmeshed one.
    let pcap = plane.dir.join("wire.bin");
    let mut cmd = plane.node.command(&bin("weft-netprobe"));
    cmd.arg("capture").arg(&pcap).arg("3000");
    let mut capture = Proc::spawn("capture", cmd).unwrap();
    capture.expect_line("CAPTURING", WAIT).unwrap();
    let body = get_ok(&client, "http://10.96.0.20/hello?canary=MESHED-CANARY-7f3a");
    assert!(body.contains("hello from"), "{body}");
    get_ok(&client, "http://10.96.0.21/hello?canary=PLAIN-CANARY-7f3a");
    capture.expect_line("CAPTURED", WAIT).unwrap();
    capture.wait_exit(WAIT).unwrap();
    let wire = std::fs::read(&pcap).unwrap();
    // The capture works (the unmeshed hop is readable) ...
    assert!(
        contains(&wire, b"PLAIN-CANARY-7f3a"),
        "capture saw no plaintext"
    );
    // ... and the meshed hop is TLS: a ClientHello offering the mesh
    // protocol, application data records, and never the request.
    assert!(
        !contains(&wire, b"MESHED-CANARY-7f3a"),
        "the meshed request crossed in plaintext"
    );
    assert!(
        contains(&wire, b"weft.http1"),
        "no mesh ClientHello on the wire"
    );
    assert!(
        contains(&wire, &[0x17, 0x03, 0x03]),
        "no TLS application data on the wire"
    );

    // Each side knows the other's identity.
    let inbound = format!(
        "weft_request_total{{direction=\"inbound\",tls=\"true\",client_id=\"{}\",server_id=\"{}\"}}",
        shop_id("client"),
        shop_id("web")
    );
    assert!(metric(&web, &inbound).unwrap() >= 1.0, "{inbound}");
    let outbound = format!(
        "weft_request_total{{direction=\"outbound\",tls=\"true\",client_id=\"{}\",server_id=\"{}\"}}",
        shop_id("client"),
        shop_id("web")
    );
    assert!(metric(&client, &outbound).unwrap() >= 1.0, "{outbound}");
    let ok_handshakes = handshakes("inbound", &shop_id("client"), "ok");
    assert!(metric(&web, &ok_handshakes).unwrap() >= 1.0);
    // The unmeshed Service was called in plaintext.
    let plain_out =
        "weft_request_total{direction=\"outbound\",dst=\"10.96.0.21:80\",tls=\"false\"}";
    assert!(metric(&client, plain_out).unwrap() >= 1.0);

    // A client without a proxy reaches the meshed server in plaintext.
    get_ok(&outsider, &format!("http://{}:8080/hello", web.ip));
    let plain_in = "weft_request_total{direction=\"inbound\",tls=\"false\"}";
    assert!(metric(&web, plain_in).unwrap() >= 1.0);
}

#[test]
fn identities_that_do_not_match_are_refused() {
    if netns_or_skip("mtls_identity") {
        return;
    }
    let plane = Plane::new("identity", "24h");
    let client = plane.node.pod().unwrap();
    let impostor = plane.node.pod().unwrap();
    let liar = plane.node.pod().unwrap();
    // Discovery says the pod behind `web` runs as `web`; it runs as `other`.
    plane.web_behind(&impostor);
    let _app = app(&impostor);
    let _impostor_proxy = plane.meshed(&impostor, "other", &[]);
    let _client_proxy = plane.meshed(&client, "client", &[]);

    let (code, text) = curl(&client, Some(APP_UID), "http://10.96.0.20/hello").unwrap();
    assert_eq!(code, 502, "{text}");
    assert!(
        text.to_lowercase().contains("weft-proxy-error: tls failed"),
        "{text}"
    );
    let refused = handshakes("outbound", &shop_id("web"), "wrong_identity");
    assert!(metric(&client, &refused).unwrap() >= 1.0, "{refused}");
    assert_eq!(app_served(&impostor), 0, "the impostor's app was reached");

    // A proxy claiming `web` with the token of `other`: Certify refuses it,
    // it never becomes ready, and /ready says why.
    let _liar_proxy = plane.proxy(&liar, "web", "other", &[], false);
    let why = eventually(WAIT, || {
        let (code, text) = curl(&liar, Some(APP_UID), "http://127.0.0.1:4191/ready")
            .ok_or_else(|| anyhow::anyhow!("no answer"))?;
        anyhow::ensure!(
            code == 503 && text.contains("PermissionDenied"),
            "{code} {text}"
        );
        Ok(text)
    })
    .unwrap();
    assert!(
        why.contains(&shop_id("web")) && why.contains(&shop_id("other")),
        "{why}"
    );
    let failed = "weft_identity_certify_total{result=\"error\"}";
    assert!(metric(&liar, failed).unwrap() >= 1.0);
}

/// The renewal schedule itself (70%, backoff, expiry) is tested under
/// paused time beside the code (`proxy/src/identity/tests.rs`); this is the
/// wiring with the real binaries. With 4 s leaves each proxy renews every
/// 2.1 to 2.8 s (X.509 expiries are whole seconds), so the 3.5 s of load
/// straddle a rotation on each side.
#[test]
fn certificates_rotate_under_load_then_expire_without_the_control_plane() {
    if netns_or_skip("mtls_rotation") {
        return;
    }
    let mut plane = Plane::new("rotation", "4s");
    let client = plane.node.pod().unwrap();
    let web = plane.node.pod().unwrap();
    plane.web_behind(&web);
    let _app = app(&web);
    let _web_proxy = plane.meshed(&web, "web", &[]);
    // No idle pool: every new client connection makes a new mesh TLS
    // connection, with whatever certificates both sides hold by then.
    let _client_proxy = plane.meshed(&client, "client", &[("WEFT_PROXY_POOL_MAX_IDLE", "0")]);

    let issued = "weft_identity_certify_total{result=\"ok\"}";
    let before = [&client, &web].map(|pod| metric(pod, issued).unwrap());
    let span = Duration::from_millis(3500);
    let mut load = client
        .spawn(
            Some(APP_UID),
            &bin("weft-testapp"),
            &[
                "load",
                "10.96.0.20:80",
                "40",
                &span.as_millis().to_string(),
                "4",
            ],
        )
        .unwrap();
    let started = Instant::now();
    let mut fresh = 0;
    while started.elapsed() < span {
        get_ok(&client, "http://10.96.0.20/hello");
        fresh += 1;
    }
    let done = load.expect_line("OK ", WAIT).unwrap();
    load.wait_exit(WAIT).unwrap();
    assert_eq!(field(&done, "failed"), "0", "{done}");
    assert!(field(&done, "ok").parse::<u64>().unwrap() >= 100, "{done}");
    let after = [&client, &web].map(|pod| metric(pod, issued).unwrap());
    for (side, (b, a)) in ["client", "web"].iter().zip(before.iter().zip(after)) {
        assert!(
            a > *b,
            "the {side} proxy did not renew during the load ({b} → {a})"
        );
    }
    let ok_handshakes = handshakes("inbound", &shop_id("client"), "ok");
    assert!(
        metric(&web, &ok_handshakes).unwrap() >= f64::from(fresh),
        "{fresh} fresh connections"
    );

    // The control plane goes away: renewals fail, and the certificate in
    // force keeps serving (both in one scrape) until it expires.
    plane.control.terminate(WAIT).unwrap();
    eventually(WAIT, || {
        let text = admin_get(&client, "/metrics")?;
        let failed =
            weft_tests::mesh::sum_samples(&text, "weft_identity_certify_total{result=\"error\"}")?;
        let valid = weft_tests::mesh::sum_samples(&text, "weft_identity_cert_valid")?;
        anyhow::ensure!(
            failed >= 1.0 && valid == 1.0,
            "{failed} failed renewals, valid {valid}"
        );
        Ok(())
    })
    .unwrap();
    // Past its expiry the proxy has no certificate and says why.
    let why = eventually(WAIT, || {
        let (code, text) = curl(&client, Some(APP_UID), "http://127.0.0.1:4191/ready")
            .ok_or_else(|| anyhow::anyhow!("no answer"))?;
        anyhow::ensure!(code == 503, "{code} {text}");
        Ok(text)
    })
    .unwrap();
    assert!(
        why.contains("certificate expired; renewal failing"),
        "{why}"
    );
    assert_eq!(metric(&client, "weft_identity_cert_valid").unwrap(), 0.0);
    let identity = admin_get(&client, "/identity").unwrap();
    assert!(
        identity.contains("certificate: expired") && identity.contains("last error"),
        "{identity}"
    );
}

/// The `issuer:` line of a proxy's `/identity`.
fn issuer_of(pod: &Pod) -> String {
    let text = admin_get(pod, "/identity").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("issuer: "))
        .unwrap_or_else(|| panic!("no issuer in {text}"))
        .to_owned()
}

#[test]
fn a_rotated_issuer_signs_new_leaves_and_old_ones_stay_trusted() {
    if netns_or_skip("mtls_issuer") {
        return;
    }
    let plane = Plane::new("issuer", "60s");
    let client = plane.node.pod().unwrap();
    let web = plane.node.pod().unwrap();
    plane.web_behind(&web);
    let _app = app(&web);
    let _web_proxy = plane.meshed(&web, "web", &[]);
    let old = issuer_of(&web);

    // A new issuer under the same anchor, written where weft-control reads it.
    let out = std::process::Command::new(bin("weft"))
        .args(["identity", "rotate-issuer", "--dir"])
        .arg(plane.dir.join("ca"))
        .output()
        .unwrap();
    assert!(out.status.success(), "rotate-issuer: {}", stderr(&out));
    let loads = "weft_control_issuer_loads_total{result=\"loaded\"}";
    eventually(Duration::from_secs(10), || {
        let n = plane.control_metric(loads)?;
        anyhow::ensure!(n >= 2.0, "{n} issuer loads");
        Ok(())
    })
    .unwrap();

    // A proxy starting now gets a leaf of the new issuer; the server still
    // holds one of the old; both chain to the anchor, so they talk.
    let _client_proxy = plane.meshed(&client, "client", &[]);
    let new = issuer_of(&client);
    assert_ne!(new, old, "the new leaf names the old issuer");
    assert!(new.contains("(from "), "{new}");
    get_ok(&client, "http://10.96.0.20/hello");
    assert_eq!(issuer_of(&web), old, "the server renewed before the check");
    let ok_handshakes = handshakes("inbound", &shop_id("client"), "ok");
    assert!(metric(&web, &ok_handshakes).unwrap() >= 1.0);
}
