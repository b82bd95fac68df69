//! The tables `weft-bench run` prints: direct and meshed side by side, the
//! difference, our targets and linkerd2-proxy's published figures next to
//! them. Pure formatting, no I/O.

use std::fmt::Write as _;
use std::time::Duration;

use crate::hist::Outcome;

/// Our target for the latency the two proxies add at p99 at 1,000 rps.
pub const TARGET_ADDED_P99: Duration = Duration::from_millis(1);
/// Our target for each proxy's resident memory under that load.
pub const TARGET_RSS: u64 = 20 * 1000 * 1000;

/// What the server and the proxies of one path cost during its runs.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// CPU time of the benchmark server, for scale.
    pub server_cpu: Duration,
    /// CPU time of both proxies together (none on the direct path).
    pub proxy_cpu: Duration,
    /// Peak resident memory seen, per proxy (role, bytes).
    pub rss_peak: Vec<(&'static str, u64)>,
}

impl Usage {
    /// Adds another run's usage: times add up, peaks take the maximum.
    pub fn merge(&mut self, other: &Self) {
        self.server_cpu += other.server_cpu;
        self.proxy_cpu += other.proxy_cpu;
        for &(role, bytes) in &other.rss_peak {
            match self.rss_peak.iter_mut().find(|(r, _)| *r == role) {
                Some((_, peak)) => *peak = (*peak).max(bytes),
                None => self.rss_peak.push((role, bytes)),
            }
        }
    }
}

/// One measurement: the direct path, and the meshed one when there is a proxy.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub direct: (Outcome, Usage),
    pub meshed: Option<(Outcome, Usage)>,
    /// The discovery path: a Service balanced over several meshed endpoints.
    pub balanced: Option<(Outcome, Usage)>,
    /// The split path: the discovery path's client and endpoints behind a
    /// TrafficSplit over two backend Services.
    pub split: Option<(Outcome, Usage)>,
    /// The p50 of the discovery path and of the split path in each round.
    pub split_rounds: Vec<(u64, u64)>,
    /// The mTLS path (one meshed endpoint behind a Service, both proxies
    /// certified, mutual TLS between them) and its plaintext twin (the same
    /// but for TLS).
    pub mtls: Option<((Outcome, Usage), (Outcome, Usage))>,
    /// The mTLS path with 20 TrafficTargets on its server (`authz.rs`).
    pub authz: Option<(Outcome, Usage)>,
}

/// Our target for the discovery path against passthrough, at each percentile.
pub const TARGET_DISCOVERY_REGRESSION: f64 = 0.10;

/// The discovery path's table: its latencies next to direct and
/// passthrough (meshed), the latency its proxies add, and how much slower
/// (or faster) than passthrough it is.
pub fn discovery(title: &str, c: &Comparison) -> String {
    let mut out = format!("{title}\n");
    let (Some((m, _)), Some((b, usage))) = (&c.meshed, &c.balanced) else {
        return out;
    };
    let d = &c.direct.0;
    const WIDTHS: [usize; 4] = [12, 14, 14, 12];
    let line = |out: &mut String, cells: [&str; 6]| row6(out, cells, WIDTHS);
    line(
        &mut out,
        ["", "direct", "passthrough", "discovery", "added", ""],
    );
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        // Against passthrough: the extra the discovery path adds over the
        // latency the proxies already add, relative to passthrough's total.
        let extra = b.at(q) as f64 / m.at(q).max(1) as f64 - 1.0;
        let note = format!(
            "{:+.1}% vs passthrough{}",
            extra * 100.0,
            if q == 0.99 {
                format!(
                    "; target ≤ +{:.0}%: {}",
                    TARGET_DISCOVERY_REGRESSION * 100.0,
                    verdict(extra <= TARGET_DISCOVERY_REGRESSION)
                )
            } else {
                String::new()
            }
        );
        let extra = added(d.at(q), b.at(q));
        latency_row(&mut out, WIDTHS, (label, q), [d, m, b], [&extra, &note]);
    }
    let n = |o: &Outcome| format!("{}/{}", o.ok, o.errors);
    line(&mut out, ["ok/errors", &n(d), &n(m), &n(b), "", ""]);
    let proxies = per_request(usage.proxy_cpu, b);
    line(
        &mut out,
        [
            "proxy CPU",
            "",
            "",
            &proxies,
            "",
            "the client's proxy and the endpoints' together",
        ],
    );
    line(&mut out, ["proxy RSS peak", "", "", "", "", &peaks(usage)]);
    out
}

