//! weft-testapp: the application the proxy tests put behind weft, and the
//! clients they need beyond curl.
//!
//! ```text
//! weft-testapp http ADDR          HTTP/1.1 + HTTP/2 (prior knowledge) server
//!                                 (TESTAPP_LOG_REQUESTS=1: prints
//!                                 "REQUEST METHOD PATH" for each request):
//!     GET  /hello                 "hello from ADDR" (TESTAPP_DELAY_MS: after a delay;
//!                                 TESTAPP_FAIL_PERCENT: that share answered 503)
//!     GET  /headers               the request's headers as received, a line each
//!     GET  /fail                  503, always
//!     GET  /served                how many /hello requests were served
//!     POST /echo                  the request body, streamed back
//!     POST /count                 the number of body bytes received
//!     GET  /bytes?n=N             N bytes, streamed
//!     GET  /slow?ms=N             answers after N ms; prints SAW grpc-timeout=V weft-timeout=V
//!     GET  /trailers              a body followed by trailers (x-checksum)
//!     GET  /ws                    WebSocket (RFC 6455) echo
//! weft-testapp grpc ADDR          gRPC Echo service (Unary, Bidi; TESTAPP_FAIL_PERCENT:
//!                                 that share of Unary calls answered UNAVAILABLE)
//! weft-testapp web ADDR --books URL --ratings ADDR
//!                                 the demo's frontend: per request, GET URL/hello and
//!                                 a gRPC Unary call on ADDR (trace context passed on)
//! weft-testapp grpc-client ADDR [N] [GAP_MS]
//!                                 unary, failing unary, bidi stream of N messages
//! weft-testapp rapid-reset ADDR [N]
//!                                 HTTP/2 client opening and cancelling N streams
//! weft-testapp banner ADDR        TCP: the server speaks first ("220 weft banner",
//!                                 then TESTAPP_NAME if set),
//!                                 then echoes lines
//! weft-testapp halfclose ADDR     TCP: reads to EOF, then answers with the byte
//!                                 count and closes
//! weft-testapp ws-client ADDR MSG WebSocket round trip of MSG through ADDR
//! weft-testapp load ADDR RATE DURATION_MS [CONCURRENCY]
//!                                 GET /hello at RATE/s over keep-alive connections;
//!                                 prints OK sent= ok= failed= and FAILURE lines
//! weft-testapp tcp-client ADDR MODE  client of banner/halfclose; `idle` reads the
//!                                 banner, then waits silently until closed
//! weft-testapp hold ADDR N h1|h2  N idle connections, held until killed
//! weft-testapp probe ADDR N       N GET /hello, each on a new connection: latency
//! weft-testapp h2-abuse ADDR KIND MILLIS [noread]
//!                                 HTTP/2 floods: settings, ping, window-update,
//!                                 continuation, streams
//! weft-testapp h1-abuse ADDR KIND HTTP/1: headers, line, chunks
//!                                 (see hostile.rs for each)
//! ```
//!
//! Servers print `LISTENING ADDR` once bound; clients print `OK ...` lines
//! or `FAILED reason` and exit 1.
#![forbid(unsafe_code)]

mod frames;
mod grpc;
mod hostile;
mod http;
mod load;
mod rapid_reset;
mod tcp;
mod web;
mod ws;

use std::net::SocketAddr;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = |i: usize| -> SocketAddr {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };
    // Argument i as a number, `d` when absent.
    let num = |i: usize, d: u64| -> u64 {
        args.get(i)
            .map_or(Ok(d), |s| s.parse())
            .unwrap_or_else(|_| usage())
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        match args.first().map(String::as_str) {
            Some("http") => http::serve(addr(1)).await,
            Some("grpc") => grpc::serve(addr(1)).await,
            Some("web") => match web::args(&args[2.min(args.len())..]) {
                Ok((books, ratings)) => web::serve(addr(1), books, ratings).await,
                Err(e) => Err(e),
            },
            Some("grpc-client") => grpc::client(addr(1), num(2, 20), num(3, 10)).await,
            Some("rapid-reset") => rapid_reset::client(addr(1), num(2, 10_000)).await,
            Some("banner") => tcp::banner(addr(1)).await,
            Some("halfclose") => tcp::halfclose(addr(1)).await,
            Some("ws-client") => ws::client(addr(1), args.get(2).map_or("hello", |s| s)).await,
            Some("load") => {
                let duration = std::time::Duration::from_millis(num(3, 1000));
                load::run(addr(1), num(2, 100), duration, num(4, 4)).await
            }
            Some("hold") => {
                let kind = args.get(3).map_or("h1", |s| s);
                hostile::hold(addr(1), num(2, 10_000), kind).await
            }
            Some("probe") => hostile::probe(addr(1), num(2, 100)).await,
            Some("h2-abuse") => {
                let kind = args.get(2).map_or("", |s| s);
                let read = args.get(4).map(String::as_str) != Some("noread");
                hostile::h2_abuse(addr(1), kind, num(3, 2000), read).await
            }
            Some("h1-abuse") => hostile::h1_abuse(addr(1), args.get(2).map_or("", |s| s)).await,
            Some("tcp-client") => tcp::client(addr(1), args.get(2).map_or("", |s| s)).await,
            _ => usage(),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("FAILED {e:#}");
            eprintln!("weft-testapp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: weft-testapp http|banner|halfclose ADDR | ws-client ADDR MSG | tcp-client ADDR banner|halfclose|idle");
    std::process::exit(64)
}

pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
