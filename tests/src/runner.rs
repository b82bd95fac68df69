//! A kubelet in miniature: runs a pod spec (a Pod's or a workload's pod
//! template, as JSON) in a harness [`Pod`], exactly as written, so that
//! what the injector writes is what runs.
//!
//! What it does as the kubelet does: init containers one after another,
//! each to a successful exit, except native sidecars (`restartPolicy:
//! Always`), which are started and must pass their `startupProbe` (an
//! `httpGet`, asked from inside the pod) before the next container starts;
//! then the containers in order, each container's `postStart` exec hook run
//! to completion before the next one starts. Each process gets exactly the
//! container's `command`/`args` (the image's entrypoint being the binary
//! its name ends with: `weft/weft-proxy:dev` runs `weft-proxy`), its `env`
//! (values and the downward API's `metadata.name`, `metadata.namespace`,
//! `spec.nodeName`, `spec.serviceAccountName`, `status.podIP`), its uid
//! and gid (`runAsUser`, `runAsGroup`, the container's over the pod's), and
//! its `volumeMounts` (projected ServiceAccount tokens, ConfigMaps and
//! emptyDirs, bind-mounted in the process's own mount namespace). Stopping
//! is in the kubelet's order too: the containers first (SIGTERM, waited
//! for), then the sidecars in reverse.
//!
//! Not modelled: images (binaries of this workspace or on PATH stand in),
//! capabilities and read-only root filesystems (uids are), restarts, and
//! liveness and readiness probes after start.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::mesh::eventually;
use crate::netns::staged;
use crate::{bin, Pod, Proc};

/// What the kubelet provides a pod: its identity and its volumes' sources.
#[derive(Debug)]
pub struct Kubelet<'a> {
    pub pod: &'a Pod,
    pub name: String,
    pub namespace: String,
    pub node: String,
    /// The ServiceAccount token a projected `serviceAccountToken` volume holds.
    pub token: String,
    /// ConfigMaps by name: their keys and contents.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// One event of a pod's life, for checking the order things happened in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Started(String),
    Ready(String),
    Exited(String, Option<i32>),
}

/// A running pod; its processes are stopped (and mount points removed)
/// when it is dropped.
#[derive(Debug)]
pub struct Running {
    /// (container name, process, whether a native sidecar)
    procs: Vec<(String, Proc, bool)>,
    pub events: Vec<(Instant, Event)>,
    volumes: PathBuf,
    made: Vec<PathBuf>,
}

/// A container as the runner runs it.
struct Container<'s> {
    spec: &'s Value,
    name: String,
}

