//! `weft-testapp load ADDR RATE DURATION_MS [CONCURRENCY]`: `GET /hello`
//! at RATE requests per second for DURATION_MS over CONCURRENCY (default 4)
//! keep-alive HTTP/1.1 connections, each reopened when it fails. Prints
//! `OK sent=N ok=N failed=N` (ok: a 2xx answer), then one `FAILURE ...`
//! line for each of the first few failures.

use anyhow::{Context, Result};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

use crate::say;

#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    ok: u64,
    failures: Vec<String>,
}

pub async fn run(addr: SocketAddr, rate: u64, duration: Duration, workers: u64) -> Result<()> {
    let workers = workers.max(1);
    let gap = Duration::from_secs_f64(workers as f64 / rate.max(1) as f64);
    let stop = Instant::now() + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|i| {
            tokio::spawn(worker(
                addr,
                gap,
                stop,
                gap.mul_f64(i as f64 / workers as f64),
            ))
        })
        .collect();
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await.context("load worker")?;
        all.sent += t.sent;
        all.ok += t.ok;
        all.failures.extend(t.failures);
    }
    say(&format!(
        "OK sent={} ok={} failed={}",
        all.sent,
        all.ok,
        all.sent - all.ok
    ));
    for f in all.failures.iter().take(10) {
        say(&format!("FAILURE {f}"));
    }
    Ok(())
}

async fn worker(addr: SocketAddr, gap: Duration, stop: Instant, offset: Duration) -> Tally {
    let mut tally = Tally::default();
    let mut sender: Option<http1::SendRequest<Empty<Bytes>>> = None;
    let mut next = tokio::time::Instant::now() + offset;
    while Instant::now() < stop {
        tokio::time::sleep_until(next).await;
        next += gap;
        tally.sent += 1;
        match request(addr, &mut sender).await {
            Ok(()) => tally.ok += 1,
            Err(e) => {
                sender = None;
                if tally.failures.len() < 10 {
                    tally.failures.push(format!("{e:#}"));
                }
            }
        }
    }
    tally
}

async fn request(
    addr: SocketAddr,
    sender: &mut Option<http1::SendRequest<Empty<Bytes>>>,
) -> Result<()> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let tcp = TcpStream::connect(addr).await.context("connect")?;
        let (s, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        *sender = Some(s);
    }
    let s = sender.as_mut().context("no connection")?;
    s.ready().await.context("connection closed")?;
    let req = Request::get("/hello")
        .header("host", addr.to_string())
        .body(Empty::new())?;
    let rsp = s.send_request(req).await.context("request")?;
    let status = rsp.status();
    let proxy_error = rsp
        .headers()
        .get("weft-proxy-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = rsp.into_body().collect().await.context("body")?.to_bytes();
    if !status.is_success() {
        anyhow::bail!(
            "{status} {}{}",
            proxy_error.map_or(String::new(), |e| format!("(proxy: {e}) ")),
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(())
}
