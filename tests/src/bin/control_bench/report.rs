//! What `weft-control-bench` prints: the figures of one run next to our
//! targets. Pure formatting, no I/O.

use std::fmt::Write as _;
use std::time::Duration;

use crate::layout::thousands;
use crate::measure::{quantile, Fanout};

/// Our targets for a cluster of this many endpoints: the time from an
/// EndpointSlice change to its arrival at the last watcher at p99, and
/// weft-control's resident memory. 20,000 endpoints and 2,000 watchers
/// (the default): 25 ms and 200 MB; five times that (`--scale 5`) and
/// more: 100 ms and 400 MB (Linkerd's control plane was measured at 365 MB,
/// Istio's at 597 MB, on far smaller applications).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Targets {
    pub p99: Duration,
    pub rss: u64,
}

impl Targets {
    pub fn for_endpoints(endpoints: usize) -> Self {
        if endpoints >= 100_000 {
            Self {
                p99: Duration::from_millis(100),
                rss: 400 * 1000 * 1000,
            }
        } else {
            Self {
                p99: Duration::from_millis(25),
                rss: 200 * 1000 * 1000,
            }
        }
    }
}

impl Default for Targets {
    fn default() -> Self {
        Self::for_endpoints(0)
    }
}

/// Every figure of one run.
#[derive(Debug, Default)]
pub struct Results {
    /// Objects loaded into the fake API server, and how long that took.
    pub loaded: (usize, Duration),
    /// Process start → `/ready` 200.
    pub ready: Duration,
    pub ready_cpu: Duration,
    pub idle_rss: u64,
    pub streams: usize,
    pub connections: usize,
    pub connect: Duration,
    /// Streams that got a snapshot, the median time and the last one.
    pub snapshots: (usize, Duration, Duration),
    pub snapshots_cpu: Duration,
    pub watching_rss: u64,
    pub hot_watchers: usize,
    /// Fewest and most watchers of a warm Service.
    pub warm_watchers: (usize, usize),
    pub changes: usize,
    pub fanout: Fanout,
    pub changes_cpu: Duration,
    /// Mean of `weft_control_model_apply_seconds` over the changes.
    pub model_apply: Option<Duration>,
    /// Highest VmRSS sampled while the streams were open.
    pub peak_rss: u64,
    /// VmHWM at the end: the peak since start.
    pub hwm: u64,
    /// Stream failures seen (a few, as examples) and how many in all.
    pub stream_errors: (usize, Vec<String>),
    pub targets: Targets,
}

/// `85 µs`, `1.24 ms`, `2.00 s`.
pub fn latency(d: Duration) -> String {
    match d.as_nanos() {
        0..=999_999 => format!("{} µs", d.as_micros()),
        1_000_000..=999_999_999 => format!("{:.2} ms", d.as_secs_f64() * 1e3),
        _ => format!("{:.2} s", d.as_secs_f64()),
    }
}

