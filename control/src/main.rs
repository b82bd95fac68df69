//! weft-control: the control plane. See `weft-control --help` and the README.
#![forbid(unsafe_code)]

use clap::error::{ContextKind, ContextValue};
use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

use weft_control::config::{Config, LogFormat};
use weft_control::run::{run, Bound};

const LONG_ABOUT: &str = "\
weft's control plane. It reads Services, EndpointSlices, Pods and Namespaces
from Kubernetes (kube-runtime watchers) or from a directory of the same YAML,
keeps one model of them, and streams to every proxy that watches a
destination (weft.discovery.v1.Discovery/Watch on the gRPC port) its current
endpoints, then each change as a delta.

With --identity-dir or --identity-secret it is also the mesh's certificate
authority: weft.identity.v1.Identity/Certify signs a proxy's CSR for its
SPIFFE identity once its ServiceAccount token is checked (TokenReview in a
cluster, --identity-tokens otherwise).

With --trace-collector-addr it sends its own spans over OTLP/gRPC: one per
Certify call, and one per object change from its source seeing it to its
publication to the proxies (see the README's \"Tracing\").

Every flag is also an environment variable (shown below). Durations are
written as in Go and Kubernetes, numbers with a unit run together: 500ms,
1.5s, 2m, 24h, 1h30m (units ns, us, ms, s, m, h; a bare 0 is zero). Exit
codes: 0 after a clean shutdown (SIGTERM), 64 for an invalid configuration
(a bad flag, or flags that cannot work together, such as --identity-secret
on a directory source), 1 for a start-up failure (a port in use, no
Kubernetes configuration). The addresses bound are logged at start
(\"weft-control serving\"), so a port 0 in --grpc-addr or --admin-addr
can be found.";

#[derive(Debug, Parser)]
#[command(name = "weft-control", version, about = "weft's control plane", long_about = LONG_ABOUT)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

fn main() -> ExitCode {
    let config = match Cli::try_parse() {
        Ok(cli) => cli.config,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // One line (it goes to a pod's log), with the values a choice
            // takes, which clap puts on a line of their own.
            let msg = e.to_string();
            let line = msg.lines().next().unwrap_or("invalid configuration");
            let line = line.strip_prefix("error: ").unwrap_or(line);
            let choices = match e.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(values)) if !line.contains("possible values") => {
                    format!(" (possible values: {})", values.join(", "))
                }
                _ => String::new(),
            };
            eprintln!("weft-control: {line}{choices} (see weft-control --help)");
            return ExitCode::from(64);
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("weft-control: {e} (see weft-control --help)");
        return ExitCode::from(64);
    }
    // tracing-subscriber 0.3 panics on some non-ASCII filters (found by
    // fuzzing the annotation): a filter is ASCII or refused.
    let filter = match &config.log {
        Some(f) if !f.is_ascii() => {
            eprintln!("weft-control: invalid WEFT_CONTROL_LOG '{f}': a log filter is ASCII (targets and levels)");
            return ExitCode::from(64);
        }
        Some(f) => match EnvFilter::try_new(f) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("weft-control: invalid WEFT_CONTROL_LOG '{f}': {e}");
                return ExitCode::from(64);
            }
        },
        None => ["WEFT_LOG", "RUST_LOG"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .find(|v| v.is_ascii())
            .and_then(|v| EnvFilter::try_new(v).ok())
            .unwrap_or_else(|| EnvFilter::new("info")),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    tracing::info!(?config, "starting");

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-control: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Spans (--trace-collector-addr): started on the runtime, which
        // drives the exporter's channel; the last ones sent after run ends.
        let spans = match &config.trace_collector_addr {
            Some(addr) => {
                let uri = weft_control::trace::collector_uri(addr).map_err(anyhow::Error::msg)?;
                Some(
                    weft_control::trace::init(&uri, &config.trace_service_name)
                        .map_err(anyhow::Error::msg)?,
                )
            }
            None => None,
        };
        let bound = Bound::bind(&config).await?;
        let result = run(config, bound, terminated()).await;
        if let Some(spans) = spans {
            let _ = tokio::task::spawn_blocking(move || spans.shutdown()).await;
        }
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-control: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
