//! weft-netprobe: the tests' stand-in for an application or a proxy listener.
//!
//! ```text
//! weft-netprobe listen ADDR        accept connections forever; for each print
//!                                  "ACCEPTED local=L peer=P orig=O" (O from
//!                                  SO_ORIGINAL_DST, or "none") and answer
//!                                  "hello from L" before closing
//! weft-netprobe connect ADDR [MS]  connect (timeout MS, default 3000), print
//!                                  "CONNECTED local=L peer=P" and the answer
//!                                  line as "REPLY ...", or "FAILED reason" and
//!                                  exit 1
//! ```
//!
//! Listening prints "LISTENING ADDR" once the socket is bound, so a test can
//! wait for it instead of sleeping.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use weft_proxy::transport::orig_dst::{OrigDstAddr, SoOriginalDst};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = |i: usize| -> SocketAddr {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };
    match args.first().map(String::as_str) {
        Some("listen") => listen(addr(1)),
        Some("connect") => {
            let ms = args
                .get(2)
                .map_or(3000, |m| m.parse().unwrap_or_else(|_| usage()));
            connect(addr(1), Duration::from_millis(ms))
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: weft-netprobe listen ADDR | connect ADDR [TIMEOUT_MS]");
    std::process::exit(64)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn listen(addr: SocketAddr) -> ExitCode {
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            say(&format!("FAILED bind {addr}: {e}"));
            return ExitCode::FAILURE;
        }
    };
    say(&format!("LISTENING {addr}"));
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let (Ok(local), Ok(peer)) = (conn.local_addr(), conn.peer_addr()) else {
            continue;
        };
        let orig = SoOriginalDst
            .orig_dst_addr(&conn, local)
            .map_or_else(|_| "none".to_owned(), |a| a.to_string());
        say(&format!("ACCEPTED local={local} peer={peer} orig={orig}"));
        let _ = writeln!(conn, "hello from {local}");
    }
    ExitCode::SUCCESS
}

fn connect(addr: SocketAddr, timeout: Duration) -> ExitCode {
    let conn = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(c) => c,
        Err(e) => {
            say(&format!("FAILED connect {addr}: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let local = conn
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    say(&format!("CONNECTED local={local} peer={addr}"));
    let _ = conn.set_read_timeout(Some(timeout));
    let mut reply = String::new();
    match BufReader::new(conn).read_line(&mut reply) {
        Ok(n) if n > 0 => {
            say(&format!("REPLY {}", reply.trim_end()));
            ExitCode::SUCCESS
        }
        Ok(_) => {
            say("FAILED no reply: connection closed");
            ExitCode::FAILURE
        }
        Err(e) => {
            say(&format!("FAILED no reply: {e}"));
            ExitCode::FAILURE
        }
    }
}
