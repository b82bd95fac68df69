//! Tracing as a mesh really runs it: weft-control (files source, mesh
//! identities) in a pod of its own; the tests' Jaeger (`weft-otlp-receiver`)
//! in another; a meshed server pod `web-0` (ServiceAccount `web`, the test
//! app on 8080 behind weft-init and weft-proxy) and a meshed client pod
//! (ServiceAccount `client`), both proxies exporting to the receiver.
//!
//! The client app sends requests with a sampled context in each format
//! (W3C over HTTP/1 and HTTP/2, B3 single, B3 multi-header) to `web`'s `/headers`, which answers
//! with the headers it received; the receiver must get, per request, one
//! CLIENT span (parent: the app's span) and one SERVER span (parent: the
//! CLIENT span), with both SPIFFE ids, and the app must see the SERVER
//! span as its parent. An unsampled request makes no span but has its ids
//! rewritten; a retried one shows its attempts; with the receiver killed,
//! requests still succeed, drops are counted, and export resumes when it
//! is back.

use std::net::SocketAddr;
use std::path::Path;
use weft_tests::mesh::{metric, shop_id, FilesPlane};
use weft_tests::otlp::query_in;
use weft_tests::*;

const WEB_IP: &str = "10.96.0.40";
const OTLP_GRPC: u16 = 4317;
const OTLP_QUERY: u16 = 16686;

/// The Service `web` (80 → 8080, retries on 5xx, 2 at most) and its pod.
fn web(pod_ip: std::net::Ipv4Addr) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations: {{weft.dev/retry-http: 5xx, weft.dev/retry-limit: \"2\"}}
spec:
  clusterIP: {WEB_IP}
  clusterIPs: [\"{WEB_IP}\"]
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
- addresses: [\"{pod_ip}\"]
  conditions: {{ready: true, serving: true, terminating: false}}
  targetRef: {{kind: Pod, name: web-0, namespace: shop}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web-0, namespace: shop}}
spec:
  serviceAccountName: web
  containers: [{{name: app, image: app}}, {{name: weft-proxy, image: weft}}]
---
"
    )
}

/// The proxy environment of a meshed pod running as `sa` that exports to
/// `collector`.
fn proxy_env(plane: &FilesPlane, sa: &str, collector: SocketAddr) -> Vec<(String, String)> {
    let mut env = plane.proxy_env(sa);
    env.push((
        "WEFT_PROXY_TRACE_COLLECTOR_ADDR".into(),
        collector.to_string(),
    ));
    env.push(("WEFT_PROXY_TRACE_SERVICE_NAME".into(), sa.into()));
    env
}

fn start(pod: &Pod, env: &[(String, String)]) -> Proc {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    mesh::start_proxy(pod, &[], &env)
}

/// The receiver in `pod`, once listening.
fn receiver(pod: &Pod) -> Proc {
    let mut cmd = pod.command(None, &bin("weft-otlp-receiver"));
    cmd.args([
        format!("--grpc-addr=0.0.0.0:{OTLP_GRPC}"),
        format!("--query-addr=0.0.0.0:{OTLP_QUERY}"),
    ]);
    let p = Proc::spawn("weft-otlp-receiver", cmd).unwrap();
    p.expect_line("LISTENING", WAIT).unwrap();
    p
}

/// GET `path` on `web` from the client app with `headers`: (status, body).
fn get(client: &Pod, path: &str, headers: &[&str]) -> (u16, String) {
    get_as(client, path, headers, false)
}

/// [`get`], over HTTP/2 (prior knowledge) with `h2`.
fn get_as(client: &Pod, path: &str, headers: &[&str], h2: bool) -> (u16, String) {
    let mut args = vec!["-sS", "--max-time", "5", "-w", "\n%{http_code}"];
    if h2 {
        args.push("--http2-prior-knowledge");
    }
    for h in headers {
        args.extend(["-H", h]);
    }
    let url = format!("http://{WEB_IP}{path}");
    args.push(&url);
    let out = client.run(Some(APP_UID), Path::new("curl"), &args).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.to_owned())
}

/// The value of header `name` in a `/headers` answer.
fn header<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

/// The spans of `trace` as the receiver's Jaeger API answers, once it
/// holds at least `n` of them.
fn trace(rx_pod: &Pod, rx: SocketAddr, trace: &str, n: usize) -> serde_json::Value {
    eventually(WAIT, || {
        let t = query_in(rx_pod, rx, &format!("/api/traces/{trace}"))?;
        let got = t["data"][0]["spans"].as_array().map_or(0, Vec::len);
        anyhow::ensure!(got >= n, "{got} of {n} spans of {trace}");
        Ok(t["data"][0].clone())
    })
    .unwrap()
}

