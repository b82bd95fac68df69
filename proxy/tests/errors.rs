//! The answers the proxy makes itself: each names its reason in the
//! `weft-proxy-error` header (and in `weft_proxy_error_total`), HTTP
//! clients get a status that says what happened, gRPC clients a gRPC
//! status; the app's own errors pass untouched.

mod support;

use http::StatusCode;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::tcp::{Refusing, Server, Unanswering};
use support::*;

const WEB: &str = "127.96.5.10:8080";

fn errors(dst: SocketAddr, reason: &str) -> String {
    format!("weft_proxy_error_total{{dst=\"{dst}\",reason=\"{reason}\"}}")
}

/// A gRPC call (HTTP/2, `application/grpc`) to `dst`.
async fn grpc(proxy: &Proxy, dst: SocketAddr) -> Reply {
    let mut req = support::post("/grpc?status=0", &b"\0\0\0\0\0"[..]);
    req.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    proxy.h2(dst).await.send(req).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_502_connect_refused() {
    let refusing = Refusing::new();
    let nobody = refusing.addr;
    let proxy = Proxy::start(&[]).await;
    let r = proxy.get(nobody, "/hello").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.proxy_error(), Some("connect refused"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(r.body.contains(&nobody.to_string()), "{}", r.body);
    // The same over HTTP/2.
    let r = proxy.h2(nobody).await.get("/hello").await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.proxy_error(), Some("connect refused"));
    // gRPC: UNAVAILABLE, as a trailers-only answer.
    let r = grpc(&proxy, nobody).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("grpc-status"), Some("14"));
    assert_eq!(r.header("grpc-message"), Some("connect refused"));
    assert_eq!(r.proxy_error(), Some("connect refused"));

    assert_eq!(proxy.metric(&errors(nobody, "connect refused")).await, 3.0);
    let five = format!("weft_response_total{{dst=\"{nobody}\",status_class=\"5xx\"}}");
    assert_eq!(proxy.metric(&five).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_gets_no_answer_is_504_connect_timeout() {
    let silent = Unanswering::new();
    let proxy = Proxy::start(&["--connect-timeout=300ms"]).await;
    let started = Instant::now();
    let r = proxy.get(silent.addr, "/hello").await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.proxy_error(), Some("connect timeout"));
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "answered after {took:?}"
    );
    assert_eq!(
        proxy.metric(&errors(silent.addr, "connect timeout")).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_hangs_up_is_502_upstream_failed() {
    let rude = Server::hang_up().await;
    let proxy = Proxy::start(&[]).await;
    let r = proxy.get(rude.addr, "/hello").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.proxy_error(), Some("upstream failed"));
    assert_eq!(
        proxy.metric(&errors(rude.addr, "upstream failed")).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_endpoints_is_503_no_endpoints() {
    let web = Svc::new("web", WEB);
    let control = Control::start(&web.yaml(&[])).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    let started = Instant::now();
    let r = proxy.get(web.addr, "/hello").await;
    assert!(started.elapsed() < Duration::from_secs(1), "at once");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.proxy_error(), Some("no endpoints"));
    let r = grpc(&proxy, web.addr).await;
    assert_eq!(r.header("grpc-status"), Some("14"));
    assert_eq!(r.proxy_error(), Some("no endpoints"));
    assert_eq!(proxy.metric(&errors(web.addr, "no endpoints")).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_that_all_refuse_are_502_then_503_once_ejected() {
    let refusing = [Refusing::new(), Refusing::new()];
    let (one, two) = (refusing[0].addr, refusing[1].addr);
    let web = Svc::new("web", WEB);
    let control = Control::start(&web.yaml(&[Ep::ready(one), Ep::ready(two)])).await;
    let proxy = Proxy::with_control(
        &control,
        &["--failure-accrual=2", "--failure-backoff-min=10s"],
    )
    .await;
    // The first request (which waits for discovery's answer) tries three
    // times: each endpoint fails once or twice, at most one is ejected.
    let r = proxy.get(web.addr, "/hello").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.proxy_error(), Some("connect refused"));
    // Two failures in a row eject an endpoint: once both are out, the
    // proxy says so at once, without trying.
    let ejected = format!(
        "weft_balancer_endpoints{{dst=\"{}\",state=\"ejected\"}}",
        web.addr
    );
    eventually("both endpoints are ejected", async || {
        let r = proxy.get(web.addr, "/hello").await;
        anyhow::ensure!(proxy.metric(&ejected).await == 2.0, "{r:?}");
        Ok(())
    })
    .await;
    let r = proxy.get(web.addr, "/hello").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.proxy_error(), Some("endpoints failing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_own_errors_pass_unmarked() {
    let app = Backend::start("app").await;
    let web = Svc::new("web", WEB);
    let control = Control::start(&web.yaml(&[Ep::ready(app.addr)])).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    for dst in [web.addr, app.addr] {
        let r = proxy.get(dst, "/status?code=503").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.body, "app answered 503\n");
        assert_eq!(r.proxy_error(), None);
        let r = proxy.h2(dst).await.get("/status?code=500").await.unwrap();
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.proxy_error(), None);
        assert_eq!(
            proxy
                .metric(&format!("weft_proxy_error_total{{dst=\"{dst}\"}}"))
                .await,
            0.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_to_a_port_nothing_listens_on_is_502() {
    let refusing = Refusing::new();
    let nobody = refusing.addr;
    let proxy = Proxy::start(&[]).await;
    let r = H1::handshake(proxy.connect_inbound(nobody).await)
        .await
        .get("/")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.proxy_error(), Some("connect refused"));
    let series = format!(
        "weft_proxy_error_total{{direction=\"inbound\",dst=\"{nobody}\",reason=\"connect refused\"}}"
    );
    assert_eq!(proxy.metric(&series).await, 1.0);
}
