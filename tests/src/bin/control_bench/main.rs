//! weft-control-bench: what the control plane costs at cluster scale.
//!
//! Loads a cluster into the fake API server of `weft_tests::fakekube`
//! (in-process, real HTTP on loopback), starts the real `weft-control`
//! against it (the kube source, the real kube-rs client), opens thousands of
//! `Discovery.Watch` streams the way proxies do, then changes EndpointSlices
//! one at a time and times each change from the API server accepting it to
//! the last watcher of its Service receiving the delta.
//!
//! # Running it
//!
//! From the workspace root (no root needed; loopback only):
//!
//! ```text
//! cargo build --release -p weft-tests -p weft-control && target/release/weft-control-bench
//! target/release/weft-control-bench --quick     # a smaller cluster, a few seconds
//! ```
//!
//! `weft-control` is found next to the running `weft-control-bench`, so a
//! release build measures a release binary.
//!
//! Options:
//!
//! ```text
//! --services N       Services (default 1000; --quick 100)
//! --endpoints N      endpoints in all, cut into slices of at most 100 (default 20000; --quick 2000)
//! --streams N        concurrent Watch streams (default 2000; --quick 200)
//! --hot-streams N    streams on the one hot Service (default 500; --quick 50)
//! --warm-services N  Services sharing the other streams (default 100; --quick 10)
//! --connections N    HTTP/2 connections carrying the streams (default 20)
//! --changes N        EndpointSlice changes, alternately hot and warm (default 200; --quick 40)
//! --pause D          pause after each change has fully arrived (default 20ms)
//! --quick            the smaller cluster
//! --scale N          multiplies Services, endpoints, streams, hot streams and warm
//!                    Services (default 1: 1,000 Services, 20,000 endpoints, 2,000
//!                    streams); the options above override it
//! --baseline PATH    another weft-control binary (e.g. built at an earlier
//!                    commit), run on the same cluster before this one: both
//!                    tables, then each figure as a ratio new / baseline
//! ```
//!
//! # What it prints
//!
//! Start-up (objects loaded, process start → `/ready`, CPU, idle RSS), the
//! streams' opening (time to every snapshot, CPU, RSS), change → first and
//! last watcher p50/p99/max for the hot Service and the warm ones, with
//! every delivery accounted for (missed, unexpected, coalesced), CPU per
//! change, and the RSS peak, next to our targets (p99 to the last watcher
//! under 25 ms and RSS under 200 MB at the default size; under 100 ms and
//! 400 MB from 100,000 endpoints, `--scale 5`). Exit code 0 when the run
//! completed, whatever the figures; 1 when it could not run; 64 on a bad
//! option.

mod control;
mod layout;
mod measure;
mod plan;
#[path = "../bench/procfs.rs"]
mod procfs;
mod report;
mod watchers;

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use weft_tests::fakekube::{self, FakeKube, ENDPOINT_SLICES, NAMESPACES, PODS, SERVICES};

use control::Control;
use layout::{Layout, SERVICE_PORT};
use plan::Watches;
use report::Results;

/// What one run does.
#[derive(Debug, Clone)]
struct Opts {
    services: usize,
    endpoints: usize,
    streams: usize,
    hot_streams: usize,
    warm_services: usize,
    connections: usize,
    changes: usize,
    pause: Duration,
    /// A weft-control to measure first, on the same cluster, for ratios.
    baseline: Option<std::path::PathBuf>,
}

impl Opts {
    fn full() -> Self {
        Self {
            services: 1000,
            endpoints: 20_000,
            streams: 2000,
            hot_streams: 500,
            warm_services: 100,
            connections: 20,
            changes: 200,
            pause: Duration::from_millis(20),
            baseline: None,
        }
    }

    /// `n` times the cluster and its watchers (the changes stay as many).
    fn scaled(self, n: usize) -> Self {
        Self {
            services: self.services * n,
            endpoints: self.endpoints * n,
            streams: self.streams * n,
            hot_streams: self.hot_streams * n,
            warm_services: self.warm_services * n,
            ..self
        }
    }

