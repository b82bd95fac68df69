//! `weft-init validate`: proves that outbound TCP really is redirected.
//!
//! It holds a listener on the proxy's outbound port, connects to an address
//! that nothing in the pod serves, and checks that the connection arrives on
//! its own listener with that address as the original destination, then
//! sends a token across to prove it is the same connection. Each way this can
//! go wrong is reported as what it means for the redirect.

use anyhow::{bail, Context, Result};
use socket2::SockRef;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug)]
pub struct Validate {
    pub outbound_port: u16,
    pub proxy_uid: u32,
    pub targets: Vec<SocketAddr>,
    pub timeout: Duration,
}

impl Validate {
    pub fn run(&self) -> Result<()> {
        if current_uid() == Some(self.proxy_uid) {
            bail!(
                "validate runs as uid {}, the proxy's uid, whose traffic is never redirected: \
                 run it as another user",
                self.proxy_uid
            );
        }
        for target in &self.targets {
            let landed = self.check(*target)?;
            println!(
                "ok: a connection to {target} was redirected to port {} with original destination {landed}",
                self.outbound_port
            );
        }
        Ok(())
    }

    /// One target: returns the original destination the listener saw.
    fn check(&self, target: SocketAddr) -> Result<SocketAddr> {
        let bind: SocketAddr = if target.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, self.outbound_port).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, self.outbound_port).into()
        };
        let listener = bind_only(bind).with_context(|| {
            format!("cannot listen on {bind} (is the proxy already running in this pod?)")
        })?;
        listener.set_nonblocking(true)?;

        let mut client = match TcpStream::connect_timeout(&target, self.timeout) {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::TimedOut => bail!(
                "outbound traffic is not redirected: the connection to {target} timed out after {:?} \
                 instead of arriving on port {} (is the WEFT_OUTBOUND chain installed in nat OUTPUT?)",
                self.timeout,
                self.outbound_port
            ),
            Err(e) => bail!(
                "outbound traffic is not redirected: the connection to {target} failed ({e}) \
                 instead of arriving on port {} (is the WEFT_OUTBOUND chain installed in nat OUTPUT?)",
                self.outbound_port
            ),
        };

        let deadline = Instant::now() + self.timeout;
        let mut server = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => bail!(
                    "the connection to {target} was answered, but not by the listener on port {}: \
                     it was not redirected (another rule or host took it)",
                    self.outbound_port
                ),
                Err(e) => return Err(e).context("accepting the redirected connection"),
            }
        };
        server.set_nonblocking(false)?;

        let sock = SockRef::from(&server);
        let original = if target.is_ipv4() {
            sock.original_dst_v4()
        } else {
            sock.original_dst_v6()
        }
        .context("the redirected connection has no original destination (SO_ORIGINAL_DST)")?
        .as_socket()
        .context("the original destination is not an IP socket address")?;
        if original != target {
            bail!(
                "a connection arrived on port {} but its original destination is {original}, not {target}",
                self.outbound_port
            );
        }

        let token = token();
        client.write_all(&token).context("sending the token")?;
        server.set_read_timeout(Some(self.timeout))?;
        let mut got = [0u8; 16];
        server
            .read_exact(&mut got)
            .context("reading the token on the redirected connection")?;
        if got != token {
            bail!(
                "the connection on port {} is not the one validate made",
                self.outbound_port
            );
        }
        Ok(original)
    }
}

/// A listener that does not also take the other family's wildcard.
fn bind_only(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(16)?;
    Ok(socket.into())
}

fn token() -> [u8; 16] {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    (nanos ^ (u128::from(std::process::id()) << 64)).to_be_bytes()
}

fn current_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
