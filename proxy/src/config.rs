//! The proxy's configuration: every setting is a flag and a `WEFT_PROXY_*`
//! environment variable (the injector sets the variables), typed, with a
//! default that is right for a sidecar.

use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::time::Duration;

/// How the proxy logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Where inbound connections are forwarded to, inside the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InboundTarget {
    /// 127.0.0.1:<original port> (or [::1] for IPv6 connections): the app
    /// listens on all addresses or on loopback.
    Loopback,
    /// <original destination address>:<port>: the app binds only to the pod IP.
    PodIp,
}

/// What inbound traffic no policy from the control plane speaks for gets
/// (weft-control's `--default-inbound-policy`, which the injector passes on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InboundDefault {
    /// Everyone, with mesh TLS or not.
    AllUnauthenticated,
    /// Clients with a certificate the trust anchors verify.
    AllAuthenticated,
    /// Clients with an identity in this proxy's trust domain.
    ClusterAuthenticated,
    /// No one.
    Deny,
}

#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Outbound listener: the app's connections, redirected by weft-init.
    #[arg(long, env = "WEFT_PROXY_OUTBOUND_ADDR", default_value = "[::]:4140")]
    pub outbound_addr: SocketAddr,

    /// Inbound listener: connections to the pod, redirected by weft-init.
    #[arg(long, env = "WEFT_PROXY_INBOUND_ADDR", default_value = "[::]:4143")]
    pub inbound_addr: SocketAddr,

    /// Admin server: /live, /ready, /metrics, /config, /shutdown.
    #[arg(long, env = "WEFT_PROXY_ADMIN_ADDR", default_value = "[::]:4191")]
    pub admin_addr: SocketAddr,

    /// Where inbound connections go inside the pod.
    #[arg(
        long,
        env = "WEFT_PROXY_INBOUND_TARGET",
        value_enum,
        default_value = "loopback"
    )]
    pub inbound_target: InboundTarget,

    /// Ports whose traffic is opaque TCP: protocol detection is skipped
    /// (comma separated; e.g. server-speaks-first protocols like 3306,25).
    #[arg(
        long,
        env = "WEFT_PROXY_OPAQUE_PORTS",
        value_delimiter = ',',
        value_name = "PORTS"
    )]
    pub opaque_ports: Vec<u16>,

    /// How long protocol detection waits for the client's first bytes before
    /// treating the connection as opaque TCP (server-speaks-first protocols).
    #[arg(long, env = "WEFT_PROXY_DETECT_TIMEOUT", value_parser = duration, default_value = "1s")]
    pub detect_timeout: Duration,

    /// Connect timeout to a destination; past it HTTP gets 504.
    #[arg(long, env = "WEFT_PROXY_CONNECT_TIMEOUT", value_parser = duration, default_value = "1s")]
    pub connect_timeout: Duration,

    /// An opaque TCP connection with no bytes either way for this long is
    /// closed (checked once per period, so after one to two periods of silence).
    #[arg(long, env = "WEFT_PROXY_TCP_IDLE_TIMEOUT", value_parser = duration, default_value = "1h")]
    pub tcp_idle_timeout: Duration,

    /// A client must send a request's headers within this (slowloris guard);
    /// also the idle time after which a keep-alive HTTP/1 connection is closed.
    #[arg(long, env = "WEFT_PROXY_HEADER_READ_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub header_read_timeout: Duration,

    /// Largest HTTP/1 request head (request line and headers), in bytes;
    /// beyond it the client gets 431. At least 8192.
    #[arg(long, env = "WEFT_PROXY_MAX_HEADER_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(8192..=16 * 1024 * 1024))]
    pub max_header_bytes: u32,

    /// Most headers in one HTTP/1 request.
    #[arg(long, env = "WEFT_PROXY_MAX_HEADERS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_headers: u32,

    /// Most HTTP/2 streams open at once on one client connection.
    #[arg(
        long,
        env = "WEFT_PROXY_H2_MAX_CONCURRENT_STREAMS",
        default_value_t = 1000
    )]
    pub h2_max_concurrent_streams: u32,

    /// Most client-reset HTTP/2 streams pending at once before the
    /// connection is closed (rapid-reset, CVE-2023-44487).
    #[arg(long, env = "WEFT_PROXY_H2_MAX_PENDING_RESETS", default_value_t = 20)]
    pub h2_max_pending_resets: usize,

    /// Most HTTP/2 control frames (SETTINGS, PING, WINDOW_UPDATE, PRIORITY,
    /// empty DATA/HEADERS/CONTINUATION, unknown types; not the
    /// acknowledgements of SETTINGS and PING) one client
    /// connection may send within a second, beyond one per 256 bytes the
    /// proxy wrote to it in that second; past it the connection is closed, counted in
    /// weft_tcp_refused_total{reason="http2_flood"}.
    #[arg(long, env = "WEFT_PROXY_H2_MAX_CONTROL_FRAMES", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub h2_max_control_frames: u32,

    /// Most connections open at once (inbound and outbound); further clients
    /// wait in the kernel's accept queue; each one accepted while the limit
    /// holds waits for a slot, counted in
    /// weft_tcp_refused_total{reason="connection_limit"}.
    #[arg(long, env = "WEFT_PROXY_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Idle upstream HTTP/1 connections kept per destination for reuse.
    #[arg(long, env = "WEFT_PROXY_POOL_MAX_IDLE", default_value_t = 16)]
    pub pool_max_idle: usize,

    /// How long an idle pooled upstream connection is kept.
    #[arg(long, env = "WEFT_PROXY_POOL_IDLE_TIMEOUT", value_parser = duration, default_value = "90s")]
    pub pool_idle_timeout: Duration,

    /// On SIGTERM or /shutdown: how long in-flight requests and connections
    /// may take to finish before they are closed.
    #[arg(long, env = "WEFT_PROXY_SHUTDOWN_GRACE", value_parser = duration, default_value = "30s")]
    pub shutdown_grace: Duration,

    /// Threads serving connections. One is right for a sidecar of a typical
    /// pod: it keeps the proxy's CPU and memory small and avoids cross-thread
    /// wake-ups; raise it for pods that move a lot of traffic.
    #[arg(long, env = "WEFT_PROXY_WORKERS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,

    /// The control plane's gRPC address (e.g. `weft-control.weft:8086`):
    /// outbound connections to Service addresses are balanced over the
    /// endpoints it names. Unset: every connection goes to its original
    /// destination.
    #[arg(long, env = "WEFT_PROXY_CONTROL_ADDR", value_name = "HOST:PORT")]
    pub control_addr: Option<String>,

    /// How long the first connection to a destination waits for discovery's
    /// answer before it is forwarded to its original address.
    #[arg(long, env = "WEFT_PROXY_RESOLVE_TIMEOUT", value_parser = duration, default_value = "1s")]
    pub resolve_timeout: Duration,

    /// Metric series of a destination no connection has used for this long
    /// are removed (bounds the memory and the scrape of a proxy whose app
    /// connects to ever new addresses).
    #[arg(long, env = "WEFT_PROXY_METRICS_RETAIN_IDLE", value_parser = duration, default_value = "10m")]
    pub metrics_retain_idle: Duration,

    /// A destination unused for this long has its discovery stream closed.
    #[arg(long, env = "WEFT_PROXY_DISCOVERY_IDLE_TIMEOUT", value_parser = duration, default_value = "60s")]
    pub discovery_idle_timeout: Duration,

    /// The pod's node (Downward API `spec.nodeName`): `internalTrafficPolicy:
    /// Local` and same-node preference.
    #[arg(long, env = "WEFT_PROXY_NODE_NAME")]
    pub node_name: Option<String>,

    /// The pod's zone (`topology.kubernetes.io/zone` of its node): topology
    /// hints and same-zone preference.
    #[arg(long, env = "WEFT_PROXY_ZONE")]
    pub zone: Option<String>,

    /// The pod's name and namespace (Downward API), told to the control plane.
    #[arg(long, env = "WEFT_PROXY_POD_NAME", default_value = "")]
    pub pod_name: String,
    #[arg(long, env = "WEFT_PROXY_POD_NAMESPACE", default_value = "")]
    pub pod_namespace: String,

    /// Consecutive failures (connection errors, and 5xx when
    /// --failure-accrual-5xx) after which an endpoint is taken out of its
    /// balancer; 0 never takes one out.
    #[arg(long, env = "WEFT_PROXY_FAILURE_ACCRUAL", default_value_t = 5)]
    pub failure_accrual: u32,

    /// Count 5xx responses as endpoint failures for accrual.
    #[arg(long, env = "WEFT_PROXY_FAILURE_ACCRUAL_5XX", default_value_t = false)]
    pub failure_accrual_5xx: bool,

    /// First ejection's length; it doubles on each ejection in a row.
    #[arg(long, env = "WEFT_PROXY_FAILURE_BACKOFF_MIN", value_parser = duration, default_value = "1s")]
    pub failure_backoff_min: Duration,

    /// Longest ejection.
    #[arg(long, env = "WEFT_PROXY_FAILURE_BACKOFF_MAX", value_parser = duration, default_value = "60s")]
    pub failure_backoff_max: Duration,

    /// Time constant of the Peak-EWMA latency estimate.
    #[arg(long, env = "WEFT_PROXY_EWMA_DECAY", value_parser = duration, default_value = "10s")]
    pub ewma_decay: Duration,

    /// The latency estimate of an endpoint not yet measured.
    #[arg(long, env = "WEFT_PROXY_EWMA_DEFAULT_RTT", value_parser = duration, default_value = "30ms")]
    pub ewma_default_rtt: Duration,

    /// The pod's ServiceAccount token (a projected token with the audience
    /// weft-control expects). Setting it turns mesh TLS on: the proxy gets a
    /// certificate for spiffe://<trust-domain>/ns/<pod-namespace>/sa/<service-account>
    /// and is ready only once it has one. Read again at every renewal.
    #[arg(long, env = "WEFT_PROXY_IDENTITY_TOKEN_FILE", value_name = "PATH")]
    pub identity_token_file: Option<std::path::PathBuf>,

    /// The mesh's trust anchors (PEM): peers' certificates must chain to
    /// one of them. Needed with --identity-token-file.
    #[arg(long, env = "WEFT_PROXY_IDENTITY_TRUST_ANCHORS", value_name = "PATH")]
    pub identity_trust_anchors: Option<std::path::PathBuf>,

    /// Where Identity/Certify is served; --control-addr when unset.
    #[arg(long, env = "WEFT_PROXY_IDENTITY_ADDR", value_name = "HOST:PORT")]
    pub identity_addr: Option<String>,

    /// The pod's ServiceAccount (Downward API `spec.serviceAccountName`).
    #[arg(long, env = "WEFT_PROXY_SERVICE_ACCOUNT", default_value = "default")]
    pub service_account: String,

    /// The inbound default until the control plane's policy for a port
    /// arrives (and without a control plane or --pod-name, the policy of
    /// every port).
    /// Unless all-unauthenticated, a port whose first policy has not come
    /// within --inbound-policy-timeout denies everything (fails closed)
    /// until it does.
    #[arg(
        long,
        env = "WEFT_PROXY_DEFAULT_INBOUND_POLICY",
        value_enum,
        default_value = "all-unauthenticated"
    )]
    pub default_inbound_policy: InboundDefault,

    /// How long the first connection to a port waits for the port's policy
    /// from the control plane (counted from the port's first use).
    #[arg(long, env = "WEFT_PROXY_INBOUND_POLICY_TIMEOUT", value_parser = duration, default_value = "1s")]
    pub inbound_policy_timeout: Duration,

    /// The mesh's trust domain (the host part of every SPIFFE ID).
    #[arg(long, env = "WEFT_PROXY_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,

    /// Where spans go: an OpenTelemetry collector's OTLP/gRPC address,
    /// `host:port` (a Jaeger's 4317). Reached like the app's traffic: a
    /// Service's endpoint through discovery, over mesh TLS when the
    /// collector is meshed. Unset: the proxy records no span (it still
    /// forwards trace headers untouched).
    #[arg(long, env = "WEFT_PROXY_TRACE_COLLECTOR_ADDR")]
    pub trace_collector_addr: Option<String>,

    /// The percentage (0 to 100) of requests arriving without trace
    /// context that start a new, sampled trace here. Requests with context
    /// always follow the caller's decision.
    #[arg(long, env = "WEFT_PROXY_TRACE_SAMPLE_PERCENT", value_parser = percent, default_value = "0")]
    pub trace_sample_percent: f64,

    /// The `service.name` of this proxy's spans: the workload (the
    /// injector sets the pod's owner). Default: the pod name, else
    /// `weft-proxy`.
    #[arg(long, env = "WEFT_PROXY_TRACE_SERVICE_NAME")]
    pub trace_service_name: Option<String>,

    /// Log format.
    #[arg(
        long,
        env = "WEFT_PROXY_LOG_FORMAT",
        value_enum,
        default_value = "plain"
    )]
    pub log_format: LogFormat,

    /// Log filter (tracing syntax, e.g. `info,weft_proxy=debug`); WEFT_LOG or
    /// RUST_LOG are read when this is not set.
    #[arg(long, env = "WEFT_PROXY_LOG")]
    pub log: Option<String>,
}

