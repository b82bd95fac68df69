//! `weft-netprobe relay FROM TO`: a byte relay between a TCP or Unix
//! listener and a TCP or Unix address, two threads per connection. A
//! Unix socket path is the one door between network namespaces that the
//! file system already opens, so the tests use it to let a pod reach a
//! server that listens on the host's loopback (the fake API server) and
//! nothing else of the host.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;

use super::say;

/// Either end of a relayed connection.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn connect(to: &str) -> std::io::Result<Self> {
        match to.split_once(':') {
            Some(("tcp", addr)) => TcpStream::connect(addr).map(Conn::Tcp),
            Some(("unix", path)) => UnixStream::connect(path).map(Conn::Unix),
            _ => Err(std::io::Error::other(format!("bad address {to}"))),
        }
    }

    fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Write),
            Conn::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Either kind of listener.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn bind(from: &str) -> std::io::Result<Self> {
        match from.split_once(':') {
            Some(("tcp", addr)) => TcpListener::bind(addr).map(Listener::Tcp),
            Some(("unix", path)) => {
                let _ = std::fs::remove_file(path);
                UnixListener::bind(path).map(Listener::Unix)
            }
            _ => Err(std::io::Error::other("not tcp:ADDR or unix:PATH")),
        }
    }

    fn accept(&self) -> std::io::Result<Conn> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(c, _)| Conn::Tcp(c)),
            Listener::Unix(l) => l.accept().map(|(c, _)| Conn::Unix(c)),
        }
    }
}

pub fn run(from: &str, to: &str) -> ExitCode {
    let listener = match Listener::bind(from) {
        Ok(l) => l,
        Err(e) => return failed(&format!("bind {from}: {e}")),
    };
    say(&format!("LISTENING {from}"));
    loop {
        let Ok(conn) = listener.accept() else {
            // Out of descriptors or similar: back off, keep relaying.
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        let to = to.to_owned();
        std::thread::spawn(move || {
            // Refused: the client sees its connection closed, as it would.
            if let Ok(upstream) = Conn::connect(&to) {
                splice(conn, upstream);
            }
        });
    }
}

fn failed(why: &str) -> ExitCode {
    say(&format!("FAILED {why}"));
    ExitCode::FAILURE
}

/// Copies both ways until each side has finished; a side's end of stream
/// is passed on as a half-close.
fn splice(a: Conn, b: Conn) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let one_way = |mut from: Conn, mut to: Conn| {
        let _ = std::io::copy(&mut from, &mut to);
        to.shutdown_write();
    };
    let back = std::thread::spawn(move || one_way(b2, a2));
    one_way(a, b);
    let _ = back.join();
}
