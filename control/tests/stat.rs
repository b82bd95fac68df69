//! `weft stat` in a cluster: the meshed pods found through the API server
//! (the fake one, over kube-rs), each proxy's `/metrics` read at
//! `POD_IP:--admin-port` twice, the rows computed from what changed.
//! The "proxy" serves two real scrapes of a demo run, one per request.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use weft_tests::fakekube::{FakeKube, NAMESPACES, PODS};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const SCRAPES: [&str; 2] = [
    include_str!("../src/stat/testdata/books-v2-0.a.prom"),
    include_str!("../src/stat/testdata/books-v2-0.b.prom"),
];

/// Serves `SCRAPES[0]`, then `SCRAPES[1]` for every later request.
fn fake_proxy() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            assert!(
                head.starts_with(b"GET /metrics "),
                "{}",
                String::from_utf8_lossy(&head)
            );
            let body = SCRAPES[i.min(1)];
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn pod(name: &str, ns: &str, containers: &[&str], ip: &str) -> Value {
    let containers: Vec<Value> = containers.iter().map(|c| json!({"name": c})).collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns,
            "labels": {"pod-template-hash": "6d4b9c7f5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "books-v2-6d4b9c7f5", "uid": "1", "controller": true}]},
        "spec": {"containers": containers},
        "status": {"phase": "Running", "podIP": ip}
    })
}

#[test]
fn stat_finds_the_meshed_pods_through_the_api_server() {
    let kube = FakeKube::start();
    for ns in ["shop", "other"] {
        kube.apply(&NAMESPACES, json!({"metadata": {"name": ns}}));
    }
    kube.apply(
        &PODS,
        pod(
            "books-v2-6d4b9c7f5-x2x9k",
            "shop",
            &["app", "weft-proxy"],
            "127.0.0.1",
        ),
    );
    // Not meshed, or elsewhere: not asked (nothing listens at their addresses).
    kube.apply(
        &PODS,
        pod("plain-6d4b9c7f5-aaaaa", "shop", &["app"], "127.0.0.9"),
    );
    kube.apply(
        &PODS,
        pod(
            "away-6d4b9c7f5-bbbbb",
            "other",
            &["app", "weft-proxy"],
            "127.0.0.9",
        ),
    );
    let port = fake_proxy();
    let out = Command::new(WEFT)
        .args([
            "stat", "deploy", "-n", "shop", "-o", "json", "--window", "100ms",
        ])
        .arg(format!("--kube-api-server=http://{}", kube.addr()))
        .arg(format!("--admin-port={port}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows.len(), 1, "{stdout}");
    let r = &rows[0];
    // The Deployment's name from the ReplicaSet less its pod-template-hash.
    assert_eq!(r["name"], "books-v2");
    assert_eq!(r["namespace"], "shop");
    // 607 - 571 inbound responses between the scrapes, 2 of them denials.
    assert_eq!(r["requests"], 36.0);
    assert_eq!(r["denied"], 2.0);
    assert_eq!(r["success"], 1.0);
    assert_eq!(r["mtls"], 1.0);
    assert!(r["rps"].as_f64().unwrap() > 0.0);

    let table = Command::new(WEFT)
        .args(["stat", "deploy", "-n", "nowhere", "--window", "10ms"])
        .arg(format!("--kube-api-server=http://{}", kube.addr()))
        .output()
        .unwrap();
    assert_eq!(table.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&table.stderr).contains("no meshed pod found"));
}
