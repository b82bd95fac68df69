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

use crate::{authz, split};

/// The port the benchmark server listens on in its pod.
pub const SERVER_PORT: u16 = 8080;
const READY_URL: &str = "http://127.0.0.1:4191/ready";

/// One client pod and its server pods with the servers running.
#[derive(Debug)]
pub struct Pair {
    _servers: Vec<Proc>,
    /// The servers' process ids, for their CPU time.
    pub server_pids: Vec<u32>,
    pub client: Pod,
    server_pods: Vec<Pod>,
    /// What the client dials: the server, or the Service in front of them.
    target: SocketAddr,
}

impl Pair {
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Its (first) server's pod.
    pub fn server_pod(&self) -> &Pod {
        &self.server_pods[0]
    }
}

/// The Service address of the balanced path (it exists only in the
/// manifests weft-control reads).
pub const SERVICE: &str = "10.96.0.10:80";
/// Endpoints behind it.
pub const ENDPOINTS: usize = 10;

/// The discovery path: weft-control (files source) in a pod of its own, and
/// a meshed client whose proxy balances the Service over [`ENDPOINTS`]
/// meshed servers; and the split path, the same client dialling
/// [`split::SPLIT_SERVICE`], split over those servers (`split.rs`).
#[derive(Debug)]
pub struct Balanced {
    pub proxies: Vec<Proxy>,
    pub pair: Pair,
    /// What the split path's client dials.
    pub split: SocketAddr,
    _control: Proc,
    _control_pod: Pod,
    manifests: PathBuf,
}

impl Drop for Balanced {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.manifests);
    }
}

/// The mTLS Service: one endpoint, whose pod discovery names as meshed.
pub const SECURE_SERVICE: &str = "10.96.0.11:80";
/// Its plaintext twin: one endpoint whose pod discovery names unmeshed.
pub const TWIN_SERVICE: &str = "10.96.0.12:80";

/// One client and one server with a proxy each, the client dialling a
/// Service with the server as its one endpoint.
#[derive(Debug)]
pub struct OnePair {
    pub proxies: Vec<Proxy>,
    pub pair: Pair,
}

/// The mTLS path and its plaintext twin: the same topology (a certified
/// client proxy resolving a one-endpoint Service through weft-control, a
/// proxy in the server pod), with mutual TLS between the proxies on one and
/// plaintext on the other, so that the difference is TLS alone; and the
/// authorization path, the mTLS path with 20 TrafficTargets on its server
/// (`authz.rs`).
#[derive(Debug)]
pub struct Secured {
    pub tls: OnePair,
    pub plain: OnePair,
    pub authz: OnePair,
}

/// How proxies are started: which binary, and whether under callgrind.
#[derive(Debug, Clone)]
pub struct Launch {
    pub proxy: PathBuf,
    /// Which proxy it is (`new`, `baseline`): names its profiles.
    pub name: &'static str,
    /// Run each proxy under `valgrind --tool=callgrind`, its profile written
    /// to this directory as `callgrind.<name>.<role>.<pid>` when it exits.
    pub callgrind: Option<PathBuf>,
}

/// A running `weft-proxy` and its process id (the program itself: the
/// harness `exec`s through `ip netns exec` and `setpriv`).
#[derive(Debug)]
pub struct Proxy {
    pub role: &'static str,
    pub pid: u32,
    /// Under callgrind: stopped with SIGTERM, so that it writes its profile.
    profiled: bool,
    _proc: Proc,
}

impl Proxy {
    /// Asks a profiled proxy to exit (it drains, then callgrind writes its
    /// profile); its drop waits for that.
    fn stop(&self) {
        if self.profiled {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if !self.profiled {
            return;
        }
        self.stop();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        // Exited once gone or a zombie (the harness reaps it afterwards).
        let running = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, r)| !r.starts_with('Z'))
            })
        };
        while running(self.pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Profiled proxies are stopped all at once, then waited for.
        for p in self.all_proxies() {
            p.stop();
        }
    }
}

/// The whole network. Field order is drop order: processes, then pods, then
/// the node.
#[derive(Debug)]
pub struct Topology {
    pub proxies: Vec<Proxy>,
    pub direct: Pair,
    pub meshed: Option<Pair>,
    pub balanced: Option<Balanced>,
    pub secured: Option<Secured>,
    _node: Node,
}

