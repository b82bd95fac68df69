//! The proxy's life: the admin port (`/live`, `/ready`, `/metrics`,
//! `/config`, `/identity`, `/shutdown`), `/shutdown` from loopback, a drain
//! on the termination signal that lets requests in flight and upgraded
//! connections finish, and a grace period that ends the rest; not ready
//! until the control plane has been reached, and a control-plane address
//! that cannot work refused before start.

mod support;

use http::StatusCode;
use std::time::{Duration, Instant};
use support::client::read_until;
use support::control::NOTHING;
use support::metrics;
use support::tcp::Refusing;
use support::*;
use tokio::io::AsyncWriteExt;
use weft_proxy::test_util::OrigDst;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_serves_probes_metrics_and_config() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&[]).await;
    proxy.get(app.addr, "/hello").await;

    let get = async |path: &str| proxy.admin_get(path).await.unwrap();
    assert_eq!(get("/live").await.body, "live\n");
    assert_eq!(get("/ready").await.body, "ready\n");
    let config = get("/config").await;
    assert!(
        config.body.contains("outbound_addr: 127.0.0.1:0"),
        "{}",
        config.body
    );
    let metrics = get("/metrics").await;
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "# TYPE weft_response_latency_ms histogram",
        "weft_request_total{",
    ] {
        assert!(metrics.body.contains(family), "no {family} in /metrics");
    }
    let identity = get("/identity").await;
    assert_eq!(identity.status, StatusCode::NOT_FOUND, "mesh TLS is off");
    assert_eq!(get("/nothing").await.status, StatusCode::NOT_FOUND);
    let shutdown = get("/shutdown").await;
    assert_eq!(shutdown.status, StatusCode::FORBIDDEN, "GET is not POST");
    assert_eq!(get("/ready").await.status, StatusCode::OK, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_shutdown_from_loopback_stops_the_proxy() {
    let mut proxy = Proxy::start(&[]).await;
    let tcp = tokio::net::TcpStream::connect(proxy.admin).await.unwrap();
    let mut admin = H1::handshake(tcp).await;
    let r = admin
        .send(support::client::post("/shutdown", ""))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "shutting down\n");
    assert!(proxy.exited(WAIT).await, "run() returns after /shutdown");
    assert!(
        tokio::net::TcpStream::connect(proxy.outbound)
            .await
            .is_err(),
        "nothing listens on the outbound port any more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_lets_requests_in_flight_finish() {
    let app = Backend::start("app").await;
    let mut proxy = Proxy::start(&["--shutdown-grace=5s"]).await;
    let mut in_flight = Vec::new();
    for _ in 0..3 {
        let mut h1 = proxy.h1(app.addr).await;
        in_flight.push(tokio::spawn(async move {
            h1.get("/slow?ms=600").await.map(|r| r.body)
        }));
    }
    eventually("three requests reached the backend", async || {
        anyhow::ensure!(app.requests() == 3, "{} requests", app.requests());
        Ok(())
    })
    .await;
    let started = Instant::now();
    proxy.terminate();
    // Draining: probes still answer, but no longer ready.
    eventually("/ready says draining", async || {
        let r = proxy.admin_get("/ready").await?;
        anyhow::ensure!(r.status == StatusCode::SERVICE_UNAVAILABLE, "{}", r.status);
        Ok(())
    })
    .await;
    for call in in_flight {
        assert_eq!(call.await.unwrap().unwrap(), "slow done\n");
    }
    assert!(proxy.exited(WAIT).await, "run() returns once drained");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(3),
        "the drain took {took:?}"
    );
    assert!(tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_for_an_upgraded_connection() {
    let app = Backend::start("app").await;
    let mut proxy = Proxy::start(&["--shutdown-grace=10s"]).await;
    let mut tcp = proxy.connect(app.addr).await;
    tcp.write_all(
        b"GET /chat HTTP/1.1\r\nHost: app\r\nConnection: upgrade\r\nUpgrade: weft-echo\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_until(&mut tcp, "\r\n\r\n", WAIT).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    proxy.terminate();
    eventually("/ready says draining", async || {
        let r = proxy.admin_get("/ready").await?;
        anyhow::ensure!(r.status == StatusCode::SERVICE_UNAVAILABLE, "{}", r.status);
        Ok(())
    })
    .await;
    // Draining, and the upgraded connection still carries bytes both ways.
    tcp.write_all(b"still here").await.unwrap();
    assert_eq!(read_until(&mut tcp, "still here", WAIT).await, "still here");
    assert!(
        !proxy.exited(Duration::from_millis(200)).await,
        "run() waits for it"
    );
    // Once the client is done, the drain is complete.
    tcp.shutdown().await.unwrap();
    assert!(proxy.exited(WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_ends_what_is_still_open() {
    let app = Backend::start("app").await;
    let mut proxy = Proxy::start(&["--shutdown-grace=300ms"]).await;
    let mut h1 = proxy.h1(app.addr).await;
    let call = tokio::spawn(async move { h1.get("/slow?ms=3000").await });
    eventually("the request reached the backend", async || {
        anyhow::ensure!(app.requests() == 1, "{} requests", app.requests());
        Ok(())
    })
    .await;
    let started = Instant::now();
    proxy.terminate();
    assert!(proxy.exited(WAIT).await);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "stopped after {took:?} (grace 300 ms)"
    );
    // The connection the grace period cut is closed once run() has returned,
    // not answered when the backend is done 3 s later.
    let result = tokio::time::timeout(Duration::from_millis(500), call)
        .await
        .expect("the client connection ends with run()")
        .unwrap();
    assert!(
        result.is_err(),
        "answered after the grace period: {result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_waits_for_the_control_plane() {
    // Where the control plane will be; nothing listens there yet.
    let unreached = Refusing::new();
    let addr = unreached.addr;
    let proxy = Proxy::launch(OrigDst::default(), &[format!("--control-addr={addr}")]);
    // Plain "not ready" until the listeners run (the admin server may
    // answer first), then the reason: 503 throughout.
    eventually("/ready names the unreached control plane", async || {
        let r = proxy.admin_get("/ready").await?;
        anyhow::ensure!(r.status == StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
        anyhow::ensure!(
            r.body.contains("the control plane has not been reached"),
            "{}",
            r.body
        );
        Ok(())
    })
    .await;
    assert_eq!(
        proxy.admin_get("/live").await.unwrap().status,
        StatusCode::OK
    );

    // The port freed and taken by the control plane at once.
    drop(unreached);
    let _control = Control::start_on(NOTHING, addr).await;
    eventually("/ready once the control plane is up", async || {
        let r = proxy.admin_get("/ready").await?;
        anyhow::ensure!(r.status == StatusCode::OK, "{} {}", r.status, r.body);
        anyhow::ensure!(r.body == "ready\n", "{}", r.body);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_address_that_cannot_work_is_refused_before_start() {
    let config = support::proxy::config(&["--control-addr=not-an-address".to_string()]);
    // Before anything is bound.
    let e = weft_proxy::run::check(&config).unwrap_err();
    assert!(e.contains("--control-addr"), "{e}");
    assert!(e.contains("not-an-address"), "{e}");
    // And run() itself returns the error rather than serving.
    let bound = weft_proxy::run::Bound::bind(&config).unwrap();
    let [outbound, ..] = bound.addrs().unwrap();
    let ran = tokio::time::timeout(
        WAIT,
        weft_proxy::run::run(config, bound, OrigDst::default(), std::future::pending()),
    )
    .await
    .expect("run() returns at once");
    let e = ran.unwrap_err();
    assert!(e.contains("--control-addr"), "{e}");
    assert!(
        tokio::net::TcpStream::connect(outbound).await.is_err(),
        "nothing listens once run() has returned"
    );
}

/// The scrape reader every test relies on (`support::metrics`).
#[test]
fn scrapes_are_read_by_label_subset() {
    let scrape = "# TYPE weft_request counter\n\
        weft_request_total{direction=\"inbound\",dst=\"127.0.0.1:80\",tls=\"true\"} 2\n\
        weft_request_total{direction=\"inbound\",dst=\"127.0.0.1:80\",tls=\"false\"} 3\n\
        weft_request_total{direction=\"outbound\",dst=\"127.0.0.1:80\",tls=\"false\"} 7\n\
        # EOF\n";
    assert_eq!(
        metrics::sum(scrape, "weft_request_total{direction=\"inbound\"}"),
        5.0
    );
    assert_eq!(
        metrics::sum(
            scrape,
            "weft_request_total{tls=\"true\",direction=\"inbound\"}"
        ),
        2.0
    );
    assert_eq!(metrics::sum(scrape, "weft_request_total"), 12.0);
    assert_eq!(
        metrics::sum(scrape, "weft_request_total{direction=\"up\"}"),
        0.0
    );
    assert_eq!(
        metrics::sum(scrape, "weft_request{direction=\"inbound\"}"),
        0.0
    );
    assert_eq!(
        metrics::label_values(scrape, "weft_request_total{direction=\"inbound\"}", "tls"),
        ["true", "false"]
    );
}
