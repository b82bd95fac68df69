//! weft-proxy: the sidecar. See `weft-proxy --help` and the README.
#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

use weft_proxy::config::{Config, LogFormat};
use weft_proxy::run::{check, run, Bound};
use weft_proxy::transport::orig_dst::SoOriginalDst;

const LONG_ABOUT: &str = "\
weft's sidecar proxy. weft-init redirects the pod's TCP traffic to it: outbound
connections to the outbound listener, inbound ones to the inbound listener. For
each connection it reads the original destination, detects the protocol
(HTTP/1, HTTP/2, mesh TLS, or opaque TCP) and forwards it: outbound to the
endpoints of the Service behind the original destination (with
--control-addr: discovery, Peak-EWMA balancing, retries and deadlines) or to
the original destination, inbound to the application on 127.0.0.1:<port>.
HTTP is proxied per request over reused upstream connections; everything
else byte for byte.

With --identity-token-file it gets a certificate for its SPIFFE identity from
weft-control (Identity/Certify), is ready only once it has one, renews it, and
speaks mutual TLS 1.3 to every endpoint discovery names as meshed, checking
the server's identity; inbound, it terminates mesh TLS and records the
client's identity. Plaintext from unmeshed clients still works.

It must run as the uid weft-init exempts (2102), so that its own connections
are not redirected back to it.

Every flag is also an environment variable (shown below). Durations are
written as in Go and Kubernetes, numbers with a unit run together: 300ms,
1.5s, 2m, 1h30m (units ns, us, ms, s, m, h; a bare 0 is zero).

Exit codes: 0 after a clean shutdown, 64 for an invalid configuration
(checked before anything is bound), 1 when a listener cannot be bound or
start-up fails. /ready answers 200 once the listeners are up, the control
plane (with --control-addr) has been reached once and, with mesh TLS, the
certificate is held.";

#[derive(Debug, Parser)]
#[command(name = "weft-proxy", version, about = "weft's sidecar proxy", long_about = LONG_ABOUT)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Waits until this pod's proxy answers /ready (the postStart hook of
    /// a classic sidecar, so the app starts only once its traffic can flow);
    /// with `-- COMMAND`, then runs it and exits with its code, and with
    /// --shutdown asks the proxy to drain and exit when it ends (a Job).
    Await(weft_proxy::await_ready::AwaitArgs),
}

fn main() -> ExitCode {
    let config = match Cli::try_parse() {
        Ok(Cli {
            command: Some(Command::Await(args)),
            ..
        }) => return weft_proxy::await_ready::run(&args),
        Ok(cli) => cli.config,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let msg = e.to_string();
            let line = msg.lines().next().unwrap_or("invalid configuration");
            eprintln!(
                "weft-proxy: {} (see weft-proxy --help)",
                line.strip_prefix("error: ").unwrap_or(line)
            );
            return ExitCode::from(64);
        }
    };
    if let Err(e) = init_tracing(&config) {
        eprintln!("weft-proxy: {e}");
        return ExitCode::from(64);
    }
    // Everything that can be found wrong is, before anything is bound.
    if let Err(e) = check(&config) {
        eprintln!("weft-proxy: {e}");
        return ExitCode::from(64);
    }
    tracing::info!(?config, "starting");

    let bound = match Bound::bind(&config) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("weft-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = if config.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.workers.into())
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, bound, SoOriginalDst, terminated())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("weft-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (what the kubelet sends) or SIGINT.
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

fn init_tracing(config: &Config) -> Result<(), String> {
    // tracing-subscriber 0.3 panics on some non-ASCII filters (found by
    // fuzzing weft-control's annotation): a filter is ASCII or refused.
    let filter = match &config.log {
        Some(f) if !f.is_ascii() => {
            return Err(format!(
                "invalid WEFT_PROXY_LOG '{f}': a log filter is ASCII (targets and levels)"
            ))
        }
        Some(f) => {
            EnvFilter::try_new(f).map_err(|e| format!("invalid WEFT_PROXY_LOG '{f}': {e}"))?
        }
        None => ["WEFT_LOG", "RUST_LOG"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .find(|v| v.is_ascii())
            .and_then(|v| EnvFilter::try_new(v).ok())
            .unwrap_or_else(|| EnvFilter::new("info")),
    };
    // Colour only on a terminal: a file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