/// A span's tag `key` (Jaeger's JSON).
fn tag(span: &serde_json::Value, key: &str) -> Option<String> {
    span["tags"].as_array()?.iter().find_map(|t| {
        (t["key"] == key).then(|| match &t["value"] {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        })
    })
}

/// The one span of `kind` (`client`, `server`) in a Jaeger trace.
fn only<'a>(trace: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    let all: Vec<&serde_json::Value> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| tag(s, "span.kind").as_deref() == Some(kind))
        .collect();
    assert_eq!(all.len(), 1, "one {kind} span: {trace:#}");
    all[0]
}

/// The span a Jaeger span's CHILD_OF reference names.
fn parent(span: &serde_json::Value) -> Option<String> {
    span["references"].as_array()?.iter().find_map(|r| {
        (r["refType"] == "CHILD_OF").then(|| r["spanID"].as_str().unwrap().to_owned())
    })
}

#[test]
fn every_proxy_makes_its_span_in_each_format_and_export_survives_the_collector() {
    if netns_or_skip("tracing") {
        return;
    }
    let plane = FilesPlane::start("tracing", &["web", "client"]);
    let web_pod = plane.node.pod().unwrap();
    let client = plane.node.pod().unwrap();
    let rx_pod = plane.node.pod().unwrap();
    let rx_grpc = SocketAddr::new(rx_pod.ip.into(), OTLP_GRPC);
    let rx = SocketAddr::new(rx_pod.ip.into(), OTLP_QUERY);
    let tmp = plane.dir.join("manifests/.all.yaml.tmp");
    std::fs::write(&tmp, web(web_pod.ip)).unwrap();
    std::fs::rename(tmp, plane.dir.join("manifests/all.yaml")).unwrap();
    let mut collector = receiver(&rx_pod);
    let _app = mesh::app(&web_pod);
    let mut env = proxy_env(&plane, "web", rx_grpc);
    env.push(("WEFT_PROXY_POD_NAME".into(), "web-0".into()));
    let _web_proxy = start(&web_pod, &env);
    let _client_proxy = start(&client, &proxy_env(&plane, "client", rx_grpc));
    eventually(WAIT, || {
        let (code, body) = get(&client, "/headers", &[]);
        anyhow::ensure!(code == 200, "{code} {body}");
        Ok(())
    })
    .unwrap();

    // One request per format, each its own trace; the app's span id is
    // the same for all (it is what the proxies must not forward).
    let app_span = "00f067aa0ba902b7";
    let cases = [
        (
            "w3c",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            vec![
                format!("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-{app_span}-01"),
                "tracestate: congo=t61rcWkgMzE".to_owned(),
            ],
        ),
        (
            "b3 single",
            "a1b2c3d4e5f60718293a4b5c6d7e8f90",
            vec![format!("b3: a1b2c3d4e5f60718293a4b5c6d7e8f90-{app_span}-1")],
        ),
        (
            "w3c h2",
            "5ce0e9a56015fec5aadfa328ae398115",
            vec![format!(
                "traceparent: 00-5ce0e9a56015fec5aadfa328ae398115-{app_span}-01"
            )],
        ),
        (
            "b3 multi",
            "0000000000000000463ac35c9f6413ad",
            vec![
                "x-b3-traceid: 463ac35c9f6413ad".to_owned(),
                format!("x-b3-spanid: {app_span}"),
                "x-b3-sampled: 1".to_owned(),
            ],
        ),
    ];
    println!("format      trace                             client span      server span      app saw parent");
    for (format, trace_id, headers) in &cases {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (code, body) = get_as(&client, "/headers", &headers, *format == "w3c h2");
        assert_eq!(code, 200, "{format}: {body}");
        let t = trace(&rx_pod, rx, trace_id, 2);
        let (c, s) = (only(&t, "client"), only(&t, "server"));
        let (c_id, s_id) = (c["spanID"].as_str().unwrap(), s["spanID"].as_str().unwrap());
        assert_eq!(
            parent(c).as_deref(),
            Some(app_span),
            "{format}: client span's parent"
        );
        assert_eq!(
            parent(s).as_deref(),
            Some(c_id),
            "{format}: server span's parent"
        );
        // What the app received names the inbound proxy's span.
        let seen = match *format {
            "w3c" | "w3c h2" => {
                header(&body, "traceparent").map(|v| v.split('-').nth(2).unwrap().to_owned())
            }
            "b3 single" => header(&body, "b3").map(|v| v.split('-').nth(1).unwrap().to_owned()),
            _ => header(&body, "x-b3-spanid").map(str::to_owned),
        };
        assert_eq!(
            seen.as_deref(),
            Some(s_id),
            "{format}: the app's parent: {body}"
        );
        match *format {
            "w3c" => assert_eq!(header(&body, "tracestate"), Some("congo=t61rcWkgMzE")),
            "w3c h2" => {}
            "b3 single" => assert!(
                header(&body, "b3")
                    .unwrap()
                    .ends_with(&format!("-1-{c_id}")),
                "{body}"
            ),
            _ => assert_eq!(header(&body, "x-b3-parentspanid"), Some(c_id), "{body}"),
        }
        for span in [c, s] {
            assert_eq!(
                tag(span, "weft.client.id"),
                Some(shop_id("client")),
                "{span:#}"
            );
            assert_eq!(
                tag(span, "weft.server.id"),
                Some(shop_id("web")),
                "{span:#}"
            );
            assert_eq!(tag(span, "http.request.method").as_deref(), Some("GET"));
            assert_eq!(
                tag(span, "http.response.status_code").as_deref(),
                Some("200")
            );
        }
        assert_eq!(c["operationName"], "web.shop:80", "never the path");
        assert_eq!(
            s["operationName"], "web.shop:80",
            "the Service, from the client proxy"
        );
        assert_eq!(
            header(&body, "weft-dst"),
            None,
            "the app never sees weft-dst"
        );
        let services: Vec<&str> = t["processes"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p["serviceName"].as_str().unwrap())
            .collect();
        assert!(
            services.contains(&"client") && services.contains(&"web"),
            "{services:?}"
        );
        println!("{format:<11} {trace_id} {c_id} {s_id} {}", seen.unwrap());
    }
    // The example trace the README shows.
    println!("{:#}", trace(&rx_pod, rx, cases[0].1, 2));

    // Unsampled: ids rewritten, no span.
    let unsampled = "11111111111111111111111111111111";
    let (code, body) = get(
        &client,
        "/headers",
        &[&format!("traceparent: 00-{unsampled}-{app_span}-00")],
    );
    assert_eq!(code, 200);
    let seen = header(&body, "traceparent").unwrap();
    assert!(
        seen.starts_with(&format!("00-{unsampled}-")) && seen.ends_with("-00"),
        "{seen}"
    );
    assert!(
        !seen.contains(app_span),
        "the proxies' ids, not the app's: {seen}"
    );

    // Retried: the client span has the attempts as events, each attempt a
    // server span of its own under it.
    let retried = "22222222222222222222222222222222";
    let (code, _) = get(
        &client,
        "/fail",
        &[&format!("traceparent: 00-{retried}-{app_span}-01")],
    );
    assert_eq!(code, 503);
    let t = trace(&rx_pod, rx, retried, 4);
    let c = only(&t, "client");
    let events = c["logs"].as_array().map_or(0, Vec::len);
    assert_eq!(events, 2, "two retries as events: {c:#}");
    assert_eq!(tag(c, "error").as_deref(), Some("true"), "{c:#}");
    let c_id = c["spanID"].as_str().unwrap();
    let servers: Vec<_> = t["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| tag(s, "span.kind").as_deref() == Some("server"))
        .collect();
    assert_eq!(servers.len(), 3, "an attempt, a server span");
    assert!(servers.iter().all(|s| parent(s).as_deref() == Some(c_id)));
    println!("retried: client span {c_id} with {events} retry events over 3 server spans");
    // Nothing of the unsampled trace ever arrived (the retried one came
    // after it, over the same exporters).
    let none = query_in(&rx_pod, rx, "/api/traces?service=client&limit=100").unwrap();
    assert!(
        !none.to_string().contains(unsampled),
        "no span for an unsampled request"
    );

    // The collector killed: requests still succeed; the failed exports
    // are counted; export resumes once it is back.
    drop(collector);
    let before = metric(&client, "weft_trace_spans_dropped_total").unwrap();
    for i in 0..20 {
        let (code, body) = get(
            &client,
            "/headers",
            &[&format!(
                "traceparent: 00-3333333333333333333333333333{i:04x}-{app_span}-01"
            )],
        );
        assert_eq!(code, 200, "request {i} with the collector down: {body}");
    }
    eventually(std::time::Duration::from_secs(30), || {
        let dropped = metric(&client, "weft_trace_spans_dropped_total")? - before;
        anyhow::ensure!(dropped >= 1.0, "no drop counted yet");
        Ok(())
    })
    .unwrap();
    let dropped = metric(&client, "weft_trace_spans_dropped_total").unwrap() - before;
    collector = receiver(&rx_pod);
    let back = "44444444444444444444444444444444";
    let (code, _) = get(
        &client,
        "/headers",
        &[&format!("traceparent: 00-{back}-{app_span}-01")],
    );
    assert_eq!(code, 200);
    trace(&rx_pod, rx, back, 2);
    println!("collector down: 20 of 20 requests succeeded, {dropped} client spans dropped and counted; export resumed");
    drop(collector);
}
