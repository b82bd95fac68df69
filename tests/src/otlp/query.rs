//! Reading Jaeger's query API as a test does: over HTTP/1.1 on loopback
//! (an in-process [`Receiver`](super::Receiver)), or with curl from inside a
//! pod (`weft-otlp-receiver` in a network namespace, which the test
//! process cannot reach directly); and a trace's JSON turned into the
//! parent → child edges of its tree.

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;

use crate::Pod;

/// `GET path` (with its query string) at `addr`: the status and the JSON
/// document answered.
///
/// # Errors
/// If the connection or the exchange fails, or the body is not JSON.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, Value)> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to the query API at {addr}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("GET {path}"))?;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    let json = serde_json::from_slice(&body).with_context(|| {
        format!(
            "GET {path}: {code}, not JSON: {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    Ok((code, json))
}

/// `GET path` at `addr` that must answer 200: its JSON document.
///
/// # Errors
/// As [`get`], and for any other status (with the errors Jaeger named).
pub async fn query(addr: SocketAddr, path: &str) -> Result<Value> {
    let (code, json) = get(addr, path).await?;
    ensure!(code == 200, "GET {path}: {code} {}", json["errors"]);
    Ok(json)
}

/// `GET path` at `addr`, asked with curl from inside `pod` (as root): the
/// JSON document of a 200 answer.
///
/// # Errors
/// If curl fails, the answer is not 200 or not JSON.
pub fn query_in(pod: &Pod, addr: SocketAddr, path: &str) -> Result<Value> {
    let out = pod
        .command(None, Path::new("curl"))
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .context("cannot run curl")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "GET {path} at {addr} in {}: {}",
            pod.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    ensure!(code == "200", "GET {path} at {addr}: {code} {body}");
    serde_json::from_str(body).with_context(|| format!("GET {path}: not JSON: {body}"))
}

/// Sets the failing mode of the receiver whose query API is at `addr`
/// (`POST /receiver/failing?on|off`, with curl from inside `pod`).
///
/// # Errors
/// If curl fails or the receiver does not answer 200.
pub fn set_failing_in(pod: &Pod, addr: SocketAddr, failing: bool) -> Result<()> {
    let flag = if failing { "on" } else { "off" };
    pod.sh(&[
        "curl",
        "-sS",
        "--fail",
        "--max-time",
        "5",
        "-X",
        "POST",
        &format!("http://{addr}/receiver/failing?{flag}"),
    ])
    .map(drop)
}

/// The edges of a Jaeger trace's tree, as `("parent", "child")` pairs
/// naming each span `"service operation"`, sorted; a root's parent is `""`,
/// as is a parent that is not in the trace.
pub fn edges(trace: &Value) -> Vec<(String, String)> {
    let spans = trace["spans"].as_array().map_or(&[][..], Vec::as_slice);
    let label = |s: &Value| {
        let service = &trace["processes"][s["processID"].as_str().unwrap_or("")]["serviceName"];
        format!(
            "{} {}",
            service.as_str().unwrap_or("?"),
            s["operationName"].as_str().unwrap_or("?")
        )
    };
    let mut out: Vec<(String, String)> = spans
        .iter()
        .map(|s| {
            let parent = s["references"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["refType"] == "CHILD_OF")
                .and_then(|r| spans.iter().find(|p| p["spanID"] == r["spanID"]))
                .map(label)
                .unwrap_or_default();
            (parent, label(s))
        })
        .collect();
    out.sort();
    out
}
