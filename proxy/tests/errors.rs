//! The answers the proxy makes itself: each names its reason in the
//! `weft-proxy-error` header (and in `weft_proxy_error_total`), HTTP
//! clients get a status that says what happened, gRPC clients a gRPC
//! status; the app's own errors pass untouched. A proxy without a
//! certificate of its own says so at once, and blames no endpoint for it.

mod support;

use http::StatusCode;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::tcp::{Refusing, Server, Unanswering};
use support::*;
use weft_proxy::test_util::OrigDst;

const WEB: &str = "127.96.5.10:8080";
const API: &str = "127.96.5.20:8080";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_without_its_own_certificate_is_503_no_identity_at_once() {
    let apps = [Backend::start("api-0").await, Backend::start("api-1").await];
    let api = Svc::new("api", API);
    let endpoints = [
        Ep::ready(apps[0].addr).meshed("api-0", "api"),
        Ep::ready(apps[1].addr).meshed("api-1", "api"),
    ];
    let ca = Ca::new(&["client", "api"]);
    let control = Control::with_identity(&api.yaml(&endpoints), &ca).await;
    // It claims to run as `client` with the token of `api`: Certify refuses
    // it, again on every renewal, and it never holds a certificate.
    let mut args = ca.proxy_args_with_token_of("client", "api");
    args.push(format!("--control-addr={}", control.addr()));
    args.push("--connect-timeout=2s".into());
    let proxy = Proxy::launch(OrigDst::default(), &args);
    eventually("Certify refused the proxy", async || {
        let refused = proxy
            .metric("weft_identity_certify_total{result=\"error\"}")
            .await;
        anyhow::ensure!(refused >= 1.0, "no refusal yet");
        let r = proxy.admin_get("/ready").await?;
        anyhow::ensure!(r.status == StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
        anyhow::ensure!(r.body.contains("no certificate"), "{}", r.body);
        Ok(())
    })
    .await;
    proxy
        .wait_endpoints(api.addr, &[apps[0].addr, apps[1].addr])
        .await;

    // (The connection that made the proxy watch the Service failed so too.)
    let before = proxy.metric(&errors(api.addr, "no identity")).await;

    // More requests than --failure-accrual (5) needs to eject both.
    let mut h1 = proxy.h1(api.addr).await;
    for n in 0..12 {
        let started = Instant::now();
        let r = h1.get("/hello").await.unwrap();
        let took = started.elapsed();
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "request {n}: {r:?}"
        );
        assert_eq!(r.proxy_error(), Some("no identity"), "request {n}: {r:?}");
        assert!(
            took < Duration::from_secs(1),
            "request {n} answered after {took:?} (connect timeout 2 s)"
        );
    }
    for n in 0..3 {
        let started = Instant::now();
        let r = grpc(&proxy, api.addr).await;
        let took = started.elapsed();
        assert_eq!(r.status, StatusCode::OK, "call {n}: {r:?}");
        assert_eq!(r.header("grpc-status"), Some("14"), "call {n}: {r:?}");
        assert_eq!(r.proxy_error(), Some("no identity"), "call {n}: {r:?}");
        assert!(took < Duration::from_secs(1), "call {n} took {took:?}");
    }
    assert_eq!(
        proxy.metric(&errors(api.addr, "no identity")).await - before,
        15.0
    );
    // Not the endpoints' fault: none is marked failed or ejected.
    let dst = api.addr;
    assert_eq!(
        proxy
            .metric(&format!(
                "weft_balancer_endpoint_ejections_total{{dst=\"{dst}\"}}"
            ))
            .await,
        0.0
    );
    let state = |s: &str| format!("weft_balancer_endpoints{{dst=\"{dst}\",state=\"{s}\"}}");
    assert_eq!(proxy.metric(&state("ready")).await, 2.0);
    assert_eq!(proxy.metric(&state("ejected")).await, 0.0);
    assert_eq!(apps[0].requests() + apps[1].requests(), 0);
}
