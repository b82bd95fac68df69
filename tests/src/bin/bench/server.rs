//! `weft-bench server ADDR`: the application under test. One port speaks
//! HTTP/1.1 and HTTP/2 with prior knowledge (hyper-util's auto builder tells
//! them apart by the connection preface) and answers every request with
//! `200` and a 1 KiB body. It only accepts; it never connects anywhere.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// The size of every response body.
pub const BODY_LEN: usize = 1024;
static BODY: [u8; BODY_LEN] = [b'w'; BODY_LEN];

/// Binds `addr`, prints `LISTENING ADDR`, serves until Ctrl-C (or until the
/// benchmark kills it).
pub fn main(addr: SocketAddr) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind {addr}"))?;
        crate::say(&format!("LISTENING {}", listener.local_addr()?));
        serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        Ok(())
    })
}

/// Serves `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off, do not spin.
                eprintln!("weft-bench server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(&BODY))))
}
