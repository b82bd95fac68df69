//! I/O wrappers around an accepted connection: [`Counted`] counts the bytes
//! read from and written to the client, [`Prefixed`] gives back the bytes
//! protocol detection read before the rest of the stream.

use bytes::{Buf, Bytes};
use prometheus_client::metrics::counter::Counter;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project_lite::pin_project! {
    /// Counts bytes into the destination's counters and into a per-connection
    /// activity counter (read by the idle timeout).
    #[derive(Debug)]
    pub struct Counted<T> {
        #[pin]
        inner: T,
        read: Counter,
        written: Counter,
        activity: Arc<AtomicU64>,
    }
}

impl<T> Counted<T> {
    pub fn new(inner: T, read: Counter, written: Counter) -> Self {
        Self {
            inner,
            read,
            written,
            activity: Arc::default(),
        }
    }

    /// Total bytes moved either way so far, shared with the caller.
    pub fn activity(&self) -> Arc<AtomicU64> {
        self.activity.clone()
    }
}

impl<T: AsyncRead> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            this.read.inc_by(n);
            this.activity.fetch_add(n, Ordering::Relaxed);
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.written.inc_by(n as u64);
            this.activity.fetch_add(n as u64, Ordering::Relaxed);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            this.written.inc_by(n as u64);
            this.activity.fetch_add(n as u64, Ordering::Relaxed);
        }
        res
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

pin_project_lite::pin_project! {
    /// Reads `prefix` first, then from `inner`; writes go straight to `inner`.
    #[derive(Debug)]
    pub struct Prefixed<T> {
        prefix: Bytes,
        #[pin]
        inner: T,
    }
}

impl<T> Prefixed<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if !this.prefix.has_remaining() {
                // Replayed: the detection buffer is freed now, not when
                // the connection ends (10,000 connections held 10-160 MB).
                *this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
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

    #[tokio::test]
    async fn the_detection_buffer_is_freed_once_replayed() {
        /// Owns the buffer's memory; `Weak` tells when it is gone.
        struct Owner(Arc<Vec<u8>>);
        impl AsRef<[u8]> for Owner {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }
        let memory = Arc::new(b"GET / HTTP/1.1\r\n".to_vec());
        let weak = Arc::downgrade(&memory);
        let prefix = Bytes::from_owner(Owner(memory));
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = Prefixed::new(prefix, a);
        let mut got = [0; 4];
        io.read_exact(&mut got).await.unwrap();
        assert!(weak.upgrade().is_some(), "12 bytes still to replay");
        let mut rest = [0; 12];
        io.read_exact(&mut rest).await.unwrap();
        assert!(
            weak.upgrade().is_none(),
            "replayed: freed while the connection lives"
        );
        b.write_all(b"x").await.unwrap();
        io.read_exact(&mut got[..1]).await.unwrap();
        assert_eq!(got[0], b'x');
    }

    #[tokio::test]
    async fn prefix_comes_first_and_bytes_are_counted() {
        let (a, mut b) = tokio::io::duplex(64);
        let (read, written) = (Counter::default(), Counter::default());
        let counted = Counted::new(a, read.clone(), written.clone());
        let activity = counted.activity();
        let mut io = Prefixed::new(Bytes::from_static(b"GET "), counted);
        b.write_all(b"/ HTTP/1.1\r\n").await.unwrap();
        let mut got = vec![0; 16];
        let mut n = 0;
        while n < 16 {
            n += io.read(&mut got[n..]).await.unwrap();
        }
        assert_eq!(&got, b"GET / HTTP/1.1\r\n");
        io.write_all(b"hi").await.unwrap();
        assert_eq!(read.get(), 12);
        assert_eq!(written.get(), 2);
        assert_eq!(activity.load(Ordering::Relaxed), 14);
    }
}
