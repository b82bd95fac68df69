//! A test backend: an HTTP/1.1 and HTTP/2 server (hyper's, with upgrades)
//! that says who it is and records what it saw.
//!
//! | path | answer |
//! |---|---|
//! | `/hello` (and anything else) | `hello from NAME via HTTP/x.y` |
//! | `/slow?ms=N` | `slow done`, after N ms |
//! | `/count` | the number of request body bytes, read as they stream |
//! | `/echo` | the request body, streamed back |
//! | `/bytes?n=N` | N bytes, streamed |
//! | `/stream` | `first`, then `rest` once the test calls [`Backend::release`] |
//! | `/trailers` | a body, then trailers `x-checksum: abc123`, `grpc-status: 0` |
//! | `/status?code=N` | status N |
//! | `/grpc?status=N` | a trailers-only gRPC answer with `grpc-status: N` |
//! | an upgrade (`connection: upgrade`) | 101, then the bytes sent, echoed |
//!
//! Every answer waits the backend's delay first; when the backend is set to
//! fail, some answers are failures instead (deterministically: see
//! [`Backend::fail`]).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::client::{channel, full, Body};

/// Backends named `names`, started one after another.
pub async fn backends<const N: usize>(names: [&str; N]) -> Vec<Backend> {
    let mut out = Vec::new();
    for name in names {
        out.push(Backend::start(name).await);
    }
    out
}

/// What a backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub version: Version,
    pub headers: HeaderMap,
}

#[derive(Debug, Default)]
struct State {
    name: String,
    requests: AtomicU64,
    failed: AtomicU64,
    connections: AtomicU64,
    /// Connections accepted and not yet closed.
    open: AtomicU64,
    delay_ms: AtomicU64,
    /// Of every `fail_of` requests, the first `fail_k` fail.
    fail_k: AtomicU64,
    fail_of: AtomicU64,
    /// Of every `stall_of` requests, the first `stall_k` wait `stall_ms` more.
    stall_k: AtomicU64,
    stall_of: AtomicU64,
    stall_ms: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    release: Notify,
}

