//! Retries as a Service's annotations configure them: failures hidden from
//! the client, each retry counted; none without a policy; the retry limit
//! of one request; the budget that caps the extra load; methods that are
//! not idempotent and bodies too large to keep, sent once; gRPC statuses;
//! a connection that broke before its answer, retried elsewhere; bodies
//! streamed without a length (gRPC's), retried whole, never held back, and
//! past what is kept, sent once.

mod support;

use bytes::Bytes;
use http::{Method, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Frame;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::client::{channel, full, read_until, request, Body};
use support::tcp::Server;
use support::*;
use tokio::io::AsyncWriteExt;

const WEB: &str = "127.96.2.10:8080";
const PLAIN: &str = "127.96.2.11:8080";

fn retries(dst: SocketAddr) -> String {
    format!("weft_retry_requests_total{{dst=\"{dst}\"}}")
}

/// A control plane with `services` in front of `backends`, and a proxy
/// that balances over them.
async fn setup(services: &[&Svc], backends: &[&Backend], args: &[&str]) -> (Control, Proxy) {
    let eps: Vec<Ep> = backends.iter().map(|b| Ep::ready(b.addr)).collect();
    let yaml: Vec<String> = services.iter().map(|s| s.yaml(&eps)).collect();
    let control = Control::start(&yaml.join("---\n")).await;
    let proxy = Proxy::with_control(&control, args).await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    for s in services {
        proxy.wait_endpoints(s.addr, &addrs).await;
    }
    (control, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_a_few_failures_and_are_counted() {
    let backends = [Backend::start("a").await, Backend::start("b").await];
    for b in &backends {
        b.fail(1, 10);
    }
    let web = Svc::new("web", WEB).annotate("weft.dev/retry-http", "gateway-error");
    let plain = Svc::new("plain", PLAIN);
    let (_control, proxy) = setup(&[&web, &plain], &[&backends[0], &backends[1]], &[]).await;
    let counts = || {
        (
            backends.iter().map(Backend::requests).sum::<u64>(),
            backends.iter().map(Backend::failed).sum::<u64>(),
        )
    };

    // One in ten answers is a 503: each is retried, the client sees none.
    let (served0, failed0) = counts();
    let tally = proxy.burst(web.addr, "/hello", 2, 100).await;
    let (served, failed) = (counts().0 - served0, counts().1 - failed0);
    assert_eq!(tally.ok, 200, "{tally:?}");
    assert!(failed >= 15, "{failed} failures in {served} answers");
    assert_eq!(served, 200 + failed, "one retry per failure");
    assert_eq!(proxy.metric(&retries(web.addr)).await, failed as f64);

    // The same backends behind a Service without a policy: the client sees
    // every failure, and nothing is retried.
    let (_, failed0) = counts();
    let tally = proxy.burst(plain.addr, "/hello", 2, 100).await;
    let failed = counts().1 - failed0;
    assert!(failed >= 15, "{failed} failures");
    assert_eq!(tally.failed, failed, "{tally:?}");
    let apps = tally.with_body("a failed as told\n") + tally.with_body("b failed as told\n");
    assert_eq!(apps, failed, "the app's answers, passed on: {tally:?}");
    assert_eq!(proxy.metric(&retries(plain.addr)).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_bounds_the_retries_of_one_request() {
    let down = Backend::start("down").await;
    down.fail(1, 1);
    let web = Svc::new("web", WEB)
        .annotate("weft.dev/retry-http", "5xx")
        .annotate("weft.dev/retry-limit", "3");
    let (_control, proxy) = setup(&[&web], &[&down], &[]).await;
    let r = proxy.get(web.addr, "/hello").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body, "down failed as told\n", "the app's last answer");
    assert_eq!(r.proxy_error(), None);
    assert_eq!(down.requests(), 4, "one attempt and three retries");
    assert_eq!(proxy.metric(&retries(web.addr)).await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_the_extra_load_of_retries() {
    let flaky = Backend::start("flaky").await;
    flaky.fail(3, 5);
    // 60% failing, up to 3 retries each: without a budget that would more
    // than double the load. The budget allows 20% more, and no minimum.
    let web = Svc::new("web", WEB)
        .annotate("weft.dev/retry-http", "5xx")
        .annotate("weft.dev/retry-limit", "3")
        .annotate("weft.dev/retry-budget", "0.2")
        .annotate("weft.dev/retry-min-per-second", "0");
    let (_control, proxy) = setup(&[&web], &[&flaky], &[]).await;
    let served0 = flaky.requests();
    let tally = proxy.burst(web.addr, "/hello", 1, 200).await;
    let extra = flaky.requests() - served0 - 200;
    assert_eq!(tally.sent(), 200);
    assert!(
        (30..=40).contains(&extra),
        "{extra} retries for 200 requests (the budget allows 40)"
    );
    assert_eq!(proxy.metric(&retries(web.addr)).await, extra as f64);
    let skipped = proxy
        .metric(&format!(
            "weft_retry_skipped_budget_total{{dst=\"{}\"}}",
            web.addr
        ))
        .await;
    assert!(skipped > 0.0, "the budget never refused a retry");
    assert!(
        tally.failed > 0,
        "with the budget spent, some failures reach the client"
    );
    let started = Instant::now();
    assert_eq!(proxy.admin_get("/ready").await.unwrap().status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_cannot_be_sent_again_are_sent_once() {
    let down = Backend::start("down").await;
    down.fail(1, 1);
    let web = Svc::new("web", WEB).annotate("weft.dev/retry-http", "5xx");
    let any = Svc::new("any", PLAIN)
        .annotate("weft.dev/retry-http", "5xx")
        .annotate("weft.dev/retry-non-idempotent", "true");
    let (_control, proxy) = setup(&[&web, &any], &[&down], &[]).await;
    let attempts = async |dst: SocketAddr, method: Method, body: Vec<u8>| {
        let before = down.requests();
        let r = proxy
            .h1(dst)
            .await
            .send(request(method, "/count", full(body)))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        down.requests() - before
    };
    assert_eq!(
        attempts(web.addr, Method::PUT, vec![1; 100]).await,
        3,
        "PUT is idempotent"
    );
    assert_eq!(
        attempts(web.addr, Method::POST, vec![1; 100]).await,
        1,
        "POST is not"
    );
    assert_eq!(
        attempts(any.addr, Method::POST, vec![1; 100]).await,
        3,
        "unless the Service says so"
    );
    // More than the 64 KiB kept to be sent again: streamed, once.
    assert_eq!(
        attempts(any.addr, Method::POST, vec![1; 100 * 1024]).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_statuses_are_retried_as_configured() {
    let flaky = Backend::start("flaky").await;
    flaky.fail(1, 2);
    let web = Svc::new("web", WEB)
        .annotate("weft.dev/retry-grpc", "unavailable")
        .annotate("weft.dev/retry-non-idempotent", "true");
    let (_control, proxy) = setup(&[&web], &[&flaky], &[]).await;
    let mut h2 = proxy.h2(web.addr).await;
    for _ in 0..5 {
        let mut req = support::post("/grpc?status=0", &b"\0\0\0\0\0"[..]);
        req.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        let r = h2.send(req).await.unwrap();
        assert_eq!(r.header("grpc-status"), Some("0"), "{r:?}");
    }
    assert_eq!(flaky.requests(), 10, "every other attempt failed");
    assert_eq!(proxy.metric(&retries(web.addr)).await, 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_broke_before_its_answer_is_retried_elsewhere() {
    let good = Backend::start("good").await;
    let broken = Server::hang_up().await;
    let web = Svc::new("web", WEB).annotate("weft.dev/retry-http", "connect-failure");
    let control = Control::start(&web.yaml(&[Ep::ready(good.addr), Ep::ready(broken.addr)])).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    proxy
        .wait_endpoints(web.addr, &[good.addr, broken.addr])
        .await;
    let tally = proxy.burst(web.addr, "/hello", 2, 20).await;
    assert_eq!(
        tally.with_body(&good.hello(Version::HTTP_11)),
        40,
        "{tally:?}"
    );
    assert!(
        proxy.metric(&retries(web.addr)).await >= 1.0,
        "the broken endpoint was tried, and the request retried"
    );
}

/// A request whose body arrives frame by frame, with no `content-length`
/// (as every gRPC client sends one): `chunks` of `size` bytes.
fn streamed(path: &str, grpc: bool, chunks: usize, size: usize) -> http::Request<Body> {
    let (tx, body) = channel();
    tokio::spawn(async move {
        for i in 0..chunks {
            let chunk = Bytes::from(vec![b'a' + (i % 26) as u8; size]);
            if tx.send(Frame::data(chunk)).await.is_err() {
                return;
            }
        }
    });
    let mut req = request(Method::POST, path, body);
    if grpc {
        req.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_bodies_without_a_length_are_retried_whole() {
    let flaky = Backend::start("flaky").await;
    flaky.fail(1, 2);
    let web = Svc::new("web", WEB)
        .annotate("weft.dev/retry-grpc", "unavailable")
        .annotate("weft.dev/retry-http", "5xx")
        .annotate("weft.dev/retry-non-idempotent", "true");
    let (_control, proxy) = setup(&[&web], &[&flaky], &[]).await;
    // gRPC over HTTP/2: the failure is a trailers-only UNAVAILABLE.
    let mut h2 = proxy.h2(web.addr).await;
    let r = h2.send(streamed("/count", true, 10, 4000)).await.unwrap();
    assert_eq!(r.body, "40000\n", "the retry sent the whole body: {r:?}");
    // HTTP/1.1, chunked: the failure is a 503.
    let r = proxy
        .h1(web.addr)
        .await
        .send(streamed("/count", false, 10, 4000))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body, "40000\n");
    assert_eq!(flaky.requests(), 4, "each failed once, then was retried");
    assert_eq!(proxy.metric(&retries(web.addr)).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_stream_is_not_held_back_until_its_end() {
    let echo = Backend::start("echo").await;
    let web = Svc::new("web", WEB)
        .annotate("weft.dev/retry-grpc", "unavailable")
        .annotate("weft.dev/retry-non-idempotent", "true");
    let (_control, proxy) = setup(&[&web], &[&echo], &[]).await;
    // A bidi stream: the client sends its next message only once it has
    // the answer to the one before, which a proxy gathering the body
    // before sending it would never let through.
    let (tx, body) = channel();
    let mut req = request(Method::POST, "/echo", body);
    req.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    let mut h2 = proxy.h2(web.addr).await;
    let mut rsp = h2.send_streaming(req).await.unwrap().into_body();
    for msg in ["ping 1", "ping 2", "ping 3"] {
        tx.send(Frame::data(Bytes::from(msg))).await.unwrap();
        let frame = tokio::time::timeout(WAIT, rsp.frame())
            .await
            .expect("the echo of the message before the next is sent")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_past_what_is_kept_is_sent_once_and_counted() {
    let down = Backend::start("down").await;
    down.fail(1, 1);
    let web = Svc::new("web", WEB)
        .annotate("weft.dev/retry-http", "5xx")
        .annotate("weft.dev/retry-non-idempotent", "true");
    let (_control, proxy) = setup(&[&web], &[&down], &[]).await;
    let r = proxy
        .h1(web.addr)
        .await
        .send(streamed("/count", false, 20, 4096))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.requests(), 1, "80 KiB: streamed through, not kept");
    let skipped = format!("weft_retry_skipped_body_total{{dst=\"{}\"}}", web.addr);
    assert_eq!(proxy.metric(&skipped).await, 1.0);
    assert_eq!(proxy.metric(&retries(web.addr)).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_fails_its_body_is_answered_400_and_not_retried() {
    let app = Backend::start("app").await;
    let web = Svc::new("web", WEB)
        .annotate("weft.dev/retry-http", "5xx,connect-failure")
        .annotate("weft.dev/retry-non-idempotent", "true");
    let (_control, proxy) = setup(&[&web], &[&app], &[]).await;
    let mut tcp = proxy.connect(web.addr).await;
    // 100 bytes announced, 10 sent, then the client's side closed.
    tcp.write_all(b"POST /count HTTP/1.1\r\nHost: web\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    tcp.shutdown().await.unwrap();
    let head = read_until(&mut tcp, "\r\n\r\n", WAIT).await;
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("weft-proxy-error: client body failed\r\n"),
        "{head}"
    );
    // Streamed once (the app may or may not have seen its head before the
    // body failed), never sent again.
    assert!(app.requests() <= 1, "sent {} times", app.requests());
    assert_eq!(proxy.metric(&retries(web.addr)).await, 0.0);
}
