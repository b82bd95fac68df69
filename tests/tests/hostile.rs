//! Hostile clients against one weft-proxy with its default limits (issue
//! 20), each printing its figures: 10,000 idle connections, HTTP/2 floods
//! beyond rapid reset, oversized HTTP/1 heads and a million one-byte
//! chunks, and a large body each way through two proxies. The proxy runs
//! as its own process in a pod, so its RSS (`/proc/PID/status`) is the
//! proxy's alone; the clients are `weft-testapp` (hostile.rs) in another
//! pod, unmeshed, so their connections meet the server pod's inbound proxy.
//!
//! The scenarios run one at a time (a lock): each loads the machine, and
//! their latency figures would otherwise measure each other.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use weft_tests::mesh::{app, start_proxy};
use weft_tests::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A server pod with the test app and its proxy, and a plain client pod.
struct Target {
    client: Pod,
    server: Pod,
    proxy: Proc,
    _app: Proc,
    _node: Node,
}

/// The scenario's turn (see [`ONE_AT_A_TIME`]) and its warmed-up target
/// (a request through, so the upstream connection and the series exist);
/// `None` when the machine cannot run network-namespace tests.
fn scenario(name: &str) -> Option<(std::sync::MutexGuard<'static, ()>, Target, String)> {
    if netns_or_skip(name) {
        return None;
    }
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t = target();
    let addr = t.addr();
    t.run(&["probe", &addr, "10"]);
    Some((turn, t, addr))
}

fn target() -> Target {
    raise_fd_limit();
    let node = Node::new().unwrap();
    let client = node.pod().unwrap();
    let server = node.pod().unwrap();
    let app = app(&server);
    // Default limits; logs at info only (10,000 connections at debug would
    // be 10,000 lines).
    let proxy = start_proxy(&server, &[], &[("WEFT_PROXY_LOG", "warn")]);
    Target {
        client,
        server,
        proxy,
        _app: app,
        _node: node,
    }
}

impl Target {
    fn addr(&self) -> String {
        format!("{}:8080", self.server.ip)
    }

    /// `weft-testapp ARGS` in the client pod, to its end: its `OK` line.
    fn run(&self, args: &[&str]) -> String {
        let out = self
            .client
            .run(Some(APP_UID), &bin("weft-testapp"), args)
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && stdout.starts_with("OK"),
            "weft-testapp {args:?}: {stdout}"
        );
        stdout.trim().to_owned()
    }

    /// `weft-testapp ARGS` started in the client pod.
    fn spawn(&self, args: &[&str]) -> Proc {
        self.client
            .spawn(Some(APP_UID), &bin("weft-testapp"), args)
            .unwrap()
    }

    /// The proxy's resident and peak resident memory, in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let (rss, peak) = self.proxy.memory().unwrap();
        (rss / 1024, peak / 1024)
    }

    /// The proxy's open file descriptors, and its soft limit.
    fn fds(&self) -> (usize, String) {
        let pid = self.proxy.pid();
        let open = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
        let nofile = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap_or("?")
            .to_owned();
        (open, nofile)
    }

    fn metric(&self, series: &str) -> f64 {
        metric(&self.server, series).unwrap()
    }
}

/// 10,000 connections and their peers need more descriptors than a
/// default soft limit of 1024: the soft limit is raised (to 65,536, or to
/// the hard limit where the test may not raise that) and inherited by the
/// proxy and the clients the test starts.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    const WANT: u64 = 65_536;
    // 10,000 client connections, the upstream ones, and some spare.
    const NEED: u64 = IDLE + 2_000;
    let now = getrlimit(Resource::Nofile);
    if now.current.is_none_or(|c| c >= WANT) {
        return;
    }
    let raised = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(WANT),
            maximum: Some(now.maximum.map_or(WANT, |m| m.max(WANT))),
        },
    );
    if raised.is_err() {
        let hard = now.maximum.unwrap_or(u64::MAX);
        assert!(
            hard >= NEED,
            "RLIMIT_NOFILE: the hard limit {hard} is under {NEED} and cannot be raised here"
        );
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard.min(WANT)),
                maximum: now.maximum,
            },
        )
        .expect("raise the soft RLIMIT_NOFILE to the hard limit");
    }
}

/// The `key=value` field of an `OK` line, as a number.
fn num(line: &str, key: &str) -> u64 {
    field(line, key)
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {line:?}"))
}

const IDLE: u64 = 10_000;
/// The legitimate requests measured while the idle connections are held.
const PROBES: &str = "200";

