//! The application as `examples/demo/` describes it: Deployments (what to
//! run, how many, as which account, with which annotations), Services (the
//! virtual addresses) and ServiceAccounts. The demo runs each Deployment's
//! container as written, and adds what a cluster would have made from
//! them: a Pod object per replica and an EndpointSlice per Service.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// One Deployment.
#[derive(Clone, Debug)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub replicas: u64,
    pub account: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The app container's args (its image runs `weft-testapp`).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Whether a container serves (declares a port), or only calls.
fn serves(container: &Value) -> bool {
    container["ports"].as_array().is_some_and(|p| !p.is_empty())
}

/// One Service: its selector and its first port.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    pub port_name: String,
    pub target_port: u16,
}

/// What the example directory holds.
#[derive(Debug)]
pub struct App {
    pub dir: PathBuf,
    /// Workloads that serve, then those that only call (started last).
    pub servers: Vec<Workload>,
    pub clients: Vec<Workload>,
    pub services: Vec<Service>,
    pub accounts: Vec<String>,
    /// The TrafficSplit the demo shifts, and the file it is in.
    pub split: Value,
    pub split_file: String,
}

fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reads every .yaml file of `dir`.
pub fn read(dir: &Path) -> Result<App> {
    let mut app = App {
        dir: dir.to_owned(),
        servers: vec![],
        clients: vec![],
        services: vec![],
        accounts: vec![],
        split: Value::Null,
        split_file: String::new(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the example application in {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        for (i, doc) in weft_control::sources::parse::documents(&text)
            .iter()
            .enumerate()
        {
            let obj: Value = serde_saphyr::from_str(doc)
                .with_context(|| format!("{} document {}: not YAML", file.display(), i + 1))?;
            let at = || format!("{} document {}", file.display(), i + 1);
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let namespace = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            match obj["kind"].as_str() {
                Some("ServiceAccount") => app.accounts.push(name),
                Some("Service") => {
                    let port = &obj["spec"]["ports"][0];
                    app.services.push(Service {
                        name,
                        namespace,
                        selector: strings(&obj["spec"]["selector"]),
                        port_name: port["name"].as_str().unwrap_or("").to_owned(),
                        target_port: port["targetPort"]
                            .as_u64()
                            .and_then(|p| u16::try_from(p).ok())
                            .with_context(|| format!("{}: a numeric targetPort", at()))?,
                    });
                }
                Some("TrafficSplit") => {
                    app.split = obj.clone();
                    app.split_file = file
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default();
                }
                Some("Deployment") => {
                    let template = &obj["spec"]["template"];
                    let container = &template["spec"]["containers"][0];
                    let args: Vec<String> = container["args"]
                        .as_array()
                        .with_context(|| format!("{}: the container needs args", at()))?
                        .iter()
                        .map(|a| a.as_str().unwrap_or("").to_owned())
                        .collect();
                    let env = container["env"]
                        .as_array()
                        .map(|e| {
                            e.iter()
                                .map(|v| {
                                    (
                                        v["name"].as_str().unwrap_or("").to_owned(),
                                        v["value"].as_str().unwrap_or("").to_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let w = Workload {
                        name,
                        namespace,
                        replicas: obj["spec"]["replicas"].as_u64().unwrap_or(1),
                        account: template["spec"]["serviceAccountName"]
                            .as_str()
                            .unwrap_or("default")
                            .to_owned(),
                        labels: strings(&template["metadata"]["labels"]),
                        annotations: strings(&template["metadata"]["annotations"]),
                        args,
                        env,
                    };
                    if serves(container) {
                        app.servers.push(w);
                    } else {
                        app.clients.push(w);
                    }
                }
                _ => {}
            }
        }
    }
    if app.split.is_null() {
        bail!("no TrafficSplit in {}: the demo shifts one", dir.display());
    }
    if app.split["spec"]["backends"].as_array().map_or(0, Vec::len) != 2 {
        bail!(
            "the TrafficSplit in {} needs two backends (old, new)",
            dir.display()
        );
    }
    Ok(app)
}

impl App {
    /// The split's backends, old then new.
    pub fn backends(&self) -> [String; 2] {
        let b = |i: usize| {
            self.split["spec"]["backends"][i]["service"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        [b(0), b(1)]
    }

    /// The TrafficSplit with these weights (old, new), as a file's text
    /// (JSON is YAML).
    pub fn split_with(&self, weights: [u32; 2]) -> String {
        let mut split = self.split.clone();
        for (i, w) in weights.iter().enumerate() {
            split["spec"]["backends"][i]["weight"] = json!(w);
        }
        format!("{split:#}\n")
    }

    /// The Pod objects and EndpointSlices that `pods` (workload, pod name,
    /// address) stand for, as one file's text.
    pub fn cluster_objects(&self, pods: &[(&Workload, String, Ipv4Addr)]) -> String {
        let mut docs: Vec<Value> = pods
            .iter()
            .map(|(w, name, _)| {
                json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": w.namespace, "labels": w.labels},
                    "spec": {"serviceAccountName": w.account,
                             "containers": [{"name": "app", "image": "weft/weft-testapp:dev"},
                                            {"name": "weft-proxy", "image": "weft/weft-proxy:dev"}]},
                })
            })
            .collect();
        for svc in &self.services {
            let endpoints: Vec<Value> = pods
                .iter()
                .filter(|(w, _, _)| {
                    w.namespace == svc.namespace
                        && !svc.selector.is_empty()
                        && svc.selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
                })
                .map(|(w, name, ip)| {
                    json!({"addresses": [ip.to_string()],
                           "conditions": {"ready": true, "serving": true, "terminating": false},
                           "targetRef": {"kind": "Pod", "name": name, "namespace": w.namespace}})
                })
                .collect();
            docs.push(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{}-demo", svc.name), "namespace": svc.namespace,
                             "labels": {"kubernetes.io/service-name": svc.name}},
                "addressType": "IPv4",
                "ports": [{"name": svc.port_name, "port": svc.target_port, "protocol": "TCP"}],
                "endpoints": endpoints,
            }));
        }
        docs.iter()
            .map(|d| format!("{d:#}\n"))
            .collect::<Vec<_>>()
            .join("---\n")
    }
}