/// Issue 14's target for the split path against the discovery path at p50.
pub const TARGET_SPLIT_P50: f64 = 0.05;

/// The split path's table: its latencies next to the discovery path's
/// (p50/p90/p99, or throughput when `saturating`), their ratio, what each
/// adds over direct, the round-to-round spread of the p50 ratio, and the
/// share of the split's requests each backend took (`routed`, from the
/// client proxy). At a fixed rate, p50 is judged against
/// [`TARGET_SPLIT_P50`], unless the proxy routed nothing.
pub fn split(title: &str, c: &Comparison, routed: &[(&str, f64)], saturating: bool) -> String {
    const WIDTHS: [usize; 4] = [12, 14, 14, 12];
    let (Some((b, b_usage)), Some((s, s_usage))) = (&c.balanced, &c.split) else {
        return format!("{title}\n");
    };
    let heads = ["direct", "discovery", "split", "split/disc"];
    let mut out = table_head(title, heads, WIDTHS);
    let d = &c.direct.0;
    let line = |out: &mut String, cells: [&str; 6]| row6(out, cells, WIDTHS);
    let ratio = |base: f64, new: f64| new / base.max(f64::MIN_POSITIVE);
    let total: f64 = routed.iter().map(|(_, n)| n).sum();
    if saturating {
        let rps = |o: &Outcome| format!("{:.0}/s", o.rps());
        let r = format!("{:.3}×", ratio(b.rps(), s.rps()));
        line(&mut out, ["throughput", &rps(d), &rps(b), &rps(s), &r, ""]);
    }
    let quantiles: &[(&str, f64)] = if saturating {
        &[("p50", 0.5), ("p99", 0.99)]
    } else {
        &[("p50", 0.5), ("p90", 0.9), ("p99", 0.99)]
    };
    for &(label, q) in quantiles {
        let r = ratio(b.at(q) as f64, s.at(q) as f64);
        let mut note = format!("{:+.1}% vs discovery", (r - 1.0) * 100.0);
        if q == 0.5 && !saturating {
            let target = format!("target ≤ +{:.0}% (issue 14)", TARGET_SPLIT_P50 * 100.0);
            if total > 0.0 {
                let _ = write!(note, "; {target}: {}", verdict(r - 1.0 <= TARGET_SPLIT_P50));
            } else {
                let _ = write!(note, "; {target}: not judged, nothing was routed");
            }
        }
        let ratio = format!("{r:.3}×");
        latency_row(&mut out, WIDTHS, (label, q), [d, b, s], [&ratio, &note]);
    }
    let (ba, sa) = (
        b.at(0.5).saturating_sub(d.at(0.5)),
        s.at(0.5).saturating_sub(d.at(0.5)),
    );
    line(
        &mut out,
        [
            "added p50",
            "",
            &added(d.at(0.5), b.at(0.5)),
            &added(d.at(0.5), s.at(0.5)),
            &format!("{:.3}×", ratio(ba as f64, sa as f64)),
            "over direct: what the mesh adds, with and without the split",
        ],
    );
    let per_round: Vec<f64> = c
        .split_rounds
        .iter()
        .map(|&(b, s)| ratio(b as f64, s as f64))
        .collect();
    if per_round.len() > 1 {
        let min = per_round.iter().copied().fold(f64::INFINITY, f64::min);
        let max = per_round.iter().copied().fold(0.0, f64::max);
        let spread = format!("{min:.3}× to {max:.3}×");
        let note = format!(
            "split/discovery p50 in each of {} rounds: the noise",
            per_round.len()
        );
        line(&mut out, ["p50 by round", "", "", "", &spread, &note]);
    }
    outcome_rows(
        &mut out,
        WIDTHS,
        d,
        [(b, b_usage), (s, s_usage)],
        "the client's proxy and the endpoints' together",
    );
    line(&mut out, ["routed", "", "", "", "", &shares(routed)]);
    out
}

