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
//! weft-netprobe capture FILE MS    capture every frame on every interface of
//!                                  the namespace (AF_PACKET) for MS ms into
//!                                  FILE, frames back to back; prints
//!                                  "CAPTURING" once the socket is open and
//!                                  "CAPTURED N frames" at the end
//! weft-netprobe relay FROM TO      accept on FROM and relay each connection,
//!                                  both ways, to TO (each `tcp:ADDR` or
//!                                  `unix:PATH`): a path crosses network
//!                                  namespaces, so a pod reaches a server on
//!                                  the host's loopback through two relays
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

#[path = "netprobe/relay.rs"]
mod relay;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = |i: usize| -> SocketAddr {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };
    match args.first().map(String::as_str) {
        Some("listen") => listen(addr(1)),
        Some("capture") => {
            let (Some(file), Some(ms)) = (args.get(1), args.get(2).and_then(|m| m.parse().ok()))
            else {
                usage()
            };
            capture(file, Duration::from_millis(ms))
        }
        Some("relay") => {
            let (Some(from), Some(to)) = (args.get(1), args.get(2)) else {
                usage()
            };
            relay::run(from, to)
        }
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
    eprintln!("usage: weft-netprobe listen ADDR | connect ADDR [TIMEOUT_MS] | capture FILE MS | relay FROM TO");
    std::process::exit(64)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// What a test needs of tcpdump, without tcpdump: the raw frames.
fn capture(file: &str, duration: Duration) -> ExitCode {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::io::Read;
    const ETH_P_ALL: u16 = 0x0003;
    let socket = match Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
    ) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("FAILED packet socket: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
    let mut out = Vec::new();
    let mut frames = 0;
    let mut buf = vec![0u8; 65536];
    say("CAPTURING");
    let stop = std::time::Instant::now() + duration;
    while std::time::Instant::now() < stop {
        match (&socket).read(&mut buf) {
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                frames += 1;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                say(&format!("FAILED read: {e}"));
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = std::fs::write(file, &out) {
        say(&format!("FAILED write {file}: {e}"));
        return ExitCode::FAILURE;
    }
    say(&format!("CAPTURED {frames} frames"));
    ExitCode::SUCCESS
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
