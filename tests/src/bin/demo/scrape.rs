//! Reading every proxy's `/metrics` once: one curl in the node's namespace
//! (which reaches every pod over the bridge) for all admin ports, each
//! page tagged with its pod and parsed into a [`Scrape`].

use anyhow::{Context, Result};
use std::path::Path;
use std::time::Instant;
use weft_control::stat::{PodRef, Scrape};

use crate::cluster::Cluster;

const END: &str = "@@weft-demo-end ";

/// One scrape of every pod's proxy; a pod that did not answer is left out.
pub fn all(cluster: &Cluster) -> Result<Vec<Scrape>> {
    let mut cmd = cluster.node.command(Path::new("curl"));
    cmd.args(["-sS", "--max-time", "2", "-w"])
        .arg(format!("\n{END}%{{url_effective}} %{{http_code}}\n"));
    for m in &cluster.pods {
        cmd.arg(format!("http://{}/metrics", m.admin()));
    }
    let out = cmd.output().context("cannot run curl in the node")?;
    let at = Instant::now();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut scrapes = Vec::new();
    let mut page = String::new();
    for line in text.lines() {
        let Some(tail) = line.strip_prefix(END) else {
            page.push_str(line);
            page.push('\n');
            continue;
        };
        let mut words = tail.split_whitespace();
        let (url, code) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let pod = cluster
            .pods
            .iter()
            .find(|m| url == format!("http://{}/metrics", m.admin()));
        if let (Some(m), "200") = (pod, code) {
            let pod = PodRef {
                namespace: m.workload.namespace.clone(),
                workload: m.workload.name.clone(),
                pod: m.name.clone(),
            };
            scrapes.push(Scrape::new(pod, &page, at).with_context(|| url.to_owned())?);
        }
        page.clear();
    }
    Ok(scrapes)
}

/// The sum over `scrapes` of the pods of workloads `workloads` of every
/// sample `name` whose labels include `labels`.
pub fn sum(scrapes: &[Scrape], workloads: &[&str], name: &str, labels: &[(&str, &str)]) -> f64 {
    scrapes
        .iter()
        .filter(|s| workloads.contains(&s.pod.workload.as_str()))
        .flat_map(|s| &s.samples)
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
        .map(|s| s.value)
        .sum()
}
