//! Clients: a TCP connection through the fake original destination, and
//! HTTP/1 and HTTP/2 clients (hyper's) over it; the bodies both sides use.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use weft_proxy::test_util::OrigDst;

use super::WAIT;

/// Request and response bodies of the tests' clients and backends.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A whole body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body sent frame by frame: what the returned sender sends, then its end
/// when the sender is dropped.
pub fn channel() -> (mpsc::Sender<Frame<Bytes>>, Body) {
    let (tx, rx) = mpsc::channel(4);
    (tx, Frames(rx).boxed())
}

struct Frames(mpsc::Receiver<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// `GET path` (origin form, with a Host header; [`H2`] makes the URI
/// absolute, as HTTP/2 carries the authority in a pseudo-header).
pub fn get(path: &str) -> Request<Body> {
    request(Method::GET, path, full(Bytes::new()))
}

/// `POST path` with `body`.
pub fn post(path: &str, body: impl Into<Bytes>) -> Request<Body> {
    request(Method::POST, path, full(body))
}

pub fn request(method: Method, path: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test.example")
        .body(body)
        .expect("a request")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: String,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    pub async fn read(rsp: Response<Incoming>) -> anyhow::Result<Self> {
        let (parts, body) = rsp.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok(Self {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            trailers,
        })
    }

    /// The `weft-proxy-error` header: set on the responses the proxy made.
    pub fn proxy_error(&self) -> Option<&str> {
        self.header("weft-proxy-error")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A TCP connection to `listener` from an address that `orig` says was
/// going to `dst`: what iptables would have redirected.
pub async fn connect_via(orig: &OrigDst, listener: SocketAddr, dst: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("binds the client socket");
    orig.set(socket.local_addr().expect("its address"), dst);
    let tcp = tokio::time::timeout(WAIT, socket.connect(listener))
        .await
        .unwrap_or_else(|_| {
            panic!("no connection to the proxy's listener {listener} within {WAIT:?}")
        })
        .unwrap_or_else(|e| panic!("connects to the proxy's listener {listener}: {e}"));
    let _ = tcp.set_nodelay(true);
    tcp
}

/// An HTTP/1.1 client connection.
#[derive(Debug)]
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Body>,
}

impl H1 {
    pub async fn handshake(tcp: TcpStream) -> Self {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("an HTTP/1 handshake");
        tokio::spawn(conn.with_upgrades());
        Self { sender }
    }

    /// Sends `req`; the response as it comes (body unread), within [`WAIT`].
    pub async fn send_streaming(
        &mut self,
        req: Request<Body>,
    ) -> anyhow::Result<Response<Incoming>> {
        within(async {
            self.sender.ready().await?;
            Ok(self.sender.send_request(req).await?)
        })
        .await
    }

    /// Sends `req`; the whole response, within [`WAIT`].
    pub async fn send(&mut self, req: Request<Body>) -> anyhow::Result<Reply> {
        within(async { Reply::read(self.send_streaming(req).await?).await }).await
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        self.send(get(path)).await
    }

    /// Whether the connection is closed (by the server).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// An HTTP/2 client connection (prior knowledge); clones share it.
#[derive(Clone, Debug)]
pub struct H2 {
    sender: hyper::client::conn::http2::SendRequest<Body>,
}

impl H2 {
    pub async fn handshake(tcp: TcpStream) -> Self {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("an HTTP/2 handshake");
        tokio::spawn(conn);
        Self { sender }
    }

    pub async fn send_streaming(
        &mut self,
        mut req: Request<Body>,
    ) -> anyhow::Result<Response<Incoming>> {
        if req.uri().scheme().is_none() {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            *req.uri_mut() = format!("http://test.example{path}").parse()?;
        }
        req.headers_mut().remove("host");
        within(async {
            self.sender.ready().await?;
            Ok(self.sender.send_request(req).await?)
        })
        .await
    }

    pub async fn send(&mut self, req: Request<Body>) -> anyhow::Result<Reply> {
        within(async { Reply::read(self.send_streaming(req).await?).await }).await
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        self.send(get(path)).await
    }
}

/// `GET path` over a plain HTTP/1.1 connection to `addr` (an admin port, a
/// backend: nothing in between).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<Reply> {
    within(async {
        let tcp = TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let rsp = sender.send_request(get(path)).await?;
        Reply::read(rsp).await
    })
    .await
}

/// `f`, or an error once [`WAIT`] has passed: a test never waits forever
/// for an answer.
async fn within<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {WAIT:?}")))
}

/// Writes `bytes` to `tcp`, then reads until the peer closes or `within`
/// passes; what was read.
pub async fn exchange(tcp: &mut TcpStream, bytes: &[u8], within: std::time::Duration) -> String {
    tcp.write_all(bytes).await.expect("writes the request");
    read_until_closed(tcp, within).await
}

/// Reads until the peer closes or `within` passes.
pub async fn read_until_closed(tcp: &mut TcpStream, within: std::time::Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until `needle` has arrived (or fails the test after `within`).
pub async fn read_until(tcp: &mut TcpStream, needle: &str, within: std::time::Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if String::from_utf8_lossy(&out).contains(needle) {
                return Ok(());
            }
            match tcp.read(&mut buf).await {
                Ok(0) => return Err("closed".to_string()),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let result = tokio::time::timeout(within, read).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    match result {
        Ok(Ok(())) => text,
        Ok(Err(why)) => panic!("waiting for {needle:?}: {why}; got {text:?}"),
        Err(_) => panic!("no {needle:?} within {within:?}; got {text:?}"),
    }
}