#[test]
fn ten_thousand_idle_connections_stay_small_and_the_limit_makes_the_next_wait() {
    if netns_or_skip("hostile_idle") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for kind in ["h1", "h2"] {
        let t = target();
        let addr = t.addr();
        // Warm: one request through (the upstream connection, the series).
        t.run(&["probe", &addr, "10"]);
        let (idle_rss, _) = t.memory_kib();
        // All but one slot held: the probes' connections take the last.
        // An idle HTTP/1 connection keeps the upstream connection of its
        // last request (`proxy/src/http/session.rs`): two descriptors each,
        // so under a hard limit of 20,000 (a container without
        // CAP_SYS_RESOURCE) fewer are held.
        let (_, nofile) = t.fds();
        let nofile: u64 = nofile.parse().unwrap_or(u64::MAX);
        let n = match kind {
            "h1" => (IDLE - 1).min(nofile.saturating_sub(100) / 2),
            _ => IDLE - 1,
        };
        let started = Instant::now();
        let holder = t.spawn(&["hold", &addr, &n.to_string(), kind]);
        let held = holder
            .expect_line("HOLDING", Duration::from_secs(120))
            .unwrap();
        let opened_in = started.elapsed();
        if field(&held, "failed") != "0" {
            panic!(
                "{kind}: {held}: {:?}; proxy fds {:?}",
                holder.try_line(WAIT),
                t.fds()
            );
        }
        let probe = t.run(&["probe", &addr, PROBES]);
        let (rss, peak) = t.memory_kib();
        let per_conn = (rss.saturating_sub(idle_rss) * 1024) / n;
        let (fds, _) = t.fds();
        println!(
            "idle {kind}: {n} connections opened in {opened_in:.1?}; proxy RSS {idle_rss} KiB idle, \
             {rss} KiB holding them (peak {peak} KiB): {per_conn} bytes per idle connection, \
             {fds} fds (limit {nofile}); new-connection GET /hello meanwhile: {probe}"
        );
        // The bound, with a margin over what was measured (README,
        // "Hostile clients"): the aim of 3 KB is not met.
        let bound = match kind {
            "h1" => 48 * 1024,
            _ => 32 * 1024,
        };
        assert!(
            per_conn < bound,
            "{kind}: {per_conn} bytes per idle connection ({rss} KiB at {n})"
        );
        let p99 = num(&probe, "p99_us");
        assert!(
            p99 < 50_000,
            "{kind}: p99 {p99} us with the idle connections"
        );

        if kind == "h1" {
            continue;
        }
        // The last slot taken: the next connection waits, counted once.
        let last = t.spawn(&["hold", &addr, "1", kind]);
        last.expect_line("HOLDING n=1 failed=0", WAIT).unwrap();
        let series = "weft_tcp_refused_total{direction=\"inbound\",reason=\"connection_limit\"}";
        let before = t.metric(series);
        let waiting = t.spawn(&["probe", &addr, "1"]);
        eventually(WAIT, || {
            let n = t.metric(series);
            anyhow::ensure!(n == before + 1.0, "{series} = {n}");
            Ok(())
        })
        .unwrap();
        assert_eq!(waiting.try_line(QUIET), None, "answered past the limit");
        // A slot frees: the waiting client is served.
        drop(last);
        let answered = waiting.expect_line("OK", WAIT).unwrap();
        println!(
            "connection limit: the 10,001st connection waited (counted in {series}), \
             then was served once a slot freed: {answered}"
        );
        drop(holder);
    }
}

/// The server pod's peak RSS while a flood runs must stay under this.
const FLOOD_PEAK_KIB: u64 = 40 * 1024;

#[test]
fn http2_floods_are_cut_off_or_bounded_and_others_are_served() {
    let Some((_turn, t, addr)) = scenario("hostile_h2") else {
        return;
    };
    let (idle_rss, _) = t.memory_kib();
    println!("h2 floods: proxy RSS {idle_rss} KiB before");
    const FLOODED: &str = "weft_tcp_refused_total{direction=\"inbound\",reason=\"http2_flood\"}";
    let mut floods = 0;
    for (kind, read) in [
        ("settings", "read"),
        ("settings", "noread"),
        ("ping", "read"),
        ("ping", "noread"),
        ("window-update", "read"),
        ("continuation", "read"),
        ("streams", "read"),
    ] {
        let flood = t.spawn(&["h2-abuse", &addr, kind, "3000", read]);
        // Another client meanwhile, each request on a new connection.
        let probe = t.run(&["probe", &addr, "50"]);
        let out = flood.expect_line("OK", Duration::from_secs(20)).unwrap();
        let (rss, peak) = t.memory_kib();
        println!(
            "h2 {kind} ({read}): {out}; proxy RSS {rss} KiB, peak {peak} KiB; meanwhile {probe}"
        );
        let goaway = field(&out, "goaway");
        match kind {
            "continuation" => assert_eq!(goaway, "ENHANCE_YOUR_CALM", "{out}"),
            "streams" => {
                assert_eq!(goaway, "ENHANCE_YOUR_CALM", "{out}");
                assert!(num(&out, "responses") <= 1000, "{out}");
            }
            _ if read == "noread" => {
                assert!(
                    field(&out, "blocked") == "true"
                        || field(&out, "closed") == "true"
                        || goaway != "none",
                    "{out}"
                )
            }
            // A client that reads is cut off by --h2-max-control-frames
            // (1000 a second) within its first thousands of frames.
            _ => {
                assert_eq!(field(&out, "closed"), "true", "{out}");
                assert!(num(&out, "sent") < 1_000_000, "{out}");
                floods += 1;
                let cut = t.metric(FLOODED);
                assert!(
                    cut >= floods as f64,
                    "{FLOODED} {cut} after {floods} floods"
                );
            }
        }
        assert!(
            peak < FLOOD_PEAK_KIB,
            "h2 {kind}: proxy peak RSS {peak} KiB"
        );
        // Served throughout (the flood is cut off within milliseconds).
        assert!(num(&probe, "p99_us") < 2_000_000, "{kind}: {probe}");
    }
}

