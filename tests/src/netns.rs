//! Network namespaces that play a Kubernetes node and its pods.
//!
//! A [`Node`] is one namespace holding a bridge and nothing else: no link to
//! the host's network, so no packet a test sends can leave the machine. Each
//! [`Pod`] is a namespace with `eth0`, a veth whose peer is a port of that
//! bridge, addresses in 10.244.0.0/16 and fd00:10:244::/64, and a default
//! route out of `eth0` so that virtual Service addresses (10.96.0.0/16) route
//! too, to nowhere but the bridge. Names carry the test process id and a
//! counter, so tests run in parallel; everything is removed on drop, also when
//! a test panics, and namespaces left by a test process that died are swept
//! by the next one.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Mutex, Once};

use crate::process::Proc;

const PREFIX: &str = "weft-";

static NEXT_NODE: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` with `args`; an error carries its stderr.
pub fn ip<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let out = cmd.output().context("cannot run ip")?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kills what still runs in a namespace, then deletes it.
fn remove_netns(name: &str) {
    if let Ok(pids) = ip(["netns", "pids", name]) {
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = ip(["netns", "del", name]);
}

/// Removes namespaces and staging directories of test processes that are
/// gone (a test killed by a signal cannot clean up after itself).
fn sweep_stale() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let owner_gone = |name: &str| {
            name.strip_prefix(PREFIX)
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| {
                    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
                })
        };
        if let Ok(list) = ip(["netns", "list"]) {
            for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
                if owner_gone(name) {
                    remove_netns(name);
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
            for entry in dir.flatten() {
                let name = entry.file_name();
                if owner_gone(&name.to_string_lossy()) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    });
}

/// An isolated "node": a namespace with a bridge `br0` that its pods plug into.
#[derive(Debug)]
pub struct Node {
    name: String,
    next_pod: AtomicU8,
}

impl Node {
    pub fn new() -> Result<Self> {
        sweep_stale();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT_NODE.fetch_add(1, Ordering::Relaxed)
        );
        ip(["netns", "add", &name])?;
        let node = Self {
            name,
            next_pod: AtomicU8::new(2),
        };
        let n = node.name.as_str();
        ip(["-n", n, "link", "set", "lo", "up"])?;
        ip(["-n", n, "link", "add", "br0", "type", "bridge"])?;
        ip(["-n", n, "link", "set", "br0", "up"])?;
        Ok(node)
    }

    /// The name of the node's network namespace (`ip netns exec NAME ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` in the node's namespace itself (where the bridge is), as root.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// A new pod on this node, with the next free address (10.244.0.2, .3, ...).
    pub fn pod(&self) -> Result<Pod> {
        let i = self.next_pod.fetch_add(1, Ordering::Relaxed);
        if i == u8::MAX {
            bail!("a test node holds at most 253 pods");
        }
        let pod = Pod {
            name: format!("{}-p{i}", self.name),
            ip: Ipv4Addr::new(10, 244, 0, i),
            ip6: Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, u16::from(i)),
        };
        ip(["netns", "add", &pod.name])?;
        let (n, p) = (self.name.as_str(), pod.name.as_str());
        let port = format!("vp{i}");
        ip([
            "-n", n, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", p,
        ])?;
        ip(["-n", n, "link", "set", &port, "master", "br0", "up"])?;
        ip(["-n", p, "link", "set", "lo", "up"])?;
        ip([
            "-n",
            p,
            "addr",
            "add",
            &format!("{}/16", pod.ip),
            "dev",
            "eth0",
        ])?;
        ip([
            "-n",
            p,
            "addr",
            "add",
            &format!("{}/64", pod.ip6),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(["-n", p, "link", "set", "eth0", "up"])?;
        ip(["-n", p, "route", "add", "default", "dev", "eth0"])?;
        ip(["-n", p, "-6", "route", "add", "default", "dev", "eth0"])?;
        Ok(pod)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        remove_netns(&self.name);
    }
}

/// A pod: its own network namespace on a [`Node`]'s bridge.
#[derive(Debug)]
pub struct Pod {
    pub name: String,
    pub ip: Ipv4Addr,
    pub ip6: Ipv6Addr,
}

impl Pod {
    /// `program` inside this pod, as root or as `uid` (with gid `uid`, no
    /// supplementary groups).
    pub fn command(&self, uid: Option<u32>, program: &Path) -> Command {
        self.command_as(uid.map(|u| (u, u)), program)
    }

    /// `program` inside this pod, as root or as `(uid, gid)`. A program run
    /// as another user is first copied where that user can execute it.
    pub fn command_as(&self, ids: Option<(u32, u32)>, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]);
        match ids {
            None | Some((0, 0)) => {
                cmd.arg(program);
            }
            Some((uid, gid)) => {
                cmd.arg("setpriv")
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .args(["--clear-groups", "--"])
                    .arg(staged(program));
            }
        }
        cmd
    }

    /// Runs a program to completion in this pod.
    pub fn run(&self, uid: Option<u32>, program: &Path, args: &[&str]) -> Result<Output> {
        let mut cmd = self.command(uid, program);
        cmd.args(args);
        cmd.output().with_context(|| format!("cannot run {cmd:?}"))
    }

    /// Starts a long-running program in this pod.
    pub fn spawn(&self, uid: Option<u32>, program: &Path, args: &[&str]) -> Result<Proc> {
        let mut cmd = self.command(uid, program);
        cmd.args(args);
        let name = program
            .file_name()
            .map_or_else(|| "process".into(), |n| n.to_string_lossy().into_owned());
        Proc::spawn(&format!("{name} in {}", self.name), cmd)
    }

    /// Runs a shell-free command line (`iptables -t nat -A ...`) as root in this pod.
    pub fn sh(&self, argv: &[&str]) -> Result<String> {
        let (program, args) = argv.split_first().context("empty command")?;
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .with_context(|| format!("cannot run {argv:?}"))?;
        if !out.status.success() {
            bail!(
                "{argv:?} failed in {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The pod's rule set as `save` (`iptables-save`, `ip6tables-legacy-save`,
    /// ...) prints it, without the comment lines and with packet counters
    /// zeroed: what differs between two calls is then the rules alone.
    pub fn rules(&self, save: &str) -> Result<String> {
        Ok(normalise_save(&self.sh(&[save])?))
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        remove_netns(&self.name);
    }
}

/// Drops `#` lines and zeroes `[packets:bytes]` counters.
pub fn normalise_save(save: &str) -> String {
    let mut out = String::new();
    for line in save.lines().filter(|l| !l.starts_with('#')) {
        match line.rfind(" [") {
            Some(i) if line.starts_with(':') && line.ends_with(']') => {
                out.push_str(&line[..i]);
                out.push_str(" [0:0]");
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A copy of `program` in a directory every uid can read, made once per
/// program and test process (the build directory may sit under a home that
/// other uids cannot enter). Each program gets a directory of its own, so
/// two programs of one name (a benchmark's baseline proxy and the new one)
/// keep their own copies, and the copy keeps the name (`/proc/PID/comm`).
pub fn staged(program: &Path) -> PathBuf {
    // A bare name (`curl`) is found on PATH, where every user can run it.
    if program.components().count() == 1 {
        return program.to_owned();
    }
    static STAGED: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());
    let mut staged = STAGED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, copy)) = staged.iter().find(|(orig, _)| orig == program) {
        return copy.clone();
    }
    use std::os::unix::fs::PermissionsExt;
    let top = std::env::temp_dir().join(format!("{PREFIX}{}-bin", std::process::id()));
    let dir = top.join(staged.len().to_string());
    std::fs::create_dir_all(&dir).expect("create staging directory");
    for d in [&top, &dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .expect("chmod staging directory");
    }
    let copy = dir.join(program.file_name().expect("program has a file name"));
    // Copied by a child process: if this process opened the copy for
    // writing, a test thread forking meanwhile would inherit the handle and
    // the copy's exec would fail with "Text file busy".
    let status = std::process::Command::new("install")
        .arg("-m")
        .arg("0755")
        .arg(program)
        .arg(&copy)
        .status()
        .expect("run install to stage the program");
    assert!(
        status.success(),
        "install {} {}: {status}",
        program.display(),
        copy.display()
    );
    staged.push((program.to_owned(), copy.clone()));
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_saves_ignore_comments_and_counters() {
        let a = "# Generated by iptables-save v1.8.9 on Mon\n*nat\n:PREROUTING ACCEPT [12:720]\n-A PREROUTING -j X\nCOMMIT\n# Completed\n";
        let b = "# Generated by iptables-save v1.8.9 on Tue\n*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j X\nCOMMIT\n";
        assert_eq!(normalise_save(a), normalise_save(b));
        assert_ne!(normalise_save(a), normalise_save("*nat\nCOMMIT\n"));
    }
}
