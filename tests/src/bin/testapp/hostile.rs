//! Hostile clients for `tests/tests/hostile.rs`, and the legitimate client
//! measured beside them:
//!
//! - `hold ADDR N h1|h2`: opens N connections and keeps them idle (h1: one
//!   `GET /hello`, then keep-alive; h2: the preface and SETTINGS, no
//!   stream, PINGs answered); prints `HOLDING n=N failed=F` and holds them
//!   until killed.
//! - `probe ADDR N`: N `GET /hello`, one after another, each on a new
//!   connection; prints `OK n=N p50_us= p99_us= max_us=`.
//! - `h2-abuse ADDR KIND MILLIS [noread]`: one HTTP/2 connection abused for
//!   at most MILLIS (`settings`, `ping`, `window-update` floods,
//!   `continuation`: one header block without end, `streams`: 10,000
//!   concurrent `GET /slow`); with `noread` it never reads what the server
//!   sends. Prints `OK kind= sent= goaway= closed= blocked= ...`.
//! - `h1-abuse ADDR KIND`: `headers` (1 MB in 8,000 header lines), `line`
//!   (a 1 MB request line), `chunks` (`POST /count` with 1,000,000
//!   one-byte chunks); prints `OK kind= status= sent= ms=` and the body.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::frames::{self, frame, Frame};
use crate::say;

/// Connections opened at once while filling.
const OPENING: usize = 64;

pub async fn hold(addr: SocketAddr, n: u64, kind: &str) -> Result<()> {
    let h2 = match kind {
        "h1" => false,
        "h2" => true,
        _ => bail!("hold: kind is h1 or h2, not {kind:?}"),
    };
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let openers: Vec<_> = (0..OPENING)
        .map(|_| {
            let (next, failed, first_error) = (next.clone(), failed.clone(), first_error.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let opened = if h2 {
                        open_h2(addr).await
                    } else {
                        open_h1(addr).await
                    };
                    if let Err(e) = opened {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(format!("{e:#}"));
                    }
                }
            })
        })
        .collect();
    for o in openers {
        o.await?;
    }
    let failed = failed.load(Ordering::Relaxed);
    say(&format!("HOLDING n={} failed={failed}", n - failed));
    if let Some(e) = first_error.lock().unwrap().take() {
        say(&format!("FAILURE {e}"));
    }
    std::future::pending::<()>().await;
    Ok(())
}

/// One `GET /hello` on a new connection, its answer read, then the
/// connection kept (idle) by a task of its own until the server closes it.
async fn open_h1(addr: SocketAddr) -> Result<()> {
    let mut tcp = TcpStream::connect(addr).await.context("connect")?;
    hello_exchange(&mut tcp, false).await?;
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    Ok(())
}

/// The preface and SETTINGS; then a task answers PINGs (the server's
/// keep-alive) until the server closes.
async fn open_h2(addr: SocketAddr) -> Result<()> {
    let mut tcp = TcpStream::connect(addr).await.context("connect")?;
    frames::handshake(&mut tcp).await?;
    tokio::spawn(async move {
        while let Ok(f) = frames::read_frame(&mut tcp).await {
            if f.kind == frames::PING && f.flags & frames::ACK == 0 {
                let pong = frame(frames::PING, frames::ACK, 0, &f.payload);
                if tcp.write_all(&pong).await.is_err() {
                    break;
                }
            }
        }
    });
    Ok(())
}

