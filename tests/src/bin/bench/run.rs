//! `weft-bench run`: builds the topology, then for each protocol measures a
//! fixed rate and a saturating load, direct and meshed in alternating rounds
//! (direct first in even rounds, meshed first in odd ones) so that a noisy
//! neighbour on the machine hits both paths alike. During meshed runs it
//! reads both proxies' CPU time and samples their memory from `/proc`.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use weft_tests::{require, APP_UID, WAIT};

use crate::hist::Outcome;
use crate::load::Spec;
use crate::opts::{Args, Proto};
use crate::procfs;
use crate::report::{self, Comparison, Usage};
use crate::topology::{Launch, Pair, Proxy, Topology};
use crate::{authz, split};

/// How often memory is sampled during a meshed run.
const SAMPLE: Duration = Duration::from_millis(100);

/// The options of `weft-bench run`.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// Fixed-rate time per path (split over the rounds).
    pub duration: Duration,
    /// Saturating time per path (split over the rounds).
    pub saturate: Duration,
    pub rate: u64,
    /// HTTP/1.1 connections at the fixed rate.
    pub connections: usize,
    /// HTTP/2 streams in flight at most at the fixed rate.
    pub streams: usize,
    /// Concurrent requests when saturating.
    pub concurrency: usize,
    pub rounds: u32,
    /// Unmeasured load on each path before each protocol's measurements.
    pub warmup: Duration,
    pub protos: Vec<Proto>,
    pub direct_only: bool,
    /// Also measure the discovery path (needs weft-control next to weft-bench).
    pub discovery: bool,
    /// A second `weft-proxy` (built from the commit before a change) run on
    /// a topology of its own, its paths measured in the same interleaved
    /// rounds as the new one's and reported as ratios.
    pub baseline: Option<PathBuf>,
    /// Run every proxy under callgrind, profiles written here.
    pub callgrind: Option<PathBuf>,
}

impl RunOpts {
    pub fn parse(mut args: Args) -> Result<Self> {
        let quick = args.flag("--quick");
        let mut o = Self {
            duration: Duration::from_secs(if quick { 2 } else { 10 }),
            saturate: Duration::from_secs(if quick { 1 } else { 6 }),
            rate: 1000,
            connections: 4,
            streams: 32,
            concurrency: 16,
            rounds: if quick { 1 } else { 2 },
            warmup: Duration::from_millis(if quick { 500 } else { 1000 }),
            protos: vec![Proto::H1, Proto::H2],
            direct_only: args.flag("--direct-only"),
            discovery: !args.flag("--no-discovery"),
            baseline: args.value("--baseline-proxy")?,
            callgrind: args.value("--callgrind")?,
        };
        o.duration = args.duration("--duration")?.unwrap_or(o.duration);
        o.saturate = args.duration("--saturate")?.unwrap_or(o.saturate);
        o.rate = args.value("--rate")?.unwrap_or(o.rate);
        o.connections = args.value("--connections")?.unwrap_or(o.connections);
        o.streams = args.value("--streams")?.unwrap_or(o.streams);
        o.concurrency = args.value("--concurrency")?.unwrap_or(o.concurrency);
        o.rounds = args.value("--rounds")?.unwrap_or(o.rounds);
        o.warmup = args.duration("--warmup")?.unwrap_or(o.warmup);
        if let Some(list) = args.value::<String>("--protocols")? {
            o.protos = list.split(',').map(str::parse).collect::<Result<_>>()?;
        }
        if let Some(extra) = args.finish()?.first() {
            bail!("unexpected argument {extra:?}");
        }
        let counts = [o.connections, o.streams, o.concurrency];
        if o.rate == 0 || o.rounds == 0 || counts.iter().any(|n| !(1..=10_000).contains(n)) {
            bail!("--rate and --rounds must be above 0, --connections/--streams/--concurrency within 1..=10000");
        }
        Ok(o)
    }
}

