//! Opaque TCP peers: a server that speaks first, and one that needs
//! half-close (it answers only after the client shut down its write side).

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::say;

/// `TESTAPP_NAME`, when set, ends the banner (`220 weft banner NAME`), so
/// that a test can tell servers apart.
pub async fn banner(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let banner: std::sync::Arc<str> = match std::env::var("TESTAPP_NAME") {
        Ok(name) => format!("220 weft banner {name}\r\n").into(),
        Err(_) => "220 weft banner\r\n".into(),
    };
    say(&format!("LISTENING {addr}"));
    loop {
        let (mut conn, _) = listener.accept().await?;
        let banner = banner.clone();
        tokio::spawn(async move {
            let _ = conn.write_all(banner.as_bytes()).await;
            let (r, mut w) = conn.split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if w.write_all(format!("echo {line}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
}

pub async fn halfclose(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).await?;
    say(&format!("LISTENING {addr}"));
    loop {
        let (mut conn, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut buf = vec![0; 64 * 1024];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(k) => n += k as u64,
                    Err(_) => return,
                }
            }
            // The client's write side is closed; ours still works.
            let _ = conn
                .write_all(format!("received {n} bytes\n").as_bytes())
                .await;
            let _ = conn.shutdown().await;
        });
    }
}

pub async fn client(addr: SocketAddr, mode: &str) -> Result<()> {
    let mut conn = TcpStream::connect(addr).await.context("connect")?;
    match mode {
        "banner" => {
            // Say nothing: the server must speak first, through the proxy.
            let (r, mut w) = conn.split();
            let mut lines = BufReader::new(r).lines();
            let banner = lines.next_line().await?.context("no banner")?;
            w.write_all(b"ping\r\n").await?;
            let echo = lines.next_line().await?.context("no echo")?;
            say(&format!("OK banner={banner:?} echo={echo:?}"));
        }
        "halfclose" => {
            let payload = vec![7u8; 1 << 20];
            conn.write_all(&payload).await?;
            conn.shutdown().await?;
            let mut answer = String::new();
            conn.read_to_string(&mut answer).await?;
            say(&format!("OK answer={:?}", answer.trim()));
        }
        "idle" => {
            // Read the banner, then stay silent until the connection is closed.
            let started = std::time::Instant::now();
            let mut buf = vec![0u8; 1024];
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                bail!("closed before the banner");
            }
            let end = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            if end.is_err() {
                bail!("still open after 10 s of silence");
            }
            say(&format!(
                "OK closed after {}ms",
                started.elapsed().as_millis()
            ));
        }
        other => bail!("unknown tcp-client mode {other:?}"),
    }
    Ok(())
}
