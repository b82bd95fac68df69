//! A minimal WebSocket (RFC 6455) echo server and client: the handshake and
//! single-frame messages, enough to prove that an upgraded connection is
//! passed through intact.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::say;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("{key}{GUID}"))
        .digest()
        .bytes();
    base64(&digest)
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads one frame: (opcode, unmasked payload).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    let opcode = head[0] & 0x0f;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    if len > 1 << 20 {
        bail!("frame of {len} bytes is too large for this test peer");
    }
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((opcode, payload))
}

/// Writes one final frame; clients mask (RFC 6455 §5.3).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    opcode: u8,
    payload: &[u8],
    mask: bool,
) -> Result<()> {
    let mut frame = vec![0x80 | opcode];
    let mask_bit = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [0x12, 0x34, 0x56, 0x78];
    if mask {
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    w.write_all(&frame).await?;
    Ok(())
}

/// Echoes frames on an upgraded connection until a close frame.
pub async fn echo<T: AsyncRead + AsyncWrite + Unpin>(mut io: T) -> Result<()> {
    loop {
        let (opcode, payload) = read_frame(&mut io).await?;
        if opcode == 0x8 {
            write_frame(&mut io, 0x8, &payload, false).await?;
            return Ok(());
        }
        write_frame(&mut io, opcode, &payload, false).await?;
    }
}

pub async fn client(addr: SocketAddr, message: &str) -> Result<()> {
    let mut conn = TcpStream::connect(addr).await.context("connect")?;
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await?;
    // Read the response head byte by byte: nothing after it may be consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(conn.read_u8().await.context("reading the 101 response")?);
        if head.len() > 8192 {
            bail!("response head too long");
        }
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 101") {
        bail!("no 101: {}", head.lines().next().unwrap_or(""));
    }
    let expected = accept_key(key);
    if !head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("sec-websocket-accept:") && l.ends_with(&expected)
    }) {
        bail!("wrong or missing Sec-WebSocket-Accept in {head:?}");
    }
    write_frame(&mut conn, 0x1, message.as_bytes(), true).await?;
    let (opcode, payload) = read_frame(&mut conn).await?;
    write_frame(&mut conn, 0x8, b"", true).await?;
    let _ = read_frame(&mut conn).await;
    say(&format!(
        "OK opcode={opcode} echo={:?}",
        String::from_utf8_lossy(&payload)
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_matches_rfc_6455() {
        assert_eq!(
            super::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
