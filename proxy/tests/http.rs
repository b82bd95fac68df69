//! HTTP through the real proxy, outbound to an original destination (no
//! control plane: every destination is forwarded as it is) and inbound to
//! the app (on loopback, or on the pod IP): HTTP/1.1 keep-alive, HTTP/1.0,
//! chunked uploads with 100-continue, trailers, HTTP/2 multiplexed over one
//! upstream connection, gRPC trailers and a real gRPC stream, bodies
//! streamed both ways, upgrades, and the metrics of known traffic.

mod support;

use bytes::Bytes;
use http::{Method, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Frame;
use std::time::{Duration, Instant};
use support::client::{self, channel, read_until, request};
use support::*;
use tokio::io::AsyncWriteExt;

fn series(name: &str, direction: &str, dst: std::net::SocketAddr, extra: &str) -> String {
    format!("{name}{{direction=\"{direction}\",dst=\"{dst}\"{extra}}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keep_alive_uses_one_upstream_connection_and_is_counted() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&[]).await;

    let mut h1 = proxy.h1(app.addr).await;
    for _ in 0..2 {
        let r = h1.get("/hello").await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, app.hello(Version::HTTP_11));
        assert_eq!(r.proxy_error(), None);
    }
    // An HTTP/1.0 client: its request keeps its version end to end.
    let mut old = client::get("/hello");
    *old.version_mut() = Version::HTTP_10;
    let r = proxy.h1(app.addr).await.send(old).await.unwrap();
    assert_eq!(r.body, app.hello(Version::HTTP_10));

    assert_eq!(app.requests(), 3);
    assert_eq!(
        app.connections(),
        2,
        "the keep-alive client's two requests share one upstream connection"
    );
    let out = |name: &str, extra: &str| series(name, "outbound", app.addr, extra);
    assert_eq!(proxy.metric(&out("weft_request_total", "")).await, 3.0);
    assert_eq!(
        proxy
            .metric(&out("weft_response_total", ",status_class=\"2xx\""))
            .await,
        3.0
    );
    assert_eq!(
        proxy
            .metric(&out("weft_response_latency_ms_count", ""))
            .await,
        3.0
    );
    assert_eq!(proxy.metric(&out("weft_tcp_open_total", "")).await, 2.0);
    assert!(proxy.metric(&out("weft_tcp_read_bytes_total", "")).await > 0.0);
    assert_eq!(
        proxy
            .metric("weft_protocol_detect_total{direction=\"outbound\",protocol=\"http1\"}")
            .await,
        2.0,
        "one detection per client connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_chunked_upload_with_100_continue() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&[]).await;
    let mut tcp = proxy.connect(app.addr).await;
    let head = "POST /count HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\
                Expect: 100-continue\r\n\r\n";
    tcp.write_all(head.as_bytes()).await.unwrap();
    let interim = read_until(&mut tcp, "\r\n\r\n", WAIT).await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..16 {
        tcp.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        tcp.write_all(&chunk).await.unwrap();
        tcp.write_all(b"\r\n").await.unwrap();
    }
    tcp.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = read_until(&mut tcp, "1048576\n", WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_trailers_reach_the_client() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&[]).await;
    let mut req = client::get("/trailers");
    req.headers_mut().insert("te", "trailers".parse().unwrap());
    let r = proxy.h1(app.addr).await.send(req).await.unwrap();
    assert_eq!(r.body, "body before trailers\n");
    let trailers = r.trailers.expect("trailers");
    assert_eq!(trailers["x-checksum"], "abc123");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_multiplexed_over_one_upstream_connection() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&[]).await;
    // Three client connections.
    for _ in 0..3 {
        let r = proxy.h2(app.addr).await.get("/hello").await.unwrap();
        assert_eq!(r.body, app.hello(Version::HTTP_2));
        assert_eq!(r.version, Version::HTTP_2);
    }
    // Ten streams at once on one of them, each taking 300 ms: in parallel.
    let h2 = proxy.h2(app.addr).await;
    let started = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let mut h2 = h2.clone();
            tokio::spawn(async move { h2.get("/slow?ms=300").await.unwrap().body })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), "slow done\n");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2000), "took {took:?}");
    // An upload.
    let mut h2 = h2.clone();
    let r = h2
        .send(client::post("/count", vec![0u8; 1 << 20]))
        .await
        .unwrap();
    assert_eq!(r.body, "1048576\n");

    assert_eq!(
        app.connections(),
        1,
        "four client connections, one upstream connection"
    );
    assert_eq!(app.requests(), 14);
    let out = |name: &str| series(name, "outbound", app.addr, "");
    assert_eq!(proxy.metric(&out("weft_tcp_open_total")).await, 4.0);
    assert_eq!(proxy.metric(&out("weft_request_total")).await, 14.0);
    assert_eq!(
        proxy
            .metric("weft_protocol_detect_total{direction=\"outbound\",protocol=\"http2\"}")
            .await,
        4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_trailers_and_trailers_only_answers_pass_through_http2() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&[]).await;
    let mut h2 = proxy.h2(app.addr).await;
    let grpc = |path: &str| {
        let mut req = client::post(path, Bytes::from_static(b"\0\0\0\0\0"));
        let h = req.headers_mut();
        h.insert("content-type", "application/grpc".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        req
    };
    let r = h2.send(grpc("/trailers")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let trailers = r.trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-checksum"], "abc123");

    let r = h2.send(grpc("/grpc?status=5")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("grpc-status"), Some("5"));
    assert_eq!(r.proxy_error(), None, "the app's answer, not the proxy's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_stream_lives_through_the_proxy() {
    use weft_proto::discovery::v1 as pb;
    use weft_proto::discovery::v1::discovery_client::DiscoveryClient;
    use weft_proto::discovery::v1::update::Kind;
    // A real gRPC server to talk to: weft-control's Discovery. Its address
    // is no Service, so the proxy forwards to it as it is.
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let web = Svc::new("web", "127.96.0.10:8080");
    let control = Control::start(&web.yaml(&[Ep::ready(a.addr)])).await;
    let proxy = Proxy::start(&[]).await;
    let channel = support::traffic::grpc_channel(proxy.dialer(), control.grpc);
    let mut client = DiscoveryClient::new(channel);

    // Server streaming: the current state, then each change as it happens.
    let watch = |addr: std::net::SocketAddr| pb::WatchRequest {
        destination: Some(pb::watch_request::Destination::Addr(addr.into())),
        context: None,
    };
    let mut stream = client.watch(watch(web.addr)).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("a snapshot");
    let Some(Kind::Snapshot(snapshot)) = first.kind else {
        panic!("{first:?}")
    };
    assert_eq!(snapshot.endpoints.len(), 1);
    control.apply(&web.yaml(&[Ep::ready(a.addr), Ep::ready(b.addr)]));
    let next = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the change comes through the open stream")
        .unwrap()
        .expect("an update");
    assert!(matches!(next.kind, Some(Kind::Add(_))), "{next:?}");

    // The server's error status (trailers-only) reaches the client as it is.
    let bad = pb::WatchRequest {
        destination: Some(pb::watch_request::Destination::Authority("web".into())),
        context: None,
    };
    let status = client
        .watch(bad)
        .await
        .expect_err("no port in the authority");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("has no port"), "{status:?}");

    let dst = control.grpc;
    let series = format!("weft_request_total{{direction=\"outbound\",dst=\"{dst}\"}}");
    assert_eq!(proxy.metric(&series).await, 2.0, "two calls");
    assert_eq!(
        proxy
            .metric("weft_protocol_detect_total{direction=\"outbound\",protocol=\"http2\"}")
            .await,
        1.0,
        "on one connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&[]).await;

    // The response's first bytes arrive while the backend still holds the rest.
    let mut first_client = proxy.h1(app.addr).await;
    let rsp = first_client
        .send_streaming(client::get("/stream"))
        .await
        .unwrap();
    let mut body = rsp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first\n");
    app.release();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "rest\n");

    // The request's body too: each piece comes back before the next is sent.
    let (mut h1, mut h2) = (proxy.h1(app.addr).await, proxy.h2(app.addr).await);
    for over_h2 in [false, true] {
        let (tx, req_body) = channel();
        let req = request(Method::POST, "/echo", req_body);
        let rsp = if over_h2 {
            h2.send_streaming(req).await.unwrap()
        } else {
            h1.send_streaming(req).await.unwrap()
        };
        let mut echoed = rsp.into_body();
        for piece in ["ping", "pong"] {
            tx.send(Frame::data(Bytes::from(piece))).await.unwrap();
            let back = echoed.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(back, piece);
        }
        drop(tx);
        assert!(echoed.collect().await.unwrap().to_bytes().is_empty());
    }

    // 16 MiB down, read as it comes.
    let rsp = proxy
        .h1(app.addr)
        .await
        .send_streaming(client::get(&format!("/bytes?n={}", 16 << 20)))
        .await
        .unwrap();
    let mut body = rsp.into_body();
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        n += frame.unwrap().into_data().map_or(0, |d| d.len());
    }
    assert_eq!(n, 16 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_splice_the_two_connections() {
    let app = Backend::start("app").await;
    let proxy = Proxy::start(&[]).await;
    let mut tcp = proxy.connect(app.addr).await;
    tcp.write_all(
        b"GET /chat HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: weft-echo\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_until(&mut tcp, "\r\n\r\n", WAIT).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: weft-echo"),
        "{head}"
    );
    tcp.write_all(b"hello through weft").await.unwrap();
    let rest = read_until(&mut tcp, "hello through weft", WAIT).await;
    assert_eq!(rest, "hello through weft");
    assert_eq!(
        proxy
            .metric(&series(
                "weft_response_total",
                "outbound",
                app.addr,
                ",status_class=\"1xx\""
            ))
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_goes_to_the_app_on_loopback_or_on_the_pod_ip() {
    // The app listens on loopback; the connection was for the pod's address.
    let app = Backend::start("app").await;
    let pod_ip = support::addr(&format!("127.0.0.5:{}", app.addr.port()));
    let proxy = Proxy::start(&[]).await;
    let tcp = proxy.connect_inbound(pod_ip).await;
    let r = H1::handshake(tcp).await.get("/hello").await.unwrap();
    assert_eq!(r.body, app.hello(Version::HTTP_11));
    assert_eq!(
        proxy
            .metric(&series("weft_request_total", "inbound", pod_ip, ""))
            .await,
        1.0
    );

    // An app bound to the pod IP only: reached with --inbound-target=pod-ip,
    // not on loopback (where its port is kept free meanwhile).
    let loopback = support::tcp::Refusing::new();
    let own_ip = support::addr(&format!("127.0.0.6:{}", loopback.addr.port()));
    let on_pod_ip = Backend::start_on("pod-ip-app", own_ip).await;
    let r = H1::handshake(proxy.connect_inbound(on_pod_ip.addr).await)
        .await
        .get("/hello")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.proxy_error(), Some("connect refused"));
    let pod_ip_proxy = Proxy::start(&["--inbound-target=pod-ip"]).await;
    let r = H1::handshake(pod_ip_proxy.connect_inbound(on_pod_ip.addr).await)
        .await
        .get("/hello")
        .await
        .unwrap();
    assert_eq!(r.body, on_pod_ip.hello(Version::HTTP_11));
}
