//! `weft stat deploy|pod|route`: scrapes every proxy twice, `--window`
//! apart, and prints the rows of what happened in between, as a table or
//! JSON.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{aggregate, scrape, By, PodRef, Row, Scrape};

/// The long help of `weft stat`.
pub const ABOUT: &str = "\
Golden metrics of meshed workloads from their proxies' /metrics: success rate
(responses that are not 5xx), requests per second, p50/p95/p99 latency, the
share on mesh TLS, retries and authorization denials. Every proxy is scraped
twice, --window apart; the rows are what happened in between.

  deploy   per workload, from its pods' inbound side
  pod      per pod, from its inbound side
  route    per calling workload, route and backend, from the outbound side,
           with each backend's share of its route (a TrafficSplit's actual split)

The proxies are the meshed pods the API server lists (kubeconfig or the
in-cluster account; a container named weft-proxy, admin port 4191), or the
addresses given with --proxy-admin (then the API server is not asked).

Exit codes: 0 on success, 64 for invalid arguments, 1 when no proxy could be
read.";

#[derive(Debug, clap::Args)]
#[command(about = "Golden metrics per workload, pod or route, from the proxies", long_about = ABOUT)]
pub struct Args {
    /// What a row is for.
    #[arg(value_enum)]
    pub by: By,
    /// Only this namespace (default: every namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Routes: only those called by this workload.
    #[arg(long)]
    pub from: Option<String>,
    /// Routes: only those to this backend (or route name); deploy and pod:
    /// only this workload.
    #[arg(long)]
    pub to: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    /// A proxy's admin address, `[NAMESPACE/WORKLOAD[/POD]=]IP:PORT`;
    /// repeatable. Without a name, the address names the pod and workload.
    #[arg(long = "proxy-admin", value_name = "[NS/WORKLOAD[/POD]=]ADDR", value_parser = admin_target)]
    pub proxy_admin: Vec<(PodRef, SocketAddr)>,
    /// Time between the two scrapes (`500ms`, `10s`).
    #[arg(long, default_value = "1s", value_parser = crate::config::duration)]
    pub window: Duration,
    /// The API server (default: kubeconfig or the in-cluster account).
    #[arg(long, value_name = "URL")]
    pub kube_api_server: Option<String>,
    /// The proxies' admin port, for pods found through the API server.
    #[arg(long, default_value_t = scrape::ADMIN_PORT)]
    pub admin_port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// `[NS/WORKLOAD[/POD]=]IP:PORT`.
pub fn admin_target(s: &str) -> Result<(PodRef, SocketAddr), String> {
    let (name, addr) = match s.split_once('=') {
        Some((n, a)) => (Some(n), a),
        None => (None, s),
    };
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not IP:PORT (e.g. 10.244.0.5:4191)"))?;
    let pod = match name.map(|n| n.split('/').collect::<Vec<_>>()).as_deref() {
        None => PodRef {
            namespace: "-".into(),
            workload: addr.to_string(),
            pod: addr.to_string(),
        },
        Some([ns, w]) if !ns.is_empty() && !w.is_empty() => PodRef {
            namespace: (*ns).into(),
            workload: (*w).into(),
            pod: addr.to_string(),
        },
        Some([ns, w, p]) if !ns.is_empty() && !w.is_empty() && !p.is_empty() => PodRef {
            namespace: (*ns).into(),
            workload: (*w).into(),
            pod: (*p).into(),
        },
        _ => {
            return Err(format!(
                "{s:?}: the name is NAMESPACE/WORKLOAD or NAMESPACE/WORKLOAD/POD"
            ))
        }
    };
    Ok((pod, addr))
}

/// The whole command: exit 0, or 1 with the reason on stderr.
pub fn main(args: Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft stat: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(&args)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft stat: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Finds the proxies, scrapes them twice and renders the rows.
pub async fn run(args: &Args) -> Result<String> {
    let targets = if args.proxy_admin.is_empty() {
        let client = crate::sources::kube::client(args.kube_api_server.as_deref())
            .await
            .context("cannot reach the API server (or give --proxy-admin)")?;
        scrape::cluster_proxies(client, args.namespace.as_deref(), args.admin_port).await?
    } else {
        args.proxy_admin.clone()
    };
    let targets: Vec<_> = targets
        .into_iter()
        .filter(|(p, _)| args.namespace.as_ref().is_none_or(|ns| *ns == p.namespace))
        .collect();
    if targets.is_empty() {
        bail!("no meshed pod found");
    }
    let first = scrape_all(&targets).await;
    tokio::time::sleep(args.window).await;
    let second = scrape_all(&targets).await;
    let mut failed = Vec::new();
    let ok: Vec<Scrape> = second
        .into_iter()
        .filter_map(|r| r.map_err(|e| failed.push(format!("{e:#}"))).ok())
        .collect();
    if ok.is_empty() {
        bail!("no proxy could be read: {}", failed.join("; "));
    }
    let before: Vec<Scrape> = first.into_iter().flatten().collect();
    let rows = filter(args, aggregate::rows(args.by, &before, &ok));
    let mut out = match args.output {
        Output::Table => table(args.by, &rows),
        Output::Json => serde_json::to_string_pretty(&rows)? + "\n",
    };
    for f in failed {
        let _ = writeln!(out, "# not read: {f}");
    }
    Ok(out)
}

async fn scrape_all(targets: &[(PodRef, SocketAddr)]) -> Vec<Result<Scrape>> {
    let reads = targets.iter().map(|(pod, addr)| async move {
        let text = scrape::metrics(*addr, Duration::from_secs(5)).await?;
        Scrape::new(pod.clone(), &text, Instant::now())
            .with_context(|| format!("{addr}: unreadable /metrics"))
    });
    futures_util::future::join_all(reads).await
}

fn filter(args: &Args, rows: Vec<Row>) -> Vec<Row> {
    rows.into_iter()
        .filter(|r| {
            let from = args
                .from
                .as_ref()
                .is_none_or(|f| r.from.as_ref() == Some(f));
            let to = args
                .to
                .as_ref()
                .is_none_or(|t| *t == r.name || r.backend.as_ref() == Some(t));
            from && to
        })
        .collect()
}

/// A percentage, or `-`.
pub fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.1}%", v * 100.0))
}

