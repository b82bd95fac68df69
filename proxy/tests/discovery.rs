//! Discovery as the proxy lives it with weft-control: addresses outside
//! every Service forwarded as they are (DoesNotExist), a Service appearing
//! and going away at an address, endpoints replaced under load without a
//! failed request, a Service left without endpoints and back, the last
//! endpoints kept while the control plane is away (stale), destinations
//! never resolved falling back to their original address, a control plane
//! restarted on the same address, and idle destinations dropped.

mod support;

use http::{StatusCode, Version};
use std::time::{Duration, Instant};
use support::*;

const WEB: &str = "127.96.4.10:8080";

fn stale(dst: std::net::SocketAddr) -> String {
    format!("weft_discovery_stale{{dst=\"{dst}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_outside_every_service_is_forwarded_as_it_is() {
    let a = Backend::start("a").await;
    let pod = Backend::start("pod").await;
    let web = Svc::new("web", WEB);
    let control = Control::start(&web.yaml(&[Ep::ready(a.addr)])).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    // A pod's own address is no Service: forwarded to where the app sent it.
    let r = proxy.get(pod.addr, "/hello").await;
    assert_eq!(r.body, pod.hello(Version::HTTP_11));
    let r = proxy.get(web.addr, "/hello").await;
    assert_eq!(r.body, a.hello(Version::HTTP_11));
    assert_eq!(pod.requests() + a.requests(), 2);
    assert_eq!(
        proxy.metric("weft_discovery_fallbacks_total").await,
        0.0,
        "both were answered by discovery, neither fell back"
    );
    assert!(proxy.metric("weft_discovery_updates_total").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_appearing_or_going_away_at_an_address_changes_its_route() {
    // What answers at the address itself when it is no Service (here a
    // stand-in; in a cluster, whatever the address is).
    let direct = Backend::start_on("direct", support::addr("127.96.4.20:0")).await;
    let a = Backend::start("a").await;
    let svc = Svc {
        addr: direct.addr,
        ..Svc::new("late", WEB)
    };
    let control = Control::start(support::control::NOTHING).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    let body = async || proxy.get(direct.addr, "/hello").await.body;
    assert_eq!(body().await, direct.hello(Version::HTTP_11));

    control.apply(&svc.yaml(&[Ep::ready(a.addr)]));
    eventually("new connections go to the Service's endpoint", async || {
        let got = body().await;
        anyhow::ensure!(got == a.hello(Version::HTTP_11), "{got}");
        Ok(())
    })
    .await;

    control.apply(support::control::NOTHING);
    eventually(
        "the Service is gone: forwarded as it is again",
        async || {
            let got = body().await;
            anyhow::ensure!(got == direct.hello(Version::HTTP_11), "{got}");
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_replaced_under_load_lose_no_request() {
    let all: Vec<Backend> = backends(["a", "b", "x", "y"]).await;
    let (a, b, x, y) = (&all[0], &all[1], &all[2], &all[3]);
    let web = Svc::new("web", WEB);
    let eps = |list: &[&Backend]| -> Vec<Ep> { list.iter().map(|e| Ep::ready(e.addr)).collect() };
    let control = Control::start(&web.yaml(&eps(&[a, b]))).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    proxy.wait_endpoints(web.addr, &[a.addr, b.addr]).await;

    // Every endpoint replaced, one step at a time, under load. A replaced
    // backend keeps serving (as a terminating pod drains): once its removal
    // has reached the proxy, it gets nothing more.
    let load = proxy.load(web.addr, "/hello", 4);
    for step in [vec![a, b, x], vec![b, x], vec![b, x, y], vec![x, y]] {
        control.apply(&web.yaml(&eps(&step)));
        let addrs: Vec<_> = step.iter().map(|e| e.addr).collect();
        proxy.wait_endpoints(web.addr, &addrs).await;
        let before: u64 = step.iter().map(|e| e.requests()).sum();
        eventually("the step's endpoints take requests", async || {
            let now: u64 = step.iter().map(|e| e.requests()).sum();
            anyhow::ensure!(now >= before + 20, "{} more", now - before);
            Ok(())
        })
        .await;
    }
    let tally = load.stop().await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert!(tally.ok > 100, "{tally:?}");

    let replaced = a.requests() + b.requests();
    let tally = proxy.burst(web.addr, "/hello", 2, 25).await;
    assert_eq!(tally.ok, 50);
    assert_eq!(
        a.requests() + b.requests(),
        replaced,
        "replaced backends get nothing"
    );
    assert!(x.requests() > 0 && y.requests() > 0);
}

/// Backends called `names`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_left_without_endpoints_answers_503_until_they_are_back() {
    let a = Backend::start("a").await;
    let web = Svc::new("web", WEB);
    let control = Control::start(&web.yaml(&[Ep::ready(a.addr)])).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    proxy.wait_endpoints(web.addr, &[a.addr]).await;

    control.apply(&web.yaml(&[]));
    proxy.wait_endpoints(web.addr, &[]).await;
    let r = proxy.get(web.addr, "/hello").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.proxy_error(), Some("no endpoints"));
    assert_eq!(a.requests(), 0, "not sent to the last endpoint known");

    control.apply(&web.yaml(&[Ep::ready(a.addr)]));
    proxy.wait_endpoints(web.addr, &[a.addr]).await;
    assert_eq!(
        proxy.get(web.addr, "/hello").await.body,
        a.hello(Version::HTTP_11)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_endpoints_hold_while_the_control_plane_is_away_and_a_restart_resumes() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let direct = Backend::start_on("direct", support::addr("127.96.4.21:0")).await;
    let web = Svc::new("web", WEB);
    let mut control = Control::start(&web.yaml(&[Ep::ready(a.addr)])).await;
    let proxy = Proxy::with_control(&control, &["--resolve-timeout=300ms"]).await;
    proxy.wait_endpoints(web.addr, &[a.addr]).await;

    // The control plane goes away: the Service's stream is stale, its last
    // endpoints keep serving.
    control.stop().await;
    proxy.wait_metric(&stale(web.addr), 1.0).await;
    let tally = proxy.burst(web.addr, "/hello", 2, 10).await;
    assert_eq!(tally.with_body(&a.hello(Version::HTTP_11)), 20, "{tally:?}");

    // A destination never resolved waits for the resolve timeout, then is
    // forwarded to its original address.
    let started = Instant::now();
    let r = proxy.get(direct.addr, "/hello").await;
    let took = started.elapsed();
    assert_eq!(r.body, direct.hello(Version::HTTP_11));
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "answered after {took:?}"
    );
    assert_eq!(proxy.metric("weft_discovery_fallbacks_total").await, 1.0);

    // Back on the same address, with a change made meanwhile: the stream
    // resumes and the change reaches the proxy.
    control.apply(&web.yaml(&[Ep::ready(b.addr)]));
    control.restart().await;
    proxy.wait_endpoints(web.addr, &[b.addr]).await;
    let tally = proxy.burst(web.addr, "/hello", 2, 10).await;
    assert_eq!(tally.with_body(&b.hello(Version::HTTP_11)), 20, "{tally:?}");
    assert!(proxy.metric("weft_discovery_stream_errors_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_destinations_are_dropped_and_held_ones_kept() {
    let a = Backend::start("a").await;
    let web = Svc::new("web", WEB);
    let other = Svc::new("other", "127.96.4.11:8080");
    let yaml = [
        web.yaml(&[Ep::ready(a.addr)]),
        other.yaml(&[Ep::ready(a.addr)]),
    ]
    .join("---\n");
    let control = Control::start(&yaml).await;
    let proxy = Proxy::with_control(&control, &["--discovery-idle-timeout=300ms"]).await;
    // `web` held by a client connection; `other` used once and left.
    let mut held = proxy.h1(web.addr).await;
    assert_eq!(held.get("/hello").await.unwrap().status, 200);
    assert_eq!(proxy.get(other.addr, "/hello").await.status, 200);
    proxy.wait_metric("weft_discovery_destinations", 2.0).await;

    proxy.wait_metric("weft_discovery_destinations", 1.0).await;
    assert!(
        !proxy.endpoints(web.addr).await.is_empty(),
        "the destination a connection holds stays"
    );
    assert!(proxy.endpoints(other.addr).await.is_empty());
    assert_eq!(held.get("/hello").await.unwrap().status, 200);
    // Used again: watched again.
    proxy.wait_endpoints(other.addr, &[a.addr]).await;
}
