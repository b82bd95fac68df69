//! The benchmark's network, made with the test harness: one isolated node and
//! two client/server pairs of pods on it. The direct pair is left alone; the
//! meshed pair gets `weft-init` (defaults) and a `weft-proxy` (defaults, uid
//! 2102) in each pod, so the same `weft-bench load` command goes client →
//! outbound proxy → inbound proxy → server there. Both pairs live side by side
//! so one run can interleave them without touching any rule. Everything is
//! removed on drop (the harness's `Node`, `Pod` and `Proc` do it).

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use weft_tests::{netns, Node, Pod, Proc, APP_UID, PROXY_UID, WAIT};

/// The port the benchmark server listens on in its pod.
pub const SERVER_PORT: u16 = 8080;
const READY_URL: &str = "http://127.0.0.1:4191/ready";

/// One client pod and one server pod with the server running.
#[derive(Debug)]
pub struct Pair {
    _server: Proc,
    /// The server's process id, for its CPU time.
    pub server_pid: u32,
    pub client: Pod,
    server_pod: Pod,
}

impl Pair {
    /// The server's address as the client dials it.
    pub fn target(&self) -> SocketAddr {
        SocketAddr::new(self.server_pod.ip.into(), SERVER_PORT)
    }
}

/// A running `weft-proxy` and its process id (the program itself: the
/// harness `exec`s through `ip netns exec` and `setpriv`).
#[derive(Debug)]
pub struct Proxy {
    pub role: &'static str,
    pub pid: u32,
    _proc: Proc,
}

/// The whole network. Field order is drop order: processes, then pods, then
/// the node.
#[derive(Debug)]
pub struct Topology {
    pub proxies: Vec<Proxy>,
    pub direct: Pair,
    pub meshed: Option<Pair>,
    _node: Node,
}

impl Topology {
    /// Builds the node, both pairs (the meshed one only with `proxy`, the
    /// path of `weft-proxy`) and waits until every server and proxy is ready.
    pub fn build(bench: &Path, proxy: Option<&PathBuf>) -> Result<Self> {
        let node = Node::new()?;
        let direct = pair(&node, bench)?;
        let (meshed, proxies) = match proxy {
            None => (None, Vec::new()),
            Some(proxy) => {
                let pair = pair(&node, bench)?;
                for pod in [&pair.client, &pair.server_pod] {
                    let out = weft_tests::weft_init(pod, &[]);
                    if !out.status.success() {
                        bail!(
                            "weft-init failed in {}: {}",
                            pod.name,
                            weft_tests::stderr(&out)
                        );
                    }
                }
                let proxies = vec![
                    start_proxy(&pair.client, bench, proxy, "outbound")?,
                    start_proxy(&pair.server_pod, bench, proxy, "inbound")?,
                ];
                (Some(pair), proxies)
            }
        };
        Ok(Self {
            proxies,
            direct,
            meshed,
            _node: node,
        })
    }

    /// One line saying what runs where.
    pub fn describe(&self) -> String {
        let pair = |p: &Pair| format!("{} → {}", p.client.ip, p.target());
        let mut s = format!("node {}: direct {}", self.node_name(), pair(&self.direct));
        if let Some(m) = &self.meshed {
            s += &format!(", meshed {} (weft-init + weft-proxy in both pods)", pair(m));
        }
        s
    }

    fn node_name(&self) -> String {
        let name = self.direct.client.name.as_str();
        name.rsplit_once("-p")
            .map_or(name, |(node, _)| node)
            .to_owned()
    }
}

fn pair(node: &Node, bench: &Path) -> Result<Pair> {
    let client = node.pod()?;
    let server_pod = node.pod()?;
    let bind = format!("0.0.0.0:{SERVER_PORT}");
    let server = server_pod.spawn(Some(APP_UID), bench, &["server", &bind])?;
    server
        .expect_line("LISTENING", WAIT)
        .context("the benchmark server did not start")?;
    Ok(Pair {
        _server: server,
        server_pid: pid_in(&server_pod, "weft-bench")?,
        client,
        server_pod,
    })
}

fn start_proxy(pod: &Pod, bench: &Path, proxy: &Path, role: &'static str) -> Result<Proxy> {
    let proc = pod.spawn(Some(PROXY_UID), proxy, &[])?;
    let out = pod.run(None, bench, &["wait-ready", READY_URL, "10"])?;
    if !out.status.success() {
        bail!(
            "the {role} weft-proxy in {} is not ready: {}",
            pod.name,
            weft_tests::stderr(&out)
        );
    }
    Ok(Proxy {
        role,
        pid: pid_in(pod, "weft-proxy")?,
        _proc: proc,
    })
}

/// The one process named `comm` in `pod`'s namespace.
fn pid_in(pod: &Pod, comm: &str) -> Result<u32> {
    let pids = netns::ip(["netns", "pids", &pod.name])?;
    let found: Vec<u32> = pids
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect();
    match found[..] {
        [pid] => Ok(pid),
        _ => bail!("expected one {comm} in {}, found pids {found:?}", pod.name),
    }
}