impl Kubelet<'_> {
    /// Starts the pod `template` (`metadata` and `spec`).
    pub fn start(&self, template: &Value) -> Result<Running> {
        let spec = &template["spec"];
        let volumes = std::env::temp_dir().join(format!(
            "weft-kubelet-{}-{}-{}",
            std::process::id(),
            self.pod.name,
            self.name
        ));
        let _ = std::fs::remove_dir_all(&volumes);
        let mut running = Running {
            procs: Vec::new(),
            events: Vec::new(),
            volumes,
            made: Vec::new(),
        };
        self.volumes(spec, &running.volumes)?;
        for c in spec["initContainers"].as_array().into_iter().flatten() {
            let c = Container::new(c)?;
            if c.spec["restartPolicy"] == "Always" {
                let proc = self.spawn(spec, &c, &mut running)?;
                running.procs.push((c.name.clone(), proc, true));
                self.startup_probe(&c)?;
                running
                    .events
                    .push((Instant::now(), Event::Ready(c.name.clone())));
            } else {
                let cmd = self.command(spec, &c, &mut running, None)?;
                let code = run_to_end(cmd, &format!("init container {}", c.name))?;
                running
                    .events
                    .push((Instant::now(), Event::Exited(c.name.clone(), code)));
            }
        }
        for c in spec["containers"].as_array().into_iter().flatten() {
            let c = Container::new(c)?;
            let proc = self.spawn(spec, &c, &mut running)?;
            running.procs.push((c.name.clone(), proc, false));
            if let Some(hook) = c.spec["lifecycle"]["postStart"]["exec"]["command"].as_array() {
                let hook: Vec<String> = hook
                    .iter()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect();
                let cmd = self.command(spec, &c, &mut running, Some(&hook))?;
                run_to_end(cmd, &format!("postStart of {}", c.name))?;
                running
                    .events
                    .push((Instant::now(), Event::Ready(c.name.clone())));
            }
        }
        Ok(running)
    }

    fn spawn(&self, spec: &Value, c: &Container<'_>, running: &mut Running) -> Result<Proc> {
        let cmd = self.command(spec, c, running, None)?;
        running
            .events
            .push((Instant::now(), Event::Started(c.name.clone())));
        Proc::spawn(&format!("{} in {}", c.name, self.pod.name), cmd)
    }

    /// The volumes' contents, one directory each under `root`.
    fn volumes(&self, spec: &Value, root: &Path) -> Result<()> {
        for v in spec["volumes"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().context("a volume without a name")?;
            let dir = root.join(name);
            std::fs::create_dir_all(&dir)?;
            let write = |path: &str, text: &str| std::fs::write(dir.join(path), text);
            if let Some(sources) = v["projected"]["sources"].as_array() {
                for s in sources {
                    let token = &s["serviceAccountToken"];
                    ensure!(
                        token.is_object(),
                        "volume {name}: only serviceAccountToken projections are run"
                    );
                    write(token["path"].as_str().unwrap_or("token"), &self.token)?;
                }
            } else if let Some(cm) = v["configMap"]["name"].as_str() {
                let data = self
                    .config_maps
                    .get(cm)
                    .with_context(|| format!("volume {name}: no ConfigMap {cm}"))?;
                match v["configMap"]["items"].as_array() {
                    Some(items) => {
                        for item in items {
                            let key = item["key"].as_str().unwrap_or_default();
                            let text = data
                                .get(key)
                                .with_context(|| format!("ConfigMap {cm} has no key {key}"))?;
                            write(item["path"].as_str().unwrap_or(key), text)?;
                        }
                    }
                    None => {
                        for (key, text) in data {
                            write(key, text)?;
                        }
                    }
                }
            } else if v.get("emptyDir").is_none() {
                bail!("volume {name}: only projected tokens, ConfigMaps and emptyDirs are run");
            }
            // Readable by any uid, as the kubelet makes them for the pod.
            let _ = Command::new("chmod")
                .arg("-R")
                .arg("a+rX")
                .arg(root)
                .status();
        }
        Ok(())
    }

    /// The process of container `c` (or its hook `argv`), as the spec says.
    fn command(
        &self,
        spec: &Value,
        c: &Container<'_>,
        running: &mut Running,
        argv: Option<&[String]>,
    ) -> Result<Command> {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect()
        };
        let argv: Vec<String> = match argv {
            Some(argv) => argv.to_vec(),
            None => {
                let mut argv = strings(&c.spec["command"]);
                if argv.is_empty() {
                    let image = c.spec["image"].as_str().context("no image")?;
                    argv.push(entrypoint(image));
                }
                argv.extend(strings(&c.spec["args"]));
                argv
            }
        };
        let (program, args) = argv.split_first().context("nothing to run")?;
        let program = program_path(program);
        let id = |key: &str| {
            c.spec["securityContext"][key]
                .as_u64()
                .or_else(|| spec["securityContext"][key].as_u64())
        };
        let uid = id("runAsUser").unwrap_or(0);
        let gid = id("runAsGroup").unwrap_or(uid);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.pod.name]);
        // Bind-mount each volume in this process's own mount namespace
        // (`ip netns exec` makes one), then exec the program.
        let mounts = self.mounts(c, running)?;
        if !mounts.is_empty() {
            let script = "while [ \"$1\" != -- ]; do mount --bind \"$1\" \"$2\" || exit 1; shift 2; done; shift; exec \"$@\"";
            cmd.args(["sh", "-c", script, "sh"]);
            for (src, dst) in &mounts {
                cmd.arg(src).arg(dst);
            }
            cmd.arg("--");
        }
        if uid == 0 {
            cmd.arg(&program);
        } else {
            cmd.arg("setpriv")
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .args(["--clear-groups", "--"])
                .arg(staged(&program));
        }
        cmd.args(args);
        cmd.env_clear();
        cmd.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        for e in c.spec["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().context("an env entry without a name")?;
            let value = match (
                e["value"].as_str(),
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            ) {
                (Some(v), _) => v.to_owned(),
                (None, Some(path)) => self.field(spec, path)?,
                (None, None) if e.get("valueFrom").is_none() => String::new(),
                _ => bail!("env {name}: only values and fieldRefs are run"),
            };
            cmd.env(name, value);
        }
        Ok(cmd)
    }

    /// The downward API.
    fn field(&self, spec: &Value, path: &str) -> Result<String> {
        Ok(match path {
            "metadata.name" => self.name.clone(),
            "metadata.namespace" => self.namespace.clone(),
            "spec.nodeName" => self.node.clone(),
            "spec.serviceAccountName" => spec["serviceAccountName"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
            "status.podIP" => self.pod.ip.to_string(),
            other => bail!("fieldRef {other} is not run"),
        })
    }

    /// (volume directory, mount path) of each of `c`'s mounts; mount paths
    /// that do not exist are made (and removed again with the pod).
    fn mounts(&self, c: &Container<'_>, running: &mut Running) -> Result<Vec<(PathBuf, PathBuf)>> {
        let mut out = Vec::new();
        for m in c.spec["volumeMounts"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().context("a mount without a name")?;
            let at = PathBuf::from(m["mountPath"].as_str().context("a mount without a path")?);
            let src = running.volumes.join(name);
            ensure!(
                src.is_dir(),
                "container {} mounts {name}, which is no volume",
                c.name
            );
            let mut missing = Vec::new();
            let mut p = at.as_path();
            while !p.exists() {
                missing.push(p.to_owned());
                p = p.parent().context("a mount path with no existing parent")?;
            }
            std::fs::create_dir_all(&at)?;
            running.made.extend(missing);
            out.push((src, at));
        }
        Ok(out)
    }

    /// Waits for `c`'s `startupProbe` (an httpGet) to answer 2xx, within
    /// its `periodSeconds` × `failureThreshold`.
    fn startup_probe(&self, c: &Container<'_>) -> Result<()> {
        let probe = &c.spec["startupProbe"];
        let Some(path) = probe["httpGet"]["path"].as_str() else {
            return Ok(());
        };
        let port = probe["httpGet"]["port"]
            .as_u64()
            .context("a startupProbe without a port")?;
        let budget = probe["periodSeconds"].as_u64().unwrap_or(10)
            * probe["failureThreshold"].as_u64().unwrap_or(3);
        let url = format!("http://127.0.0.1:{port}{path}");
        eventually(Duration::from_secs(budget), || {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.pod.name,
                    "curl",
                    "-sS",
                    "--fail",
                    "--max-time",
                    "1",
                    &url,
                ])
                .output()?;
            ensure!(
                out.status.success(),
                "startupProbe {url}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(())
        })
        .with_context(|| format!("{}'s startupProbe", c.name))
    }
}