/// `6.2 MB` (10^6 bytes).
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn cpu(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

fn row(out: &mut String, label: &str, value: &str, note: &str) {
    let line = format!("  {label:<22}{value:>12}   {note}");
    let _ = writeln!(out, "{}", line.trim_end());
}

fn quantiles_row(out: &mut String, label: &str, values: &[Duration], target: Option<Duration>) {
    let [p50, p99, max] = [0.5, 0.99, 1.0].map(|q| latency(quantile(values, q)));
    let note = if values.is_empty() {
        "no complete change".to_owned()
    } else if let Some(target) = target {
        let ok = quantile(values, 0.99) < target;
        format!("target p99 < {}: {}", latency(target), verdict(ok))
    } else {
        String::new()
    };
    let line = format!("  {label:<22}{p50:>12}{p99:>12}{max:>12}   {note}");
    let _ = writeln!(out, "{}", line.trim_end());
}

/// The result tables.
pub fn render(r: &Results) -> String {
    let mut out = String::from("== start-up\n");
    let (objects, load) = r.loaded;
    let loaded = format!("{} objects", thousands(objects));
    row(
        &mut out,
        "fakekube load",
        &latency(load),
        &format!("{loaded} into the fake API server"),
    );
    row(
        &mut out,
        "ready",
        &latency(r.ready),
        "process start → /ready 200, every object in the source",
    );
    row(
        &mut out,
        "CPU",
        &cpu(r.ready_cpu),
        "user + system, start → ready",
    );
    row(
        &mut out,
        "RSS",
        &megabytes(r.idle_rss),
        "after sync, idle, no watchers",
    );

    let _ = writeln!(out, "\n== {} watch streams", thousands(r.streams));
    let conns = format!("{} HTTP/2 connections", r.connections);
    row(&mut out, "connect", &latency(r.connect), &conns);
    let (got, median, last) = r.snapshots;
    let note = format!(
        "until {} of {} streams had their snapshot (median {})",
        thousands(got),
        thousands(r.streams),
        latency(median)
    );
    row(&mut out, "snapshots", &latency(last), &note);
    row(
        &mut out,
        "CPU",
        &cpu(r.snapshots_cpu),
        "user + system, the streams' opening",
    );
    row(
        &mut out,
        "RSS",
        &megabytes(r.watching_rss),
        "with every stream open",
    );

    let f = &r.fanout;
    let _ = writeln!(
        out,
        "\n== {} changes: EndpointSlice apply → update at the last watcher",
        r.changes
    );
    let header = format!("  {:<22}{:>12}{:>12}{:>12}", "", "p50", "p99", "max");
    let _ = writeln!(out, "{header}");
    let hot = format!("hot ({} watchers)", r.hot_watchers);
    quantiles_row(&mut out, &hot, &f.hot_last, Some(r.targets.p99));
    let warm = match r.warm_watchers {
        (a, b) if a == b => format!("warm ({a} watchers)"),
        (a, b) => format!("warm ({a}-{b} watchers)"),
    };
    quantiles_row(&mut out, &warm, &f.warm_last, Some(r.targets.p99));
    quantiles_row(&mut out, "→ first watcher", &f.first, None);
    let deliveries = format!(
        "received of {} expected; {} missed, {} unexpected, {} re-snapshots, {} other updates; {} changes incomplete",
        thousands(f.expected),
        thousands(f.missed),
        thousands(f.unexpected),
        f.resnapshots,
        f.others,
        f.incomplete,
    );
    row(&mut out, "deliveries", &thousands(f.received), &deliveries);
    if let Some(mean) = r.model_apply {
        row(
            &mut out,
            "model apply",
            &latency(mean),
            "mean weft_control_model_apply_seconds",
        );
    }
    let per_change = r.changes_cpu / u32::try_from(r.changes.max(1)).unwrap_or(u32::MAX);
    row(
        &mut out,
        "CPU",
        &cpu(r.changes_cpu),
        &format!("{} per change", latency(per_change)),
    );

    let _ = writeln!(out, "\n== memory");
    let target = |b: u64| {
        format!(
            "target < {}: {}",
            megabytes(r.targets.rss),
            verdict(b < r.targets.rss)
        )
    };
    let note = format!(
        "sampled while the streams were open; {}",
        target(r.peak_rss)
    );
    row(&mut out, "RSS peak", &megabytes(r.peak_rss), &note);
    let note = format!(
        "VmHWM, the peak since start (initial list included); {}",
        target(r.hwm)
    );
    row(&mut out, "RSS lifetime peak", &megabytes(r.hwm), &note);

    let (n, examples) = &r.stream_errors;
    if *n > 0 {
        let _ = writeln!(out, "\n{n} streams failed, e.g.:");
        for e in examples {
            let _ = writeln!(out, "  {e}");
        }
    }
    out
}

/// Each headline figure of `after` as a ratio to `before` (below 1: better).
pub fn ratios(before: &Results, after: &Results) -> String {
    let mut out = String::from("== this build / baseline\n");
    let line = |out: &mut String, label: &str, b: f64, a: f64, show: &dyn Fn(f64) -> String| {
        let ratio = if b > 0.0 {
            format!("{:.2}x", a / b)
        } else {
            "-".to_owned()
        };
        let l = format!("  {label:<26}{:>12}{:>12}{ratio:>9}", show(b), show(a));
        let _ = writeln!(out, "{}", l.trim_end());
    };
    let ms = |v: f64| latency(Duration::from_secs_f64(v));
    let mb = |v: f64| megabytes(v as u64);
    let s = |v: f64| cpu(Duration::from_secs_f64(v));
    let _ = writeln!(
        out,
        "  {:<26}{:>12}{:>12}{:>9}",
        "", "baseline", "this", "ratio"
    );
    let q = |v: &[Duration], p: f64| quantile(v, p).as_secs_f64();
    let (bf, af) = (&before.fanout, &after.fanout);
    line(
        &mut out,
        "hot → last watcher p50",
        q(&bf.hot_last, 0.5),
        q(&af.hot_last, 0.5),
        &ms,
    );
    line(
        &mut out,
        "hot → last watcher p99",
        q(&bf.hot_last, 0.99),
        q(&af.hot_last, 0.99),
        &ms,
    );
    line(
        &mut out,
        "warm → last watcher p99",
        q(&bf.warm_last, 0.99),
        q(&af.warm_last, 0.99),
        &ms,
    );
    line(
        &mut out,
        "change → first p99",
        q(&bf.first, 0.99),
        q(&af.first, 0.99),
        &ms,
    );
    line(
        &mut out,
        "every snapshot (last)",
        before.snapshots.2.as_secs_f64(),
        after.snapshots.2.as_secs_f64(),
        &ms,
    );
    line(
        &mut out,
        "CPU over the changes",
        before.changes_cpu.as_secs_f64(),
        after.changes_cpu.as_secs_f64(),
        &s,
    );
    line(
        &mut out,
        "RSS idle",
        before.idle_rss as f64,
        after.idle_rss as f64,
        &mb,
    );
    line(
        &mut out,
        "RSS peak",
        before.peak_rss as f64,
        after.peak_rss as f64,
        &mb,
    );
    line(&mut out, "VmHWM", before.hwm as f64, after.hwm as f64, &mb);
    out
}
