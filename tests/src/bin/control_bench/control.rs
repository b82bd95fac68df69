//! The `weft-control` under test: a child process on two free loopback
//! ports, reading from the fake API server; its admin port (`/ready`,
//! `/metrics`) and what `/proc` says about it.

use anyhow::{bail, Context, Result};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use weft_tests::Proc;

use crate::procfs;

/// A running weft-control.
#[derive(Debug)]
pub struct Control {
    proc: Proc,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    /// Just before the process was started.
    pub started: Instant,
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl Control {
    /// Starts `binary` against the API server at `kube_url`, logging
    /// warnings and errors only (to our stderr).
    pub fn start(binary: &Path, kube_url: &str) -> Result<Self> {
        let (grpc, admin) = (free_port()?, free_port()?);
        let mut cmd = Command::new(binary);
        cmd.args(["--source", "kube", "--kube-api-server", kube_url])
            .args(["--grpc-addr", &grpc.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--log", "warn"]);
        let started = Instant::now();
        let proc = Proc::spawn("weft-control", cmd)?;
        Ok(Self {
            proc,
            grpc,
            admin,
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Polls `/ready` every 5 ms until it answers 200; the time since start.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<Duration> {
        loop {
            if let Ok((200, _)) = get(self.admin, "/ready") {
                return Ok(self.started.elapsed());
            }
            if let Ok(code) = self.proc.wait_exit(Duration::ZERO) {
                bail!("weft-control exited (code {code:?}) before it was ready");
            }
            if self.started.elapsed() > limit {
                bail!("weft-control was not ready within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The value of a metric line (`name{labels}` exactly as exported).
    pub fn metric(&self, series: &str) -> Result<f64> {
        let (status, body) = get(self.admin, "/metrics")?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        metric(&body, series).with_context(|| format!("no {series} in /metrics"))
    }

    /// Resident memory now and at its peak since start (VmRSS, VmHWM).
    pub fn memory(&self) -> Result<(u64, u64)> {
        self.proc.memory()
    }

    pub fn rss(&self) -> Result<u64> {
        procfs::rss(self.pid())
    }

    pub fn cpu(&self) -> Result<Duration> {
        procfs::cpu_time(self.pid())
    }

    /// SIGTERM; its exit code and how long it took to exit.
    pub fn stop(&mut self, limit: Duration) -> Result<(Option<i32>, Duration)> {
        let t = Instant::now();
        let code = self.proc.terminate(limit)?;
        Ok((code, t.elapsed()))
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`: status and body.
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {raw:?}"))?;
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

/// The value of `series` in a Prometheus text exposition.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_metric_lines() {
        let text = "# HELP x\nweft_control_objects{kind=\"Service\"} 1000\n\
                    weft_control_objects{kind=\"EndpointSlice\"} 1010\nweft_control_watchers 2000\n";
        assert_eq!(
            metric(text, "weft_control_objects{kind=\"Service\"}"),
            Some(1000.0)
        );
        assert_eq!(metric(text, "weft_control_watchers"), Some(2000.0));
        assert_eq!(metric(text, "weft_control_objects"), None);
    }
}
