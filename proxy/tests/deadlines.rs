//! Deadlines: the caller's (`grpc-timeout`, `weft-timeout`) and the
//! Service's (`weft.dev/timeout`), whichever is sooner, cut a slow request
//! with a 504 (gRPC: DEADLINE_EXCEEDED) and what is left of them reaches the
//! backend; a per-try timeout moves a slow attempt to another endpoint; a
//! client connection outlives the request it timed out; the deadline also
//! covers a retryable request whose body never ends.

mod support;

use bytes::Bytes;
use http::{Method, StatusCode, Version};
use hyper::body::Frame;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::backend::Seen;
use support::client::{channel, read_until, request};
use support::*;
use tokio::io::AsyncWriteExt;

const WEB: &str = "127.96.3.10:8080";

/// The milliseconds of a `grpc-timeout`-style header (`123m`) the backend saw.
fn ms(seen: &Seen, header: &str) -> u64 {
    let v = seen
        .headers
        .get(header)
        .unwrap_or_else(|| panic!("the backend saw no {header}: {seen:?}"))
        .to_str()
        .unwrap();
    v.strip_suffix('m')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{header}: {v}"))
}

/// `GET path` with `headers` on a connection of its own, and how long it took.
async fn timed_get(
    proxy: &Proxy,
    dst: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (Reply, Duration) {
    let mut req = support::get(path);
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).expect("a header name");
        req.headers_mut()
            .insert(name, v.parse().expect("a header value"));
    }
    let mut h1 = proxy.h1(dst).await;
    let started = Instant::now();
    let r = h1.send(req).await.unwrap();
    (r, started.elapsed())
}

