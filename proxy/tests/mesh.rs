//! Mutual TLS between two in-process proxies: each gets its certificate
//! from weft-control's Certify (a CA made by the test, a token file), the
//! client side verifies the identity discovery names for a meshed endpoint,
//! the server side terminates it and forwards to the app; plaintext from an
//! unmeshed client still reaches the app; a server of another
//! ServiceAccount is refused.
//!
//! The endpoint's address is the server proxy's inbound listener (what
//! iptables would redirect the pod's port to), and every connection it
//! accepts was going to the app's port.

mod support;

use http::{StatusCode, Version};
use std::net::SocketAddr;
use support::control::NOTHING;
use support::*;
use weft_proxy::test_util::OrigDst;

const API: &str = "127.96.6.10:8080";

/// A meshed client proxy (`client`, with `client_args`) and a server-side
/// proxy running as `server_sa` in front of `app`, which discovery says is
/// the Pod `api-0` of ServiceAccount `api` behind the Service `api`.
struct Mesh {
    api: Svc,
    client: Proxy,
    server: Proxy,
    _control: Control,
    _ca: Ca,
}

async fn mesh(app: &Backend, server_sa: &str, client_args: &[&str]) -> Mesh {
    mesh_with(app, server_sa, client_args, &[]).await
}

/// As [`mesh`], the Service also having the endpoints `others`.
async fn mesh_with(app: &Backend, server_sa: &str, client_args: &[&str], others: &[Ep]) -> Mesh {
    let ca = Ca::new(&["client", "api", "other"]);
    let control = Control::with_identity(NOTHING, &ca).await;
    let orig = OrigDst::default();
    let with = |sa: &str| ca.meshed_args(sa, &control);
    // Ready only once it holds a certificate.
    let server = Proxy::start_with(orig.clone(), &with(server_sa)).await;
    let app_port = support::addr(&format!("127.0.0.1:{}", app.addr.port()));
    orig.set_listener(server.inbound, app_port);
    let api = Svc::new("api", API);
    let mut endpoints = vec![Ep::ready(server.inbound).meshed("api-0", "api")];
    endpoints.extend(others.iter().cloned());
    control.apply(&api.yaml(&endpoints));
    let mut args = with("client");
    args.extend(client_args.iter().map(|a| a.to_string()));
    let client = Proxy::start_with(orig, &args).await;
    let addrs: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
    client.wait_endpoints(api.addr, &addrs).await;
    Mesh {
        api,
        client,
        server,
        _control: control,
        _ca: ca,
    }
}

fn detected(direction: &str, protocol: &str) -> String {
    format!("weft_protocol_detect_total{{direction=\"{direction}\",protocol=\"{protocol}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meshed_request_goes_over_mutual_tls_to_the_app() {
    let app = Backend::start("app").await;
    let m = mesh(&app, "api", &[]).await;
    for id in [(&m.client, "client"), (&m.server, "api")] {
        let r = id.0.admin_get("/identity").await.unwrap();
        assert!(r.body.contains(&Ca::id(id.1)), "{}", r.body);
    }

    let mesh_tls = m.server.metric(&detected("inbound", "mesh_tls")).await;
    let r = m.client.get(m.api.addr, "/hello").await;
    assert_eq!(r.body, app.hello(Version::HTTP_11));
    let r = m.client.h2(m.api.addr).await.get("/hello").await.unwrap();
    assert_eq!(r.body, app.hello(Version::HTTP_2));
    // The server side saw mesh TLS (the protocol inside said by ALPN), one
    // connection for each protocol, and forwarded what it carried to the app.
    assert_eq!(
        m.server.metric(&detected("inbound", "mesh_tls")).await - mesh_tls,
        2.0
    );
    assert_eq!(m.server.metric(&detected("inbound", "http1")).await, 0.0);
    let inbound = format!(
        "weft_request_total{{direction=\"inbound\",dst=\"127.0.0.1:{}\"}}",
        app.addr.port()
    );
    assert_eq!(m.server.metric(&inbound).await, 2.0);

    // An unmeshed client reaches the same app through the same listener in
    // plaintext.
    let tcp = m.server.connect_inbound(app.addr).await;
    let r = H1::handshake(tcp).await.get("/hello").await.unwrap();
    assert_eq!(r.body, app.hello(Version::HTTP_11));
    assert_eq!(m.server.metric(&detected("inbound", "http1")).await, 1.0);
    assert_eq!(app.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_of_another_service_account_is_refused() {
    let app = Backend::start("app").await;
    // Never ejected for failing, so that each request says why it failed.
    let m = mesh(&app, "other", &["--failure-accrual=0"]).await;
    let r = m.client.get(m.api.addr, "/hello").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.proxy_error(), Some("tls failed"));
    assert_eq!(app.requests(), 0, "nothing reached the impostor's app");
    let dst: SocketAddr = m.api.addr;
    assert!(
        m.client
            .metric(&format!(
                "weft_proxy_error_total{{dst=\"{dst}\",reason=\"tls failed\"}}"
            ))
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_labelled_with_the_tls_of_the_connection_they_went_over() {
    let app = Backend::start("app").await;
    // An endpoint of the same Service whose pod has no proxy: plaintext.
    let plain = Backend::start("plain").await;
    let m = mesh_with(&app, "api", &[], &[Ep::ready(plain.addr)]).await;
    // Requests at once, so that the balancer does not keep all of them on
    // the faster (plaintext) endpoint: Peak-EWMA weighs requests pending.
    let load = m.client.load(m.api.addr, "/hello", 4);
    eventually("both endpoints got requests", async || {
        anyhow::ensure!(
            app.requests() > 0 && plain.requests() > 0,
            "meshed {}, plain {}",
            app.requests(),
            plain.requests()
        );
        Ok(())
    })
    .await;
    let tally = load.stop().await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    let sent = tally.sent() as f64;

    let dst = m.api.addr;
    let series = |tls: &str, client: &str, server: &str| {
        format!(
            "weft_request_total{{direction=\"outbound\",dst=\"{dst}\",tls=\"{tls}\",\
             client_id=\"{client}\",server_id=\"{server}\"}}"
        )
    };
    let meshed = m
        .client
        .metric(&series("true", &Ca::id("client"), &Ca::id("api")))
        .await;
    let plaintext = m.client.metric(&series("false", "", "")).await;
    assert_eq!(meshed, app.requests() as f64, "over mesh TLS to api-0");
    assert_eq!(plaintext, plain.requests() as f64, "in plaintext to plain");
    assert_eq!(meshed + plaintext, sent, "every request counted once");
    let all = format!("weft_request_total{{direction=\"outbound\",dst=\"{dst}\"}}");
    assert_eq!(m.client.metric(&all).await, sent, "under no other labels");
}