    fn quick() -> Self {
        Self {
            services: 100,
            endpoints: 2000,
            streams: 200,
            hot_streams: 50,
            warm_services: 10,
            changes: 40,
            ..Self::full()
        }
    }

    fn parse(args: &[String]) -> Result<Self> {
        let mut o = if args.iter().any(|a| a == "--quick") {
            Self::quick()
        } else {
            Self::full()
        };
        if let Some(i) = args.iter().position(|a| a == "--scale") {
            let v = args.get(i + 1).context("--scale needs a value")?;
            let n = v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .with_context(|| format!("--scale {v:?}: expected a whole number from 1 to 100"))?;
            o = o.scaled(n);
        }
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--quick" {
                continue;
            }
            let value = |it: &mut std::slice::Iter<'_, String>| {
                it.next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value"))
            };
            let count = |it: &mut std::slice::Iter<'_, String>| -> Result<usize> {
                let v = value(it)?;
                v.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("{flag} {v:?}: expected a whole number above 0"))
            };
            match flag.as_str() {
                "--services" => o.services = count(&mut it)?,
                "--endpoints" => o.endpoints = count(&mut it)?,
                "--streams" => o.streams = count(&mut it)?,
                "--hot-streams" => o.hot_streams = count(&mut it)?,
                "--warm-services" => o.warm_services = count(&mut it)?,
                "--connections" => o.connections = count(&mut it)?,
                "--changes" => o.changes = count(&mut it)?,
                "--pause" => o.pause = parse_duration(&value(&mut it)?)?,
                "--scale" => {
                    value(&mut it)?;
                }
                "--baseline" => o.baseline = Some(value(&mut it)?.into()),
                "-h" | "--help" => bail!("help"),
                other => bail!("unknown option {other:?}"),
            }
        }
        if o.hot_streams > o.streams {
            bail!(
                "--hot-streams {} is more than --streams {}",
                o.hot_streams,
                o.streams
            );
        }
        if o.warm_services >= o.services {
            bail!(
                "--warm-services {} must be below --services {}",
                o.warm_services,
                o.services
            );
        }
        Ok(o)
    }
}

/// `--pause`: a duration in the mesh's syntax (`20ms`, `1.5s`; see
/// [`weft_proxy::config::duration`]), from 0 to 60 s.
fn parse_duration(s: &str) -> Result<Duration> {
    let d = weft_proxy::config::duration(s).map_err(|e| anyhow::anyhow!("--pause: {e}"))?;
    if d > Duration::from_secs(60) {
        bail!("--pause {s:?}: must be between 0 and 60 s");
    }
    Ok(d)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match Opts::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            let doc = include_str!("main.rs");
            let usage: String = doc
                .lines()
                .take_while(|l| l.starts_with("//!"))
                .map(|l| {
                    l.trim_start_matches("//!")
                        .strip_prefix(' ')
                        .unwrap_or("")
                        .to_owned()
                        + "\n"
                })
                .collect();
            if e.to_string() == "help" {
                print!("{usage}");
                std::process::exit(0);
            }
            eprintln!("weft-control-bench: {e:#} (see --help)");
            std::process::exit(64);
        }
    };
    if let Err(e) = compare(&opts) {
        eprintln!("weft-control-bench: {e:#}");
        std::process::exit(1);
    }
}

/// Runs the baseline (if any) then this build's weft-control, each on a
/// fresh copy of the same cluster, and prints the ratios.
fn compare(o: &Opts) -> Result<()> {
    let binary = weft_control_binary()?;
    let Some(baseline) = &o.baseline else {
        run(o, &binary)?;
        return Ok(());
    };
    if !baseline.is_file() {
        bail!("--baseline {}: no such file", baseline.display());
    }
    println!("==== baseline\n");
    let before = run(o, baseline)?;
    println!("\n==== this build\n");
    let after = run(o, &binary)?;
    print!("\n{}", report::ratios(&before, &after));
    Ok(())
}