/// Runs the whole benchmark and prints its tables.
pub fn main(opts: &RunOpts) -> Result<()> {
    if let Some(reason) = require::netns_unavailable() {
        bail!("weft-bench run makes network namespaces and needs root, ip, iptables and setpriv: {reason}");
    }
    let bench = weft_tests::bin("weft-bench");
    let proxy_path = bench.with_file_name("weft-proxy");
    let proxy: Option<PathBuf> = if opts.direct_only {
        println!("--direct-only: measuring the direct path alone");
        None
    } else if proxy_path.is_file() {
        Some(proxy_path)
    } else {
        println!(
            "weft-proxy is not built ({} does not exist): measuring the direct path alone.\n\
             Build it next to weft-bench for the meshed path: cargo build --release -p weft-proxy -p weft-init",
            proxy_path.display()
        );
        None
    };
    let control_path = bench.with_file_name("weft-control");
    let control = match &proxy {
        Some(_) if opts.discovery && control_path.is_file() => Some(control_path),
        Some(_) if opts.discovery => {
            println!(
                "weft-control is not built ({} does not exist): no discovery path.\n\
                 Build it next to weft-bench for it: cargo build --release -p weft-control",
                control_path.display()
            );
            None
        }
        _ => None,
    };
    if let Some(dir) = &opts.callgrind {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)?;
        // The proxies run as their own uid and write their profiles here.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
        println!(
            "--callgrind: every proxy runs under callgrind (profiles in {}); its figures are not the proxy's",
            dir.display()
        );
    }
    let launch = |proxy: &PathBuf, name| Launch {
        proxy: proxy.clone(),
        name,
        callgrind: opts.callgrind.clone(),
    };
    let topo = Topology::build(
        &bench,
        proxy.as_ref().map(|p| launch(p, "new")).as_ref(),
        control.as_ref(),
    )?;
    println!("{}", topo.describe());
    let base = match (&opts.baseline, &proxy) {
        (None, _) => None,
        (Some(_), None) => bail!("--baseline-proxy needs the new weft-proxy next to weft-bench"),
        (Some(path), Some(_)) if !path.is_file() => {
            bail!("--baseline-proxy {}: no such file", path.display())
        }
        (Some(path), Some(_)) => {
            let base = Topology::build(&bench, Some(&launch(path, "baseline")), control.as_ref())?;
            println!("baseline proxy {}: {}", path.display(), base.describe());
            Some(base)
        }
    };
    println!(
        "1 KiB responses; fixed rate {} rps for {:?} per path, saturating for {:?} per path, \
         in {} interleaved round(s), after a {:?} warm-up;\n{} CPUs, shared by the load generator, \
         the server{}",
        opts.rate,
        opts.duration,
        opts.saturate,
        opts.rounds,
        opts.warmup,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if topo.proxies.is_empty() {
            ""
        } else {
            " and the proxies"
        }
    );
    if !topo.proxies.is_empty() {
        let idle: Vec<String> = topo
            .proxies
            .iter()
            .map(|p| {
                Ok(format!(
                    "{} {}",
                    p.role,
                    report::megabytes(procfs::rss(p.pid)?)
                ))
            })
            .collect::<Result<_>>()?;
        println!("proxy RSS at idle: {}", idle.join(", "));
    }
    for &proto in &opts.protos {
        let (workers, what) = match proto {
            Proto::H1 => (opts.connections, "connections"),
            Proto::H2 => (opts.streams, "streams on one connection"),
        };
        let fixed = Spec {
            addr: topo.direct.target(),
            proto,
            duration: opts.duration,
            rate: Some(opts.rate),
            workers,
            fresh: false,
        };
        // Warm up both paths (connection pools, allocators, caches); discarded.
        let warmup = Spec {
            duration: opts.warmup,
            ..fixed.clone()
        };
        measure(&topo, base.as_ref(), &bench, &warmup, 1)?;
        let (c, b) = measure(&topo, base.as_ref(), &bench, &fixed, opts.rounds)?;
        let title = format!(
            "\n== {proto}, fixed rate {} rps (open loop, latency from intended send time; {workers} {what})",
            opts.rate
        );
        print!("{}", report::fixed_rate(&title, &c));
        if c.balanced.is_some() {
            let title = format!(
                "\n== {proto}, fixed rate {} rps: discovery on, {} endpoints behind a Service, \
                 against the passthrough path",
                opts.rate,
                crate::topology::ENDPOINTS
            );
            print!("{}", report::discovery(&title, &c));
        }
        if c.split.is_some() {
            let title = format!(
                "\n== {proto}, fixed rate {} rps: split on, {}, against the discovery path",
                opts.rate,
                split::describe()
            );
            print!("{}", report::split(&title, &c, &routed(&topo)?, false));
        }
        if c.mtls.is_some() {
            let title = format!(
                "\n== {proto}, fixed rate {} rps: mutual TLS between the two proxies, against plaintext",
                opts.rate
            );
            print!("{}", report::mtls(&title, &c));
        }
        if c.authz.is_some() {
            let title = format!(
                "\n== {proto}, fixed rate {} rps: {} authorizations on the server, against none (the mTLS path)",
                opts.rate,
                authz::AUTHORIZATIONS
            );
            print!("{}", report::authz(&title, &c, decisions(&topo)?, false));
        }
        if let Some(b) = &b {
            let title = format!(
                "\n== {proto}, fixed rate {} rps: the baseline proxy against the new one",
                opts.rate
            );
            print!(
                "{}",
                report::versus(&title, &c.direct.0, &b.paths(&c), false)
            );
            if let (Some((s, _)), Some((d, _)), Some(base)) = (&b.split, &b.balanced, &base) {
                print!("{}", report::baseline_split(d, s, &routed(base)?));
            }
        }

        let saturating = Spec {
            duration: opts.saturate,
            rate: None,
            workers: opts.concurrency,
            ..fixed
        };
        let (c, b) = measure(&topo, base.as_ref(), &bench, &saturating, opts.rounds)?;
        let what = match proto {
            Proto::H1 => "connections",
            Proto::H2 => "streams on one connection",
        };
        let title = format!(
            "\n== {proto}, saturating (closed loop, {} {what})",
            opts.concurrency
        );
        print!("{}", report::saturating(&title, &c));
        if c.split.is_some() {
            let title = format!("\n== {proto}, saturating: split on against the discovery path");
            print!("{}", report::split(&title, &c, &routed(&topo)?, true));
        }
        if c.mtls.is_some() {
            let title = format!("\n== {proto}, saturating: mutual TLS against plaintext");
            print!("{}", report::mtls(&title, &c));
        }
        if c.authz.is_some() {
            let title = format!(
                "\n== {proto}, saturating: {} authorizations against none",
                authz::AUTHORIZATIONS
            );
            print!("{}", report::authz(&title, &c, decisions(&topo)?, true));
        }
        if let Some(b) = &b {
            let title = format!("\n== {proto}, saturating: the baseline proxy against the new one");
            print!(
                "{}",
                report::versus(&title, &c.direct.0, &b.paths(&c), true)
            );
        }
    }
    if topo.secured.is_some() && opts.protos.contains(&Proto::H1) {
        // Every request on a new connection: what a connection costs, and
        // on the mTLS path, its handshake (the client proxies keep no idle
        // upstream connections, so each one is new end to end).
        let fresh = Spec {
            addr: topo.direct.target(),
            proto: Proto::H1,
            duration: opts.saturate,
            rate: None,
            workers: 4,
            fresh: true,
        };
        let (c, _) = measure(&topo, None, &bench, &fresh, opts.rounds)?;
        print!(
            "{}",
            report::mtls(
                "\n== new connections: HTTP/1.1, one request per connection, closed loop (4 at a time); \
                 mTLS extra = the handshake",
                &c
            )
        );
    }
    println!(
        "\nlinkerd2-proxy's figures for reference: about 0.5 ms added per meshed hop at p99, \
         and about 1/10 of direct throughput."
    );
    Ok(())
}