/// `bench-split-v1 90.1%, bench-split-v2 9.9% of 12000 requests so far`,
/// or why there is nothing to say.
pub fn shares(routed: &[(&str, f64)]) -> String {
    let total: f64 = routed.iter().map(|(_, n)| n).sum();
    if total == 0.0 {
        return "none: the client's proxy applied no route (one that does not know \
                routes balances the apex over its own endpoints)"
            .to_owned();
    }
    let parts: Vec<String> = routed
        .iter()
        .map(|(name, n)| format!("{name} {:.1}%", n / total * 100.0))
        .collect();
    format!(
        "{} of {total:.0} requests so far (the client proxy's weft_route_request_total)",
        parts.join(", ")
    )
}

/// The baseline proxy's split path next to its discovery path: what it
/// routed, and their p50 ratio. When it routed nothing, both paths did the
/// same work (the apex balanced over the discovery path's endpoints), so
/// that ratio is the noise of the comparison.
pub fn baseline_split(discovery: &Outcome, split: &Outcome, routed: &[(&str, f64)]) -> String {
    let total: f64 = routed.iter().map(|(_, n)| n).sum();
    let r = split.at(0.5) as f64 / discovery.at(0.5).max(1) as f64;
    let same = if total == 0.0 {
        " (the same work on both paths: the noise)"
    } else {
        ""
    };
    format!(
        "  split, baseline proxy: routed {}\n  split/discovery p50, baseline proxy: {r:.3}×{same}\n",
        shares(routed)
    )
}