async fn service(web: &Svc, backend: &Backend) -> (Control, Proxy) {
    let control = Control::start(&web.yaml(&[Ep::ready(backend.addr)])).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    proxy.wait_endpoints(web.addr, &[backend.addr]).await;
    (control, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_deadline_cuts_a_slow_request_and_reaches_the_backend() {
    let app = Backend::start("app").await;
    let web = Svc::new("web", WEB);
    let (_control, proxy) = service(&web, &app).await;
    let (r, took) = timed_get(
        &proxy,
        web.addr,
        "/slow?ms=2000",
        &[("grpc-timeout", "200m")],
    )
    .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.proxy_error(), Some("request timeout"));
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    let seen = app.seen().pop().unwrap();
    let left = ms(&seen, "weft-timeout");
    assert!((1..=200).contains(&left), "the backend was given {left} ms");
    assert_eq!(
        proxy
            .metric(&format!(
                "weft_proxy_error_total{{dst=\"{}\",reason=\"request timeout\"}}",
                web.addr
            ))
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_deadline_holds_outside_every_service_too() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&[]).await;
    let (r, took) = timed_get(
        &proxy,
        app.addr,
        "/slow?ms=2000",
        &[("weft-timeout", "150m")],
    )
    .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.proxy_error(), Some("request timeout"));
    assert!(
        took >= Duration::from_millis(140) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert!(ms(&app.seen().pop().unwrap(), "weft-timeout") <= 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_gets_deadline_exceeded_and_passes_grpc_timeout_on() {
    let app = Backend::start("app").await;
    let web = Svc::new("web", WEB);
    let (_control, proxy) = service(&web, &app).await;
    let mut h2 = proxy.h2(web.addr).await;
    let mut req = support::post("/slow?ms=2000", &b"\0\0\0\0\0"[..]);
    let h = req.headers_mut();
    h.insert("content-type", "application/grpc".parse().unwrap());
    h.insert("grpc-timeout", "200m".parse().unwrap());
    let started = Instant::now();
    let r = h2.send(req).await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK, "gRPC errors are HTTP 200");
    assert_eq!(
        r.header("grpc-status"),
        Some("4"),
        "DEADLINE_EXCEEDED: {r:?}"
    );
    assert_eq!(r.proxy_error(), Some("request timeout"));
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let seen = app.seen().pop().unwrap();
    assert!((1..=200).contains(&ms(&seen, "grpc-timeout")), "{seen:?}");
    assert!(!seen.headers.contains_key("weft-timeout"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_timeout_shortens_a_longer_callers_deadline() {
    let app = Backend::start("app").await;
    let web = Svc::new("web", WEB).annotate("weft.dev/timeout", "300ms");
    let (_control, proxy) = service(&web, &app).await;
    for headers in [&[("weft-timeout", "5S")][..], &[]] {
        let (r, took) = timed_get(&proxy, web.addr, "/slow?ms=2000", headers).await;
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{headers:?}");
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
            "{headers:?}: answered after {took:?}"
        );
        assert!(ms(&app.seen().pop().unwrap(), "weft-timeout") <= 300);
    }
    // gRPC: the shorter deadline replaces the caller's in grpc-timeout.
    let mut req = support::post("/slow?ms=2000", &b"\0\0\0\0\0"[..]);
    let h = req.headers_mut();
    h.insert("content-type", "application/grpc".parse().unwrap());
    h.insert("grpc-timeout", "5S".parse().unwrap());
    let r = proxy.h2(web.addr).await.send(req).await.unwrap();
    assert_eq!(r.header("grpc-status"), Some("4"), "{r:?}");
    assert!(ms(&app.seen().pop().unwrap(), "grpc-timeout") <= 300);
    // A fast answer is not touched.
    let (r, _) = timed_get(&proxy, web.addr, "/hello", &[]).await;
    assert_eq!(r.body, app.hello(Version::HTTP_11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_past_its_per_try_timeout_is_retried() {
    let app = Backend::start("app").await;
    // Every other request stalls for 3 s.
    app.stall(1, 2, Duration::from_secs(3));
    let web = Svc::new("web", WEB)
        .annotate("weft.dev/retry-http", "gateway-error")
        .annotate("weft.dev/retry-timeout", "100ms");
    let (_control, proxy) = service(&web, &app).await;
    let mut h1 = proxy.h1(web.addr).await;
    for _ in 0..5 {
        let started = Instant::now();
        let r = h1.get("/hello").await.unwrap();
        let took = started.elapsed();
        assert_eq!(r.body, app.hello(Version::HTTP_11));
        assert!(
            took >= Duration::from_millis(90) && took < Duration::from_millis(1500),
            "answered after {took:?}"
        );
    }
    assert_eq!(
        app.requests(),
        10,
        "each request: a stalled attempt, then a retry"
    );
    assert_eq!(
        proxy
            .metric(&format!(
                "weft_retry_requests_total{{dst=\"{}\"}}",
                web.addr
            ))
            .await,
        5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_try_timeout_moves_traffic_off_a_slow_endpoint() {
    let slow = Backend::start("slow").await;
    slow.set_delay(Duration::from_secs(3));
    let fast = Backend::start("fast").await;
    let web = Svc::new("web", WEB)
        .annotate("weft.dev/retry-http", "gateway-error")
        .annotate("weft.dev/retry-timeout", "100ms");
    let control = Control::start(&web.yaml(&[Ep::ready(slow.addr), Ep::ready(fast.addr)])).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    proxy
        .wait_endpoints(web.addr, &[slow.addr, fast.addr])
        .await;
    let tally = proxy.burst(web.addr, "/hello", 1, 40).await;
    assert_eq!(
        tally.with_body(&fast.hello(Version::HTTP_11)),
        40,
        "{tally:?}"
    );
    assert!(
        slow.requests() <= 3,
        "the slow endpoint was tried {} times for 40 requests",
        slow.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_outlives_the_request_it_timed_out() {
    let app = Backend::start("app").await;
    let web = Svc::new("web", WEB);
    let (_control, proxy) = service(&web, &app).await;
    let connections = app.connections();
    let mut h1 = proxy.h1(web.addr).await;
    let mut req = support::get("/slow?ms=2000");
    req.headers_mut()
        .insert("weft-timeout", "100m".parse().unwrap());
    assert_eq!(
        h1.send(req).await.unwrap().status,
        StatusCode::GATEWAY_TIMEOUT
    );
    // The upstream connection still busy with the abandoned request is not
    // reused: the next request is answered at once, on the same client
    // connection.
    let started = Instant::now();
    let r = h1.get("/hello").await.unwrap();
    assert_eq!(r.body, app.hello(Version::HTTP_11));
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert_eq!(app.connections() - connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_covers_a_retryable_request_whose_body_never_ends() {
    let app = Backend::start("app").await;
    // A retry policy: the proxy keeps the body to send it again, streaming
    // it on as it comes.
    let web = Svc::new("web", WEB)
        .annotate("weft.dev/timeout", "300ms")
        .annotate("weft.dev/retry-http", "gateway-error");
    let (_control, proxy) = service(&web, &app).await;
    let in_time =
        |took: Duration| took >= Duration::from_millis(290) && took < Duration::from_millis(1300);

    // HTTP/1: the head says 10 bytes follow; none ever do.
    let mut tcp = proxy.connect(web.addr).await;
    let started = Instant::now();
    tcp.write_all(b"POST /count HTTP/1.1\r\nHost: web\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    let head = read_until(&mut tcp, "\r\n\r\n", WAIT).await;
    let took = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 504 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("weft-proxy-error: request timeout\r\n"),
        "{head}"
    );
    assert!(
        in_time(took),
        "HTTP/1: answered after {took:?} (timeout 300 ms)"
    );

    // HTTP/2: 3 of the 10 bytes announced, then nothing (the stream stays open).
    let (tx, body) = channel();
    let mut req = request(Method::POST, "/count", body);
    req.headers_mut()
        .insert("content-length", "10".parse().unwrap());
    tx.send(Frame::data(Bytes::from_static(b"abc")))
        .await
        .unwrap();
    let mut h2 = proxy.h2(web.addr).await;
    let started = Instant::now();
    let r = h2.send(req).await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{r:?}");
    assert_eq!(r.proxy_error(), Some("request timeout"));
    assert!(
        in_time(took),
        "HTTP/2: answered after {took:?} (timeout 300 ms)"
    );
    drop(tx);

    assert_eq!(
        app.requests(),
        2,
        "both went on without waiting for their bodies"
    );
    assert_eq!(
        proxy
            .metric(&format!(
                "weft_proxy_error_total{{dst=\"{}\",reason=\"request timeout\"}}",
                web.addr
            ))
            .await,
        2.0
    );
}
