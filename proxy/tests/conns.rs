//! Each balancer endpoint owns its upstream connections: concurrent first
//! HTTP/2 requests to an endpoint share the one connection being made, and
//! when discovery removes an endpoint its connections (idle HTTP/1 ones,
//! its HTTP/2 one) are closed.

mod support;

use support::*;

const WEB: &str = "127.96.1.20:8080";

/// Waits until no connection to `app` is open (the one `wait_endpoints`
/// forwards as opaque TCP among them).
async fn quiet(app: &Backend) {
    eventually(&format!("no connection to {} open", app.name), async || {
        anyhow::ensure!(app.open() == 0, "{} open", app.open());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_http2_requests_to_an_endpoint_share_one_connection() {
    let app = Backend::start("app").await;
    let web = Svc::new("web", WEB);
    let control = Control::start(&web.yaml(&[Ep::ready(app.addr)])).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    proxy.wait_endpoints(web.addr, &[app.addr]).await;
    quiet(&app).await;
    let before = app.connections();

    // Four client connections, five requests each, all at once: every one
    // finds no connection to the endpoint yet.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(proxy.h2(web.addr).await);
    }
    let calls: Vec<_> = clients
        .iter()
        .flat_map(|h2| {
            (0..5).map(move |_| {
                let mut h2 = h2.clone();
                tokio::spawn(async move { h2.get("/hello").await })
            })
        })
        .collect();
    for call in calls {
        let reply = call.await.expect("the request task").expect("a reply");
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    assert_eq!(
        app.connections() - before,
        1,
        "twenty concurrent first requests, one upstream connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_endpoint_s_connections_are_closed() {
    let (gone, stays) = (Backend::start("gone").await, Backend::start("stays").await);
    let web = Svc::new("web", WEB);
    let both = [Ep::ready(gone.addr), Ep::ready(stays.addr)];
    let control = Control::start(&web.yaml(&both)).await;
    let proxy = Proxy::with_control(&control, &[]).await;
    proxy
        .wait_endpoints(web.addr, &[gone.addr, stays.addr])
        .await;

    // HTTP/1 client connections that end (their upstream connections go
    // idle in the endpoints' pools), and an HTTP/2 one that stays open.
    let tally = proxy.burst(web.addr, "/hello", 4, 20).await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    let mut h2 = proxy.h2(web.addr).await;
    for _ in 0..20 {
        assert_eq!(h2.get("/hello").await.expect("a reply").status, 200);
    }
    assert!(gone.open() > 0, "the endpoint has connections to lose");

    control.apply(&web.yaml(&[Ep::ready(stays.addr)]));
    proxy.wait_endpoints(web.addr, &[stays.addr]).await;
    quiet(&gone).await;
    // The client's HTTP/2 connection is still served, by the endpoint left.
    let before = gone.requests();
    for _ in 0..5 {
        assert_eq!(h2.get("/hello").await.expect("a reply").status, 200);
    }
    assert_eq!(gone.requests(), before);
    assert!(stays.open() > 0);
}
