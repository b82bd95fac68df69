//! The client side of one load worker: a connection to the server that sends
//! `GET /` and reads the whole answer, reconnecting when the connection dies.
//! HTTP/1.1 workers each own a keep-alive connection; HTTP/2 workers share one
//! connection (one stream per request). Also `weft-bench wait-ready URL`.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::header::HOST;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::opts::Proto;

type Body = Empty<Bytes>;
/// One request that takes longer than this counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The HTTP/2 connection the workers of one run share, made again by the
/// first worker that finds it closed.
type SharedH2 = Arc<Mutex<Option<http2::SendRequest<Body>>>>;

/// A worker's way to the server.
#[derive(Debug)]
pub enum Conn {
    H1 {
        addr: SocketAddr,
        sender: Option<http1::SendRequest<Body>>,
    },
    H2 {
        addr: SocketAddr,
        shared: SharedH2,
        sender: Option<http2::SendRequest<Body>>,
    },
}

impl Conn {
    /// `workers` connections for `proto` (HTTP/2: one shared connection),
    /// connected before the run starts so handshakes stay out of it.
    pub async fn pool(addr: SocketAddr, proto: Proto, workers: usize) -> Result<Vec<Self>> {
        let shared = SharedH2::default();
        let mut pool = Vec::with_capacity(workers);
        for _ in 0..workers {
            let mut conn = match proto {
                Proto::H1 => Self::H1 { addr, sender: None },
                Proto::H2 => Self::H2 {
                    addr,
                    shared: shared.clone(),
                    sender: None,
                },
            };
            conn.ensure().await?;
            pool.push(conn);
        }
        Ok(pool)
    }

    /// `GET /`, the whole body read; errors on a status other than 200 and
    /// after [`REQUEST_TIMEOUT`]. A failed connection is dropped, to be made
    /// again by the next request.
    pub async fn get(&mut self) -> Result<()> {
        let res = tokio::time::timeout(REQUEST_TIMEOUT, self.get_once()).await;
        let res = res.unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
        if res.is_err() {
            match self {
                Self::H1 { sender, .. } => *sender = None,
                Self::H2 { sender, .. } => *sender = None,
            }
        }
        res
    }

    async fn get_once(&mut self) -> Result<()> {
        self.ensure().await?;
        let resp = match self {
            Self::H1 { addr, sender, .. } => {
                let sender = sender.as_mut().context("no connection")?;
                sender.ready().await?;
                let req = Request::get("/")
                    .header(HOST, addr.to_string())
                    .body(Body::new())?;
                sender.send_request(req).await?
            }
            Self::H2 { addr, sender, .. } => {
                let sender = sender.as_mut().context("no connection")?;
                sender.ready().await?;
                let uri: Uri = format!("http://{addr}/").parse()?;
                sender
                    .send_request(Request::get(uri).body(Body::new())?)
                    .await?
            }
        };
        let status = resp.status();
        resp.into_body().collect().await?;
        if status != StatusCode::OK {
            bail!("status {status}");
        }
        Ok(())
    }

    /// Drops the connection: the next request makes a new one.
    pub fn close(&mut self) {
        match self {
            Self::H1 { sender, .. } => *sender = None,
            Self::H2 { sender, .. } => *sender = None,
        }
    }

    /// Connects if there is no live connection.
    async fn ensure(&mut self) -> Result<()> {
        match self {
            Self::H1 { addr, sender } => {
                if sender.as_ref().is_none_or(|s| s.is_closed()) {
                    let (s, conn) = http1::handshake(TokioIo::new(dial(*addr).await?)).await?;
                    tokio::spawn(conn);
                    *sender = Some(s);
                }
            }
            Self::H2 {
                addr,
                shared,
                sender,
            } => {
                if sender.as_ref().is_none_or(|s| s.is_closed()) {
                    let mut slot = shared.lock().await;
                    if slot.as_ref().is_none_or(|s| s.is_closed()) {
                        let io = TokioIo::new(dial(*addr).await?);
                        let (s, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                        tokio::spawn(conn);
                        *slot = Some(s);
                    }
                    *sender = slot.clone();
                }
            }
        }
        Ok(())
    }
}

async fn dial(addr: SocketAddr) -> Result<TcpStream> {
    crate::safety::check_target(addr)?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `weft-bench wait-ready URL [SECS]`: polls `GET URL` every 50 ms until it
/// answers 200 (prints `READY`) or `limit` passes (exit 1).
pub fn wait_ready(url: &str, limit: Duration) -> Result<()> {
    let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("{url}: only http:// URLs");
    }
    let authority = uri.authority().context("URL without host")?;
    let addr: SocketAddr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    )
    .parse()
    .with_context(|| format!("{url}: the host must be an IP address"))?;
    let path = uri.path().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let deadline = Instant::now() + limit;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match rt.block_on(probe(addr, &path)) {
            Ok(StatusCode::OK) => {
                crate::say("READY");
                return Ok(());
            }
            Ok(status) => last = format!("status {status}"),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{url} not ready within {limit:?}: {last}")
}

async fn probe(addr: SocketAddr, path: &str) -> Result<StatusCode> {
    let (mut sender, conn) = http1::handshake(TokioIo::new(dial(addr).await?)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(HOST, addr.to_string())
        .body(Body::new())?;
    let resp = tokio::time::timeout(Duration::from_secs(1), sender.send_request(req))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 1s"))??;
    Ok(resp.status())
}
