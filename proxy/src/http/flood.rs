//! A client HTTP/2 connection's control-frame budget: a client that sends
//! SETTINGS, PING (acknowledgements aside), WINDOW_UPDATE, PRIORITY,
//! unknown or empty frames faster than any real client does is cut off.
//!
//! h2 answers these frames one by one and keeps at most one
//! acknowledgement pending, so a flood from a client that does not read is
//! bounded by backpressure; one that reads keeps a worker busy answering
//! (measured: 1.5 M SETTINGS in 3 s, other clients' p99 up to 205 ms).
//! Nothing in h2 limits their rate, so [`Guarded`] reads the frame headers
//! of what the client sends (9 bytes per frame; payloads are skipped, not
//! looked at) and fails the connection's reads once the client has sent
//! more than `max` such frames within one second, beyond one for every
//! 256 bytes the proxy wrote to it in that second (a client downloading fast sends
//! WINDOW_UPDATEs, and some PINGs, in proportion to what it receives). h2
//! then closes the connection; the server counts it.
//!
//! Cost: the header parse runs per read, over the frames read (a DATA
//! frame's payload is skipped in one step); the clock is read once per
//! `max` control frames.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The window over which control frames are counted.
const WINDOW: Duration = Duration::from_secs(1);
/// One control frame allowed per this many bytes written to the client.
const BYTES_PER_FRAME: u64 = 256;
/// The client connection preface (`PRI * HTTP/2.0...`), before any frame.
const PREFACE: u8 = 24;

/// The error a flooded connection's reads end with (h2 keeps only its
/// kind and text: the server learns of a flood from [`Guarded::flooded`]).
#[cfg(test)]
fn is_flood(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Flood>())
}

/// A client sent control frames past its budget.
#[derive(Debug)]
struct Flood;

impl std::fmt::Display for Flood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HTTP/2 control frame flood")
    }
}

impl std::error::Error for Flood {}

/// Where the reader is in the client's byte stream.
#[derive(Debug)]
struct Frames {
    /// Bytes of the preface still to come.
    preface: u8,
    /// The frame header being read, and how much of it is in.
    header: [u8; 9],
    have: u8,
    /// Payload bytes still to skip.
    skip: u32,
}

impl Frames {
    fn new() -> Self {
        Self {
            preface: PREFACE,
            header: [0; 9],
            have: 0,
            skip: 0,
        }
    }