/// Milliseconds, or `-`.
pub fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.0}ms"))
}

/// Requests per second, or `-`.
pub fn rps(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// The rows as an aligned table with a header line.
pub fn table(by: By, rows: &[Row]) -> String {
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut head: Vec<&str> = vec!["NAMESPACE"];
    match by {
        By::Deploy => head.extend(["DEPLOY", "PODS"]),
        By::Pod => head.push("POD"),
        By::Route => head.extend(["FROM", "ROUTE", "BACKEND", "SHARE"]),
    }
    head.extend(["SUCCESS", "RPS", "P50", "P95", "P99"]);
    if by == By::Route {
        head.push("REQUESTS");
    } else {
        head.extend(["MTLS", "RETRIES", "DENIED"]);
    }
    lines.push(head.iter().map(|s| (*s).to_owned()).collect());
    for r in rows {
        let mut l = vec![r.namespace.clone()];
        match by {
            By::Deploy => l.extend([r.name.clone(), r.pods.to_string()]),
            By::Pod => l.push(r.name.clone()),
            By::Route => l.extend([
                r.from.clone().unwrap_or_default(),
                r.name.clone(),
                r.backend.clone().unwrap_or_default(),
                percent(r.share),
            ]),
        }
        l.extend([
            percent(r.success),
            rps(r.rps),
            ms(r.p50_ms),
            ms(r.p95_ms),
            ms(r.p99_ms),
        ]);
        if by == By::Route {
            l.push(format!("{:.0}", r.requests));
        } else {
            l.extend([
                percent(r.mtls),
                format!("{:.0}", r.retries),
                format!("{:.0}", r.denied),
            ]);
        }
        lines.push(l);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for l in lines {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}
