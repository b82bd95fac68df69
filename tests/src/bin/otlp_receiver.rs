//! weft-otlp-receiver: the tests' stand-in for Jaeger, run in a pod. See
//! `weft-otlp-receiver --help` and `weft_tests::otlp`.
#![forbid(unsafe_code)]

use clap::Parser;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use weft_tests::otlp::{serve, Store, CAPACITY};

const LONG_ABOUT: &str = "\
The tests' stand-in for Jaeger. It accepts OTLP/gRPC exports
(opentelemetry.proto.collector.trace.v1.TraceService/Export) on --grpc-addr,
keeps the spans in memory (at most --capacity, the oldest dropped first), and
answers Jaeger's query API on --query-addr as jaeger-query does:

  GET /api/services                              {\"data\":[service names]}
  GET /api/services/{service}/operations         {\"data\":[operation names]}
  GET /api/operations?service=S[&spanKind=K]     {\"data\":[{name, spanKind}]}
  GET /api/traces?service=S[&operation=O][&tags={json}][&limit=N]
                                                 {\"data\":[traces]}, newest first
  GET /api/traces/{traceID}                      {\"data\":[trace]} or 404

and its own controls:

  GET  /receiver/stats                           spans, exports, refused, dropped, failing
  POST /receiver/failing?on|off                  exports answered UNAVAILABLE (nothing kept)

Once both ports are bound it prints one line on stdout:
LISTENING grpc=ADDR query=ADDR. It stops on SIGTERM or SIGINT (exports in
flight get 1 s) and exits 0; 64 for a bad flag, 1 if a port cannot be bound.";

/// Flags (each also an environment variable).
#[derive(Debug, Parser)]
#[command(name = "weft-otlp-receiver", about = "The tests' Jaeger: an OTLP/gRPC receiver with Jaeger's query API", long_about = LONG_ABOUT)]
struct Cli {
    /// Where OTLP/gRPC exports are accepted (Jaeger's port).
    #[arg(long, env = "WEFT_OTLP_GRPC_ADDR", default_value = "0.0.0.0:4317")]
    grpc_addr: SocketAddr,
    /// Where Jaeger's query API is served over HTTP (Jaeger's port).
    #[arg(long, env = "WEFT_OTLP_QUERY_ADDR", default_value = "0.0.0.0:16686")]
    query_addr: SocketAddr,
    /// The most spans kept; the oldest are dropped (and counted) beyond it.
    #[arg(long, env = "WEFT_OTLP_CAPACITY", default_value_t = CAPACITY)]
    capacity: usize,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let msg = e.to_string();
            let line = msg.lines().next().unwrap_or("invalid flags");
            let line = line.strip_prefix("error: ").unwrap_or(line);
            eprintln!("weft-otlp-receiver: {line} (see weft-otlp-receiver --help)");
            return ExitCode::from(64);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-otlp-receiver: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let grpc = tokio::net::TcpListener::bind(cli.grpc_addr)
            .await
            .map_err(|e| format!("cannot bind --grpc-addr {}: {e}", cli.grpc_addr))?;
        let query = tokio::net::TcpListener::bind(cli.query_addr)
            .await
            .map_err(|e| format!("cannot bind --query-addr {}: {e}", cli.query_addr))?;
        let (g, q) = (grpc.local_addr(), query.local_addr());
        let (g, q) = (g.map_err(|e| e.to_string())?, q.map_err(|e| e.to_string())?);
        println!("LISTENING grpc={g} query={q}");
        let store = Arc::new(Store::new(cli.capacity));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let serving = serve(grpc, query, store, {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        });
        tokio::pin!(serving);
        tokio::select! {
            served = &mut serving => return served.map_err(|e| e.to_string()),
            () = terminated() => {}
        }
        let _ = stop.send(true);
        // In-flight exports get a second; connections still open are then
        // closed with the runtime.
        let _ = tokio::time::timeout(Duration::from_secs(1), serving).await;
        Ok::<_, String>(())
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-otlp-receiver: {e}");
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