#[test]
fn http1_huge_heads_are_refused_and_a_million_chunks_stream() {
    let Some((_turn, t, addr)) = scenario("hostile_h1") else {
        return;
    };
    let opaque = "weft_protocol_detect_total{direction=\"inbound\",protocol=\"opaque\"}";
    for kind in ["headers", "line", "chunks"] {
        let opaque_before = t.metric(opaque);
        let out = t.run(&["h1-abuse", &addr, kind]);
        let (rss, peak) = t.memory_kib();
        println!("h1 {kind}: {out}; proxy RSS {rss} KiB, peak {peak} KiB");
        let status = field(&out, "status");
        match kind {
            "headers" => assert_eq!(status, "431", "{out}"),
            // Past 8 KiB without a line end, detection gives up on HTTP:
            // the connection goes to the app as opaque TCP (streamed, in
            // 16 KiB buffers), and the app's HTTP server refuses it. It
            // closes with the rest of the line unread, so its kernel
            // resets the connection, and a reset can overtake the answer
            // (Linux drops what a socket closed that way has not sent):
            // then the client reads no status at all (seen once, in a
            // full CI run). What this proves is the opaque count below.
            "line" => {
                assert!(matches!(status, "431" | "414" | "none"), "{out}");
                assert_eq!(t.metric(opaque), opaque_before + 1.0, "{opaque}");
            }
            _ => {
                assert_eq!(status, "200", "{out}");
                assert!(out.ends_with("body=1000000"), "{out}");
            }
        }
        assert!(peak < 40 * 1024, "h1 {kind}: proxy peak RSS {peak} KiB");
    }
    let probe = t.run(&["probe", &addr, "10"]);
    println!("h1 abuse: the proxy lives on: {probe}");
}

/// The body each way through two proxies: 1 GiB (a few seconds each way
/// in a debug build), or `WEFT_HOSTILE_BODY_MIB`.
fn big_body_mib() -> u64 {
    std::env::var("WEFT_HOSTILE_BODY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

#[test]
fn a_big_request_and_response_stream_through_two_proxies_in_bounded_memory() {
    if netns_or_skip("hostile_big_body") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let node = Node::new().unwrap();
    let client = node.pod().unwrap();
    let server = node.pod().unwrap();
    let _app = app(&server);
    let server_proxy = start_proxy(&server, &[], &[]);
    let client_proxy = start_proxy(&client, &[], &[]);
    let idle: Vec<u64> = [&client_proxy, &server_proxy]
        .iter()
        .map(|p| p.memory().unwrap().0)
        .collect();
    let mib = big_body_mib();
    let n = mib * 1024 * 1024;
    let url = |path: &str| format!("http://{}:8080{path}", server.ip);
    let sh = |script: &str| {
        let out = client
            .command(Some(APP_UID), Path::new("sh"))
            .args(["-c", script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let started = Instant::now();
    let down = sh(&format!(
        "curl -sS --max-time 600 -o /dev/null -w '%{{size_download}}' '{}'",
        url(&format!("/bytes?n={n}"))
    ));
    let down_took = started.elapsed();
    assert_eq!(down, n.to_string());
    let started = Instant::now();
    let up = sh(&format!(
        "head -c {n} /dev/zero | curl -sS --max-time 600 -T - '{}'",
        url("/count")
    ));
    let up_took = started.elapsed();
    assert_eq!(up, n.to_string());
    let rate = |took: Duration| mib as f64 / took.as_secs_f64();
    println!(
        "{mib} MiB down in {down_took:.1?} ({:.0} MiB/s), up in {up_took:.1?} ({:.0} MiB/s), \
         through two proxies",
        rate(down_took),
        rate(up_took)
    );
    for ((name, proxy), idle) in [("client", &client_proxy), ("server", &server_proxy)]
        .into_iter()
        .zip(idle)
    {
        let (rss, peak) = proxy.memory().unwrap();
        println!(
            "{name} proxy after {mib} MiB each way: RSS {} KiB (idle {} KiB), peak {} KiB",
            rss / 1024,
            idle / 1024,
            peak / 1024
        );
        // Streaming adds next to nothing to what the proxy holds idle.
        assert!(
            peak.saturating_sub(idle) < 6 * 1024 * 1024,
            "{name} proxy peak RSS {peak} bytes, idle {idle}"
        );
        // The bound, for the binary that ships: a debug build's own
        // pages make its idle RSS about 13 MB already.
        if !cfg!(debug_assertions) {
            assert!(
                peak < 16 * 1024 * 1024,
                "{name} proxy peak RSS {peak} bytes"
            );
        }
    }
}
