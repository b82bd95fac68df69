//! The proxy's metric series are bounded: a destination's series go once
//! no connection uses them and they have been idle for
//! `--metrics-retain-idle`; a destination with a connection open keeps its
//! series however long it is quiet. gRPC responses are counted by their
//! status, from trailers or trailers-only headers.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

fn requests(dst: SocketAddr) -> String {
    format!("weft_request_total{{direction=\"outbound\",dst=\"{dst}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_of_an_idle_destination_are_evicted() {
    let kept = Backend::start("kept").await;
    let gone = Backend::start("gone").await;
    let proxy = Proxy::start(&["--metrics-retain-idle=1s"]).await;
    // A connection that stays open (quiet after its one request), and one
    // that closes: both requested before the close.
    let mut open = proxy.h1(kept.addr).await;
    open.get("/hello").await.unwrap();
    let mut closing = proxy.h1(gone.addr).await;
    closing.get("/hello").await.unwrap();
    assert_eq!(proxy.metric(&requests(kept.addr)).await, 1.0);
    assert_eq!(proxy.metric(&requests(gone.addr)).await, 1.0);
    drop(closing);
    let closed = Instant::now();

    let label = |dst: SocketAddr| format!("dst=\"{dst}\"");
    let scrape = eventually("the closed destination's series are gone", async || {
        let scrape = proxy.admin_get("/metrics").await?.body;
        anyhow::ensure!(!scrape.contains(&label(gone.addr)), "still there");
        Ok(scrape)
    })
    .await;
    let took = closed.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "evicted {took:?} after the close, before it was idle for 1 s"
    );
    // The same scrape: the open connection's destination, idle as long,
    // keeps every series.
    assert_eq!(metrics::sum(&scrape, &requests(kept.addr)), 1.0, "{scrape}");
    let open_now = format!(
        "weft_tcp_open_connections{{direction=\"outbound\",dst=\"{}\"}}",
        kept.addr
    );
    assert_eq!(metrics::sum(&scrape, &open_now), 1.0, "{scrape}");

    // The open connection still counts where it did.
    open.get("/hello").await.unwrap();
    assert_eq!(proxy.metric(&requests(kept.addr)).await, 2.0);
    // A new connection to the evicted destination starts its series afresh.
    proxy.get(gone.addr, "/hello").await;
    assert_eq!(proxy.metric(&requests(gone.addr)).await, 1.0);
    // And once closed, the kept one goes too.
    drop(open);
    eventually("the last destination's series are gone", async || {
        let scrape = proxy.admin_get("/metrics").await?.body;
        anyhow::ensure!(!scrape.contains(&label(kept.addr)), "still there");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_responses_are_counted_by_their_status() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&[]).await;
    let mut h2 = proxy.h2(app.addr).await;
    let calls = [
        ("/grpc?status=0&trailers=1", 3),
        ("/grpc?status=14&trailers=1", 2),
        ("/grpc?status=5", 1),
        ("/grpc?status=99&trailers=1", 1),
    ];
    for (path, n) in calls {
        for _ in 0..n {
            let mut req = support::post(path, &b"\0\0\0\0\0"[..]);
            req.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            let r = h2.send(req).await.unwrap();
            assert_eq!(r.status, http::StatusCode::OK, "{r:?}");
        }
    }
    // Not gRPC: not counted there.
    h2.get("/hello").await.unwrap();
    let series = |status: &str| {
        format!(
            "weft_grpc_response_total{{direction=\"outbound\",dst=\"{}\",grpc_status=\"{status}\"}}",
            app.addr
        )
    };
    // Counted when the body ends, which the client has read by now.
    for (status, n) in [("0", 3.0), ("14", 2.0), ("5", 1.0), ("other", 1.0)] {
        assert_eq!(
            proxy.metric(&series(status)).await,
            n,
            "grpc-status {status}"
        );
    }
    let all = format!("weft_grpc_response_total{{dst=\"{}\"}}", app.addr);
    assert_eq!(proxy.metric(&all).await, 7.0);
    let ok = format!(
        "weft_response_total{{dst=\"{}\",status_class=\"2xx\"}}",
        app.addr
    );
    assert_eq!(proxy.metric(&ok).await, 8.0, "all of them HTTP 200");
}
