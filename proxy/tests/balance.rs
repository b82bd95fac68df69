//! Balancing over the endpoints weft-control names for a Service: a slow
//! endpoint gets few requests (Peak-EWMA, power of two choices), a
//! refusing one is ejected and its requests go elsewhere, an opaque port is
//! balanced per connection, an upgrade is spliced to one endpoint,
//! `internalTrafficPolicy: Local` keeps to the node, and terminating
//! endpoints serve only when no other is ready.

mod support;

use std::time::Duration;
use support::tcp::Refusing;
use support::*;

const WEB: &str = "127.96.1.10:8080";

fn ewma(dst: std::net::SocketAddr, endpoint: std::net::SocketAddr) -> String {
    format!("weft_balancer_endpoint_latency_ewma_ms{{dst=\"{dst}\",endpoint=\"{endpoint}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_gets_few_requests() {
    let fast = [
        Backend::start("fast-1").await,
        Backend::start("fast-2").await,
    ];
    let slow = Backend::start("slow").await;
    slow.set_delay(Duration::from_millis(50));
    let web = Svc::new("web", WEB);
    let eps: Vec<Ep> = [&fast[0], &fast[1], &slow]
        .iter()
        .map(|b| Ep::ready(b.addr))
        .collect();
    let control = Control::start(&web.yaml(&eps)).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    proxy
        .wait_endpoints(web.addr, &[fast[0].addr, fast[1].addr, slow.addr])
        .await;

    let tally = proxy.burst(web.addr, "/hello", 8, 60).await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    let served = [fast[0].requests(), fast[1].requests(), slow.requests()];
    let share = served[2] as f64 / served.iter().sum::<u64>() as f64;
    assert!(
        share < 0.10,
        "the slow endpoint served {:.1}% of the requests: {served:?}",
        share * 100.0
    );
    assert!(
        served[0] > 0 && served[1] > 0,
        "both fast endpoints served: {served:?}"
    );
    // Every answer of the slow one took 50 ms at least: its estimate says so.
    let slow_ms = proxy.metric(&ewma(web.addr, slow.addr)).await;
    assert!(
        slow_ms > 40.0,
        "the slow endpoint's estimate is {slow_ms} ms"
    );
    let ready = format!(
        "weft_balancer_endpoints{{dst=\"{}\",state=\"ready\"}}",
        web.addr
    );
    assert_eq!(proxy.metric(&ready).await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_endpoint_is_ejected_and_its_requests_go_elsewhere() {
    let good = Backend::start("good").await;
    let refusing = Refusing::new();
    let bad = refusing.addr;
    let web = Svc::new("web", WEB);
    let control = Control::start(&web.yaml(&[Ep::ready(good.addr), Ep::ready(bad)])).await;
    let proxy = Proxy::with_control(
        &control,
        &["--failure-accrual=1", "--failure-backoff-min=10s"],
    )
    .await;
    proxy.wait_endpoints(web.addr, &[good.addr, bad]).await;

    // Connecting failed, so nothing was sent: another endpoint is tried.
    let tally = proxy.burst(web.addr, "/hello", 2, 25).await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert_eq!(good.requests(), 50);
    let dst = web.addr;
    assert_eq!(
        proxy
            .metric(&format!(
                "weft_balancer_endpoint_ejections_total{{dst=\"{dst}\"}}"
            ))
            .await,
        1.0,
        "ejected once, for the backoff's 10 s"
    );
    assert_eq!(
        proxy
            .metric(&format!(
                "weft_balancer_endpoints{{dst=\"{dst}\",state=\"ejected\"}}"
            ))
            .await,
        1.0
    );
    assert_eq!(
        proxy
            .metric(&format!(
                "weft_balancer_endpoints{{dst=\"{dst}\",state=\"ready\"}}"
            ))
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_service_port_is_balanced_per_connection() {
    let backends = [Backend::start("a").await, Backend::start("b").await];
    for b in &backends {
        b.set_delay(Duration::from_millis(300));
    }
    // The Service marks its port opaque: no detection, one endpoint per
    // connection, the bytes copied as they are. Each connection open counts
    // as load on its endpoint, so ten at once spread over both.
    let web = Svc::new("web", WEB).annotate("weft.dev/opaque-ports", "8080");
    let eps: Vec<Ep> = backends.iter().map(|b| Ep::ready(b.addr)).collect();
    let control = Control::start(&web.yaml(&eps)).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    proxy
        .wait_endpoints(web.addr, &[backends[0].addr, backends[1].addr])
        .await;

    let tally = proxy.burst(web.addr, "/hello", 10, 1).await;
    assert_eq!(tally.ok, 10, "{tally:?}");
    let served = [backends[0].requests(), backends[1].requests()];
    assert!(
        served.iter().all(|n| *n > 0) && served.iter().sum::<u64>() == 10,
        "{served:?}"
    );
    // The HTTP inside was not looked at: no request was counted as one.
    assert_eq!(
        proxy
            .metric("weft_protocol_detect_total{direction=\"outbound\",protocol=\"opaque_port\"}")
            .await,
        11.0,
        "ten connections, and the one that started the watch"
    );
    assert_eq!(proxy.metric("weft_request_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_traffic_policy_local_keeps_to_the_node() {
    let here = Backend::start("here").await;
    let there = Backend::start("there").await;
    let web = Svc::new("web", WEB).spec("internalTrafficPolicy: Local");
    let eps = [
        Ep::ready(here.addr).on_node("node-1"),
        Ep::ready(there.addr).on_node("node-2"),
    ];
    let control = Control::start(&web.yaml(&eps)).await;
    let proxy = Proxy::with_control(&control, &["--node-name=node-1"]).await;
    proxy
        .wait_endpoints(web.addr, &[here.addr, there.addr])
        .await;

    let tally = proxy.burst(web.addr, "/hello", 2, 10).await;
    assert_eq!(
        tally.with_body("hello from here via HTTP/1.1\n"),
        20,
        "{tally:?}"
    );
    assert_eq!(there.requests(), 0);
    let dst = web.addr;
    for (state, n) in [("ready", 1.0), ("other", 1.0)] {
        let series = format!("weft_balancer_endpoints{{dst=\"{dst}\",state=\"{state}\"}}");
        assert_eq!(proxy.metric(&series).await, n, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_endpoints_serve_only_when_none_is_ready() {
    let ready = Backend::start("ready").await;
    let draining = Backend::start("draining").await;
    let web = Svc::new("web", WEB);
    let control =
        Control::start(&web.yaml(&[Ep::ready(ready.addr), Ep::terminating(draining.addr)])).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    proxy
        .wait_endpoints(web.addr, &[ready.addr, draining.addr])
        .await;
    let tally = proxy.burst(web.addr, "/hello", 2, 10).await;
    assert_eq!(
        tally.with_body(&ready.hello(http::Version::HTTP_11)),
        20,
        "{tally:?}"
    );
    assert_eq!(draining.requests(), 0);

    // The ready one gone: better a draining pod than nothing.
    control.apply(&web.yaml(&[Ep::terminating(draining.addr)]));
    proxy.wait_endpoints(web.addr, &[draining.addr]).await;
    let tally = proxy.burst(web.addr, "/hello", 2, 10).await;
    assert_eq!(
        tally.with_body(&draining.hello(http::Version::HTTP_11)),
        20,
        "{tally:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_to_a_service_is_spliced_to_one_of_its_endpoints() {
    use support::client::read_until;
    use tokio::io::AsyncWriteExt;
    let backends = [Backend::start("a").await, Backend::start("b").await];
    let web = Svc::new("web", WEB);
    let eps: Vec<Ep> = backends.iter().map(|b| Ep::ready(b.addr)).collect();
    let control = Control::start(&web.yaml(&eps)).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    proxy
        .wait_endpoints(web.addr, &[backends[0].addr, backends[1].addr])
        .await;
    let mut tcp = proxy.connect(web.addr).await;
    tcp.write_all(
        b"GET /chat HTTP/1.1\r\nHost: web\r\nConnection: upgrade\r\nUpgrade: weft-echo\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_until(&mut tcp, "\r\n\r\n", WAIT).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp.write_all(b"one stream of bytes").await.unwrap();
    let echo = read_until(&mut tcp, "one stream of bytes", WAIT).await;
    assert_eq!(echo, "one stream of bytes");
    assert_eq!(backends[0].requests() + backends[1].requests(), 1);
}
