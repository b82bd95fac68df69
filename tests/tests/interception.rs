//! weft-init's rules move real connections: in pods (network namespaces on
//! an isolated bridge), outbound TCP lands on the proxy's outbound port with
//! its original destination, inbound TCP on the inbound port, and the
//! exceptions (proxy uid, skipped ports and CIDRs, admin port) go direct.

use weft_tests::*;

fn accepted(listener: &Proc) -> String {
    listener
        .expect_line("ACCEPTED", WAIT)
        .expect("the listener accepted a connection")
}

fn assert_quiet(listener: &Proc, what: &str) {
    if let Some(line) = listener.try_line(QUIET) {
        panic!("{what} should not have seen a connection, but printed {line:?}");
    }
}

fn assert_connects(pod: &Pod, uid: u32, addr: &str) {
    let (ok, out) = connect(pod, uid, addr);
    assert!(ok, "connect {addr} as uid {uid} failed: {out}");
    assert!(out.contains("REPLY hello from"), "{out}");
}

#[test]
fn outbound_ipv4_lands_on_4140_with_its_original_destination() {
    if netns_or_skip("outbound_ipv4") {
        return;
    }
    let node = Node::new().unwrap();
    let pod = node.pod().unwrap();
    install(&pod, &[]);
    let proxy = listen(&pod, PROXY_UID, "0.0.0.0:4140");

    assert_connects(&pod, APP_UID, "10.96.0.20:80");
    let line = accepted(&proxy);
    assert_eq!(field(&line, "orig"), "10.96.0.20:80", "{line}");
    assert_eq!(field(&line, "local"), "127.0.0.1:4140", "{line}");
}

#[test]
fn outbound_ipv4_and_ipv6_land_on_a_dual_stack_listener() {
    if netns_or_skip("outbound_dual_stack") {
        return;
    }
    let node = Node::new().unwrap();
    let pod = node.pod().unwrap();
    install(&pod, &[]);
    let proxy = listen(&pod, PROXY_UID, "[::]:4140");

    assert_connects(&pod, APP_UID, "[fd00:10:96::20]:80");
    let line = accepted(&proxy);
    assert_eq!(field(&line, "orig"), "[fd00:10:96::20]:80", "{line}");

    assert_connects(&pod, APP_UID, "10.96.7.9:8080");
    let line = accepted(&proxy);
    assert_eq!(field(&line, "orig"), "10.96.7.9:8080", "{line}");
}

#[test]
fn inbound_lands_on_4143_and_skipped_ports_go_direct() {
    if netns_or_skip("inbound") {
        return;
    }
    let node = Node::new().unwrap();
    let client = node.pod().unwrap();
    let server = node.pod().unwrap();
    install(&server, &["--skip-inbound-ports=9090"]);
    let proxy = listen(&server, PROXY_UID, "[::]:4143");
    let skipped = listen(&server, APP_UID, "0.0.0.0:9090");
    let admin = listen(&server, PROXY_UID, "0.0.0.0:4191");

    assert_connects(&client, APP_UID, &format!("{}:8080", server.ip));
    let line = accepted(&proxy);
    assert_eq!(
        field(&line, "orig"),
        format!("{}:8080", server.ip),
        "{line}"
    );
    assert!(
        field(&line, "peer").contains(&client.ip.to_string()),
        "{line}"
    );

    assert_connects(&client, APP_UID, &format!("[{}]:8080", server.ip6));
    let line = accepted(&proxy);
    assert_eq!(
        field(&line, "orig"),
        format!("[{}]:8080", server.ip6),
        "{line}"
    );

    assert_connects(&client, APP_UID, &format!("{}:9090", server.ip));
    let line = accepted(&skipped);
    assert_eq!(
        field(&line, "local"),
        format!("{}:9090", server.ip),
        "{line}"
    );

    assert_connects(&client, APP_UID, &format!("{}:4191", server.ip));
    accepted(&admin);
    assert_quiet(&proxy, "the inbound listener (skipped port and admin port)");
}