/// `85 µs`, `1.24 ms`, `2.00 s`.
pub fn latency(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{:.1} µs", ns as f64 / 1e3),
        10_000..=999_999 => format!("{} µs", (ns + 500) / 1000),
        1_000_000..=999_999_999 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// `+218 µs` / `-12 µs`: meshed minus direct.
pub fn added(direct: u64, meshed: u64) -> String {
    if meshed >= direct {
        format!("+{}", latency(meshed - direct))
    } else {
        format!("-{}", latency(direct - meshed))
    }
}

/// `6.2 MB` (10^6 bytes).
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

fn row(out: &mut String, label: &str, direct: &str, meshed: &str, delta: &str, note: &str) {
    let line = format!("  {label:<16}{direct:>14}{meshed:>14}{delta:>12}   {note}");
    let _ = writeln!(out, "{}", line.trim_end());
}

/// A row of a three-path table: a label, four right-aligned cells of the
/// given widths, a note.
fn row6(out: &mut String, cells: [&str; 6], widths: [usize; 4]) {
    let [label, a, b, c, d, note] = cells;
    let [wa, wb, wc, wd] = widths;
    let l = format!("  {label:<16}{a:>wa$}{b:>wb$}{c:>wc$}{d:>wd$}   {note}");
    let _ = writeln!(out, "{}", l.trim_end());
}

/// A row of a table of three paths: their latencies at quantile `q`, then
/// a fourth cell and a note.
fn latency_row(
    out: &mut String,
    widths: [usize; 4],
    (label, q): (&str, f64),
    paths: [&Outcome; 3],
    [last, note]: [&str; 2],
) {
    let [a, b, c] = paths.map(|o| latency(o.at(q)));
    row6(out, [label, &a, &b, &c, last, note], widths);
}

/// The title and column heads of a table of `direct` and two proxied paths.
fn table_head(title: &str, [a, b, c, d]: [&str; 4], widths: [usize; 4]) -> String {
    let mut out = format!("{title}\n");
    row6(&mut out, ["", a, b, c, d, ""], widths);
    out
}

/// The ok/errors and proxy CPU rows of a table of `direct` and two
/// proxied paths, with `cpu_note` saying whose CPU it is.
fn outcome_rows(
    out: &mut String,
    widths: [usize; 4],
    direct: &Outcome,
    [(a, a_usage), (b, b_usage)]: [(&Outcome, &Usage); 2],
    cpu_note: &str,
) {
    let n = |o: &Outcome| format!("{}/{}", o.ok, o.errors);
    row6(out, ["ok/errors", &n(direct), &n(a), &n(b), "", ""], widths);
    let (a_cpu, b_cpu) = (
        per_request(a_usage.proxy_cpu, a),
        per_request(b_usage.proxy_cpu, b),
    );
    row6(out, ["proxy CPU", "", &a_cpu, &b_cpu, "", cpu_note], widths);
}

/// Each proxy role's peak memory, `outbound 7.7 MB, inbound 7.6 MB`.
fn peaks(usage: &Usage) -> String {
    let peaks: Vec<String> = usage
        .rss_peak
        .iter()
        .map(|(role, bytes)| format!("{role} {}", megabytes(*bytes)))
        .collect();
    peaks.join(", ")
}

/// CPU time per successful request, `12.3 µs/req`.
fn per_request(cpu: Duration, o: &Outcome) -> String {
    format!(
        "{:.1} µs/req",
        cpu.as_nanos() as f64 / 1e3 / o.ok.max(1) as f64
    )
}

/// The CPU rows (server on both paths, proxies on the meshed one) and the
/// proxies' memory, judged against [`TARGET_RSS`] if `rss_target`.
fn usage_rows(out: &mut String, c: &Comparison, rss_target: bool) {
    let (d, d_usage) = &c.direct;
    let Some((m, usage)) = &c.meshed else {
        let server = per_request(d_usage.server_cpu, d);
        row(out, "server CPU", &server, "—", "", "");
        return;
    };
    let server = [
        per_request(d_usage.server_cpu, d),
        per_request(usage.server_cpu, m),
    ];
    row(
        out,
        "server CPU",
        &server[0],
        &server[1],
        "",
        "the app alone, for scale",
    );
    let proxies = per_request(usage.proxy_cpu, m);
    row(out, "proxy CPU", "", &proxies, "", "both proxies together");
    let mut rss = peaks(usage);
    if rss_target {
        let ok = usage.rss_peak.iter().all(|(_, b)| *b < TARGET_RSS);
        let _ = write!(rss, "; target < {}: {}", megabytes(TARGET_RSS), verdict(ok));
    }
    row(out, "proxy RSS peak", "", "", "", &rss);
}

/// The table of a fixed-rate (open-loop) measurement.
pub fn fixed_rate(title: &str, c: &Comparison) -> String {
    let mut out = format!("{title}\n");
    let meshed = c.meshed.as_ref().map(|(m, _)| m);
    row(&mut out, "", "direct", "meshed", "added", "");
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        let d = c.direct.0.at(q);
        let (m, delta) = meshed.map_or(("—".into(), String::new()), |m| {
            (latency(m.at(q)), added(d, m.at(q)))
        });
        let note = match (q == 0.99, meshed) {
            (true, Some(m)) => {
                let extra = Duration::from_nanos(m.at(q).saturating_sub(d));
                format!(
                    "target < 1 ms: {}; linkerd2-proxy ≈ +0.5 ms per hop",
                    verdict(extra < TARGET_ADDED_P99)
                )
            }
            (true, None) => "target: < 1 ms added; linkerd2-proxy ≈ +0.5 ms per hop".into(),
            _ => String::new(),
        };
        row(&mut out, label, &latency(d), &m, &delta, &note);
    }
    counts(&mut out, c);
    usage_rows(&mut out, c, true);
    let lag = |o: &Outcome| latency(u64::try_from(o.lag_p99.as_nanos()).unwrap_or(u64::MAX));
    let m_lag = meshed.map_or("—".into(), lag);
    row(
        &mut out,
        "send lag p99",
        &lag(&c.direct.0),
        &m_lag,
        "",
        "the generator's own lateness, included above",
    );
    out
}

