//! The first bytes of a connection: protocol detection
//! (`weft_proxy::detect`) and the TLS ClientHello reader
//! (`weft_proxy::tls::hello`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use weft_proxy::detect::Look;
use weft_proxy::telemetry::Protocol;
use weft_proxy::tls::hello::{self, Hello};

use crate::input::split_byte;

/// Detection over a client that sends the input in pieces of a size the
/// first byte chooses (its low 2 bits: the `Look`, mesh and HTTP), then
/// closes. Detection must hand back every byte it read, in order, and
/// nothing else; its verdict must be one the bytes can carry.
pub fn detect(data: &[u8]) {
    let (control, payload) = split_byte(data);
    let look = Look {
        mesh: control & 1 != 0,
        http: control & 2 != 0,
    };
    let chunk = usize::from(control >> 2) + 1;
    let client = Pieces {
        data: payload,
        chunk,
    };
    let (protocol, replayed) = runtime().block_on(async {
        let (protocol, mut io) = weft_proxy::detect::detect(client, Duration::from_secs(5), look)
            .await
            .expect("an in-memory client cannot fail");
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.expect("in-memory read");
        (protocol, all)
    });
    assert_eq!(
        replayed, payload,
        "detection must replay exactly what it read"
    );
    match protocol {
        Protocol::Http2 => {
            assert!(look.http && payload.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
        }
        Protocol::Http1 => assert!(look.http && payload.contains(&b'\n')),
        Protocol::MeshTls => assert!(look.mesh && payload.starts_with(&[0x16, 3])),
        Protocol::Opaque => {}
        // The client spoke at once, and the port was not configured opaque.
        Protocol::OpaqueTimeout | Protocol::OpaquePort => panic!("{protocol:?} without a timeout"),
    }
}

/// A client that has `data` to send, `chunk` bytes at a time, then closes.
struct Pieces<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        let (head, tail) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = tail;
        Poll::Ready(Ok(()))
    }
}

pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

/// The ClientHello reader. A verdict, once given, holds whatever bytes
/// follow; a whole ClientHello is `NeedMore` when cut anywhere inside its
/// record; every ALPN name it yields is non-empty and inside the input.
pub fn client_hello(data: &[u8]) {
    let verdict = hello::parse(data);
    if verdict != Hello::NeedMore {
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\x16\x03\x01\x00");
        assert_eq!(
            hello::parse(&longer),
            verdict,
            "bytes after a verdict changed it"
        );
    }
    if let Hello::ClientHello { alpn } = verdict {
        let record = 5 + usize::from(u16::from_be_bytes([data[3], data[4]]));
        for cut in [0, 1, 4, 5, record / 2, record - 1] {
            if cut < record {
                assert_eq!(hello::parse(&data[..cut]), Hello::NeedMore, "cut at {cut}");
            }
        }
        let mut total = 0;
        for name in alpn.iter() {
            assert!(!name.is_empty(), "an empty ALPN name");
            total += 1 + name.len();
        }
        assert!(total <= record, "ALPN names past the record");
    }
}
