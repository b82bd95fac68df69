//! An in-process weft-control on the files source: the real control plane
//! (`weft_control::run::run`) on 127.0.0.1, reading a temporary directory
//! of the YAML the test writes; optionally serving Certify with a CA made
//! by the test. It can be stopped and started again on the same gRPC port,
//! as a restarted control-plane pod keeps its Service address.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weft_control::config::{Config, Source};

use super::{eventually, TempDir, WAIT};

/// The namespace of every object the tests write.
pub const NS: &str = "shop";

/// Manifests with no Service in them.
pub const NOTHING: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";

#[derive(Debug)]
pub struct Control {
    /// gRPC (discovery, Certify): what proxies get as `--control-addr`.
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    config: Config,
    manifests: TempDir,
    running: Option<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
}

impl Control {
    /// A control plane serving discovery of the objects in `yaml`; returns
    /// once it has read them (its `/ready`).
    pub async fn start(yaml: &str) -> Self {
        Self::launch(yaml, |_| {}).await
    }

    /// As [`Control::start`], also serving Certify with `ca`'s issuer and
    /// its token file.
    pub async fn with_identity(yaml: &str, ca: &Ca) -> Self {
        let (dir, tokens) = (ca.dir(), ca.tokens());
        Self::launch(yaml, move |c| {
            c.identity_dir = Some(dir);
            c.identity_tokens = Some(tokens);
        })
        .await
    }

    /// As [`Control::start`], its gRPC port on `grpc` (an address a proxy
    /// was already told, where nothing listened).
    pub async fn start_on(yaml: &str, grpc: SocketAddr) -> Self {
        Self::launch(yaml, move |c| c.grpc_addr = grpc).await
    }

    async fn launch(yaml: &str, configure: impl FnOnce(&mut Config)) -> Self {
        super::logs();
        let manifests = TempDir::new("manifests");
        write_manifest(&manifests.path().join("all.yaml"), yaml);
        let mut config = Config::loopback(Source::Files(manifests.path().to_owned()));
        config.poll_interval = Duration::from_millis(50);
        configure(&mut config);
        let mut control = Self {
            grpc: config.grpc_addr,
            admin: config.admin_addr,
            config,
            manifests,
            running: None,
        };
        control.run().await;
        control
    }

    /// Binds (the gRPC port of the last run, if any), runs, waits for `/ready`.
    async fn run(&mut self) {
        let bound = weft_control::run::Bound::bind(&self.config)
            .await
            .expect("weft-control binds");
        let (grpc, admin) = bound.addrs().expect("bound addresses");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(weft_control::run::run(
            self.config.clone(),
            bound,
            async move {
                let _ = stopped.await;
            },
        ));
        self.grpc = grpc;
        self.admin = admin;
        self.config.grpc_addr = grpc;
        self.running = Some((stop, task));
        eventually("weft-control is ready", async || {
            let r = super::client::http_get(admin, "/ready").await?;
            anyhow::ensure!(r.status == 200, "{} {}", r.status, r.body);
            Ok(())
        })
        .await;
    }

    /// `--control-addr` for a proxy.
    pub fn addr(&self) -> String {
        self.grpc.to_string()
    }

    /// Replaces every object with those in `yaml` (the proxies see the
    /// change a poll interval later).
    pub fn apply(&self, yaml: &str) {
        write_manifest(&self.manifests.path().join("all.yaml"), yaml);
    }

    /// Shuts the control plane down (open watches end); returns once it has.
    pub async fn stop(&mut self) {
        let Some((stop, task)) = self.running.take() else {
            return;
        };
        let _ = stop.send(());
        tokio::time::timeout(WAIT, task)
            .await
            .expect("weft-control stops in time")
            .expect("weft-control does not panic")
            .expect("weft-control ends cleanly");
    }

    /// Starts it again, on the same gRPC address, with the same manifests.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.config.admin_addr = "127.0.0.1:0".parse().expect("an address");
        self.run().await;
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}

/// Writes a manifest whole (a rename) with a modification time of its own:
/// the files source notices a change by (mtime, size), and two writes in
/// the same clock tick could have the same size.
fn write_manifest(path: &std::path::Path, text: &str) {
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    let n = GENERATION.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_file_name(".manifest.tmp");
    std::fs::write(&tmp, text).expect("writes the manifest");
    let mtime = SystemTime::now() + Duration::from_secs(n + 1);
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .and_then(|f| f.set_modified(mtime))
        .expect("sets the manifest's mtime");
    std::fs::rename(&tmp, path).expect("renames the manifest into place");
}

/// A Service in namespace `shop` with one TCP port named `http`.
#[derive(Clone, Debug)]
pub struct Svc {
    pub name: String,
    /// ClusterIP and port.
    pub addr: SocketAddr,
    pub annotations: Vec<(String, String)>,
    /// Extra lines of `spec` (e.g. `internalTrafficPolicy: Local`).
    pub spec: Vec<String>,
}

impl Svc {
    pub fn new(name: &str, addr: &str) -> Self {
        Self {
            name: name.into(),
            addr: addr.parse().expect("a ClusterIP:port"),
            annotations: Vec::new(),
            spec: Vec::new(),
        }
    }