/// The table of a saturating (closed-loop) measurement.
pub fn saturating(title: &str, c: &Comparison) -> String {
    let mut out = format!("{title}\n");
    let meshed = c.meshed.as_ref().map(|(m, _)| m);
    row(&mut out, "", "direct", "meshed", "ratio", "");
    let rps = |o: &Outcome| format!("{:.0} rps", o.rps());
    let (m, ratio) = meshed.map_or(("—".into(), String::new()), |m| {
        (
            rps(m),
            format!("{:.2}×", m.rps() / c.direct.0.rps().max(f64::MIN_POSITIVE)),
        )
    });
    row(
        &mut out,
        "throughput",
        &rps(&c.direct.0),
        &m,
        &ratio,
        "linkerd2-proxy ≈ 0.1× direct",
    );
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        let m = meshed.map_or("—".into(), |m| latency(m.at(q)));
        row(&mut out, label, &latency(c.direct.0.at(q)), &m, "", "");
    }
    counts(&mut out, c);
    usage_rows(&mut out, c, false);
    out
}

/// The mTLS path against its plaintext twin, measured in the same rounds:
/// latency (what mTLS adds over plaintext), throughput, proxy CPU per
/// request and requests per proxy core (requests per CPU-second of the two
/// proxies together).
pub fn mtls(title: &str, c: &Comparison) -> String {
    const WIDTHS: [usize; 4] = [12, 16, 16, 14];
    let Some(((t, t_usage), (m, m_usage))) = &c.mtls else {
        return format!("{title}\n");
    };
    let heads = ["direct", "plaintext", "mTLS", "mTLS extra"];
    let mut out = table_head(title, heads, WIDTHS);
    let d = &c.direct.0;
    let line = |out: &mut String, cells: [&str; 6]| row6(out, cells, WIDTHS);
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        let note = if q == 0.99 {
            format!(
                "two hops with mTLS add {} over direct; target < 1 ms: {}",
                added(d.at(q), t.at(q)),
                verdict(t.at(q).saturating_sub(d.at(q)) < TARGET_ADDED_P99.as_nanos() as u64)
            )
        } else {
            String::new()
        };
        line(
            &mut out,
            [
                label,
                &latency(d.at(q)),
                &latency(m.at(q)),
                &latency(t.at(q)),
                &added(m.at(q), t.at(q)),
                &note,
            ],
        );
    }
    let rps = |o: &Outcome| format!("{:.0}/s", o.rps());
    line(&mut out, ["throughput", &rps(d), &rps(m), &rps(t), "", ""]);
    outcome_rows(
        &mut out,
        WIDTHS,
        d,
        [(m, m_usage), (t, t_usage)],
        "both proxies together",
    );
    let per_core = |cpu: Duration, o: &Outcome| match cpu.as_secs_f64() {
        0.0 => "—".to_owned(),
        secs => format!("{:.0}", o.ok as f64 / secs),
    };
    line(
        &mut out,
        [
            "req / core-s",
            "",
            &per_core(m_usage.proxy_cpu, m),
            &per_core(t_usage.proxy_cpu, t),
            "",
            "requests per second of proxy CPU (both proxies)",
        ],
    );
    line(
        &mut out,
        ["mTLS proxy RSS", "", "", "", "", &peaks(t_usage)],
    );
    out
}

/// Issue 15's target for the authz path against the mTLS path at p50.
pub const TARGET_AUTHZ_P50: f64 = 0.03;

