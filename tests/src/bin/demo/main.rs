//! weft-demo: a small meshed application on this machine, watched live.
//!
//! The application is `examples/demo/` (the Kubernetes YAML that also
//! works in a cluster): `load` drives `web`, which calls `books` over
//! HTTP/1 (a TrafficSplit between books-v1 and books-v2, shifted 100/0 →
//! 90/10 → 50/50 → 0/100 over the run) and `ratings` over gRPC (failing a
//! fifth of its calls; retries hide it); `intruder` calls books as an
//! account no TrafficTarget allows. weft-control runs on the files source
//! over that directory, each pod is a network namespace with weft-init's
//! rules and a weft-proxy, traces go to the tests' OTLP receiver.
//!
//! Every second it reads every proxy's `/metrics` and shows the golden
//! metrics (the `weft stat` aggregation); at the end it computes a
//! verdict per feature from the numbers, and exits 1 if one fails. It
//! removes every namespace, process and rule when it ends, also on Ctrl-C
//! or SIGTERM. `--init-only` is the older walkthrough of weft-init alone.
#![forbid(unsafe_code)]

mod app;
mod cluster;
mod init_only;
mod scrape;
mod verdict;
mod view;

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use weft_control::stat::Scrape;

/// Set by SIGINT or SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);
/// The same, for waiting on it: [`STOP_SIGNAL`] is notified when it is set.
static STOPPED: Mutex<bool> = Mutex::new(false);
static STOP_SIGNAL: Condvar = Condvar::new();

/// Marks the demo stopped and wakes whoever waits in [`wait_stop`].
fn stop() {
    STOP.store(true, Ordering::Relaxed);
    *STOPPED.lock().unwrap_or_else(|e| e.into_inner()) = true;
    STOP_SIGNAL.notify_all();
}

/// Waits until `until` (forever when None) or a signal, whichever comes
/// first; true when the signal came.
fn wait_stop(until: Option<Instant>) -> bool {
    let mut stopped = STOPPED.lock().unwrap_or_else(|e| e.into_inner());
    while !*stopped {
        match until {
            None => stopped = STOP_SIGNAL.wait(stopped).unwrap_or_else(|e| e.into_inner()),
            Some(at) => {
                let Some(left) = at.checked_duration_since(Instant::now()) else {
                    break;
                };
                stopped = STOP_SIGNAL
                    .wait_timeout(stopped, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
    *stopped
}

#[derive(Debug, Parser)]
#[command(
    name = "weft-demo",
    about = "A small meshed application on this machine, watched live (needs root)",
    long_about = "A small meshed application on this machine, watched live.\n\n\
        Starts weft-control (files source on --app), the OTLP receiver and one network-namespace \
        pod per replica of the application's Deployments, each behind weft-init and weft-proxy; \
        shifts the TrafficSplit 100/0 -> 90/10 -> 50/50 -> 0/100 over the run; shows every second \
        what the proxies' /metrics say (success, rps, p50/p95/p99, mTLS, the split's actual shares, \
        retries, denials); ends with a verdict per feature computed from those numbers. \
        Everything is removed at the end, also on Ctrl-C.\n\n\
        Exit codes: 0 when every verdict passes, 1 when one fails or the demo cannot run, \
        2 when this machine cannot run it (not root, tools missing), 130 when interrupted."
)]
struct Args {
    /// How long the application runs before the summary (`60s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = weft_control::config::duration)]
    duration: Duration,
    /// The application's Kubernetes YAML.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo"))]
    app: PathBuf,
    /// After the summary, leave everything running (the callers restarted)
    /// and print how to look at it; Ctrl-C then removes it.
    #[arg(long)]
    keep: bool,
    /// Only the walkthrough of weft-init in one throw-away pod.
    #[arg(long)]
    init_only: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(reason) = weft_tests::require::netns_unavailable() {
        eprintln!(
            "weft-demo needs root, ip, iptables, setpriv and curl ({reason}): run `sudo ./scripts/demo`"
        );
        return ExitCode::from(2);
    }
    if let Err(e) = watch_signals() {
        eprintln!("weft-demo: {e:#}");
        return ExitCode::from(1);
    }
    let result = if args.init_only {
        init_only::run().map(|()| true)
    } else {
        run(&args)
    };
    match result {
        _ if STOP.load(Ordering::Relaxed) => {
            println!("\ninterrupted: every namespace, process and rule of the demo is removed");
            ExitCode::from(130)
        }
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("weft-demo: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// SIGINT and SIGTERM set [`STOP`]; the demo then tears down as at the end.
fn watch_signals() -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let Ok(rt) = rt else {
            let _ = tx.send(false);
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                let _ = tx.send(false);
                return;
            };
            let _ = tx.send(true);
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            stop();
        });
    });
    match rx.recv() {
        Ok(true) => Ok(()),
        _ => anyhow::bail!("cannot watch SIGINT and SIGTERM"),
    }
}

