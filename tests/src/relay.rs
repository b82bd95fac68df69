//! A port on a pod's loopback that reaches a server on the host's loopback
//! (the fake API server, which runs inside the test process), through two
//! `weft-netprobe relay`s joined by a Unix socket: nothing else of the
//! host becomes reachable, and no packet leaves either loopback.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{bin, Pod, Proc, WAIT};

/// Both relays; stopped (and the socket removed) on drop.
#[derive(Debug)]
pub struct HostRelay {
    socket: PathBuf,
    _host: Proc,
    _pod: Proc,
}

impl HostRelay {
    /// Listens on `listen` in `pod` and relays each connection to `target`
    /// on the host's loopback; returns once both ends listen.
    pub fn start(pod: &Pod, listen: SocketAddr, target: SocketAddr) -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let socket = std::env::temp_dir().join(format!(
            "weft-{}-relay-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let unix = format!("unix:{}", socket.display());
        let mut cmd = Command::new(bin("weft-netprobe"));
        cmd.args(["relay", &unix, &format!("tcp:{target}")]);
        let host = Proc::spawn("relay on the host", cmd)?;
        host.expect_line("LISTENING", WAIT)
            .context("the host's end of the relay")?;
        let mut cmd = pod.command(None, &bin("weft-netprobe"));
        cmd.args(["relay", &format!("tcp:{listen}"), &unix]);
        let in_pod = Proc::spawn(&format!("relay in {}", pod.name), cmd)?;
        in_pod
            .expect_line("LISTENING", WAIT)
            .context("the pod's end of the relay")?;
        Ok(Self {
            socket,
            _host: host,
            _pod: in_pod,
        })
    }
}

impl Drop for HostRelay {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}
