//! A tiny HTTP/2 frame writer and reader for the abusive clients of
//! `hostile.rs`: the `h2` crate keeps a client within the protocol, and
//! these clients must not be (endless CONTINUATION frames, floods the
//! crate would queue or refuse). HPACK is written by hand: indexed static
//! fields and literals without indexing, never Huffman-coded.

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const ACK: u8 = 0x1;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One frame: its 9-byte header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame payload fits 24 bits");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A frame as read: type, flags, payload (the stream id is not needed).
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

pub async fn read_frame(io: &mut (impl AsyncRead + Unpin)) -> Result<Frame> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await.context("frame header")?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    io.read_exact(&mut payload).await.context("frame payload")?;
    Ok(Frame {
        kind: head[3],
        flags: head[4],
        payload,
    })
}

/// The client side of the connection's start: the preface and an empty
/// SETTINGS, then the server's SETTINGS acknowledged.
pub async fn handshake(io: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> Result<()> {
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    io.write_all(&hello).await.context("preface")?;
    loop {
        let f = read_frame(io).await.context("the server's SETTINGS")?;
        match f.kind {
            SETTINGS if f.flags & ACK == 0 => break,
            GOAWAY => bail!("GOAWAY in the handshake: {:?}", f.error_code()),
            _ => {}
        }
    }
    io.write_all(&frame(SETTINGS, ACK, 0, &[]))
        .await
        .context("SETTINGS ACK")
}

/// An HPACK integer with an `prefix`-bit prefix, the first byte's other
/// bits `first`.
fn integer(out: &mut Vec<u8>, first: u8, prefix: u32, mut n: usize) {
    let max = (1usize << prefix) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// A literal field without indexing, with a literal name.
pub fn literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0);
    integer(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    integer(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// The header block of `GET path` (`:method GET`, `:scheme http` indexed;
/// `:path` and `:authority` literals on their static names).
pub fn get(path: &str, authority: &str) -> Vec<u8> {
    let mut out = vec![0x82, 0x86];
    for (index, value) in [(4, path), (1, authority)] {
        integer(&mut out, 0, 4, index);
        integer(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_rfc_7541_c1() {
        let mut out = Vec::new();
        integer(&mut out, 0, 5, 10);
        assert_eq!(out, [10]);
        out.clear();
        integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
    }

    #[test]
    fn a_frame_header_says_length_type_flags_and_stream() {
        let f = frame(PING, ACK, 3, &[1; 8]);
        assert_eq!(&f[..9], &[0, 0, 8, PING, ACK, 0, 0, 0, 3]);
    }
}
