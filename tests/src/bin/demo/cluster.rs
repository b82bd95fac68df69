//! The demo's "cluster" on this machine: a node (network namespace with a
//! bridge), weft-control on the files source in a pod of its own, the
//! tests' OTLP receiver (Jaeger) in another, and one meshed pod per
//! replica of each Deployment (weft-init applied, weft-proxy as its uid,
//! the app container's command as the app's uid). Everything is removed on
//! drop: processes first, then the pods' namespaces (and the rules in
//! them), then the node, then the working directory.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use weft_tests::mesh::{admin_get, control_command, control_metric, curl, eventually, identity};
use weft_tests::otlp::InPod;
use weft_tests::{bin, install, Node, Pod, Proc, APP_UID, PROXY_UID};

use crate::app::{App, Workload};

/// The bridge's own address, from which the node reaches every pod.
pub const NODE_IP: &str = "10.244.0.1";

/// A meshed pod of the application.
#[derive(Debug)]
pub struct Meshed {
    pub workload: Workload,
    pub name: String,
    pub pod: Pod,
}

impl Meshed {
    /// Its proxy's admin address.
    pub fn admin(&self) -> SocketAddr {
        SocketAddr::new(self.pod.ip.into(), 4191)
    }
}

/// Everything the demo started. Fields drop in order.
#[derive(Debug)]
pub struct Cluster {
    /// The apps that only call (load, intruder): stopped first.
    pub clients: Vec<Proc>,
    /// The serving apps and every proxy.
    pub procs: Vec<Proc>,
    pub receiver: InPod,
    pub control: Proc,
    pub pods: Vec<Meshed>,
    pub rx_pod: Pod,
    pub control_pod: Pod,
    pub node: Node,
    /// Manifests, identity files and logs.
    pub dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.clients.clear();
        self.procs.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The copies of programs run as other uids (`netns::staged`).
        let staged = std::env::temp_dir().join(format!("weft-{}-bin", std::process::id()));
        let _ = std::fs::remove_dir_all(staged);
    }
}

fn step(what: &str) {
    println!("  · {what}");
}

/// Starts it all; returns once every proxy is ready and `web` answers
/// through the mesh, with the callers not yet started ([`Cluster::start_clients`]).
pub fn start(app: &App, dir: PathBuf) -> Result<Cluster> {
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("manifests"))?;
    std::fs::create_dir_all(dir.join("logs"))?;
    step("a node: network namespace with a bridge, no link to this machine's network");
    let node = Node::new()?;
    let ip_in_node = node
        .command(Path::new("ip"))
        .args(["addr", "add", &format!("{NODE_IP}/16"), "dev", "br0"])
        .status()?;
    if !ip_in_node.success() {
        bail!("cannot give the node's bridge {NODE_IP}");
    }
    let control_pod = node.pod()?;
    let rx_pod = node.pod()?;
    let mut pods = Vec::new();
    for w in app.servers.iter().chain(&app.clients) {
        if w.namespace != "shop" {
            bail!(
                "{}: the demo runs namespace shop only, not {}",
                w.name,
                w.namespace
            );
        }
        for i in 0..w.replicas {
            pods.push(Meshed {
                workload: w.clone(),
                name: format!("{}-{i}", w.name),
                pod: node.pod()?,
            });
        }
    }
    step(&format!(
        "{} pods; weft-control on the files source: {} + the pods' objects",
        pods.len() + 2,
        app.dir.display()
    ));
    let accounts: Vec<&str> = app.accounts.iter().map(String::as_str).collect();
    identity(&dir, &accounts);
    for entry in std::fs::read_dir(&app.dir)?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, dir.join("manifests").join(entry.file_name()))?;
        }
    }
    let objects: Vec<(&Workload, String, Ipv4Addr)> = pods
        .iter()
        .map(|m| (&m.workload, m.name.clone(), m.pod.ip))
        .collect();
    std::fs::write(
        dir.join("manifests/pods.yaml"),
        app.cluster_objects(&objects),
    )?;
    let log = |name: &str| File::create(dir.join("logs").join(format!("{name}.log")));
    let control = Proc::spawn_to(
        "weft-control",
        control_command(&control_pod, &dir, &[]),
        log("weft-control")?,
    )?;
    eventually(Duration::from_secs(20), || {
        let synced = control_metric(&control_pod, "weft_control_source_synced")?;
        anyhow::ensure!(synced == 1.0, "weft-control has not synced its source");
        let splits = control_metric(&control_pod, "weft_control_objects{kind=\"TrafficSplit\"}")?;
        anyhow::ensure!(splits == 1.0, "weft-control holds {splits} TrafficSplits");
        Ok(())
    })
    .context("weft-control reads the application")?;
    step("the OTLP receiver (Jaeger's query API on :16686)");
    let receiver = InPod::start(&rx_pod, &[])?;
    let mut cluster = Cluster {
        clients: vec![],
        procs: vec![],
        receiver,
        control,
        pods,
        rx_pod,
        control_pod,
        node,
        dir,
    };
    step("weft-init and weft-proxy in every pod; the serving apps");
    for i in 0..cluster.pods.len() {
        let proxy = cluster.proxy(&cluster.pods[i])?;
        cluster.procs.push(proxy);
        let m = &cluster.pods[i];
        if app.servers.iter().any(|w| w.name == m.workload.name) {
            let p = cluster.app(m)?;
            p.expect_line("LISTENING", Duration::from_secs(10))
                .with_context(|| format!("{} listens", m.name))?;
            cluster.procs.push(p);
        }
    }
    Ok(cluster)
}

