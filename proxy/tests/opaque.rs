//! Opaque TCP through the real proxy: bytes that are not HTTP, a server
//! that speaks first (detection gives up after its timeout), a port
//! configured opaque (no detection at all), half-close both ways, idle
//! connections closed, and a destination nobody listens on: closed, counted.

mod support;

use std::time::{Duration, Instant};
use support::client::{read_until, read_until_closed};
use support::tcp::{Refusing, Server};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_speaks_first_is_reached_after_the_detection_timeout() {
    let server = Server::banner().await;
    let proxy = Proxy::start(&["--detect-timeout=200ms"]).await;
    let started = Instant::now();
    let mut tcp = proxy.connect(server.addr).await;
    let banner = read_until(&mut tcp, "\r\n", WAIT).await;
    let took = started.elapsed();
    assert_eq!(banner, "220 weft banner\r\n");
    assert!(
        took >= Duration::from_millis(190),
        "the banner came after {took:?}, before detection gave up"
    );
    tcp.write_all(b"ping\r\n").await.unwrap();
    assert_eq!(read_until(&mut tcp, "\r\n", WAIT).await, "echo ping\r\n");
    assert_eq!(
        proxy
            .metric(
                "weft_protocol_detect_total{direction=\"outbound\",protocol=\"opaque_timeout\"}"
            )
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_port_is_forwarded_without_detection() {
    let server = Server::banner().await;
    let opaque = format!("--opaque-ports=1,{}", server.addr.port());
    let proxy = Proxy::start(&["--detect-timeout=5s", &opaque]).await;
    let started = Instant::now();
    let mut tcp = proxy.connect(server.addr).await;
    assert_eq!(
        read_until(&mut tcp, "\r\n", WAIT).await,
        "220 weft banner\r\n"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "the banner took {took:?}");
    assert_eq!(
        proxy
            .metric("weft_protocol_detect_total{direction=\"outbound\",protocol=\"opaque_port\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_http_pass_with_half_close() {
    let server = Server::half_close().await;
    let proxy = Proxy::start(&[]).await;
    let mut tcp = proxy.connect(server.addr).await;
    let data = vec![0u8; 1 << 20];
    tcp.write_all(&data).await.unwrap();
    // The client is done sending; it still reads the answer.
    tcp.shutdown().await.unwrap();
    let answer = read_until_closed(&mut tcp, WAIT).await;
    assert_eq!(answer, "received 1048576 bytes");
    let dst = server.addr;
    proxy
        .wait_metric(
            &format!("weft_tcp_read_bytes_total{{direction=\"outbound\",dst=\"{dst}\"}}"),
            1048576.0,
        )
        .await;
    assert_eq!(
        proxy
            .metric(&format!(
                "weft_tcp_write_bytes_total{{direction=\"outbound\",dst=\"{dst}\"}}"
            ))
            .await,
        answer.len() as f64
    );
    assert_eq!(
        proxy
            .metric("weft_protocol_detect_total{direction=\"outbound\",protocol=\"opaque\"}")
            .await,
        1.0
    );
    proxy
        .wait_metric(
            &format!("weft_tcp_open_connections{{direction=\"outbound\",dst=\"{dst}\"}}"),
            0.0,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_opaque_connection_is_closed() {
    let server = Server::banner().await;
    let opaque = format!("--opaque-ports={}", server.addr.port());
    let proxy = Proxy::start(&["--tcp-idle-timeout=300ms", &opaque]).await;
    let mut tcp = proxy.connect(server.addr).await;
    assert_eq!(
        read_until(&mut tcp, "\r\n", WAIT).await,
        "220 weft banner\r\n"
    );
    let quiet = Instant::now();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .expect("the idle connection is closed")
        .unwrap_or(0);
    let took = quiet.elapsed();
    assert_eq!(n, 0, "nothing more was said");
    // Checked once per timeout period: closed after one to two of them.
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "closed after {took:?} of silence"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_connection_nobody_accepts_is_closed_and_counted() {
    let opaque_port = Refusing::new();
    let speaks_first = Refusing::new();
    let opaque = format!("--opaque-ports={}", opaque_port.addr.port());
    let proxy = Proxy::start(&[&opaque, "--detect-timeout=200ms"]).await;
    let refused = |dst: std::net::SocketAddr| {
        format!(
            "weft_proxy_error_total{{direction=\"outbound\",dst=\"{dst}\",reason=\"connect refused\"}}"
        )
    };
    // Each connection: nothing said, the client's connection closed, one
    // more error counted (before the close: no waiting for it).
    for dst in [opaque_port.addr, speaks_first.addr] {
        for n in 1..=2 {
            let mut tcp = proxy.connect(dst).await;
            let mut got = Vec::new();
            let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut got))
                .await
                .unwrap_or_else(|_| panic!("connection {n} to {dst} is still open after {WAIT:?}"));
            assert!(
                matches!(read, Ok(0) | Err(_)),
                "connection {n} to {dst}: {read:?} {got:?}"
            );
            assert_eq!(proxy.metric(&refused(dst)).await, n as f64, "{dst}");
        }
    }
    for protocol in ["opaque_port", "opaque_timeout"] {
        let detected =
            format!("weft_protocol_detect_total{{direction=\"outbound\",protocol=\"{protocol}\"}}");
        assert_eq!(proxy.metric(&detected).await, 2.0, "{protocol}");
    }
}