/// The authz path against the mTLS path (no TrafficTarget), measured in
/// the same rounds: p50/p99 (or throughput when `saturating`), their ratio,
/// proxy CPU per request, and what the guarded server's proxy decided
/// (`allowed`, `denied`: every request must have been allowed). At a fixed
/// rate, p50 is judged against [`TARGET_AUTHZ_P50`], unless nothing was
/// allowed (the policy did not apply).
pub fn authz(
    title: &str,
    c: &Comparison,
    (allowed, denied): (f64, f64),
    saturating: bool,
) -> String {
    const WIDTHS: [usize; 4] = [12, 14, 14, 12];
    let (Some(((t, t_usage), _)), Some((a, a_usage))) = (&c.mtls, &c.authz) else {
        return format!("{title}\n");
    };
    let heads = ["direct", "mTLS", "mTLS+authz", "authz/mTLS"];
    let mut out = table_head(title, heads, WIDTHS);
    let d = &c.direct.0;
    let line = |out: &mut String, cells: [&str; 6]| row6(out, cells, WIDTHS);
    let ratio = |base: f64, new: f64| new / base.max(f64::MIN_POSITIVE);
    if saturating {
        let rps = |o: &Outcome| format!("{:.0}/s", o.rps());
        let r = format!("{:.3}×", ratio(t.rps(), a.rps()));
        line(&mut out, ["throughput", &rps(d), &rps(t), &rps(a), &r, ""]);
    }
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        let r = ratio(t.at(q) as f64, a.at(q) as f64);
        let mut note = format!("{:+.1}% vs no policy", (r - 1.0) * 100.0);
        if q == 0.5 && !saturating {
            let target = format!("target ≤ +{:.0}% (issue 15)", TARGET_AUTHZ_P50 * 100.0);
            if allowed > 0.0 {
                let _ = write!(note, "; {target}: {}", verdict(r - 1.0 <= TARGET_AUTHZ_P50));
            } else {
                let _ = write!(note, "; {target}: not judged, the policy allowed nothing");
            }
        }
        let ratio = format!("{r:.3}×");
        latency_row(&mut out, WIDTHS, (label, q), [d, t, a], [&ratio, &note]);
    }
    outcome_rows(
        &mut out,
        WIDTHS,
        d,
        [(t, t_usage), (a, a_usage)],
        "both proxies together",
    );
    let decided =
        format!("the guarded server's proxy so far: {allowed:.0} allowed, {denied:.0} denied");
    line(&mut out, ["policy", "", "", "", "", &decided]);
    out
}

fn counts(out: &mut String, c: &Comparison) {
    let n = |o: &Outcome| format!("{}/{}", o.ok, o.errors);
    let m = c.meshed.as_ref().map_or("—".into(), |(m, _)| n(m));
    row(out, "ok/errors", &n(&c.direct.0), &m, "", "");
}

/// One path measured with the baseline proxy and with the new one in the
/// same interleaved rounds: (name, baseline, new).
pub type Versus<'a> = (&'static str, &'a (Outcome, Usage), &'a (Outcome, Usage));