impl Topology {
    /// Builds the node, both pairs (the meshed one only with `proxy`, the
    /// path of `weft-proxy`) and waits until every server and proxy is ready.
    /// Every proxy of the topology.
    fn all_proxies(&self) -> impl Iterator<Item = &Proxy> {
        let balanced = self.balanced.iter().flat_map(|b| &b.proxies);
        let secured = self.secured.iter().flat_map(|s| {
            s.tls
                .proxies
                .iter()
                .chain(&s.plain.proxies)
                .chain(&s.authz.proxies)
        });
        self.proxies.iter().chain(balanced).chain(secured)
    }

    pub fn build(bench: &Path, proxy: Option<&Launch>, control: Option<&PathBuf>) -> Result<Self> {
        let node = Node::new()?;
        let direct = pair(&node, bench)?;
        let (meshed, proxies) = match proxy {
            None => (None, Vec::new()),
            Some(proxy) => {
                let pair = pair(&node, bench)?;
                // No idle pool: a new client connection makes a new upstream
                // connection, as on the mTLS path (the new-connection runs).
                let proxies = vec![
                    mesh(&pair.client, bench, proxy, "outbound", &[NO_POOL])?,
                    mesh(&pair.server_pods[0], bench, proxy, "inbound", &[])?,
                ];
                (Some(pair), proxies)
            }
        };
        let (balanced, secured) = match (proxy, control) {
            (Some(proxy), Some(control)) => {
                let (b, s) = balanced(&node, bench, proxy, control)?;
                (Some(b), Some(s))
            }
            _ => (None, None),
        };
        Ok(Self {
            proxies,
            direct,
            meshed,
            balanced,
            secured,
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
        if let Some(b) = &self.balanced {
            s += &format!(
                ", discovery {} → {ENDPOINTS} meshed endpoints (weft-control on the files source), \
                 split {} → {} → {} on the same client, proxy and endpoints",
                pair(&b.pair),
                b.pair.client.ip,
                b.split,
                split::describe()
            );
        }
        if let Some(m) = &self.secured {
            s += &format!(
                ", mTLS {} → 1 meshed endpoint (both proxies certified by weft-control), \
                 its plaintext twin {}, and authz {} (the mTLS path, its server named by {} \
                 TrafficTargets)",
                pair(&m.tls.pair),
                pair(&m.plain.pair),
                pair(&m.authz.pair),
                authz::AUTHORIZATIONS
            );
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
    let (server, server_pod, pid) = server(node, bench)?;
    Ok(Pair {
        _servers: vec![server],
        server_pids: vec![pid],
        client,
        target: SocketAddr::new(server_pod.ip.into(), SERVER_PORT),
        server_pods: vec![server_pod],
    })
}

fn server(node: &Node, bench: &Path) -> Result<(Proc, Pod, u32)> {
    let pod = node.pod()?;
    let bind = format!("0.0.0.0:{SERVER_PORT}");
    let server = pod.spawn(Some(APP_UID), bench, &["server", &bind])?;
    server
        .expect_line("LISTENING", WAIT)
        .context("the benchmark server did not start")?;
    let pid = pid_in(&pod, "weft-bench")?;
    Ok((server, pod, pid))
}

const NO_POOL: (&str, &str) = ("WEFT_PROXY_POOL_MAX_IDLE", "0");

/// The discovery path, and the mTLS path that shares its control plane.
fn balanced(
    node: &Node,
    bench: &Path,
    proxy: &Launch,
    control: &Path,
) -> Result<(Balanced, Secured)> {
    let control_pod = node.pod()?;
    let client = node.pod()?;
    let (mut servers, mut pods, mut pids) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ENDPOINTS {
        let (s, pod, pid) = server(node, bench)?;
        servers.push(s);
        pods.push(pod);
        pids.push(pid);
    }
    // One directory per topology (a baseline run builds two).
    static BUILT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let manifests = std::env::temp_dir().join(format!("weft-bench-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&manifests)?;
    let secure = (node.pod()?, server(node, bench)?);
    let twin = (node.pod()?, server(node, bench)?);
    let guarded = (node.pod()?, server(node, bench)?);
    std::fs::write(
        manifests.join("secure.yaml"),
        one_endpoint("secure", SECURE_SERVICE, &secure.1 .1, Some("server"))
            + &one_endpoint("twin", TWIN_SERVICE, &twin.1 .1, None)
            + &one_endpoint(
                authz::GUARDED,
                authz::AUTHZ_SERVICE,
                &guarded.1 .1,
                Some(authz::GUARDED),
            ),
    )?;
    std::fs::write(manifests.join("authz.yaml"), authz::manifests())?;
    let ca = manifests.join("identity");
    let out = std::process::Command::new(bench.with_file_name("weft"))
        .args(["identity", "init", "--out"])
        .arg(&ca)
        .output()
        .context("weft identity init (build it with -p weft-control)")?;
    if !out.status.success() {
        bail!("weft identity init: {}", weft_tests::stderr(&out));
    }
    // Not `.yaml`: the files source reads every YAML file under `manifests`.
    let tokens = manifests.join("tokens.list");
    std::fs::write(
        &tokens,
        "\"bench-client-token-0123456789\": bench/client\n\
         \"bench-server-token-0123456789\": bench/server\n\
         \"bench-guarded-token-0123456789\": bench/guarded\n",
    )?;
    for who in ["client", "server", authz::GUARDED] {
        std::fs::write(
            manifests.join(format!("{who}.token")),
            format!("bench-{who}-token-0123456789"),
        )?;
    }
    std::fs::write(
        manifests.join("bench.yaml"),
        service("bench", SERVICE, &pods),
    )?;
    std::fs::write(manifests.join("split.yaml"), split::manifests(&pods))?;
    let dir = manifests.to_string_lossy().into_owned();
    let (ca_dir, tokens) = (ca.to_string_lossy(), tokens.to_string_lossy());
    let control = control_pod.spawn(
        None,
        control,
        &[
            "--source",
            &dir,
            "--grpc-addr",
            "0.0.0.0:8086",
            "--admin-addr",
            "127.0.0.1:9990",
            "--log",
            "warn",
            "--identity-dir",
            &ca_dir,
            "--identity-tokens",
            &tokens,
        ],
    )?;
    let out = control_pod.run(
        None,
        bench,
        &["wait-ready", "http://127.0.0.1:9990/ready", "10"],
    )?;
    if !out.status.success() {
        bail!("weft-control is not ready: {}", weft_tests::stderr(&out));
    }
    let control_addr = format!("{}:8086", control_pod.ip);
    let mut proxies = vec![mesh(
        &client,
        bench,
        proxy,
        "outbound",
        &[("WEFT_PROXY_CONTROL_ADDR", control_addr.as_str())],
    )?];
    for pod in &pods {
        proxies.push(mesh(pod, bench, proxy, "inbound", &[])?);
    }
    let identity = |who: &str| -> Vec<(&'static str, String)> {
        vec![
            ("WEFT_PROXY_CONTROL_ADDR", control_addr.clone()),
            (
                "WEFT_PROXY_IDENTITY_TOKEN_FILE",
                manifests.join(format!("{who}.token")).display().to_string(),
            ),
            (
                "WEFT_PROXY_IDENTITY_TRUST_ANCHORS",
                ca.join("ca.crt").display().to_string(),
            ),
            ("WEFT_PROXY_POD_NAMESPACE", "bench".to_owned()),
            ("WEFT_PROXY_SERVICE_ACCOUNT", who.to_owned()),
        ]
    };
    let (client_env, server_env) = (identity("client"), identity("server"));
    let mut guarded_env = identity(authz::GUARDED);
    // Its inbound policy is asked for by pod name.
    guarded_env.push(("WEFT_PROXY_POD_NAME", authz::GUARDED_POD.to_owned()));
    fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
    let mut client_env = refs(&client_env);
    client_env.push(NO_POOL);
    let server_env = refs(&server_env);
    let guarded_env = refs(&guarded_env);
    // The twin's client is certified too; its server's proxy is not, and
    // discovery names that endpoint unmeshed: plaintext between them.
    let secured = Secured {
        tls: one_pair(
            secure,
            SECURE_SERVICE,
            bench,
            proxy,
            &client_env,
            &server_env,
        )?,
        plain: one_pair(twin, TWIN_SERVICE, bench, proxy, &client_env, &[])?,
        authz: one_pair(
            guarded,
            authz::AUTHZ_SERVICE,
            bench,
            proxy,
            &client_env,
            &guarded_env,
        )?,
    };
    let balanced = Balanced {
        proxies,
        pair: Pair {
            _servers: servers,
            server_pids: pids,
            client,
            server_pods: pods,
            target: SERVICE.parse().expect("a socket address"),
        },
        split: split::SPLIT_SERVICE.parse().expect("a socket address"),
        _control: control,
        _control_pod: control_pod,
        manifests,
    };
    Ok((balanced, secured))
}

/// The manifests of Service `name` at `addr` (port `http` to the servers'
/// port) with `pods` its ready endpoints, no Pod objects: discovery names
/// them unmeshed.
pub fn service(name: &str, addr: &str, pods: &[Pod]) -> String {
    let (ip, port) = addr.split_once(':').expect("ip:port");
    let endpoints: String = pods
        .iter()
        .map(|p| {
            format!(
                "  - addresses: [\"{}\"]\n    conditions: {{ready: true}}\n",
                p.ip
            )
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: bench}}\n\
         spec: {{clusterIP: {ip}, ports: [{{name: http, port: {port}, targetPort: {SERVER_PORT}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: bench, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {SERVER_PORT}}}]\nendpoints:\n{endpoints}---\n"
    )
}

/// The manifests of Service `name` at `addr` with `pod` its one endpoint,
/// Pod `<name>-0`: meshed as ServiceAccount `meshed`, or (None) not.
fn one_endpoint(name: &str, addr: &str, pod: &Pod, meshed: Option<&str>) -> String {
    let (ip, port) = addr.split_once(':').expect("ip:port");
    let (containers, sa) = match meshed {
        Some(sa) => ("[{name: app}, {name: weft-proxy}]", sa),
        None => ("[{name: app}]", "server"),
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: bench}}\n\
         spec: {{clusterIP: {ip}, ports: [{{name: http, port: {port}, targetPort: {SERVER_PORT}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: bench, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {SERVER_PORT}}}]\nendpoints:\n\
         - addresses: [\"{pod_ip}\"]\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: {name}-0, namespace: bench}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}-0, namespace: bench}}\n\
         spec: {{serviceAccountName: {sa}, containers: {containers}}}\n---\n",
        pod_ip = pod.ip
    )
}

/// Proxies in a client pod and a server pod (its server running), the
/// client dialling `target`.
fn one_pair(
    (client, (server, server_pod, pid)): (Pod, (Proc, Pod, u32)),
    target: &str,
    bench: &Path,
    proxy: &Launch,
    client_env: &[(&str, &str)],
    server_env: &[(&str, &str)],
) -> Result<OnePair> {
    Ok(OnePair {
        proxies: vec![
            mesh(&client, bench, proxy, "outbound", client_env)?,
            mesh(&server_pod, bench, proxy, "inbound", server_env)?,
        ],
        pair: Pair {
            _servers: vec![server],
            server_pids: vec![pid],
            client,
            server_pods: vec![server_pod],
            target: target.parse().expect("a socket address"),
        },
    })
}

/// weft-init (defaults) and a weft-proxy (defaults and `env`) in `pod`.
fn mesh(
    pod: &Pod,
    bench: &Path,
    proxy: &Launch,
    role: &'static str,
    env: &[(&str, &str)],
) -> Result<Proxy> {
    let out = weft_tests::weft_init(pod, &[]);
    if !out.status.success() {
        bail!(
            "weft-init failed in {}: {}",
            pod.name,
            weft_tests::stderr(&out)
        );
    }
    let (mut cmd, comm, ready_secs) = match &proxy.callgrind {
        None => (
            pod.command(Some(PROXY_UID), &proxy.proxy),
            "weft-proxy",
            "10",
        ),
        Some(dir) => {
            let mut cmd = pod.command(Some(PROXY_UID), Path::new("valgrind"));
            cmd.arg("--tool=callgrind")
                .arg(format!(
                    "--callgrind-out-file={}/callgrind.{}.{role}.%p",
                    dir.display(),
                    proxy.name
                ))
                .arg(netns::staged(&proxy.proxy));
            // Valgrind's process is the proxy; it runs some 50 times slower.
            (cmd, "callgrind-amd64", "120")
        }
    };
    // Warnings only: the tables are the output.
    cmd.env("WEFT_PROXY_LOG", "warn").envs(env.iter().copied());
    let proc = Proc::spawn(&format!("weft-proxy in {}", pod.name), cmd)?;
    let out = pod.run(None, bench, &["wait-ready", READY_URL, ready_secs])?;
    if !out.status.success() {
        bail!(
            "the {role} weft-proxy in {} is not ready: {}",
            pod.name,
            weft_tests::stderr(&out)
        );
    }
    Ok(Proxy {
        role,
        pid: pid_in(pod, comm)?,
        profiled: proxy.callgrind.is_some(),
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