/// How many of the split path's requests each backend took so far, by the
/// client proxy of `topo`'s split path (none without one).
fn routed(topo: &Topology) -> Result<Vec<(&'static str, f64)>> {
    match &topo.balanced {
        Some(b) => split::routed(&b.pair.client),
        None => Ok(Vec::new()),
    }
}

/// Requests the authz path's server proxy allowed and denied so far.
fn decisions(topo: &Topology) -> Result<(f64, f64)> {
    match &topo.secured {
        Some(s) => authz::decisions(s.authz.pair.server_pod()),
        None => Ok((0.0, 0.0)),
    }
}

/// The paths of one topology a measurement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    Direct,
    Meshed,
    Discovery,
    /// The discovery path's client dialling the split Service.
    Split,
    Mtls,
    /// The mTLS path's plaintext twin.
    Twin,
    /// The mTLS path with 20 TrafficTargets on its server.
    Authz,
}

impl Leg {
    const ALL: [Leg; 7] = [
        Leg::Direct,
        Leg::Meshed,
        Leg::Discovery,
        Leg::Split,
        Leg::Mtls,
        Leg::Twin,
        Leg::Authz,
    ];

    fn name(self) -> &'static str {
        match self {
            Leg::Direct => "direct",
            Leg::Meshed => "meshed",
            Leg::Discovery => "discovery",
            Leg::Split => "split",
            Leg::Mtls => "mTLS",
            Leg::Twin => "mTLS twin",
            Leg::Authz => "authz",
        }
    }

    /// Where this path runs in `topo`, if it has it: its pods, what its
    /// client dials, its proxies. The discovery and split paths are left
    /// out of new-connection runs: they compare plaintext and mTLS.
    fn of(self, topo: &Topology, fresh: bool) -> Option<(&Pair, SocketAddr, &[Proxy])> {
        let at = |pair: &Pair| pair.target();
        let balanced = topo.balanced.as_ref().filter(|_| !fresh);
        match self {
            Leg::Direct => Some((&topo.direct, at(&topo.direct), &[])),
            Leg::Meshed => topo.meshed.as_ref().map(|p| (p, at(p), &topo.proxies[..])),
            Leg::Discovery => balanced.map(|b| (&b.pair, at(&b.pair), &b.proxies[..])),
            Leg::Split => balanced.map(|b| (&b.pair, b.split, &b.proxies[..])),
            Leg::Mtls => topo
                .secured
                .as_ref()
                .map(|s| (&s.tls.pair, at(&s.tls.pair), &s.tls.proxies[..])),
            Leg::Twin => topo
                .secured
                .as_ref()
                .map(|s| (&s.plain.pair, at(&s.plain.pair), &s.plain.proxies[..])),
            // Per request, as the mTLS path's fixed-rate and saturating runs.
            Leg::Authz => topo
                .secured
                .as_ref()
                .filter(|_| !fresh)
                .map(|s| (&s.authz.pair, at(&s.authz.pair), &s.authz.proxies[..])),
        }
    }
}

