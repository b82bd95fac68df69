//! Processes the tests start, killed and reaped when dropped (also on panic).

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The path of a binary of this workspace, next to the running executable
/// (`target/debug/weft-init` for `target/debug/deps/interception-…`). Cargo
/// builds only a package's own binaries before its integration tests, so the
/// test command (`scripts/test`) builds the whole workspace first.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// A running process whose stdout is read line by line.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: Command) -> Result<Self> {
        Self::spawn_to(name, cmd, Stdio::inherit())
    }

    /// [`Proc::spawn`], with the process's stderr going to `stderr` (a log
    /// file, so that a live screen is not drowned in log lines).
    pub fn spawn_to(name: &str, mut cmd: Command, stderr: impl Into<Stdio>) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        let stdout: ChildStdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
        })
    }

    /// The process id of the program (`ip netns exec` and `setpriv` exec it,
    /// so it is the child itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits at most `timeout` for the process to exit;
    /// returns its exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        self.wait_exit(timeout)
    }

    /// Waits at most `timeout` for the process to exit by itself; returns
    /// its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if std::time::Instant::now() > deadline {
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process's current and peak resident memory in bytes (VmRSS, VmHWM).
    pub fn memory(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb = |key: &str| -> Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(key))
                .with_context(|| format!("no {key} in /proc status"))?;
            let n: u64 = line
                .split_whitespace()
                .nth(1)
                .context("no value")?
                .parse()?;
            Ok(n * 1024)
        };
        Ok((kb("VmRSS:")?, kb("VmHWM:")?))
    }

    /// The next line the process prints, waiting at most `timeout`.
    pub fn line(&self, timeout: Duration) -> Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("{} printed nothing within {timeout:?}", self.name)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("{} closed its output", self.name),
        }
    }

    /// Waits for a line starting with `prefix`, skipping others.
    pub fn expect_line(&self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .line(left)
                .with_context(|| format!("waiting for a line starting with {prefix:?}"))?;
            if line.starts_with(prefix) {
                return Ok(line);
            }
        }
    }

    /// Whether a line arrives within `timeout` (for asserting that nothing came).
    pub fn try_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
