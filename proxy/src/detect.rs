//! Protocol detection: HTTP/1.x (a request line), HTTP/2 with prior
//! knowledge (the client preface), mesh TLS (inbound: a ClientHello
//! offering a weft ALPN protocol), or opaque TCP (the app's own TLS too).
//!
//! Detection reads the client's first bytes and hands them back in front of
//! the stream ([`Prefixed`]), so nothing is lost whatever it decides. It waits
//! at most `timeout` for the client to speak: a server-speaks-first protocol
//! (MySQL, SMTP) sends nothing, and is then forwarded as opaque TCP.

use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::telemetry::Protocol;
use crate::tls::hello::{self, Hello};
use crate::transport::io::Prefixed;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes read at most before deciding: a request line longer than this is
/// not worth proxying as HTTP.
const MAX_PEEK: usize = 8 * 1024;

/// What the bytes so far say.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Is(Protocol),
    NeedMore,
}

/// What to look for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Look {
    /// Mesh TLS (the inbound side of a proxy with an identity).
    pub mesh: bool,
    /// HTTP (not on opaque ports).
    pub http: bool,
}

fn classify_with(buf: &[u8], look: Look) -> Verdict {
    if look.mesh {
        match hello::parse(buf) {
            Hello::NeedMore => return Verdict::NeedMore,
            Hello::ClientHello { alpn } if crate::tls::is_mesh(alpn) => {
                return Verdict::Is(Protocol::MeshTls)
            }
            Hello::ClientHello { .. } => return Verdict::Is(Protocol::Opaque),
            Hello::NotTls => {}
        }
    }
    if look.http {
        classify(buf)
    } else {
        Verdict::Is(Protocol::Opaque)
    }
}

fn classify(buf: &[u8]) -> Verdict {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Verdict::Is(Protocol::Http2)
        } else {
            Verdict::NeedMore
        };
    }
    let Some(eol) = buf.iter().position(|b| *b == b'\n') else {
        return if could_be_request_line(buf) {
            Verdict::NeedMore
        } else {
            Verdict::Is(Protocol::Opaque)
        };
    };
    // httparse with room for no headers parses the request line alone.
    let mut no_headers = [];
    let mut req = httparse::Request::new(&mut no_headers);
    match req.parse(&buf[..=eol]) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) => match req.version {
            Some(0 | 1) => Verdict::Is(Protocol::Http1),
            _ => Verdict::Is(Protocol::Opaque),
        },
        Err(_) => Verdict::Is(Protocol::Opaque),
    }
}