#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Backend {
    /// A backend called `name` on 127.0.0.1, port 0.
    pub async fn start(name: &str) -> Self {
        Self::start_on(name, "127.0.0.1:0".parse().expect("an address")).await
    }

    /// A backend called `name` on `addr`.
    pub async fn start_on(name: &str, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("backend {name} binds {addr}: {e}"));
        let addr = listener.local_addr().expect("its address");
        let state = Arc::new(State {
            name: name.into(),
            ..State::default()
        });
        let accept = tokio::spawn(serve(listener, state.clone()));
        Self {
            addr,
            name: name.into(),
            state,
            accept,
        }
    }

    /// `hello from NAME via HTTP/1.1`, as `/hello` answers.
    pub fn hello(&self, version: Version) -> String {
        format!("hello from {} via {version:?}\n", self.name)
    }

    /// Requests received (answered or not yet).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Relaxed)
    }

    /// Requests answered with a failure as told by [`Backend::fail`].
    pub fn failed(&self) -> u64 {
        self.state.failed.load(Relaxed)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Relaxed)
    }

    /// Every answer waits `delay` first.
    /// TCP connections open now (accepted, not yet closed by either side).
    pub fn open(&self) -> u64 {
        self.state.open.load(Relaxed)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, Relaxed);
    }

    /// Of every `of` requests received (counting from the first), the first
    /// `k` fail: `fail(1, 10)` fails the 10%, `fail(1, 1)` all. A failure is
    /// a 503, or for a gRPC request `grpc-status: 14` (UNAVAILABLE).
    pub fn fail(&self, k: u64, of: u64) {
        self.state.fail_of.store(of, Relaxed);
        self.state.fail_k.store(k, Relaxed);
    }

    /// Of every `of` requests received (counting from the first), the first
    /// `k` wait `delay` before anything else.
    pub fn stall(&self, k: u64, of: u64, delay: Duration) {
        self.state.stall_ms.store(delay.as_millis() as u64, Relaxed);
        self.state.stall_of.store(of, Relaxed);
        self.state.stall_k.store(k, Relaxed);
    }

    /// What the backend saw of each request, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Lets `/stream` answers send the rest of their body.
    pub fn release(&self) {
        self.state.release.notify_waiters();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        state.connections.fetch_add(1, Relaxed);
        state.open.fetch_add(1, Relaxed);
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let conn_state = state.clone();
            let service = service_fn(move |req| handle(state.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await;
            conn_state.open.fetch_sub(1, Relaxed);
        });
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn answer(status: StatusCode, body: Body) -> Response<Body> {
    let mut rsp = Response::new(body);
    *rsp.status_mut() = status;
    rsp
}

async fn handle(
    state: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let n = state.requests.fetch_add(1, Relaxed);
    state
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Seen {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            version: req.version(),
            headers: req.headers().clone(),
        });
    let mut delay = state.delay_ms.load(Relaxed);
    let (k, of) = (state.stall_k.load(Relaxed), state.stall_of.load(Relaxed));
    if of > 0 && n % of < k {
        delay += state.stall_ms.load(Relaxed);
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (k, of) = (state.fail_k.load(Relaxed), state.fail_of.load(Relaxed));
    if of > 0 && n % of < k {
        state.failed.fetch_add(1, Relaxed);
        // Read first, as a server that failed at its work would have: a
        // server that answers before the body is in and closes may reset
        // the connection under the answer.
        let (parts, body) = req.into_parts();
        let _ = body.collect().await;
        let req = Request::from_parts(parts, ());
        let grpc = req
            .headers()
            .get("content-type")
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            // As a gRPC server fails: HTTP 200, the status in a trailers-only answer.
            let mut rsp = answer(StatusCode::OK, full(Bytes::new()));
            let h = rsp.headers_mut();
            h.insert("content-type", HeaderValue::from_static("application/grpc"));
            h.insert("grpc-status", HeaderValue::from_static("14"));
            return Ok(rsp);
        }
        return Ok(answer(
            StatusCode::SERVICE_UNAVAILABLE,
            full(format!("{} failed as told\n", state.name)),
        ));
    }
    let rsp = match req.uri().path() {
        "/slow" => {
            let ms = query(&req, "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            answer(StatusCode::OK, full("slow done\n"))
        }
        "/count" => {
            let mut body = req.into_body();
            let mut n = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len()),
                    Err(_) => break,
                }
            }
            answer(StatusCode::OK, full(format!("{n}\n")))
        }
        "/echo" => answer(StatusCode::OK, req.into_body().boxed()),
        "/bytes" => {
            let n = query(&req, "n").unwrap_or(0) as usize;
            let (tx, body) = channel();
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                let mut left = n;
                while left > 0 {
                    let take = left.min(chunk.len());
                    if tx.send(Frame::data(chunk.slice(..take))).await.is_err() {
                        return;
                    }
                    left -= take;
                }
            });
            answer(StatusCode::OK, body)
        }
        "/stream" => {
            let (tx, body) = channel();
            let state = state.clone();
            tokio::spawn(async move {
                // Waiting from before `first` goes out: the test releases
                // only after it has read `first`.
                let released = state.release.notified();
                let _ = tx.send(Frame::data(Bytes::from("first\n"))).await;
                released.await;
                let _ = tx.send(Frame::data(Bytes::from("rest\n"))).await;
            });
            answer(StatusCode::OK, body)
        }
        "/trailers" => {
            let (tx, body) = channel();
            tokio::spawn(async move {
                let _ = tx
                    .send(Frame::data(Bytes::from("body before trailers\n")))
                    .await;
                let mut trailers = HeaderMap::new();
                trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                let _ = tx.send(Frame::trailers(trailers)).await;
            });
            let mut rsp = answer(StatusCode::OK, body);
            // HTTP/1 sends only the trailers announced.
            rsp.headers_mut().insert(
                "trailer",
                HeaderValue::from_static("x-checksum, grpc-status"),
            );
            rsp
        }
        "/status" => {
            let code = query(&req, "code").unwrap_or(200) as u16;
            answer(
                StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
                full(format!("{} answered {code}\n", state.name)),
            )
        }
        "/grpc" if query(&req, "trailers") == Some(1) => {
            // A message, then the status in trailers (as most calls end).
            let status = query(&req, "status").unwrap_or(0);
            let (tx, body) = channel();
            tokio::spawn(async move {
                let _ = tx.send(Frame::data(Bytes::from("\0\0\0\0\0"))).await;
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from(status));
                let _ = tx.send(Frame::trailers(trailers)).await;
            });
            let mut rsp = answer(StatusCode::OK, body);
            rsp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
            rsp
        }
        "/grpc" => {
            // Trailers-only: the status in the headers.
            let status = query(&req, "status").unwrap_or(0);
            let mut rsp = answer(StatusCode::OK, full(Bytes::new()));
            let h = rsp.headers_mut();
            h.insert("content-type", HeaderValue::from_static("application/grpc"));
            h.insert("grpc-status", HeaderValue::from(status));
            rsp
        }
        _ if req.headers().contains_key("upgrade") => {
            let protocol = req.headers()["upgrade"].clone();
            let upgraded = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(io) = upgraded.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(io));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            let mut rsp = answer(StatusCode::SWITCHING_PROTOCOLS, full(Bytes::new()));
            rsp.headers_mut().insert("upgrade", protocol);
            rsp.headers_mut()
                .insert("connection", HeaderValue::from_static("upgrade"));
            rsp
        }
        _ => answer(
            StatusCode::OK,
            full(format!(
                "hello from {} via {:?}\n",
                state.name,
                req.version()
            )),
        ),
    };
    Ok(rsp)
}