    pub fn annotate(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.into(), value.into()));
        self
    }

    pub fn spec(mut self, line: &str) -> Self {
        self.spec.push(line.into());
        self
    }

    /// The Service, one EndpointSlice per endpoint (named after its
    /// address, so that a change of endpoints adds and removes slices and
    /// never renames one) and the Pods the endpoints name.
    pub fn yaml(&self, endpoints: &[Ep]) -> String {
        let annotations: Vec<String> = self
            .annotations
            .iter()
            .map(|(k, v)| format!("\"{k}\": '{v}'"))
            .collect();
        let ip = self.addr.ip();
        let mut y = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NS}\n  \
             annotations: {{{annotations}}}\nspec:\n  clusterIP: \"{ip}\"\n  clusterIPs: [\"{ip}\"]\n  \
             ports: [{{name: http, port: {port}, protocol: TCP}}]\n",
            name = self.name,
            annotations = annotations.join(", "),
            port = self.addr.port(),
        );
        for line in &self.spec {
            let _ = writeln!(y, "  {line}");
        }
        for ep in endpoints {
            y += &ep.yaml(&self.name);
        }
        y
    }
}

/// One endpoint of a Service: an address and its conditions, where it
/// runs, and the Pod behind it (which discovery names meshed when the Pod
/// has a `weft-proxy` container).
#[derive(Clone, Debug)]
pub struct Ep {
    pub addr: SocketAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: Option<String>,
    pub zone: Option<String>,
    /// Pod name, ServiceAccount, meshed.
    pub pod: Option<(String, String, bool)>,
}

impl Ep {
    pub fn ready(addr: SocketAddr) -> Self {
        Self {
            addr,
            ready: true,
            serving: true,
            terminating: false,
            node: None,
            zone: None,
            pod: None,
        }
    }

    /// Terminating but still serving (a pod draining).
    pub fn terminating(addr: SocketAddr) -> Self {
        Self {
            ready: false,
            terminating: true,
            ..Self::ready(addr)
        }
    }

    pub fn on_node(mut self, node: &str) -> Self {
        self.node = Some(node.into());
        self
    }

    /// Behind the meshed Pod `pod` running as ServiceAccount `sa`.
    pub fn meshed(mut self, pod: &str, sa: &str) -> Self {
        self.pod = Some((pod.into(), sa.into(), true));
        self
    }

    fn yaml(&self, service: &str) -> String {
        let slice = format!(
            "{service}-{}-{}",
            self.addr.ip().to_string().replace(['.', ':'], "-"),
            self.addr.port()
        );
        let mut y = format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice}\n  \
             namespace: {NS}\n  labels: {{kubernetes.io/service-name: {service}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints:\n\
             - addresses: [\"{ip}\"]\n  conditions: {{ready: {ready}, serving: {serving}, terminating: {terminating}}}\n",
            port = self.addr.port(),
            ip = self.addr.ip(),
            ready = self.ready,
            serving = self.serving,
            terminating = self.terminating,
        );
        if let Some(node) = &self.node {
            let _ = writeln!(y, "  nodeName: {node}");
        }
        if let Some(zone) = &self.zone {
            let _ = writeln!(y, "  zone: {zone}");
        }
        if let Some((pod, sa, meshed)) = &self.pod {
            let _ = writeln!(
                y,
                "  targetRef: {{kind: Pod, name: {pod}, namespace: {NS}}}"
            );
            let containers = if *meshed {
                "[{name: app, image: app}, {name: weft-proxy, image: weft}]"
            } else {
                "[{name: app, image: app}]"
            };
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {NS}}}\n\
                 spec:\n  serviceAccountName: {sa}\n  containers: {containers}\n"
            );
        }
        y
    }
}

/// A CA made for one test: a trust anchor and an issuer (as `weft identity
/// init` makes them), and a ServiceAccount token for each name given,
/// which the control plane's token file accepts.
#[derive(Debug)]
pub struct Ca {
    dir: TempDir,
}

impl Ca {
    pub fn new(service_accounts: &[&str]) -> Self {
        let dir = TempDir::new("ca");
        let day = Duration::from_secs(24 * 3600);
        weft_control::identity::ca::generate("cluster.local", day, day)
            .expect("a CA")
            .write(&dir.path().join("ca"))
            .expect("writes the CA");
        let mut tokens = String::new();
        for sa in service_accounts {
            let token = format!("token-of-{sa}-0123456789abcdef");
            let _ = writeln!(tokens, "\"{token}\": {NS}/{sa}");
            std::fs::write(dir.path().join(format!("{sa}.token")), token).expect("a token");
        }
        std::fs::write(dir.path().join("tokens.yaml"), tokens).expect("the token file");
        Self { dir }
    }

    fn dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    fn tokens(&self) -> PathBuf {
        self.dir.path().join("tokens.yaml")
    }

    /// The proxy flags of a meshed pod running as `sa` in `shop`.
    pub fn proxy_args(&self, sa: &str) -> Vec<String> {
        vec![
            format!(
                "--identity-token-file={}",
                self.dir.path().join(format!("{sa}.token")).display()
            ),
            format!(
                "--identity-trust-anchors={}",
                self.dir().join("ca.crt").display()
            ),
            format!("--pod-namespace={NS}"),
            format!("--service-account={sa}"),
        ]
    }

    /// [`Ca::proxy_args`] with `control` as the control plane.
    pub fn meshed_args(&self, sa: &str, control: &Control) -> Vec<String> {
        let mut args = self.proxy_args(sa);
        args.push(format!("--control-addr={}", control.addr()));
        args
    }

    /// The proxy flags of a pod claiming to run as `sa` in `shop` with the
    /// token of `token_of`: Certify refuses it (identity mismatch).
    pub fn proxy_args_with_token_of(&self, sa: &str, token_of: &str) -> Vec<String> {
        let mut args = self.proxy_args(sa);
        args[0] = self.proxy_args(token_of).swap_remove(0);
        args
    }

    /// The SPIFFE ID of `sa` in `shop`.
    pub fn id(sa: &str) -> String {
        format!("spiffe://cluster.local/ns/{NS}/sa/{sa}")
    }
}
