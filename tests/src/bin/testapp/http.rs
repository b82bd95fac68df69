//! The HTTP side of the test application (HTTP/1.1 and HTTP/2 prior
//! knowledge on one port). See main.rs for the routes.

use anyhow::Result;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;

use crate::{say, ws};

type Out = BoxBody<Bytes, hyper::Error>;

pub async fn serve(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).await?;
    say(&format!("LISTENING {addr}"));
    loop {
        let (tcp, _) = listener.accept().await?;
        let local = tcp.local_addr()?;
        tokio::spawn(async move {
            let service =
                service_fn(move |req| async move { Ok::<_, Infallible>(route(req, local).await) });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn full(s: impl Into<Bytes>) -> Out {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

/// `/hello` requests served, failed ones included (`GET /served`).
static SERVED: AtomicU64 = AtomicU64::new(0);

/// How `/hello` behaves, from the environment: `TESTAPP_DELAY_MS` (answer
/// after that long) and `TESTAPP_FAIL_PERCENT` (that share of answers are
/// 503, spread evenly: with 10, every tenth).
fn knobs() -> (Duration, u64) {
    static KNOBS: OnceLock<(Duration, u64)> = OnceLock::new();
    *KNOBS.get_or_init(|| {
        let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        (
            Duration::from_millis(var("TESTAPP_DELAY_MS").unwrap_or(0)),
            var("TESTAPP_FAIL_PERCENT").unwrap_or(0).min(100),
        )
    })
}

async fn hello(req: &Request<Incoming>, local: SocketAddr) -> Response<Out> {
    let n = SERVED.fetch_add(1, Ordering::Relaxed);
    let (delay, fail_percent) = knobs();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // Request n fails when the running count of failures due crosses a whole number.
    if (n + 1) * fail_percent / 100 > n * fail_percent / 100 {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{local} failing on purpose\n"),
        );
    }
    Response::new(full(format!(
        "hello from {local} via {:?}\n",
        req.version()
    )))
}

/// Whether every request is printed (`TESTAPP_LOG_REQUESTS=1`): a test
/// reads from them what reached the app.
fn log_requests() -> bool {
    static LOG: OnceLock<bool> = OnceLock::new();
    *LOG.get_or_init(|| std::env::var("TESTAPP_LOG_REQUESTS").is_ok_and(|v| v == "1"))
}

async fn route(req: Request<Incoming>, local: SocketAddr) -> Response<Out> {
    if log_requests() {
        say(&format!("REQUEST {} {}", req.method(), req.uri().path()));
    }
    match req.uri().path() {
        "/hello" => hello(&req, local).await,
        "/headers" => {
            // The request's headers as the app received them, a line each.
            let mut out = String::new();
            for (k, v) in req.headers() {
                out += &format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes()));
            }
            Response::new(full(out))
        }
        "/fail" => status(
            StatusCode::SERVICE_UNAVAILABLE,
            "failing on purpose\n".into(),
        ),
        "/served" => Response::new(full(format!("{}\n", SERVED.load(Ordering::Relaxed)))),
        "/echo" => Response::new(req.into_body().boxed()),
        "/count" => {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(e) => return status(StatusCode::BAD_REQUEST, format!("body error: {e}\n")),
                }
            }
            Response::new(full(format!("{n}\n")))
        }
        "/bytes" => {
            let n = query(&req, "n").unwrap_or(0);
            Response::new(Repeat { left: n }.boxed())
        }
        "/slow" => {
            let seen = |k: &str| {
                req.headers()
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            say(&format!(
                "SAW grpc-timeout={} weft-timeout={}",
                seen("grpc-timeout"),
                seen("weft-timeout")
            ));
            tokio::time::sleep(Duration::from_millis(query(&req, "ms").unwrap_or(1000))).await;
            Response::new(full("slow done\n"))
        }
        "/trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
            let body = WithTrailers {
                data: Some(Bytes::from_static(b"body before trailers\n")),
                trailers: Some(trailers),
            };
            let mut rsp = Response::new(body.boxed());
            rsp.headers_mut()
                .insert(header::TRAILER, HeaderValue::from_static("x-checksum"));
            rsp
        }
        "/ws" => websocket(req),
        _ => status(StatusCode::NOT_FOUND, "no such route\n".into()),
    }
}

fn status(code: StatusCode, text: String) -> Response<Out> {
    let mut rsp = Response::new(full(text));
    *rsp.status_mut() = code;
    rsp
}

fn websocket(mut req: Request<Incoming>) -> Response<Out> {
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|k| k.to_str().ok())
        .map(str::to_owned)
    else {
        return status(StatusCode::BAD_REQUEST, "not a websocket request\n".into());
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let _ = ws::echo(TokioIo::new(upgraded)).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header("sec-websocket-accept", ws::accept_key(&key))
        .body(full(""))
        .unwrap_or_default()
}

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// `left` zero bytes, streamed 64 KiB at a time.
struct Repeat {
    left: u64,
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(ZEROS.len() as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &ZEROS[..n as usize],
        )))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// One data frame, then trailers.
struct WithTrailers {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for WithTrailers {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}