/// The baseline proxy's figures on the paths it shares with the new one.
#[derive(Debug)]
pub struct Baseline {
    meshed: Option<(Outcome, Usage)>,
    balanced: Option<(Outcome, Usage)>,
    split: Option<(Outcome, Usage)>,
    mtls: Option<(Outcome, Usage)>,
}

impl Baseline {
    /// Each path next to the new proxy's figures in `new`.
    fn paths<'a>(&'a self, new: &'a Comparison) -> Vec<report::Versus<'a>> {
        let mut out = Vec::new();
        let new_mtls = new.mtls.as_ref().map(|(tls, _)| tls);
        for (name, b, n) in [
            ("passthrough", &self.meshed, new.meshed.as_ref()),
            ("discovery", &self.balanced, new.balanced.as_ref()),
            ("split", &self.split, new.split.as_ref()),
            ("mTLS", &self.mtls, new_mtls),
        ] {
            if let (Some(b), Some(n)) = (b, n) {
                out.push((name, b, n));
            }
        }
        out
    }
}

/// Every path under the load `plan` describes (its duration split over
/// `rounds` rounds; its address replaced by each pair's server), with the
/// `base` topology's proxied paths (the baseline proxy) interleaved, each
/// right after the same path of `topo`. Each round starts one path later.
fn measure(
    topo: &Topology,
    base: Option<&Topology>,
    bench: &std::path::Path,
    plan: &Spec,
    rounds: u32,
) -> Result<(Comparison, Option<Baseline>)> {
    let per_round = plan.duration / rounds;
    // (path, whether it is the baseline's, where it runs)
    let mut legs: Vec<(Leg, bool, &Pair, SocketAddr, &[Proxy])> = Vec::new();
    for path in Leg::ALL {
        if let Some((pair, target, proxies)) = path.of(topo, plan.fresh) {
            legs.push((path, false, pair, target, proxies));
        }
        // The baseline's direct path is the same as the new one's, and its
        // mTLS twin and authz path only serve the new proxy's tables.
        if matches!(path, Leg::Direct | Leg::Twin | Leg::Authz) {
            continue;
        }
        if let Some((pair, target, proxies)) = base.and_then(|b| path.of(b, plan.fresh)) {
            legs.push((path, true, pair, target, proxies));
        }
    }
    let mut acc: Vec<(Outcome, Usage)> = legs
        .iter()
        .map(|_| (Outcome::empty(), Usage::default()))
        .collect();
    // Each path's p50 in each round, for the split path's spread.
    let mut p50s: Vec<Vec<u64>> = vec![Vec::new(); legs.len()];
    for round in 0..rounds as usize {
        for k in 0..legs.len() {
            let i = (k + round) % legs.len();
            let (path, baseline, pair, target, proxies) = legs[i];
            let spec = Spec {
                addr: target,
                duration: per_round,
                ..plan.clone()
            };
            let (out, usage) = load(pair, bench, &spec, proxies).with_context(|| {
                let which = if baseline { " (baseline proxy)" } else { "" };
                format!("{} load on the {} path{which}", plan.proto, path.name())
            })?;
            acc[i].0.merge(&out);
            acc[i].1.merge(&usage);
            p50s[i].push(out.at(0.5));
        }
    }
    let index = |path: Leg, baseline: bool| {
        legs.iter()
            .position(|&(p, b, ..)| p == path && b == baseline)
    };
    let take = |path: Leg, baseline: bool| index(path, baseline).map(|i| acc[i].clone());
    let direct = take(Leg::Direct, false).expect("the direct path is always measured");
    let split_rounds = match (index(Leg::Discovery, false), index(Leg::Split, false)) {
        (Some(d), Some(s)) => p50s[d]
            .iter()
            .copied()
            .zip(p50s[s].iter().copied())
            .collect(),
        _ => Vec::new(),
    };
    let comparison = Comparison {
        direct,
        meshed: take(Leg::Meshed, false),
        balanced: take(Leg::Discovery, false),
        split: take(Leg::Split, false),
        split_rounds,
        mtls: take(Leg::Mtls, false).zip(take(Leg::Twin, false)),
        authz: take(Leg::Authz, false),
    };
    let baseline = base.map(|_| Baseline {
        meshed: take(Leg::Meshed, true),
        balanced: take(Leg::Discovery, true),
        split: take(Leg::Split, true),
        mtls: take(Leg::Mtls, true),
    });
    Ok((comparison, baseline))
}

