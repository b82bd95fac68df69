//! weft-bench: what the mesh costs on the data path.
//!
//! Measures, in one run and on one isolated network-namespace node, the
//! direct path client → server and the meshed path client → outbound
//! `weft-proxy` → inbound `weft-proxy` → server, and prints the meshed figures
//! against the direct baseline. The two paths run in alternating rounds, so a
//! noisy machine slows both alike; only the differences and ratios mean much.
//!
//! # Running it
//!
//! As root (it makes network namespaces), from the workspace root:
//!
//! ```text
//! cargo build --release -p weft-tests -p weft-proxy -p weft-init -p weft-control && target/release/weft-bench
//! target/release/weft-bench --quick          # a smoke run of a few seconds
//! ```
//!
//! Binaries are found next to the running `weft-bench`, so a release build
//! measures release binaries. Without a built `weft-proxy` it says so and
//! measures the direct path alone (`--direct-only` does that on purpose).
//! The proxies run with their defaults; `WEFT_PROXY_*` variables set for
//! `weft-bench` reach them.
//!
//! `weft-bench run` options (`run` is the default subcommand):
//!
//! ```text
//! --duration D      fixed-rate time per path (default 10s; --quick 2s)
//! --saturate D      saturating time per path (default 6s; --quick 1s)
//! --rate R          fixed rate in requests/s (default 1000)
//! --connections N   HTTP/1.1 connections at the fixed rate (default 4)
//! --streams N       HTTP/2 requests in flight at most at the fixed rate (default 32)
//! --concurrency N   concurrent requests when saturating (default 16)
//! --rounds N        interleaved direct/meshed rounds (default 2; --quick 1)
//! --warmup D        unmeasured load on each path per protocol (default 1s; --quick 0.5s)
//! --protocols LIST  h1,h2 (default both)
//! --direct-only     do not start any proxy
//! --no-discovery    skip the discovery and split paths (otherwise measured
//!                   when weft-control is built next to weft-bench)
//! --quick           short durations, one round
//! --baseline-proxy PATH
//!                   also run this weft-proxy (built from the commit before a
//!                   change) on a topology of its own, each of its paths right
//!                   after the same path of the new proxy in every round, and
//!                   print tables of new/baseline ratios (its split path too:
//!                   a proxy built before routes balances the apex over its
//!                   own endpoints, and the output says whether it routed)
//! --callgrind DIR   run every proxy under `valgrind --tool=callgrind`, each
//!                   profile written to DIR/callgrind.<new|baseline>.<role>.<pid> when the
//!                   run ends (the proxies run ~50× slower: use a low --rate,
//!                   and read instruction counts, not the tables)
//! ```
//!
//! # What it prints
//!
//! For HTTP/1.1 and for HTTP/2 (prior knowledge), two tables:
//! - **fixed rate** (open loop, coordinated-omission corrected: latency counts
//!   from each request's intended send time): p50/p99/p99.9 direct and
//!   meshed, the latency the proxies add at each percentile, ok/error counts,
//!   proxy CPU per request (user + system time of both proxies over the
//!   requests served) and each proxy's peak RSS; next to them our targets
//!   (p99 added < 1 ms for the two proxies, RSS < 20 MB) and linkerd2-proxy's
//!   figures (≈ 0.5 ms added per hop);
//! - **saturating** (closed loop): throughput direct and meshed, their ratio
//!   (linkerd2-proxy: ≈ 0.1× direct), latencies, CPU and RSS;
//!
//! and, with weft-control built, after each fixed-rate table a third path
//! measured in the same rounds: **discovery** — a meshed client whose proxy
//! resolves a Service through weft-control (files source, in its own pod)
//! and balances it over 10 meshed endpoints — against direct and the
//! passthrough (meshed) path, with our target: no more than 10% slower
//! than passthrough at p99; and after it, a fourth path of the same rounds:
//! **split** — the discovery path's client, proxy and 10 endpoints, dialling
//! a second Service whose SMI TrafficSplit (`split.smi-spec.io/v1alpha4`)
//! sends 900/1000 of its requests to a backend Service of 9 of those
//! endpoints and 100/1000 to one of the 10th (`split.rs`) — against the
//! discovery path at p50/p90/p99 (saturating: throughput), with their ratio,
//! the round-to-round spread of the p50 ratio, the share each backend took
//! (from the client proxy's `weft_route_request_total`) and issue 14's
//! target: p50 no more than 5% above the discovery path's (not judged when
//! the proxy routed nothing).
//!
//! With weft-control, after the mTLS table (the mTLS path: a certified
//! client proxy, a one-endpoint Service, a certified server proxy, against
//! its plaintext twin), an **authz** table: the mTLS path again, its server's
//! ServiceAccount named by 20 SMI TrafficTargets (19 for other clients and
//! routes, the bench client's last: `authz.rs`), against the mTLS path
//! without any, p50/p99 and their ratio, CPU per request, what the guarded
//! proxy allowed and denied, and issue 15's target: p50 no more than 3%
//! above the mTLS path's.
//!
//! # Subcommands run inside the pods
//!
//! The host cannot reach pod addresses, so `run` starts these inside them:
//!
//! ```text
//! weft-bench server ADDR                 HTTP/1.1 + HTTP/2 server, 1 KiB answers; prints LISTENING ADDR
//! weft-bench load ADDR [--proto h1|h2] [--duration D] [--rate R] [--workers N]
//!                                        open loop with --rate, closed loop without;
//!                                        prints a HIST line and a RESULT line
//! weft-bench wait-ready URL [SECS]       polls until GET URL answers 200 (default 10 s)
//! ```
//!
//! Traffic goes only to loopback or to harness pod addresses from inside a
//! harness pod (`safety.rs`); every wait and loop is bounded in time.
#![forbid(unsafe_code)]