/// `GET /hello` on `tcp`, its head and body read (by Content-Length).
async fn hello_exchange(tcp: &mut TcpStream, close: bool) -> Result<()> {
    let connection = if close { "close" } else { "keep-alive" };
    tcp.write_all(
        format!("GET /hello HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\r\n").as_bytes(),
    )
    .await
    .context("request")?;
    let mut got = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    loop {
        let n = tcp.read(&mut buf).await.context("response")?;
        if n == 0 {
            bail!("closed after {:?}", String::from_utf8_lossy(&got));
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        if !head.starts_with("HTTP/1.1 200") {
            bail!("answered {:?}", head.lines().next());
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .context("no Content-Length")?;
        if body.len() >= length {
            return Ok(());
        }
    }
}

pub async fn probe(addr: SocketAddr, n: u64) -> Result<()> {
    let mut took = Vec::with_capacity(n as usize);
    for i in 0..n {
        let start = Instant::now();
        let mut tcp = TcpStream::connect(addr).await.context("connect")?;
        hello_exchange(&mut tcp, true)
            .await
            .with_context(|| format!("request {i}"))?;
        took.push(start.elapsed().as_micros() as u64);
    }
    took.sort_unstable();
    let at = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    say(&format!(
        "OK n={n} p50_us={} p99_us={} max_us={}",
        at(0.5),
        at(0.99),
        took.last().copied().unwrap_or(0)
    ));
    Ok(())
}

/// What the server sent back during an abuse, as the reader saw it.
#[derive(Default)]
struct Seen {
    frames: AtomicU64,
    refused: AtomicU64,
    responses: AtomicU64,
    goaway: Mutex<Option<String>>,
    closed: AtomicBool,
}

pub async fn h2_abuse(addr: SocketAddr, kind: &str, millis: u64, read: bool) -> Result<()> {
    let mut tcp = TcpStream::connect(addr).await.context("connect")?;
    frames::handshake(&mut tcp).await?;
    let (rx, mut tx) = tcp.into_split();
    let seen = Arc::new(Seen::default());
    let reader = read.then(|| tokio::spawn(watch(rx, seen.clone())));
    let deadline = Instant::now() + Duration::from_millis(millis);
    let mut sent: u64 = 0;
    let mut blocked = false;
    // Frames go out in batches of about 16 KiB.
    let batch = |sent: u64| -> Result<(Vec<u8>, u64)> {
        let mut out = Vec::with_capacity(16 * 1024);
        let mut n = 0;
        match kind {
            "settings" | "ping" | "window-update" => {
                let one = match kind {
                    // SETTINGS_MAX_CONCURRENT_STREAMS = 100, again and again.
                    "settings" => frame(frames::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]),
                    "ping" => frame(frames::PING, 0, 0, &sent.to_be_bytes()),
                    _ => frame(frames::WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes()),
                };
                while out.len() + one.len() <= 16 * 1024 {
                    out.extend_from_slice(&one);
                    n += 1;
                }
            }
            "continuation" => {
                if sent == 0 {
                    let block = frames::get("/hello", "x");
                    out.extend(frame(frames::HEADERS, 0, 1, &block));
                    n += 1;
                }
                let mut block = Vec::new();
                frames::literal(&mut block, "x-more", &[b'a'; 1000]);
                for _ in 0..16 {
                    out.extend(frame(frames::CONTINUATION, 0, 1, &block));
                    n += 1;
                }
            }
            "streams" => {
                for i in sent..(sent + 100).min(STREAMS) {
                    let block = frames::get("/slow?ms=3000", "x");
                    let id = 1 + 2 * i as u32;
                    out.extend(frame(
                        frames::HEADERS,
                        frames::END_HEADERS | frames::END_STREAM,
                        id,
                        &block,
                    ));
                    n += 1;
                }
            }
            _ => bail!("h2-abuse: no kind {kind:?}"),
        }
        Ok((out, n))
    };
    while Instant::now() < deadline && seen.goaway.lock().unwrap().is_none() {
        if kind == "streams" && sent >= STREAMS {
            break;
        }
        let (out, n) = batch(sent)?;
        // A write that makes no progress for a second: the server stopped
        // reading (backpressure), which bounds what it holds.
        match tokio::time::timeout(Duration::from_secs(1), tx.write_all(&out)).await {
            Ok(Ok(())) => sent += n,
            Ok(Err(_)) => {
                seen.closed.store(true, Ordering::Relaxed);
                break;
            }
            Err(_) => {
                blocked = true;
                break;
            }
        }
    }
    let elapsed = deadline.saturating_duration_since(Instant::now());
    if let Some(reader) = reader {
        // What the server does about it: wait for its GOAWAY or close, at
        // most 1 s past the flood (the streams' answers: up to their 3 s).
        let linger = if kind == "streams" { 5 } else { 1 };
        let _ = tokio::time::timeout(Duration::from_secs(linger), reader).await;
    }
    let goaway = seen.goaway.lock().unwrap().clone();
    say(&format!(
        "OK kind={kind} sent={sent} goaway={} closed={} blocked={blocked} frames_back={} refused={} responses={} ms={}",
        goaway.as_deref().unwrap_or("none"),
        seen.closed.load(Ordering::Relaxed),
        seen.frames.load(Ordering::Relaxed),
        seen.refused.load(Ordering::Relaxed),
        seen.responses.load(Ordering::Relaxed),
        millis.saturating_sub(elapsed.as_millis() as u64),
    ));
    Ok(())
}

/// Streams the `streams` abuse opens.
const STREAMS: u64 = 10_000;

/// Reads the server's frames until it closes, noting GOAWAY, refused
/// streams and responses.
async fn watch(mut rx: impl AsyncRead + Unpin, seen: Arc<Seen>) {
    loop {
        let f: Frame = match frames::read_frame(&mut rx).await {
            Ok(f) => f,
            Err(_) => {
                seen.closed.store(true, Ordering::Relaxed);
                return;
            }
        };
        seen.frames.fetch_add(1, Ordering::Relaxed);
        match f.kind {
            frames::GOAWAY => {
                let code = f.error_code().unwrap_or(u32::MAX);
                *seen.goaway.lock().unwrap() = Some(reason(code).to_owned());
            }
            frames::RST_STREAM if f.error_code() == Some(0x7) => {
                seen.refused.fetch_add(1, Ordering::Relaxed);
            }
            frames::HEADERS => {
                seen.responses.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

fn reason(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x6 => "FRAME_SIZE_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "OTHER",
    }
}

pub async fn h1_abuse(addr: SocketAddr, kind: &str) -> Result<()> {
    let (head, chunks): (Vec<u8>, bool) = match kind {
        "headers" => {
            let mut head = b"GET /hello HTTP/1.1\r\nHost: x\r\n".to_vec();
            let value = "a".repeat(120);
            for i in 0..8000 {
                head.extend(format!("X-H{i:04}: {value}\r\n").as_bytes());
            }
            head.extend(b"\r\n");
            (head, false)
        }
        "line" => {
            let path = "a".repeat(1024 * 1024);
            (
                format!("GET /{path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
                false,
            )
        }
        "chunks" => (
            b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                .to_vec(),
            true,
        ),
        _ => bail!("h1-abuse: no kind {kind:?}"),
    };
    let start = Instant::now();
    let tcp = TcpStream::connect(addr).await.context("connect")?;
    let (mut rx, mut tx) = tcp.into_split();
    // The writer hands its half back rather than dropping it: a dropped
    // write half shuts down, and a server without half-close support
    // (hyper's default) then closes before answering.
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        // The head in 64 KiB writes, so the server can answer (and close)
        // part-way through.
        let mut parts: Vec<&[u8]> = head.chunks(64 * 1024).collect();
        let batch = b"1\r\nx\r\n".repeat(10_000);
        if chunks {
            parts.extend(std::iter::repeat_n(batch.as_slice(), 100));
            parts.push(b"0\r\n\r\n");
        }
        for part in parts {
            if tx.write_all(part).await.is_err() {
                break;
            }
            sent += part.len();
        }
        (sent, tx)
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), rx.read_to_end(&mut answer)).await;
    let (sent, _tx) = writer.await?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).unwrap_or("none");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b.trim());
    say(&format!(
        "OK kind={kind} status={status} sent={sent} ms={} body={body}",
        start.elapsed().as_millis()
    ));
    Ok(())
}