/// Bails out when a signal came.
fn check_stop() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

/// The split's steps: weights of the old and the new backend.
pub const STEPS: [[u32; 2]; 4] = [[100, 0], [90, 10], [50, 50], [0, 100]];
/// How long after a step's change its measurement starts (weft-control
/// polls its files every 100 ms; the proxies get the change pushed).
const SETTLE: Duration = Duration::from_secs(1);

/// One step of the split as run: its scrapes at the start of the
/// measurement and at the end.
#[derive(Debug)]
pub struct Step {
    pub weights: [u32; 2],
    pub from: Option<Vec<Scrape>>,
    pub to: Option<Vec<Scrape>>,
}

fn run(args: &Args) -> Result<bool> {
    let app = app::read(&args.app)?;
    println!(
        "weft demo: {} (Ctrl-C stops it and removes everything)",
        app.dir.display()
    );
    let dir = std::env::temp_dir().join(format!("weft-{}-demo", std::process::id()));
    let mut cluster = cluster::start(&app, dir)?;
    check_stop()?;
    cluster
        .start_clients(&app, "load", "http://10.96.0.10/")
        .context("the application answers")?;
    let began = Instant::now();
    let baseline = scrape::all(&cluster)?;
    let mut steps: Vec<Step> = STEPS
        .iter()
        .map(|w| Step {
            weights: *w,
            from: None,
            to: None,
        })
        .collect();
    let step_len = args.duration / STEPS.len() as u32;
    let mut previous = baseline.clone();
    let mut current_step = 0;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut next_frame = began + Duration::from_secs(1);
    loop {
        check_stop()?;
        let now = Instant::now();
        let elapsed = now - began;
        let step = ((elapsed.as_secs_f64() / step_len.as_secs_f64()) as usize).min(STEPS.len());
        if step != current_step {
            // The step ends now: its last scrape, then the next weights.
            steps[current_step].to = Some(scrape::all(&cluster)?);
            current_step = step;
            if step >= STEPS.len() {
                break;
            }
            cluster.write_manifest(&app.split_file, &app.split_with(STEPS[step]))?;
        }
        if now >= next_frame {
            let scrapes = scrape::all(&cluster)?;
            let settled = elapsed >= step_len * step as u32 + SETTLE;
            if settled && steps[step].from.is_none() {
                steps[step].from = Some(scrapes.clone());
            }
            let frame = view::Frame {
                app: &app,
                elapsed,
                duration: args.duration,
                step,
                steps: &steps,
                previous: &previous,
                current: &scrapes,
            };
            print!("{}", frame.render(tty));
            previous = scrapes;
            next_frame += Duration::from_secs(1);
        }
        // Until the next frame or the end of the step, or a signal.
        let step_end = began + step_len * (current_step as u32 + 1);
        wait_stop(Some(next_frame.min(step_end)));
    }
    cluster.stop_clients();
    let last = quiet(&cluster)?;
    let verdicts = verdict::all(&app, &cluster, &baseline, &last, &steps);
    print!("{}", verdict::summary(&baseline, &last, &verdicts));
    let passed = verdicts.iter().all(|v| v.pass);
    if args.keep {
        cluster.start_clients(&app, "load", "http://10.96.0.10/")?;
        print!("{}", view::poke(&cluster));
        wait_stop(None);
    }
    Ok(passed)
}

/// Scrapes until two scrapes in a row show the same responses at every
/// proxy (the callers have stopped and nothing is in flight); the last.
fn quiet(cluster: &cluster::Cluster) -> Result<Vec<Scrape>> {
    let count = |s: &[Scrape]| {
        scrape::sum(
            s,
            &cluster
                .pods
                .iter()
                .map(|m| m.workload.name.as_str())
                .collect::<Vec<_>>(),
            "weft_response_total",
            &[],
        )
    };
    let mut last = scrape::all(cluster)?;
    weft_tests::mesh::eventually(Duration::from_secs(10), || {
        let now = scrape::all(cluster)?;
        let settled = count(&now) == count(&last);
        last = now;
        anyhow::ensure!(settled, "responses still counted");
        Ok(last.clone())
    })
}