impl Cluster {
    /// weft-init, then weft-proxy as its uid with the environment an
    /// injected sidecar gets; once `/ready`.
    fn proxy(&self, m: &Meshed) -> Result<Proc> {
        install(&m.pod, &[]);
        let w = &m.workload;
        let path = |p: &str| self.dir.join(p).display().to_string();
        let mut cmd = m.pod.command(Some(PROXY_UID), &bin("weft-proxy"));
        cmd.env("WEFT_LOG", "info")
            .env(
                "WEFT_PROXY_CONTROL_ADDR",
                format!("{}:8086", self.control_pod.ip),
            )
            .env(
                "WEFT_PROXY_IDENTITY_TOKEN_FILE",
                path(&format!("{}.token", w.account)),
            )
            .env("WEFT_PROXY_IDENTITY_TRUST_ANCHORS", path("ca/ca.crt"))
            .env("WEFT_PROXY_POD_NAMESPACE", &w.namespace)
            .env("WEFT_PROXY_POD_NAME", &m.name)
            .env("WEFT_PROXY_SERVICE_ACCOUNT", &w.account)
            .env(
                "WEFT_PROXY_TRACE_COLLECTOR_ADDR",
                self.receiver.grpc_addr.to_string(),
            )
            .env("WEFT_PROXY_TRACE_SERVICE_NAME", &w.name);
        // What the injector turns this annotation into.
        if let Some(p) = w.annotations.get("weft.dev/trace-sample-percent") {
            cmd.env("WEFT_PROXY_TRACE_SAMPLE_PERCENT", p);
        }
        let log = File::create(self.dir.join("logs").join(format!("{}-proxy.log", m.name)))?;
        let proxy = Proc::spawn_to(&format!("weft-proxy in {}", m.name), cmd, log)?;
        eventually(Duration::from_secs(15), || admin_get(&m.pod, "/ready"))
            .with_context(|| format!("the proxy of {} becomes ready", m.name))?;
        Ok(proxy)
    }

    /// The app container: `weft-testapp ARGS` with its env, as the app uid.
    fn app(&self, m: &Meshed) -> Result<Proc> {
        let mut cmd = m.pod.command(Some(APP_UID), &bin("weft-testapp"));
        cmd.args(&m.workload.args)
            .envs(m.workload.env.iter().map(|(k, v)| (k, v)));
        let log = File::create(self.dir.join("logs").join(format!("{}-app.log", m.name)))?;
        Proc::spawn_to(&format!("{} app", m.name), cmd, log)
    }

    /// Waits until `url` answers 200 through the mesh from the app of the
    /// first pod of `workload`, then starts the apps that only call.
    pub fn start_clients(&mut self, app: &App, probe_from: &str, url: &str) -> Result<()> {
        let from = self
            .pods
            .iter()
            .find(|m| m.workload.name == probe_from)
            .with_context(|| format!("no pod of {probe_from}"))?;
        eventually(Duration::from_secs(20), || {
            let (code, text) = curl(&from.pod, Some(APP_UID), url)
                .with_context(|| format!("GET {url}: no answer"))?;
            anyhow::ensure!(code == 200, "GET {url}: {text}");
            Ok(())
        })
        .with_context(|| format!("{url} answers from {probe_from} through the mesh"))?;
        let mut clients = Vec::new();
        for m in &self.pods {
            if app.clients.iter().any(|w| w.name == m.workload.name) {
                clients.push(self.app(m)?);
            }
        }
        self.clients = clients;
        Ok(())
    }

    /// Stops the apps that only call (SIGTERM, waited for).
    pub fn stop_clients(&mut self) {
        for c in &mut self.clients {
            let _ = c.terminate(Duration::from_secs(5));
        }
    }

    /// Replaces the split's file in the manifests (atomically).
    pub fn write_manifest(&self, file: &str, text: &str) -> Result<()> {
        let dir = self.dir.join("manifests");
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join(file))?;
        Ok(())
    }

    /// The pods of `workload`.
    pub fn of<'a>(&'a self, workload: &'a str) -> impl Iterator<Item = &'a Meshed> + 'a {
        self.pods
            .iter()
            .filter(move |m| m.workload.name == workload)
    }
}