impl Config {
    /// The identity settings, when mesh TLS is on; an error names the
    /// setting that is missing or wrong.
    pub fn identity(&self) -> Result<Option<crate::identity::IdentityConfig>, String> {
        let Some(token_file) = &self.identity_token_file else {
            return Ok(None);
        };
        if self.identity_trust_anchors.is_none() {
            return Err("--identity-token-file needs --identity-trust-anchors".into());
        }
        let addr = self
            .identity_addr
            .clone()
            .or_else(|| self.control_addr.clone())
            .ok_or("--identity-token-file needs --identity-addr or --control-addr")?;
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !name_ok(&self.pod_namespace) {
            return Err(format!(
                "--pod-namespace {:?} is not a namespace name (needed for the identity)",
                self.pod_namespace
            ));
        }
        if !name_ok(&self.service_account) {
            return Err(format!(
                "--service-account {:?} is not a ServiceAccount name",
                self.service_account
            ));
        }
        if !name_ok(&self.trust_domain) {
            return Err(format!(
                "--trust-domain {:?} is not a trust domain (a DNS-like name)",
                self.trust_domain
            ));
        }
        Ok(Some(crate::identity::IdentityConfig {
            id: format!(
                "spiffe://{}/ns/{}/sa/{}",
                self.trust_domain, self.pod_namespace, self.service_account
            ),
            addr,
            token_file: token_file.clone(),
        }))
    }
}