    /// Reads `bytes`, calling `control` for each control frame whose
    /// header completes in them; stops (false) when `control` does.
    fn read(&mut self, mut bytes: &[u8], mut control: impl FnMut() -> bool) -> bool {
        while !bytes.is_empty() {
            if self.preface > 0 {
                let n = bytes.len().min(usize::from(self.preface));
                self.preface -= n as u8;
                bytes = &bytes[n..];
            } else if self.skip > 0 {
                let n = bytes.len().min(self.skip as usize);
                self.skip -= n as u32;
                bytes = &bytes[n..];
            } else {
                let at = usize::from(self.have);
                let n = bytes.len().min(9 - at);
                self.header[at..at + n].copy_from_slice(&bytes[..n]);
                self.have += n as u8;
                bytes = &bytes[n..];
                if self.have == 9 {
                    self.have = 0;
                    let h = &self.header;
                    self.skip = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                    if is_control(h[3], self.skip, h[4]) && !control() {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// Whether a frame of `kind` with a `len`-byte payload and `flags` does
/// nothing a request needs: it costs the server work and the client
/// nothing.
fn is_control(kind: u8, len: u32, flags: u8) -> bool {
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const ACK: u8 = 0x1;
    match kind {
        // DATA: empty and not ending its stream.
        0x0 => len == 0 && flags & END_STREAM == 0,
        // HEADERS, CONTINUATION: empty and not ending the header block.
        0x1 | 0x9 => len == 0 && flags & END_HEADERS == 0,
        // SETTINGS and PING, but not their acknowledgements: those answer
        // the proxy's own (keep-alive and window-sizing PINGs, which a fast
        // transfer makes frequent), and make h2 write nothing.
        0x4 | 0x6 => flags & ACK == 0,
        // PRIORITY, WINDOW_UPDATE.
        0x2 | 0x8 => true,
        // RST_STREAM (rapid reset: h2's own limit), PUSH_PROMISE (a
        // client's is a protocol error), GOAWAY.
        0x3 | 0x5 | 0x7 => false,
        // Unknown types, which h2 ignores.
        _ => true,
    }
}

/// The control frames a connection has sent in its current window.
#[derive(Debug)]
struct Budget {
    max: u32,
    spent: u32,
    /// Bytes written to the client in the window.
    written: u64,
    since: Instant,
}

impl Budget {
    /// Spends one frame; false: the client is flooding.
    fn spend(&mut self) -> bool {
        self.spent += 1;
        if self.spent <= self.max {
            return true;
        }
        let now = Instant::now();
        if now.duration_since(self.since) >= WINDOW {
            // An old window (its credit with it): this frame begins a new
            // one.
            self.since = now;
            self.spent = 1;
            self.written = 0;
            return true;
        }
        // Past `max` within the window: what was written in it pays.
        let earned = (self.written / BYTES_PER_FRAME).min(u64::from(u32::MAX)) as u32;
        self.spent <= self.max.saturating_add(earned)
    }
}

pin_project_lite::pin_project! {
    /// A client HTTP/2 connection whose reads fail once it floods (see the
    /// module doc).
    #[derive(Debug)]
    pub struct Guarded<I> {
        #[pin]
        inner: I,
        frames: Frames,
        budget: Budget,
        flooded: Arc<AtomicBool>,
    }
}

impl<I> Guarded<I> {
    /// `inner`, a client connection from its first byte (the preface),
    /// allowed `max` control frames a second; `flooded` is set when it is
    /// cut off.
    pub fn new(inner: I, max: u32, flooded: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            frames: Frames::new(),
            budget: Budget {
                max,
                spent: 0,
                written: 0,
                since: Instant::now(),
            },
            flooded,
        }
    }
}

fn flood() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Flood)
}

impl<I: AsyncRead> AsyncRead for Guarded<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.flooded.load(Ordering::Relaxed) {
            return Poll::Ready(Err(flood()));
        }
        let before = buf.filled().len();
        std::task::ready!(this.inner.poll_read(cx, buf))?;
        let budget = this.budget;
        if !this.frames.read(&buf.filled()[before..], || budget.spend()) {
            this.flooded.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(flood()));
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite> AsyncWrite for Guarded<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let n = std::task::ready!(this.inner.poll_write(cx, buf))?;
        this.budget.written += n as u64;
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let n = std::task::ready!(this.inner.poll_write_vectored(cx, bufs))?;
        this.budget.written += n as u64;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PRI: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
        f.extend_from_slice(payload);
        f
    }

    /// How many control frames `bytes` holds, read in pieces of `step`.
    fn count(bytes: &[u8], step: usize) -> usize {
        let mut frames = Frames::new();
        let mut n = 0;
        for piece in bytes.chunks(step) {
            assert!(frames.read(piece, || {
                n += 1;
                true
            }));
        }
        n
    }

    #[test]
    fn frames_are_counted_however_the_bytes_are_split() {
        let mut bytes = PRI.to_vec();
        bytes.extend(frame(0x4, 0, &[0, 3, 0, 0, 0, 100])); // SETTINGS
        bytes.extend(frame(0x1, 0x4, &[0x82; 20])); // HEADERS
        bytes.extend(frame(0x0, 0, &[b'x'; 70_000])); // DATA
        bytes.extend(frame(0x6, 0, &[0; 8])); // PING
        bytes.extend(frame(0x6, 0x1, &[0; 8])); // PING ACK
        bytes.extend(frame(0x4, 0x1, &[])); // SETTINGS ACK
        bytes.extend(frame(0x0, 0, &[])); // empty DATA
        bytes.extend(frame(0x0, 0x1, &[])); // empty DATA, END_STREAM
        bytes.extend(frame(0x8, 0, &1u32.to_be_bytes())); // WINDOW_UPDATE
        bytes.extend(frame(0x9, 0, &[])); // empty CONTINUATION
        bytes.extend(frame(0x3, 0, &[0; 4])); // RST_STREAM
        bytes.extend(frame(0xfa, 0, &[1, 2, 3])); // unknown
        for step in [1, 2, 7, 9, 24, 1000, bytes.len()] {
            assert_eq!(count(&bytes, step), 6, "read {step} bytes at a time");
        }
    }

    #[test]
    fn a_preface_split_anywhere_is_not_a_frame() {
        assert_eq!(count(PRI, 1), 0);
        assert_eq!(count(&PRI[..10], 3), 0);
    }

    /// Writes `frames` PINGs to a guarded connection's client end and
    /// reads them through the guard: how many it took before failing, and
    /// its error.
    async fn flood_of(pings: usize, max: u32, written: usize) -> (usize, Option<io::Error>) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut guarded = Guarded::new(server, max, Arc::default());
        guarded.write_all(&vec![0; written]).await.unwrap();
        let mut bytes = PRI.to_vec();
        let ping = frame(0x6, 0, &[0; 8]);
        for _ in 0..pings {
            bytes.extend_from_slice(&ping);
        }
        client.write_all(&bytes).await.unwrap();
        drop(client);
        let mut got = 0;
        let mut buf = vec![0; 17 * 10];
        loop {
            match guarded.read(&mut buf).await {
                Ok(0) => return (got, None),
                Ok(n) => got += n,
                Err(e) => return (got, Some(e)),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_within_one_second_fails_the_reads() {
        let (_, error) = flood_of(101, 100, 0).await;
        let error = error.expect("a flood");
        assert!(is_flood(&error), "{error}");
        assert_eq!(error.to_string(), "HTTP/2 control frame flood");
        // At the budget: served.
        let (got, error) = flood_of(100, 100, 0).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(got, PRI.len() + 100 * 17);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_written_to_the_client_earn_frames() {
        // 25,600 bytes written: 100 more frames.
        let (_, error) = flood_of(200, 100, 25_600).await;
        assert!(error.is_none(), "{error:?}");
        let (_, error) = flood_of(201, 100, 25_600).await;
        assert!(error.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn credit_for_bytes_written_lasts_only_its_window() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let flooded = Arc::new(AtomicBool::new(false));
        let mut guarded = Guarded::new(server, 100, flooded.clone());
        // 100 frames of credit, then a second goes by: the 101st frame
        // begins a new window, without the credit, and the 201st is one
        // too many in it (with the credit carried over, 301 would be).
        guarded.write_all(&[0; 25_600]).await.unwrap();
        tokio::time::advance(WINDOW).await;
        let mut bytes = PRI.to_vec();
        for _ in 0..201 {
            bytes.extend(frame(0x6, 0, &[0; 8]));
        }
        client.write_all(&bytes).await.unwrap();
        let mut buf = vec![0; bytes.len()];
        let e = guarded.read_exact(&mut buf).await.unwrap_err();
        assert!(is_flood(&e), "{e}");
        assert!(flooded.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn frames_spread_over_seconds_are_not_a_flood() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let flooded = Arc::new(AtomicBool::new(false));
        let mut guarded = Guarded::new(server, 10, flooded.clone());
        client.write_all(PRI).await.unwrap();
        let ping = frame(0x6, 0, &[0; 8]);
        let mut buf = [0; 64];
        guarded.read_exact(&mut buf[..PRI.len()]).await.unwrap();
        // 10 a second for a minute, then 11 within one second.
        for second in 0..60 {
            for _ in 0..10 {
                client.write_all(&ping).await.unwrap();
                guarded.read_exact(&mut buf[..17]).await.unwrap();
            }
            tokio::time::advance(WINDOW).await;
            assert!(!flooded.load(Ordering::Relaxed), "second {second}");
        }
        // The window began with the first frame of this second.
        for i in 0..11 {
            client.write_all(&ping).await.unwrap();
            let read = guarded.read_exact(&mut buf[..17]).await;
            if i < 10 {
                read.unwrap();
            } else {
                let e = read.unwrap_err();
                assert!(is_flood(&e), "{e}");
            }
        }
        assert!(flooded.load(Ordering::Relaxed));
    }

    /// A real HTTP/2 exchange through the guard, configured as the proxy's
    /// server is (adaptive window, keep-alive PINGs), with hyper's client
    /// (adaptive window: window-sizing PINGs and WINDOW_UPDATEs while it
    /// downloads): 64 MiB each way is not a flood.
    #[tokio::test]
    async fn big_transfers_both_ways_are_not_a_flood() {
        use http_body_util::{BodyExt, Full};
        use hyper::body::{Bytes, Incoming};
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        const SIZE: usize = 64 << 20;
        let (client_io, server_io) = tokio::io::duplex(256 * 1024);
        let flooded = Arc::new(AtomicBool::new(false));
        let guarded = Guarded::new(server_io, 1000, flooded.clone());
        let server = tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                // Uploads are read to their end; downloads are 64 MiB.
                let up = req.into_body().collect().await?.to_bytes().len();
                let body = if up > 0 {
                    Bytes::from(up.to_string())
                } else {
                    Bytes::from(vec![7u8; SIZE])
                };
                Ok::<_, hyper::Error>(http::Response::new(Full::new(body)))
            });
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .adaptive_window(true)
                .keep_alive_interval(Duration::from_secs(20))
                .serve_connection(TokioIo::new(guarded), service)
                .await
        });
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .handshake(TokioIo::new(client_io))
            .await
            .unwrap();
        tokio::spawn(conn);
        let get = http::Request::get("http://web/")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let rsp = send.send_request(get).await.unwrap();
        let down = rsp.into_body().collect().await.unwrap().to_bytes().len();
        assert_eq!(down, SIZE);
        send.ready().await.unwrap();
        let put = http::Request::put("http://web/")
            .body(Full::new(Bytes::from(vec![1u8; SIZE])))
            .unwrap();
        let rsp = send.send_request(put).await.unwrap();
        let up = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(up, SIZE.to_string().as_bytes());
        assert!(!flooded.load(Ordering::Relaxed));
        drop(send);
        server.await.unwrap().unwrap();
    }
}