mod authz;
mod client;
mod hist;
mod load;
mod opts;
mod procfs;
mod report;
mod run;
mod safety;
mod server;
mod split;
mod topology;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use opts::Args;

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    Run(run::RunOpts),
    Load(load::Spec),
    Server(std::net::SocketAddr),
    WaitReady(String, Duration),
    Help,
}

const USAGE: &str =
    "usage: weft-bench [run] [OPTIONS] | server ADDR | load ADDR [OPTIONS] | wait-ready URL [SECS]
(the options are in the module documentation of tests/src/bin/bench/main.rs)";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let name = match args.first() {
        Some(a) if !a.starts_with('-') => args.remove(0),
        _ => "run".to_owned(),
    };
    let command = match parse(&name, Args::new(args)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weft-bench {name}: {e:#}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let res = match command {
        Command::Run(opts) => run::main(&opts),
        Command::Load(spec) => load::main(&spec),
        Command::Server(addr) => server::main(addr),
        Command::WaitReady(url, limit) => client::wait_ready(&url, limit),
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-bench {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse(name: &str, mut args: Args) -> anyhow::Result<Command> {
    if args.flag("--help") || args.flag("-h") {
        return Ok(Command::Help);
    }
    Ok(match name {
        "run" => Command::Run(run::RunOpts::parse(args)?),
        "load" => Command::Load(load::Spec::parse(args)?),
        "server" => {
            let a = positional(args, 1)?;
            let addr = a[0]
                .parse()
                .map_err(|e| anyhow::anyhow!("bad ADDR {:?}: {e}", a[0]))?;
            Command::Server(addr)
        }
        "wait-ready" => {
            let a = positional(args, 2)?;
            let secs: u64 = a.get(1).map_or(Ok(10), |s| s.parse())?;
            Command::WaitReady(a[0].clone(), Duration::from_secs(secs.clamp(1, 300)))
        }
        "help" => Command::Help,
        other => anyhow::bail!("unknown subcommand {other:?}"),
    })
}

/// One to `max` positional arguments and no options.
fn positional(args: Args, max: usize) -> anyhow::Result<Vec<String>> {
    let a = args.finish()?;
    if a.is_empty() || a.len() > max {
        anyhow::bail!("expected 1 to {max} arguments, got {a:?}");
    }
    Ok(a)
}

/// Prints one line and flushes it, so the harness reading our stdout sees it now.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