fn run(o: &Opts, binary: &std::path::Path) -> Result<Results> {
    let mut layout = Layout::new(o.services, o.endpoints)?;
    let watches = Watches::new(&layout, o.streams, o.hot_streams, o.warm_services);
    let plan = plan::changes(&layout, &watches, o.changes);
    println!("weft-control-bench: {}", layout.describe());
    println!(
        "  {} Watch streams over {} HTTP/2 connections: {} on the hot Service, the others over {} warm Services",
        o.streams, o.connections, o.hot_streams, o.warm_services
    );
    println!("  binary {}\n", binary.display());

    let mut r = Results {
        streams: o.streams,
        connections: o.connections,
        hot_watchers: watches.watchers_of(watches.hot),
        changes: plan.len(),
        targets: report::Targets::for_endpoints(o.endpoints),
        ..Results::default()
    };
    let counts: Vec<usize> = watches
        .warm
        .iter()
        .map(|s| watches.watchers_of(*s))
        .collect();
    r.warm_watchers = (
        counts.iter().copied().min().unwrap_or(0),
        counts.iter().copied().max().unwrap_or(0),
    );

    // The cluster, loaded before weft-control starts: its start-up is one
    // initial list of everything.
    let kube = FakeKube::start_with(fakekube::Options {
        history: 100_000,
        ..fakekube::Options::default()
    });
    let t = Instant::now();
    let mut objects = 0;
    for ns in layout.namespaces() {
        kube.apply(&NAMESPACES, ns);
        objects += 1;
    }
    for s in &layout.services {
        kube.apply(&SERVICES, s.json());
        for i in 0..s.slices.len() {
            kube.apply(&ENDPOINT_SLICES, s.slice_json(i));
        }
        for pod in s.pods_json() {
            kube.apply(&PODS, pod);
        }
        objects += 1 + s.slices.len() + s.endpoints();
    }
    r.loaded = (objects, t.elapsed());

    let mut control = Control::start(binary, &kube.url())?;
    // Start-up grows with the cluster: 2 minutes per 20,000 endpoints.
    let limit = Duration::from_secs(120 * (o.endpoints as u64).div_ceil(20_000));
    r.ready = control.wait_ready(limit)?;
    r.ready_cpu = control.cpu()?;
    let synced = control.metric("weft_control_objects{kind=\"EndpointSlice\"}")?;
    if synced as usize != layout.slices() {
        bail!(
            "weft-control was ready with {synced} EndpointSlices of {}",
            layout.slices()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    r.idle_rss = control.rss()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let targets: Vec<SocketAddr> = watches
        .streams
        .iter()
        .map(|s| SocketAddr::from((layout.services[*s].cluster_ip, SERVICE_PORT)))
        .collect();

    let t = Instant::now();
    let channels = runtime.block_on(watchers::connect(control.grpc, o.connections))?;
    r.connect = t.elapsed();
    let cpu = control.cpu()?;
    let opened = Instant::now();
    let streams = runtime.block_on(async { watchers::Watchers::open(&channels, &targets) });
    let progress = streams.progress.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut peak_rss = 0;
    while progress.snapshots.load(Relaxed) + progress.failed.load(Relaxed) < o.streams {
        if Instant::now() > deadline {
            break;
        }
        peak_rss = peak_rss.max(control.rss()?);
        std::thread::sleep(Duration::from_millis(5));
    }
    r.snapshots_cpu = control.cpu()? - cpu;
    r.watching_rss = control.rss()?;
    peak_rss = peak_rss.max(r.watching_rss);
    let watchers_seen = control.metric("weft_control_watchers")?;
    if (watchers_seen as usize) != o.streams {
        eprintln!(
            "note: weft-control counts {watchers_seen} watchers of {}",
            o.streams
        );
    }

    // The changes, one at a time: each applied, then waited for until every
    // watcher of its Service has it (or 5 s), then a pause.
    let cpu = control.cpu()?;
    let apply_before = apply_totals(&control)?;
    let mut applied = Vec::with_capacity(plan.len());
    for change in &plan {
        change.apply_to(&mut layout);
        let slice = layout.services[change.service].slice_json(change.slice);
        let before = progress.deliveries.load(Relaxed);
        let want = before + watches.watchers_of(change.service);
        applied.push(Instant::now());
        kube.apply(&ENDPOINT_SLICES, slice);
        let limit = Instant::now() + Duration::from_secs(5);
        while progress.deliveries.load(Relaxed) < want && Instant::now() < limit {
            std::thread::sleep(Duration::from_micros(200));
        }
        peak_rss = peak_rss.max(control.rss()?);
        std::thread::sleep(o.pause);
    }
    // Late arrivals of the last change.
    std::thread::sleep(Duration::from_millis(200));
    r.changes_cpu = control.cpu()? - cpu;
    let apply_after = apply_totals(&control)?;
    let applies = apply_after.1 - apply_before.1;
    if applies > 0.0 {
        r.model_apply = Some(Duration::from_secs_f64(
            (apply_after.0 - apply_before.0) / applies,
        ));
    }
    r.peak_rss = peak_rss.max(control.rss()?);
    r.hwm = control.memory()?.1;

    let logs = runtime.block_on(streams.stop(Duration::from_secs(10)));
    r.snapshots = measure::snapshots(&logs, opened);
    r.fanout = measure::fanout(&plan, &applied, &watches, &logs);
    let errors: Vec<String> = logs.iter().filter_map(|l| l.error.clone()).collect();
    r.stream_errors = (errors.len(), errors.into_iter().take(3).collect());
    drop(channels);
    let (code, took) = control.stop(Duration::from_secs(10))?;
    print!("{}", report::render(&r));
    println!(
        "\nweft-control exited with {}, {} after SIGTERM",
        code.map_or("a signal".to_owned(), |c| format!("code {c}")),
        report::latency(took)
    );
    Ok(r)
}

/// `weft_control_model_apply_seconds` sum and count.
fn apply_totals(control: &Control) -> Result<(f64, f64)> {
    Ok((
        control.metric("weft_control_model_apply_seconds_sum")?,
        control.metric("weft_control_model_apply_seconds_count")?,
    ))
}

/// `weft-control` next to this executable.
fn weft_control_binary() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("weft-control");
    if !path.is_file() {
        bail!(
            "{} is not built: run `cargo build --release -p weft-tests -p weft-control` first",
            path.display()
        );
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_takes_the_mesh_duration_syntax() {
        assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        let err = |s: &str| parse_duration(s).unwrap_err().to_string();
        assert!(err("1m1s").contains("between 0 and 60 s"));
        assert!(err("2").starts_with("--pause: '2' needs a unit"));
        assert!(err("-1s").contains("negative"));
        assert!(err("99999999999999999999h").contains("at most 2562047h"));
    }

    #[test]
    fn scale_multiplies_the_cluster_and_options_override_it() {
        let args = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
        let o = Opts::parse(&args("--scale 5")).unwrap();
        assert_eq!(
            (
                o.services,
                o.endpoints,
                o.streams,
                o.hot_streams,
                o.warm_services
            ),
            (5000, 100_000, 10_000, 2500, 500)
        );
        assert_eq!(o.changes, 200, "as many changes");
        let o = Opts::parse(&args("--streams 7 --hot-streams 3 --scale 2")).unwrap();
        assert_eq!((o.services, o.streams, o.hot_streams), (2000, 7, 3));
        assert_eq!(Opts::parse(&args("--scale 1")).unwrap().services, 1000);
        for bad in ["--scale 0", "--scale x", "--scale"] {
            assert!(Opts::parse(&args(bad)).is_err(), "{bad}");
        }
    }
}