#[test]
fn the_proxy_uid_is_not_redirected() {
    if netns_or_skip("proxy_uid") {
        return;
    }
    let node = Node::new().unwrap();
    let meshed = node.pod().unwrap();
    let peer = node.pod().unwrap();
    install(&meshed, &[]);
    let proxy = listen(&meshed, PROXY_UID, "0.0.0.0:4140");
    let app = listen(&peer, APP_UID, "0.0.0.0:8080");
    let target = format!("{}:8080", peer.ip);

    // The proxy's own connection goes straight to the peer...
    assert_connects(&meshed, PROXY_UID, &target);
    let line = accepted(&app);
    assert_eq!(
        field(&line, "peer").split(':').next(),
        Some(meshed.ip.to_string().as_str())
    );
    assert_quiet(&proxy, "the outbound listener (proxy uid)");

    // ...while the application's is redirected to the proxy.
    assert_connects(&meshed, APP_UID, &target);
    let line = accepted(&proxy);
    assert_eq!(field(&line, "orig"), target, "{line}");
    assert_quiet(&app, "the peer (application uid)");
}

#[test]
fn skipped_outbound_ports_and_cidrs_go_direct() {
    if netns_or_skip("skip_outbound") {
        return;
    }
    let node = Node::new().unwrap();
    let meshed = node.pod().unwrap();
    let peer = node.pod().unwrap();
    install(
        &meshed,
        &[
            "--skip-outbound-ports=8081",
            "--skip-outbound-cidrs=fd00:10:244::/64",
        ],
    );
    let proxy = listen(&meshed, PROXY_UID, "[::]:4140");
    let on_8080 = listen(&peer, APP_UID, "[::]:8080");
    let on_8081 = listen(&peer, APP_UID, "0.0.0.0:8081");

    assert_connects(&meshed, APP_UID, &format!("{}:8081", peer.ip));
    accepted(&on_8081);
    assert_connects(&meshed, APP_UID, &format!("[{}]:8080", peer.ip6));
    accepted(&on_8080);
    assert_quiet(&proxy, "the outbound listener (skipped port and CIDR)");

    // The same peer on a port that is not skipped, over IPv4: redirected.
    assert_connects(&meshed, APP_UID, &format!("{}:8080", peer.ip));
    let line = accepted(&proxy);
    assert_eq!(field(&line, "orig"), format!("{}:8080", peer.ip), "{line}");
}

#[test]
fn the_proxy_gid_is_not_redirected() {
    if netns_or_skip("proxy_gid") {
        return;
    }
    let node = Node::new().unwrap();
    let meshed = node.pod().unwrap();
    let peer = node.pod().unwrap();
    install(&meshed, &["--proxy-gid=2103"]);
    let proxy = listen(&meshed, PROXY_UID, "0.0.0.0:4140");
    let app = listen(&peer, APP_UID, "0.0.0.0:8080");
    let target = format!("{}:8080", peer.ip);

    // uid 1000 with the proxy's gid: straight to the peer.
    let out = meshed
        .command_as(Some((APP_UID, 2103)), &bin("weft-netprobe"))
        .args(["connect", &target, "2000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    accepted(&app);
    assert_quiet(&proxy, "the outbound listener (proxy gid)");

    // The same uid with its own gid: redirected.
    assert_connects(&meshed, APP_UID, &target);
    assert_eq!(field(&accepted(&proxy), "orig"), target);
}

#[test]
fn include_lists_redirect_only_what_they_name() {
    if netns_or_skip("include_lists") {
        return;
    }
    let node = Node::new().unwrap();
    let client = node.pod().unwrap();
    let server = node.pod().unwrap();
    install(&server, &["--inbound-ports=8080", "--ipv6=false"]);
    install(&client, &["--outbound-cidrs=10.96.0.0/16", "--ipv6=false"]);
    let inbound = listen(&server, PROXY_UID, "0.0.0.0:4143");
    let direct = listen(&server, APP_UID, "0.0.0.0:8081");
    let outbound = listen(&client, PROXY_UID, "0.0.0.0:4140");

    // 8080 is included inbound; the server's pod IP is outside the
    // client's included CIDRs, so the client does not redirect it.
    assert_connects(&client, APP_UID, &format!("{}:8080", server.ip));
    let line = accepted(&inbound);
    assert_eq!(field(&line, "orig"), format!("{}:8080", server.ip));
    assert_connects(&client, APP_UID, &format!("{}:8081", server.ip));
    accepted(&direct);
    assert_quiet(&inbound, "the inbound listener (port not included)");
    assert_quiet(&outbound, "the outbound listener (CIDR not included)");

    assert_connects(&client, APP_UID, "10.96.3.4:443");
    let line = accepted(&outbound);
    assert_eq!(field(&line, "orig"), "10.96.3.4:443");
}