/// Whether `buf`, which holds no line end yet, can still become
/// `METHOD SP TARGET SP HTTP/1.x`.
fn could_be_request_line(buf: &[u8]) -> bool {
    let line = buf.strip_suffix(b"\r").unwrap_or(buf);
    let mut parts = line.split(|b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if !method.iter().all(is_tchar) {
        return false;
    }
    let target_ok = parts
        .next()
        .is_none_or(|t| t.iter().all(|b| b.is_ascii_graphic()));
    let version_ok = parts.next().is_none_or(|v| {
        let n = v.len().min(7);
        v.len() <= 8 && v[..n] == b"HTTP/1."[..n]
    });
    target_ok && version_ok && parts.next().is_none()
}

/// What the first bytes of an accepted connection say, looking for what
/// `look` asks (nothing: opaque without reading a byte); `None` when the
/// client went away (logged).
pub async fn accepted(
    tcp: tokio::net::TcpStream,
    timeout: Duration,
    look: Look,
) -> Option<(Protocol, Prefixed<tokio::net::TcpStream>)> {
    if !look.mesh && !look.http {
        return Some((
            Protocol::OpaquePort,
            Prefixed::new(bytes::Bytes::new(), tcp),
        ));
    }
    match detect(tcp, timeout, look).await {
        Ok(detected) => Some(detected),
        Err(error) => {
            tracing::debug!(%error, "client went away during detection");
            None
        }
    }
}

/// Reads until the protocol is known; returns it and the stream with the
/// bytes read put back in front.
pub async fn detect<T: AsyncRead + Unpin>(
    mut io: T,
    timeout: Duration,
    look: Look,
) -> std::io::Result<(Protocol, Prefixed<T>)> {
    // A ClientHello is one record, up to 16 KiB.
    let limit = if look.mesh {
        hello::MAX_RECORD
    } else {
        MAX_PEEK
    };
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    let protocol = loop {
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await;
        match read {
            Err(_) if buf.is_empty() => break Protocol::OpaqueTimeout,
            Err(_) => break Protocol::Opaque,
            Ok(Err(e)) => return Err(e),
            // The client closed before deciding anything: forward what it
            // sent (maybe nothing) as opaque bytes.
            Ok(Ok(0)) => break Protocol::Opaque,
            Ok(Ok(_)) => match classify_with(&buf, look) {
                Verdict::Is(p) => break p,
                Verdict::NeedMore if buf.len() >= limit => break Protocol::Opaque,
                Verdict::NeedMore => {}
            },
        }
    };
    Ok((protocol, Prefixed::new(buf.freeze(), io)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const HTTP: Look = Look {
        mesh: false,
        http: true,
    };

    #[test]
    fn mesh_tls_is_told_from_app_tls_by_alpn() {
        let mesh = Look {
            mesh: true,
            http: true,
        };
        let hello = |alpn: &[u8]| hello::rustls_hello(&[alpn]);
        let weft = hello(b"weft.http1");
        assert_eq!(classify_with(&weft, mesh), Verdict::Is(Protocol::MeshTls));
        assert_eq!(classify_with(&weft[..100], mesh), Verdict::NeedMore);
        assert_eq!(
            classify_with(&hello(b"h2"), mesh),
            Verdict::Is(Protocol::Opaque)
        );
        // Outbound (no mesh look), a ClientHello is opaque bytes like any other.
        assert_eq!(classify_with(&weft, HTTP), Verdict::Is(Protocol::Opaque));
        // Plain HTTP still detected with the mesh look; not on opaque ports.
        assert_eq!(
            classify_with(b"GET / HTTP/1.1\r\n", mesh),
            Verdict::Is(Protocol::Http1)
        );
        let opaque_port = Look {
            mesh: true,
            http: false,
        };
        assert_eq!(
            classify_with(b"GET / HTTP/1.1\r\n", opaque_port),
            Verdict::Is(Protocol::Opaque)
        );
    }

    #[test]
    fn classifies() {
        use Protocol::*;
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Verdict::Is(Http1)
        );
        assert_eq!(classify(b"GET / HTTP/1.0\r\n\r\n"), Verdict::Is(Http1));
        assert_eq!(classify(b"POST /x?y=1 HTTP/1.1\r\n"), Verdict::Is(Http1));
        assert_eq!(classify(b"GET / HT"), Verdict::NeedMore);
        assert_eq!(classify(b"GE"), Verdict::NeedMore);
        assert_eq!(classify(b"GET /long/path?q=1"), Verdict::NeedMore);
        assert_eq!(classify(b"GET / HTTP/1.1\r"), Verdict::NeedMore);
        assert_eq!(classify(b"GET / FTP"), Verdict::Is(Opaque));
        assert_eq!(classify(b"\x00\x01"), Verdict::Is(Opaque));
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Verdict::Is(Http2)
        );
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Verdict::NeedMore);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00\x01"), Verdict::Is(Opaque));
        assert_eq!(classify(b"SSH-2.0-OpenSSH\r\n"), Verdict::Is(Opaque));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nXX"), Verdict::Is(Opaque));
    }

    #[tokio::test]
    async fn keeps_every_byte_it_read() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"GET /hello HTTP/1.1\r\n").await.unwrap();
        let (p, mut io) = detect(server, Duration::from_secs(1), HTTP).await.unwrap();
        assert_eq!(p, Protocol::Http1);
        client.write_all(b"\r\n").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET /hello HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_silent_client_is_opaque_after_the_timeout() {
        let (_client, server) = tokio::io::duplex(1024);
        let (p, _) = detect(server, Duration::from_millis(20), HTTP)
            .await
            .unwrap();
        assert_eq!(p, Protocol::OpaqueTimeout);
    }

    #[tokio::test]
    async fn a_request_line_in_pieces_is_still_http() {
        let (mut client, server) = tokio::io::duplex(1024);
        let task = tokio::spawn(detect(server, Duration::from_secs(1), HTTP));
        for piece in [&b"PO"[..], b"ST /upload HT", b"TP/1.1\r\n"] {
            client.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (p, _) = task.await.unwrap().unwrap();
        assert_eq!(p, Protocol::Http1);
    }
}
