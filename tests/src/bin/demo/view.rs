//! The live view: a frame a second, from the last two scrapes, through
//! the `weft stat` aggregation and table; and what `--keep` prints.

use std::fmt::Write as _;
use std::time::Duration;
use weft_control::stat::{cli, rows, By, Scrape};

use crate::app::App;
use crate::cluster::{Cluster, NODE_IP};
use crate::{verdict, Step, STEPS};

pub struct Frame<'a> {
    pub app: &'a App,
    pub elapsed: Duration,
    pub duration: Duration,
    pub step: usize,
    pub steps: &'a [Step],
    pub previous: &'a [Scrape],
    pub current: &'a [Scrape],
}

impl Frame<'_> {
    pub fn render(&self, tty: bool) -> String {
        let mut out = String::new();
        if tty {
            out.push_str("\x1b[H\x1b[2J");
        } else {
            out.push('\n');
        }
        let [old, new] = self.app.backends();
        let w = STEPS[self.step];
        let _ = writeln!(
            out,
            "weft demo · {}s of {}s · split {old} {}% / {new} {}% (step {} of {}) · Ctrl-C stops and cleans up\n",
            self.elapsed.as_secs(),
            self.duration.as_secs(),
            w[0],
            w[1],
            self.step + 1,
            STEPS.len()
        );
        let deploys = rows(By::Deploy, self.previous, self.current);
        out.push_str(&cli::table(By::Deploy, &deploys));
        let find = |name: &str| deploys.iter().find(|r| r.name == name);
        // The split as web's proxy made it, this step so far.
        let since = self.steps[self.step]
            .from
            .as_deref()
            .unwrap_or(self.previous);
        let _ = write!(out, "\nsplit (web's proxy, this step):");
        match verdict::shares(self.app, since, self.current) {
            Some((shares, n)) => {
                for (i, b) in [&old, &new].into_iter().enumerate() {
                    let _ = write!(
                        out,
                        "  {b} weight {:>3}% actual {:>5.1}%",
                        w[i],
                        shares[i] * 100.0
                    );
                }
                let _ = writeln!(out, "  (n={n:.0})");
            }
            None => {
                let _ = writeln!(out, "  settling");
            }
        }
        let web = find("web");
        let ratings = find("ratings");
        let _ = writeln!(
            out,
            "retries (web's proxy → ratings): {:.0} this second, {} refused by the budget; ratings answered {:.0} calls",
            web.map_or(0.0, |r| r.retries),
            web.map_or(0.0, |r| r.retries_skipped),
            ratings.map_or(0.0, |r| r.requests)
        );
        let denied: f64 = deploys.iter().map(|r| r.denied).sum();
        let intruder = find("intruder");
        let _ = writeln!(
            out,
            "denied: {denied:.0} this second (intruder sent {:.0})",
            intruder.map_or(0.0, |r| r.outbound_requests)
        );
        if let Some(load) = find("load") {
            let _ = writeln!(
                out,
                "load: {:.0} responses this second, {} not 5xx, {} on mTLS",
                load.outbound_requests,
                cli::percent(load.outbound_success),
                cli::percent(load.outbound_mtls)
            );
        }
        out
    }
}

/// How to look at a demo left running.
pub fn poke(cluster: &Cluster) -> String {
    let node = cluster.node.name();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nStill running (--keep); Ctrl-C removes everything. From this shell, as root:\n"
    );
    let admins: Vec<String> = cluster
        .pods
        .iter()
        .map(|m| {
            format!(
                "--proxy-admin {}/{}/{}={}",
                m.workload.namespace,
                m.workload.name,
                m.name,
                m.admin()
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "  proxies' admin ports (/metrics, /ready, /config_dump):"
    );
    for m in &cluster.pods {
        let _ = writeln!(
            out,
            "    {:<12} {}  (network namespace {})",
            m.name,
            m.admin(),
            m.pod.name
        );
    }
    let _ = writeln!(
        out,
        "\n  weft stat (the node {node} reaches every pod from {NODE_IP}):\n    ip netns exec {node} {} stat deploy {}",
        weft_tests::bin("weft").display(),
        admins.join(" ")
    );
    let _ = writeln!(
        out,
        "\n  traces (Jaeger's query API):\n    ip netns exec {node} curl -s 'http://{}/api/traces?service=load&limit=1'",
        cluster.receiver.query_addr
    );
    if let Some(web) = cluster.of("web").next() {
        let _ = writeln!(
            out,
            "\n  a request from inside the web pod, as its app (uid 1000, so through its proxy):\n    ip netns exec {} setpriv --reuid=1000 --regid=1000 --clear-groups curl -s http://10.96.0.20/hello",
            web.pod.name
        );
    }
    let _ = writeln!(
        out,
        "\n  weft-control (pid {}): admin on 127.0.0.1:9990 in network namespace {}",
        cluster.control.pid(),
        cluster.control_pod.name
    );
    let _ = writeln!(out, "\n  logs: {}", cluster.dir.join("logs").display());
    out
}