impl Container<'_> {
    fn new(spec: &Value) -> Result<Container<'_>> {
        let name = spec["name"]
            .as_str()
            .context("a container without a name")?
            .to_owned();
        Ok(Container { spec, name })
    }
}

/// Runs `cmd` to its end; an error unless it exits 0.
fn run_to_end(mut cmd: Command, what: &str) -> Result<Option<i32>> {
    let out = cmd.output().with_context(|| what.to_owned())?;
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out.status.code())
}

/// The binary an image stands for: the last part of its name, untagged.
pub fn entrypoint(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split([':', '@']).next().unwrap_or(last).to_owned()
}

/// A workspace binary by that name if there is one, else the name (PATH).
fn program_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().ok();
    let dir = exe.as_deref().and_then(Path::parent).map(|d| {
        if d.ends_with("deps") {
            d.parent().unwrap_or(d).to_owned()
        } else {
            d.to_owned()
        }
    });
    match dir.map(|d| d.join(name)) {
        Some(p) if !name.contains('/') && p.is_file() => bin(name),
        _ => PathBuf::from(name),
    }
}

impl Running {
    /// Stops the pod as the kubelet does: SIGTERM to the containers, waited
    /// for up to `grace` each; then to the native sidecars, last started
    /// first. Returns each one's exit code, in the order they exited.
    pub fn stop(&mut self, grace: Duration) -> Result<Vec<(String, Option<i32>)>> {
        let mut exited = Vec::new();
        let mut procs = std::mem::take(&mut self.procs);
        let (sidecars, containers): (Vec<_>, Vec<_>) = procs.drain(..).partition(|(_, _, s)| *s);
        for group in [containers, sidecars.into_iter().rev().collect()] {
            for (_, p, _) in &group {
                let _ = Command::new("kill")
                    .args(["-TERM", &p.pid().to_string()])
                    .status();
            }
            for (name, mut p, _) in group {
                let code = p.wait_exit(grace)?;
                self.events
                    .push((Instant::now(), Event::Exited(name.clone(), code)));
                exited.push((name, code));
            }
        }
        Ok(exited)
    }

    /// For a pod that runs to completion (`restartPolicy` `Never` or
    /// `OnFailure`, a Job's): waits up to `within` for every container to
    /// exit, then stops the native sidecars as the kubelet does (SIGTERM,
    /// last started first, each waited for up to `grace`). Returns each
    /// one's exit code, in the order they exited.
    pub fn complete(
        &mut self,
        within: Duration,
        grace: Duration,
    ) -> Result<Vec<(String, Option<i32>)>> {
        let mut exited = Vec::new();
        let (sidecars, containers): (Vec<_>, Vec<_>) = std::mem::take(&mut self.procs)
            .into_iter()
            .partition(|(_, _, s)| *s);
        for (name, mut p, _) in containers {
            let code = p.wait_exit(within)?;
            self.events
                .push((Instant::now(), Event::Exited(name.clone(), code)));
            exited.push((name, code));
        }
        self.procs = sidecars;
        exited.extend(self.stop(grace)?);
        Ok(exited)
    }

    /// When `event` happened, if it did.
    pub fn when(&self, event: &Event) -> Option<Instant> {
        self.events
            .iter()
            .find(|(_, e)| e == event)
            .map(|(t, _)| *t)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.procs.clear();
        let _ = std::fs::remove_dir_all(&self.volumes);
        // Deepest first; only directories this pod made, only if empty.
        self.made
            .sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in &self.made {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_image_stands_for_its_binary() {
        assert_eq!(super::entrypoint("weft/weft-proxy:0.1.0"), "weft-proxy");
        assert_eq!(
            super::entrypoint("registry.local:5000/x/weft-init@sha256:ab"),
            "weft-init"
        );
        assert_eq!(super::entrypoint("weft-testapp"), "weft-testapp");
    }
}