/// One `weft-bench load` in `pair`'s client pod: its outcome, the CPU time
/// the server and `proxies` spent meanwhile, and the proxies' peak memory.
fn load(
    pair: &Pair,
    bench: &std::path::Path,
    spec: &Spec,
    proxies: &[Proxy],
) -> Result<(Outcome, Usage)> {
    let proxy_cpu =
        || -> Result<Duration> { proxies.iter().map(|p| procfs::cpu_time(p.pid)).sum() };
    let server_cpu =
        || -> Result<Duration> { pair.server_pids.iter().map(|p| procfs::cpu_time(*p)).sum() };
    let before = (server_cpu()?, proxy_cpu()?);
    let args = spec.to_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = pair.client.spawn(Some(APP_UID), bench, &args)?;
    // Schedule, drain allowance, start-up: the load never takes longer.
    let limit = spec.duration + Duration::from_secs(25);
    let reader = std::thread::spawn(move || -> Result<Outcome> {
        let hist = proc.expect_line("HIST", limit)?;
        let result = proc.expect_line("RESULT", WAIT)?;
        Outcome::parse(&hist, &result)
    });
    // Peak memory per role (the largest of the proxies of a role).
    let mut peaks: Vec<(&'static str, u64)> = Vec::new();
    for p in proxies {
        if !peaks.iter().any(|(r, _)| *r == p.role) {
            peaks.push((p.role, 0));
        }
    }
    let deadline = Instant::now() + limit + WAIT;
    while !reader.is_finished() && Instant::now() < deadline {
        for p in proxies {
            let rss = procfs::rss(p.pid)?;
            if let Some((_, peak)) = peaks.iter_mut().find(|(r, _)| *r == p.role) {
                *peak = (*peak).max(rss);
            }
        }
        std::thread::sleep(SAMPLE);
    }
    let out = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the load reader panicked"))??;
    Ok((
        out,
        Usage {
            server_cpu: server_cpu()?.saturating_sub(before.0),
            proxy_cpu: proxy_cpu()?.saturating_sub(before.1),
            rss_peak: peaks,
        },
    ))
}