/// The baseline proxy against the new one, path by path, as new/baseline
/// ratios: latencies and the latency added over `direct` (at a fixed rate),
/// or throughput (`saturating`), and the proxies' CPU per request and peak
/// memory (the largest proxy of the path).
pub fn versus(title: &str, direct: &Outcome, paths: &[Versus<'_>], saturating: bool) -> String {
    let mut out = format!("{title}\n");
    let line = |out: &mut String, cells: [&str; 6]| row6(out, cells, [12, 14, 14, 10]);
    line(&mut out, ["", "path", "baseline", "new", "new/base", ""]);
    let ratio = |base: f64, new: f64| format!("{:.2}×", new / base.max(f64::MIN_POSITIVE));
    for &(name, (b, b_usage), (n, n_usage)) in paths {
        let mut rows: Vec<(&str, String, String, String)> = Vec::new();
        if saturating {
            rows.push((
                "throughput",
                format!("{:.0}/s", b.rps()),
                format!("{:.0}/s", n.rps()),
                ratio(b.rps(), n.rps()),
            ));
        }
        for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
            let (bq, nq) = (b.at(q), n.at(q));
            rows.push((label, latency(bq), latency(nq), ratio(bq as f64, nq as f64)));
            if !saturating {
                let (ba, na) = (
                    bq.saturating_sub(direct.at(q)),
                    nq.saturating_sub(direct.at(q)),
                );
                let label = if q == 0.5 { "added p50" } else { "added p99" };
                rows.push((
                    label,
                    added(direct.at(q), bq),
                    added(direct.at(q), nq),
                    ratio(ba as f64, na as f64),
                ));
            }
        }
        let cpu = |u: &Usage, o: &Outcome| u.proxy_cpu.as_nanos() as f64 / 1e3 / o.ok.max(1) as f64;
        let (bc, nc) = (cpu(b_usage, b), cpu(n_usage, n));
        rows.push((
            "proxy CPU",
            format!("{bc:.1} µs/req"),
            format!("{nc:.1} µs/req"),
            ratio(bc, nc),
        ));
        let rss = |u: &Usage| u.rss_peak.iter().map(|(_, b)| *b).max().unwrap_or(0);
        let (br, nr) = (rss(b_usage), rss(n_usage));
        rows.push((
            "RSS peak",
            megabytes(br),
            megabytes(nr),
            ratio(br as f64, nr as f64),
        ));
        let errors = format!("errors {} / {}", b.errors, n.errors);
        for (i, (label, base, new, r)) in rows.iter().enumerate() {
            let note = if i == 0 { errors.as_str() } else { "" };
            line(
                &mut out,
                [label, if i == 0 { name } else { "" }, base, new, r, note],
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist;

    fn outcome(us: &[u64], secs: u64) -> Outcome {
        let mut o = Outcome::empty();
        for &u in us {
            hist::record(&mut o.latency, Duration::from_micros(u));
        }
        o.ok = us.len() as u64;
        o.elapsed = Duration::from_secs(secs);
        o
    }

    #[test]
    fn units() {
        assert_eq!(latency(8_500), "8.5 µs");
        assert_eq!(latency(85_400), "85 µs");
        assert_eq!(latency(1_240_000), "1.24 ms");
        assert_eq!(latency(2_000_000_000), "2.00 s");
        assert_eq!(added(100_000, 318_000), "+218 µs");
        assert_eq!(added(100_000, 88_000), "-12 µs");
        assert_eq!(megabytes(6_200_000), "6.2 MB");
    }

    #[test]
    fn fixed_rate_table_judges_the_targets() {
        let direct = Usage {
            server_cpu: Duration::from_millis(2),
            ..Usage::default()
        };
        let mut meshed = Usage {
            server_cpu: Duration::from_millis(1),
            proxy_cpu: Duration::from_millis(2),
            rss_peak: vec![("outbound", 6_000_000), ("inbound", 5_000_000)],
        };
        meshed.merge(&Usage {
            proxy_cpu: Duration::from_millis(1),
            rss_peak: vec![("outbound", 5_000_000), ("inbound", 25_000_000)],
            ..Usage::default()
        });
        let c = Comparison {
            direct: (outcome(&[100; 100], 1), direct),
            meshed: Some((outcome(&[400; 100], 1), meshed)),
            balanced: None,
            split: None,
            split_rounds: Vec::new(),
            mtls: None,
            authz: None,
        };
        let t = fixed_rate("== HTTP/1.1", &c);
        let line = |start: &str| {
            let found = t.lines().find(|l| l.trim_start().starts_with(start));
            found
                .unwrap_or_else(|| panic!("no {start:?} in\n{t}"))
                .to_owned()
        };
        let p99 = line("p99 ");
        assert!(
            p99.contains("+300 µs") && p99.contains("target < 1 ms: ok"),
            "{t}"
        );
        let server = line("server CPU");
        assert!(
            server.contains(" 20.0 µs/req") && server.contains(" 10.0 µs/req"),
            "{t}"
        );
        assert!(line("proxy CPU").contains("30.0 µs/req"), "{t}");
        let rss = line("proxy RSS peak");
        assert!(
            rss.contains("outbound 6.0 MB, inbound 25.0 MB; target < 20.0 MB: MISSED"),
            "{t}"
        );
    }

    #[test]
    fn direct_only_and_saturating_tables() {
        let c = Comparison {
            direct: (outcome(&[100; 100], 2), Usage::default()),
            meshed: None,
            balanced: None,
            split: None,
            split_rounds: Vec::new(),
            mtls: None,
            authz: None,
        };
        let t = fixed_rate("== direct only", &c);
        assert!(t.contains("—") && !t.contains("proxy CPU"), "{t}");
        let c = Comparison {
            direct: (outcome(&[100; 1000], 1), Usage::default()),
            meshed: Some((outcome(&[400; 250], 1), Usage::default())),
            balanced: Some((outcome(&[420; 250], 1), Usage::default())),
            split: None,
            split_rounds: Vec::new(),
            mtls: Some((
                (
                    outcome(&[500; 200], 1),
                    Usage {
                        proxy_cpu: Duration::from_millis(100),
                        ..Usage::default()
                    },
                ),
                (outcome(&[400; 250], 1), Usage::default()),
            )),
            authz: Some((outcome(&[510; 200], 1), Usage::default())),
        };
        let a = authz("== authz", &c, (200.0, 0.0), false);
        assert!(
            a.contains("1.020×") && a.contains("+2.0% vs no policy"),
            "{a}"
        );
        assert!(a.contains("target ≤ +3% (issue 15): ok"), "{a}");
        assert!(a.contains("200 allowed, 0 denied"), "{a}");
        let none = authz("== authz", &c, (0.0, 0.0), false);
        assert!(none.contains("not judged"), "{none}");
        let t = mtls("== mTLS", &c);
        assert!(
            t.contains("+100 µs"),
            "mTLS extra over plaintext at p50: {t}"
        );
        assert!(
            t.contains("2000"),
            "200 requests in 0.1 s of proxy CPU: {t}"
        );
        assert!(t.contains("500.0 µs/req"), "{t}");
        let t = saturating("== HTTP/2", &c);
        assert!(
            t.contains("1000 rps") && t.contains("250 rps") && t.contains("0.25×"),
            "{t}"
        );
        let t = discovery("== discovery", &c);
        let p99 = t
            .lines()
            .find(|l| l.trim_start().starts_with("p99 "))
            .unwrap();
        assert!(
            p99.contains("+5.0% vs passthrough; target ≤ +10%: ok") && p99.contains("+320 µs"),
            "{t}"
        );
    }

    #[test]
    fn split_table_judges_p50_only_when_routed() {
        let c = Comparison {
            direct: (outcome(&[100; 100], 1), Usage::default()),
            meshed: None,
            balanced: Some((outcome(&[400; 100], 1), Usage::default())),
            split: Some((outcome(&[412; 100], 1), Usage::default())),
            split_rounds: vec![(400_000, 404_000), (400_000, 420_000)],
            mtls: None,
            authz: None,
        };
        let routed = [("v1", 900.0), ("v2", 100.0)];
        let t = split("== split", &c, &routed, false);
        let line = |t: &str, start: &str| {
            let found = t.lines().find(|l| l.trim_start().starts_with(start));
            found
                .unwrap_or_else(|| panic!("no {start:?} in\n{t}"))
                .to_owned()
        };
        let p50 = line(&t, "p50 ");
        assert!(
            p50.contains("1.030×")
                && p50.contains("+3.0% vs discovery; target ≤ +5% (issue 14): ok"),
            "{t}"
        );
        assert!(line(&t, "p90").contains("1.030×"), "{t}");
        assert!(
            line(&t, "added p50").contains("1.040×"),
            "300 µs → 312 µs: {t}"
        );
        assert!(line(&t, "p50 by round").contains("1.010× to 1.050×"), "{t}");
        assert!(
            line(&t, "routed").contains("v1 90.0%, v2 10.0% of 1000"),
            "{t}"
        );

        let slower = Comparison {
            split: Some((outcome(&[440; 100], 1), Usage::default())),
            ..c.clone()
        };
        let t = split("== split", &slower, &routed, false);
        assert!(
            line(&t, "p50 ").contains("+10.0% vs discovery; target ≤ +5% (issue 14): MISSED"),
            "{t}"
        );
        let t = split("== split", &c, &[("v1", 0.0), ("v2", 0.0)], false);
        assert!(
            line(&t, "p50 ").contains("not judged, nothing was routed"),
            "{t}"
        );
        assert!(line(&t, "routed").contains("applied no route"), "{t}");
        let t = split("== split", &c, &routed, true);
        assert!(
            line(&t, "throughput").contains("1.000×") && !t.contains("target"),
            "{t}"
        );
    }
}
