//! `weft-testapp web ADDR --books URL --ratings ADDR`: the demo's frontend.
//! Each request it serves (any path) makes two calls, as a real frontend
//! would: `GET URL/hello` over HTTP/1 (a keep-alive pool) and `Echo/Unary`
//! on `ADDR` over gRPC, passing the caller's trace context (W3C and B3
//! headers) on to both, so the mesh's spans of one request form one trace.
//! It answers 200 with what both said, or 502 naming the call that failed.

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use weft_tests::echo::echo_client::EchoClient;
use weft_tests::echo::EchoRequest;

use crate::say;

/// The headers of a trace context, passed on from the request served.
const TRACE_HEADERS: [&str; 8] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

struct Backends {
    books: String,
    http: Client<HttpConnector, Empty<Bytes>>,
    ratings: EchoClient<Channel>,
}

/// Parses `--books URL --ratings ADDR` (in any order).
pub fn args(rest: &[String]) -> Result<(String, SocketAddr)> {
    let (mut books, mut ratings) = (None, None);
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--books" => books = Some(value.trim_end_matches('/').to_owned()),
            "--ratings" => {
                ratings = Some(
                    value
                        .parse()
                        .with_context(|| format!("--ratings {value}: not an IP:port"))?,
                )
            }
            other => bail!("unknown flag {other}: web takes --books URL --ratings ADDR"),
        }
    }
    Ok((
        books.context("web needs --books URL")?,
        ratings.context("web needs --ratings ADDR")?,
    ))
}

pub async fn serve(addr: SocketAddr, books: String, ratings: SocketAddr) -> Result<()> {
    let channel = Channel::from_shared(format!("http://{ratings}"))?.connect_lazy();
    let backends = Arc::new(Backends {
        books,
        http: Client::builder(TokioExecutor::new()).build_http(),
        ratings: EchoClient::new(channel),
    });
    let listener = TcpListener::bind(addr).await?;
    say(&format!("LISTENING {addr}"));
    loop {
        let (tcp, _) = listener.accept().await?;
        let backends = backends.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let backends = backends.clone();
                async move { Ok::<_, Infallible>(handle(&backends, req.headers()).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn handle(backends: &Backends, headers: &HeaderMap) -> Response<Full<Bytes>> {
    let trace: Vec<(&'static str, &http::HeaderValue)> = TRACE_HEADERS
        .iter()
        .filter_map(|h| Some((*h, headers.get(*h)?)))
        .collect();
    let (book, rating) = tokio::join!(book(backends, &trace), rating(backends, &trace));
    match (book, rating) {
        (Ok(b), Ok(r)) => Response::new(Full::new(format!("{b}; rating {r}\n").into())),
        (b, r) => {
            let why = [
                b.err().map(|e| format!("books: {e:#}")),
                r.err().map(|e| format!("ratings: {e:#}")),
            ];
            let mut rsp = Response::new(Full::new(
                format!(
                    "{}\n",
                    why.into_iter().flatten().collect::<Vec<_>>().join("; ")
                )
                .into(),
            ));
            *rsp.status_mut() = StatusCode::BAD_GATEWAY;
            rsp
        }
    }
}

async fn book(backends: &Backends, trace: &[(&'static str, &http::HeaderValue)]) -> Result<String> {
    let mut req = Request::get(format!("{}/hello", backends.books));
    for (k, v) in trace {
        req = req.header(*k, *v);
    }
    let rsp = backends.http.request(req.body(Empty::new())?).await?;
    let status = rsp.status();
    let body = rsp.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    if !status.is_success() {
        bail!("{status} {text}");
    }
    Ok(text)
}

async fn rating(
    backends: &Backends,
    trace: &[(&'static str, &http::HeaderValue)],
) -> Result<String> {
    let msg = EchoRequest {
        message: "5 stars".into(),
        fail_with: 0,
    };
    // As tonic sends it: no content-length (the proxy keeps the body as it
    // streams through, to send it again).
    let mut req = tonic::Request::new(msg);
    for (k, v) in trace {
        if let Ok(v) = v.to_str() {
            if let Ok(v) = v.parse() {
                req.metadata_mut().insert(*k, v);
            }
        }
    }
    let rsp = backends.ratings.clone().unary(req).await?;
    Ok(rsp.into_inner().message)
}
