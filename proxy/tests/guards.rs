//! What the proxy refuses: connections to itself (a loop) or without an
//! original destination, oversized and too many headers, headers sent too
//! slowly, malformed requests, an HTTP/2 rapid-reset flood; and the
//! connection limit, which makes further clients wait.

mod support;

use std::time::{Duration, Instant};
use support::client::{exchange, read_until, read_until_closed};
use support::*;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_and_connections_without_an_original_destination_are_refused() {
    let proxy = Proxy::start(&[]).await;
    // Connecting to the proxy's own port: nothing redirected it, so
    // forwarding it would connect the proxy to itself.
    let mut tcp = proxy.connect(proxy.outbound).await;
    let answer = exchange(&mut tcp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", WAIT).await;
    assert_eq!(answer, "", "closed without an answer");
    // Not redirected at all: no original destination to be found.
    let mut tcp = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    let answer = exchange(&mut tcp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", WAIT).await;
    assert_eq!(answer, "");
    for reason in ["loop", "no_orig_dst"] {
        let series =
            format!("weft_tcp_refused_total{{direction=\"outbound\",reason=\"{reason}\"}}");
        assert_eq!(proxy.metric(&series).await, 1.0, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_many_and_malformed_headers_are_answered_by_the_proxy() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&["--max-headers=50"]).await;
    let big = format!(
        "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let many: String = (0..80).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /hello HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    for (request, status) in [
        (big.as_str(), "HTTP/1.1 431"),
        (many.as_str(), "HTTP/1.1 431"),
        ("GET /hello HTTP/1.1\r\nHost x\r\n\r\n", "HTTP/1.1 400"),
    ] {
        let mut tcp = proxy.connect(app.addr).await;
        let answer = exchange(&mut tcp, request.as_bytes(), WAIT).await;
        assert!(answer.starts_with(status), "{status}: {answer}");
    }
    assert_eq!(app.requests(), 0, "none reached the app");
    let r = proxy.get(app.addr, "/hello").await;
    assert_eq!(
        r.body,
        app.hello(http::Version::HTTP_11),
        "the proxy lives on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_too_slowly_are_cut_off() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&["--header-read-timeout=500ms"]).await;
    let mut tcp = proxy.connect(app.addr).await;
    let started = Instant::now();
    tcp.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Slowloris: a header line every 100 ms, never the end of the head.
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let mut closed = false;
    for i in 0..40 {
        pace.tick().await;
        if tcp
            .write_all(format!("X-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
    }
    let rest = read_until_closed(&mut tcp, WAIT).await;
    let took = started.elapsed();
    assert!(
        !rest.contains("hello from"),
        "the slow request was served: {rest}"
    );
    assert!(
        closed || took < Duration::from_secs(3),
        "the slow client was kept {took:?}"
    );
    assert!(took >= Duration::from_millis(450), "cut after {took:?}");
    assert_eq!(app.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_rapid_reset_flood_is_cut_off() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&[]).await;
    let tcp = proxy.connect(app.addr).await;
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut sent = 0;
    for _ in 0..5000 {
        let req = http::Request::get("http://app/slow?ms=5000")
            .body(())
            .unwrap();
        client = match client.ready().await {
            Ok(c) => c,
            Err(_) => break,
        };
        let Ok((_rsp, mut stream)) = client.send_request(req, true) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
        tokio::task::yield_now().await;
    }
    let end = tokio::time::timeout(WAIT, connection)
        .await
        .unwrap_or_else(|_| panic!("after {sent} resets the connection is still open"))
        .unwrap();
    let error = end.expect_err("the proxy ended the connection");
    assert!(
        error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
            || error.is_go_away()
            || error.is_io(),
        "after {sent} resets: {error}"
    );
    assert!(
        app.requests() < 100,
        "{} cancelled requests reached the app",
        app.requests()
    );
    let r = proxy.get(app.addr, "/hello").await;
    assert_eq!(
        r.body,
        app.hello(http::Version::HTTP_11),
        "the proxy lives on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_clients_wait_for_a_free_slot() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&["--max-connections=1"]).await;
    let mut first = proxy.h1(app.addr).await;
    assert_eq!(first.get("/hello").await.unwrap().status, 200);
    // The second connection is accepted by the kernel, not by the proxy.
    let mut second = proxy.connect(app.addr).await;
    second
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let waiting = read_until_closed(&mut second, Duration::from_millis(300)).await;
    assert_eq!(waiting, "", "answered while the limit was reached");
    // Counted once, as a connection that waits for a slot.
    let series = "weft_tcp_refused_total{direction=\"outbound\",reason=\"connection_limit\"}";
    assert_eq!(proxy.metric(series).await, 1.0, "{series}");
    drop(first);
    let answer = read_until(&mut second, "hello from app", WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