/// A percentage, 0 to 100 (fractions allowed).
pub fn percent(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100")),
    }
}

/// A duration written as Go's `time.ParseDuration` (and so Kubernetes) writes
/// one: decimal numbers, each with an optional fraction and a unit (`ns`,
/// `us` or `µs`, `ms`, `s`, `m`, `h`), written together: `300ms`, `1.5s`,
/// `2m`, `1h30m`; a bare `0` is zero. Gateway API durations (GEP-2257: `1h`,
/// `500ms`, `1h30m`) are a subset. Negative values and values past Go's
/// limit (`2562047h`, about 292 years) are refused, never wrapped and never a
/// panic.
///
/// The parsing is the go-duration crate's; this only names what is wrong.
/// weft-control has the same function (`weft_control::config::duration`),
/// and a test in weft-tests (`tests/src/bin/bench/opts.rs`) checks that the
/// two agree.
pub fn duration(s: &str) -> Result<Duration, String> {
    use go_duration::GoDurationParseError as E;
    const UNITS: &str = "ns, us, ms, s, m or h";
    const LIKE: &str = "like 300ms, 1.5s, 2m or 1h30m";
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    match go_duration::parse_go_duration(s) {
        Ok(d) => u64::try_from(d.nanoseconds())
            .map(Duration::from_nanos)
            .map_err(|_| format!("'{s}' is negative: a duration is 0 or more")),
        Err(_) if s.is_empty() => Err(format!("a duration is empty: write one {LIKE}")),
        Err(E::MissingUnit) => Err(format!(
            "'{s}' needs a unit after each number ({UNITS}), {LIKE}"
        )),
        Err(E::UnknownUnit(u)) if u.contains(char::is_whitespace) => Err(format!(
            "'{s}' has a space in it: write a duration without spaces, {LIKE}"
        )),
        Err(E::UnknownUnit(u)) => Err(format!("'{s}' has an unknown unit '{u}' (use {UNITS})")),
        Err(_) => Err(format!(
            "'{s}' is not a duration ({LIKE}, at most 2562047h)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("300ms", ms(300)),
            ("1.5s", ms(1500)),
            ("2m", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("1h30m", ms(5_400_000)),
            ("1.5h", ms(5_400_000)),
            ("1m0.5s", ms(60_500)),
            (".5s", ms(500)),
            ("+2s", ms(2000)),
            (" 10s ", ms(10_000)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("2562047h", Duration::from_secs(2_562_047 * 3600)),
        ] {
            assert_eq!(duration(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        let err = |s: &str| duration(s).unwrap_err();
        assert_eq!(err("-1s"), "'-1s' is negative: a duration is 0 or more");
        assert_eq!(
            err("1x"),
            "'1x' has an unknown unit 'x' (use ns, us, ms, s, m or h)"
        );
        assert!(err("5d").contains("unknown unit 'd'"));
        assert_eq!(
            err("1.5"),
            "'1.5' needs a unit after each number (ns, us, ms, s, m or h), like 300ms, 1.5s, 2m or 1h30m"
        );
        assert!(err("3").contains("needs a unit"));
        assert_eq!(
            err(""),
            "a duration is empty: write one like 300ms, 1.5s, 2m or 1h30m"
        );
        assert!(err("  ").contains("empty"));
        assert!(err("1h 30m").contains("without spaces"));
        assert!(err("ten").contains("'ten' is not a duration"));
        for huge in ["99999999999999999999h", "2562048h", "9223372036854775808ns"] {
            assert_eq!(
                err(huge),
                format!(
                    "'{huge}' is not a duration (like 300ms, 1.5s, 2m or 1h30m, at most 2562047h)"
                )
            );
        }
    }

    /// Every short string over the characters that matter gives a value or
    /// an error, never a panic (overflow checks are on in tests).
    #[test]
    fn no_input_panics() {
        let chars = ['9', '0', '.', 'h', 'm', 's', 'µ', '-'];
        let mut text = String::new();
        for n in 0..chars.len().pow(5) {
            text.clear();
            let mut k = n;
            while k > 0 {
                text.push(chars[k % chars.len()]);
                k /= chars.len();
            }
            let _ = duration(&text);
        }
        let _ = duration(&format!("1.{}s", "9".repeat(10_000)));
        let _ = duration(&"9h".repeat(10_000));
    }

    #[test]
    fn defaults_are_a_sidecar() {
        let c = Cli::try_parse_from(["weft-proxy"]).unwrap().config;
        assert_eq!(c.outbound_addr.port(), 4140);
        assert_eq!(c.inbound_addr.port(), 4143);
        assert_eq!(c.admin_addr.port(), 4191);
        assert_eq!(c.inbound_target, InboundTarget::Loopback);
        assert!(Cli::try_parse_from(["weft-proxy", "--max-header-bytes=100"]).is_err());
    }

    #[test]
    fn identity_settings_are_checked() {
        let parse = |args: &[&str]| {
            let mut all = vec!["weft-proxy"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).unwrap().config.identity()
        };
        assert_eq!(parse(&[]), Ok(None));
        let base = ["--identity-token-file=/t", "--pod-namespace=shop"];
        assert!(parse(&base)
            .unwrap_err()
            .contains("--identity-trust-anchors"));
        let with_anchors = [&base[..], &["--identity-trust-anchors=/a"]].concat();
        assert!(parse(&with_anchors).unwrap_err().contains("--control-addr"));
        let full = [&with_anchors[..], &["--control-addr=c:8086"]].concat();
        let good = [&full[..], &["--service-account=web"]].concat();
        let id = parse(&good).unwrap().unwrap();
        assert_eq!(id.id, "spiffe://cluster.local/ns/shop/sa/web");
        assert_eq!(id.addr, "c:8086");
        let bad = [&full[..], &["--service-account=Web_1"]].concat();
        assert!(parse(&bad)
            .unwrap_err()
            .contains("--service-account \"Web_1\""));
    }
}
