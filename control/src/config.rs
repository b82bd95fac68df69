//! weft-control's configuration: every setting a flag and a
//! `WEFT_CONTROL_*` environment variable.

use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::authz::DefaultPolicy;

pub use crate::identity::issuer::SecretRef;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Where objects come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The Kubernetes API.
    Kube,
    /// A directory of Kubernetes YAML.
    Files(PathBuf),
}

/// `--trace-collector-addr`: kept as written once it is a usable address.
fn trace_collector(s: &str) -> Result<String, String> {
    crate::trace::collector_uri(s).map(|_| s.to_owned())
}

fn source(s: &str) -> Result<Source, String> {
    if s == "kube" {
        return Ok(Source::Kube);
    }
    let path = PathBuf::from(s);
    if path.is_dir() {
        Ok(Source::Files(path))
    } else {
        Err(format!("'{s}' is neither `kube` nor a directory"))
    }
}

impl Config {
    /// The defaults of every flag, with `source` and both servers on
    /// 127.0.0.1 port 0 (tests, and programs that embed the control plane).
    pub fn loopback(source: Source) -> Self {
        Self {
            source,
            grpc_addr: "127.0.0.1:0".parse().expect("an address"),
            admin_addr: "127.0.0.1:0".parse().expect("an address"),
            cluster_domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            namespaces: vec![],
            kube_api_server: None,
            poll_interval: Duration::from_millis(500),
            files_max_bytes: crate::sources::files::MAX_BYTES,
            log_format: LogFormat::Plain,
            log: None,
            identity_dir: None,
            identity_secret: None,
            identity_tokens: None,
            identity_token_audience: "weft".into(),
            leaf_lifetime: Duration::from_secs(24 * 3600),
            max_watches_per_connection: 10_000,
            max_connections: 10_000,
            default_inbound_policy: DefaultPolicy::AllUnauthenticated,
            webhook: false,
            webhook_addr: "127.0.0.1:0".parse().expect("an address"),
            webhook_dns_names: vec!["localhost".into()],
            webhook_configuration: String::new(),
            publish_trust_anchors: false,
            inject: crate::inject::Settings::default(),
            trace_collector_addr: None,
            trace_service_name: "weft-control".into(),
        }
    }
}

impl Config {
    /// What the flags cannot say alone: combinations that cannot work. The
    /// reason is one line naming the flags; `weft-control` exits 64 with it.
    pub fn validate(&self) -> Result<(), String> {
        let directory = matches!(self.source, Source::Files(_));
        if directory && self.identity_secret.is_some() {
            return Err(
                "--identity-secret needs --source=kube (a directory source has no Secrets to watch; use --identity-dir)"
                    .into(),
            );
        }
        let certify = self.identity_dir.is_some() || self.identity_secret.is_some();
        if self.webhook && !certify {
            return Err(
                "--webhook needs an issuer to sign its serving certificate (--identity-dir or --identity-secret)"
                    .into(),
            );
        }
        if directory && certify && self.identity_tokens.is_none() {
            return Err(
                "--identity-dir on a directory source needs --identity-tokens (there is no TokenReview API to ask)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A duration written as Go's `time.ParseDuration` (and so Kubernetes) writes
/// one: decimal numbers, each with an optional fraction and a unit (`ns`,
/// `us` or `µs`, `ms`, `s`, `m`, `h`), written together: `300ms`, `1.5s`,
/// `2m`, `1h30m`; a bare `0` is zero. Gateway API durations (GEP-2257) are a
/// subset. Negative values and values past Go's limit (`2562047h`) are
/// refused, never wrapped and never a panic. Flags and the `weft.dev/`
/// duration annotations ([`crate::model::policy`]) both read this.
///
/// The parsing is the go-duration crate's; this only names what is wrong.
/// It is the same function as `weft_proxy::config::duration` (weft-control
/// must not depend on weft-proxy); a test in weft-tests
/// (`tests/src/bin/bench/opts.rs`) checks that the two agree.
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

#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Where Services, EndpointSlices, Pods and Namespaces come from: `kube`
    /// (in-cluster configuration or the kubeconfig) or a directory of
    /// Kubernetes YAML, watched for changes.
    #[arg(long, env = "WEFT_CONTROL_SOURCE", value_parser = source, default_value = "kube")]
    pub source: Source,

    /// gRPC listener (discovery, health).
    #[arg(long, env = "WEFT_CONTROL_GRPC_ADDR", default_value = "[::]:8086")]
    pub grpc_addr: SocketAddr,

    /// Admin listener: /live, /ready, /metrics.
    #[arg(long, env = "WEFT_CONTROL_ADMIN_ADDR", default_value = "[::]:9990")]
    pub admin_addr: SocketAddr,

    /// The cluster's DNS domain (Service names `svc.ns.svc.<domain>`).
    #[arg(
        long,
        env = "WEFT_CONTROL_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// The SPIFFE trust domain of workload identities.
    #[arg(
        long,
        env = "WEFT_CONTROL_TRUST_DOMAIN",
        default_value = "cluster.local"
    )]
    pub trust_domain: String,

    /// Namespaces to watch (comma separated); empty: all.
    #[arg(long, env = "WEFT_CONTROL_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// The Kubernetes API server URL, instead of the in-cluster
    /// configuration or the kubeconfig (development and tests).
    #[arg(long, env = "WEFT_CONTROL_KUBE_API_SERVER")]
    pub kube_api_server: Option<String>,

    /// How often the files source looks for changed files.
    #[arg(long, env = "WEFT_CONTROL_POLL_INTERVAL", value_parser = duration, default_value = "500ms")]
    pub poll_interval: Duration,

    /// The largest manifest file the files source reads, in bytes: a
    /// larger one is refused unread (logged with its path, size and this
    /// limit; counted in
    /// `weft_control_source_errors_total{source="files",kind="file_too_large"}`)
    /// and the objects it held before stay. Parsing holds a file several
    /// times over, so this bounds the source's memory.
    #[arg(
        long,
        env = "WEFT_CONTROL_FILES_MAX_BYTES",
        value_name = "BYTES",
        default_value_t = crate::sources::files::MAX_BYTES,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub files_max_bytes: u64,

    /// Serve weft.identity.v1.Identity/Certify with the issuer of this CA
    /// directory: `ca.crt` (the trust anchors), `tls.crt` (the issuer
    /// certificate, optionally followed by intermediates) and `tls.key`
    /// (its key), as `weft identity init` writes them. It must be valid at
    /// start; changed files are read again, and a broken set is reported
    /// while the issuer in use stays.
    #[arg(long, env = "WEFT_CONTROL_IDENTITY_DIR", value_name = "DIR")]
    pub identity_dir: Option<std::path::PathBuf>,

    /// Serve Certify with the issuer of this Kubernetes Secret instead of
    /// --identity-dir (needs --source=kube): a `kubernetes.io/tls` Secret
    /// whose `tls.crt`, `tls.key` and `ca.crt` are the files of a CA
    /// directory, as cert-manager writes it for a CA Certificate, or as
    /// `kubectl create secret generic NAME --type=kubernetes.io/tls
    /// --from-file=DIR/tls.crt --from-file=DIR/tls.key
    /// --from-file=DIR/ca.crt` makes it from `weft identity init`'s files.
    /// The Secret is watched (weft-control needs get, list and watch on
    /// it): a new version replaces the issuer; one that does not parse is
    /// reported (`weft_control_issuer_loads_total{result="invalid"}`) and
    /// the issuer in use stays. Until a first good one, Certify answers
    /// UNAVAILABLE.
    #[arg(
        long,
        env = "WEFT_CONTROL_IDENTITY_SECRET",
        value_name = "NAMESPACE/NAME",
        value_parser = SecretRef::parse,
        conflicts_with = "identity_dir"
    )]
    pub identity_secret: Option<SecretRef>,

    /// Check ServiceAccount tokens against this file instead of the
    /// TokenReview API: a YAML map of `token: namespace/serviceaccount`,
    /// looked at once a second and read again when it changed. Needed with a directory --source (no
    /// API server to ask); with --source=kube it takes precedence over
    /// TokenReview.
    #[arg(long, env = "WEFT_CONTROL_IDENTITY_TOKENS", value_name = "FILE")]
    pub identity_tokens: Option<std::path::PathBuf>,

    /// The audience ServiceAccount tokens must be for, checked with the
    /// TokenReview API (--source=kube without --identity-tokens; needs
    /// `create` on tokenreviews, the `system:auth-delegator` ClusterRole).
    /// The proxy's projected token (a `serviceAccountToken` volume source)
    /// must be requested with this audience; a pod's default token, whose
    /// audience is the API server, is refused. Accepted tokens are
    /// remembered for a minute, refused ones for 5 s; a client (an IP) may
    /// cause 10 reviews at once, then one a second (beyond:
    /// RESOURCE_EXHAUSTED).
    #[arg(
        long,
        env = "WEFT_CONTROL_IDENTITY_TOKEN_AUDIENCE",
        value_name = "AUDIENCE",
        default_value = "weft",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub identity_token_audience: String,

    /// Lifetime of the leaf certificates Certify issues (cut to the
    /// issuer's own expiry).
    #[arg(long, env = "WEFT_CONTROL_LEAF_LIFETIME", value_parser = duration, default_value = "24h")]
    pub leaf_lifetime: Duration,

    /// Concurrent Discovery.Watch streams one client connection may hold;
    /// a Watch over it is refused with RESOURCE_EXHAUSTED (a proxy opens one
    /// stream per destination its application talks to). HTTP/2 streams of
    /// any call on one connection are limited to this plus 100 (the
    /// server's SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(
        long,
        env = "WEFT_CONTROL_MAX_WATCHES_PER_CONNECTION",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_watches_per_connection: u32,

    /// gRPC client connections served at once (a proxy holds one); past
    /// it the next connection waits in the listen backlog until one
    /// closes, counted in weft_control_connection_limit_waits_total.
    #[arg(
        long,
        env = "WEFT_CONTROL_MAX_CONNECTIONS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,

    /// What pods that no SMI TrafficTarget selects accept inbound:
    /// all-unauthenticated (everyone, as without the mesh),
    /// all-authenticated (mesh TLS required), cluster-authenticated (mesh
    /// TLS with an identity of this trust domain) or deny. A Namespace's or
    /// Pod's `weft.dev/default-inbound-policy` annotation overrides it.
    #[arg(
        long,
        env = "WEFT_CONTROL_DEFAULT_INBOUND_POLICY",
        default_value = "all-unauthenticated"
    )]
    pub default_inbound_policy: DefaultPolicy,
    /// Serve the injector, the mutating admission webhook that adds
    /// weft-init and weft-proxy to pods (POST /inject over HTTPS on
    /// --webhook-addr), with a serving certificate signed by the issuer
    /// (so it needs --identity-dir or --identity-secret), renewed before it
    /// expires.
    #[arg(long, env = "WEFT_CONTROL_WEBHOOK")]
    pub webhook: bool,

    /// The injector's HTTPS listener.
    #[arg(long, env = "WEFT_CONTROL_WEBHOOK_ADDR", default_value = "[::]:8443")]
    pub webhook_addr: SocketAddr,

    /// The DNS names of the injector's serving certificate: the Service
    /// the MutatingWebhookConfiguration calls, `<service>.<namespace>.svc`
    /// (comma separated).
    #[arg(
        long,
        env = "WEFT_CONTROL_WEBHOOK_DNS_NAMES",
        value_delimiter = ',',
        default_value = "weft-control.weft-system.svc"
    )]
    pub webhook_dns_names: Vec<String>,

    /// The MutatingWebhookConfiguration whose webhooks' `caBundle`
    /// weft-control keeps equal to the trust anchors that verify the
    /// serving certificate (--source=kube; needs get and patch on it);
    /// empty: leave it to someone else (cert-manager's ca-injector).
    #[arg(
        long,
        env = "WEFT_CONTROL_WEBHOOK_CONFIGURATION",
        value_name = "NAME",
        default_value = "weft-injector"
    )]
    pub webhook_configuration: String,

    /// With --source=kube and an issuer: keep the trust anchors ConfigMap
    /// (--trust-anchors-configmap, key ca.crt), which injected proxies mount,
    /// in every namespace annotated weft.dev/inject=enabled and in the
    /// namespace of every pod the webhook injects (server-side apply, field
    /// manager weft-control; never deleted). Needs RBAC to list and watch
    /// Namespaces and to patch ConfigMaps; false when another tool
    /// (trust-manager, say) distributes the anchors.
    #[arg(
        long,
        env = "WEFT_CONTROL_PUBLISH_TRUST_ANCHORS",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub publish_trust_anchors: bool,

    #[command(flatten)]
    pub inject: crate::inject::Settings,

    /// Log format.
    #[arg(
        long,
        env = "WEFT_CONTROL_LOG_FORMAT",
        value_enum,
        default_value = "plain"
    )]
    pub log_format: LogFormat,

    /// Log filter (tracing syntax); WEFT_LOG or RUST_LOG when unset.
    #[arg(long, env = "WEFT_CONTROL_LOG")]
    pub log: Option<String>,

    /// Where weft-control's own spans go: an OpenTelemetry collector's
    /// OTLP/gRPC address, `host:port` (a Jaeger's 4317; the proxies'
    /// collector). A span per Certify call and per object change, from the
    /// source seeing it to its publication. Unset: no span is recorded.
    #[arg(long, env = "WEFT_CONTROL_TRACE_COLLECTOR_ADDR", value_name = "HOST:PORT", value_parser = trace_collector)]
    pub trace_collector_addr: Option<String>,

    /// The `service.name` of weft-control's spans.
    #[arg(
        long,
        env = "WEFT_CONTROL_TRACE_SERVICE_NAME",
        default_value = "weft-control"
    )]
    pub trace_service_name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        c: Config,
    }

    #[test]
    fn defaults_and_errors() {
        let c = Cli::try_parse_from(["x"]).unwrap().c;
        assert_eq!(c.source, Source::Kube);
        assert_eq!(c.grpc_addr.port(), 8086);
        assert_eq!(c.admin_addr.port(), 9990);
        assert_eq!(c.poll_interval, Duration::from_millis(500));
        assert_eq!(c.files_max_bytes, 8 * 1024 * 1024);
        let c = Cli::try_parse_from(["x", "--files-max-bytes=1000"])
            .unwrap()
            .c;
        assert_eq!(c.files_max_bytes, 1000);
        let err = Cli::try_parse_from(["x", "--files-max-bytes=0"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--files-max-bytes"), "{err}");
        let c = Cli::try_parse_from(["x"]).unwrap().c;
        let err = Cli::try_parse_from(["x", "--source=/no/such/dir"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("'/no/such/dir' is neither `kube` nor a directory"),
            "{err}"
        );
        assert!(Cli::try_parse_from(["x", "--poll-interval=5d"]).is_err());
        assert_eq!(c.default_inbound_policy, DefaultPolicy::AllUnauthenticated);
        let deny = Cli::try_parse_from(["x", "--default-inbound-policy=deny"]).unwrap();
        assert_eq!(deny.c.default_inbound_policy, DefaultPolicy::Deny);
        let err = Cli::try_parse_from(["x", "--default-inbound-policy=allow"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("'allow' is not one of all-unauthenticated"),
            "{err}"
        );
    }

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("300ms", ms(300)),
            ("1.5s", ms(1500)),
            ("2m", ms(120_000)),
            ("24h", ms(86_400_000)),
            ("1h30m", ms(5_400_000)),
            ("1.5h", ms(5_400_000)),
            (".5s", ms(500)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("0", Duration::ZERO),
            ("2562047h", Duration::from_secs(2_562_047 * 3600)),
        ] {
            assert_eq!(duration(text), Ok(want), "{text:?}");
        }
        let c = Cli::try_parse_from(["x", "--poll-interval=1.5s", "--leaf-lifetime=1h30m"])
            .unwrap()
            .c;
        assert_eq!(
            (c.poll_interval, c.leaf_lifetime),
            (ms(1500), ms(5_400_000))
        );
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        let err = |s: &str| duration(s).unwrap_err();
        assert_eq!(err("-1s"), "'-1s' is negative: a duration is 0 or more");
        assert_eq!(
            err("1x"),
            "'1x' has an unknown unit 'x' (use ns, us, ms, s, m or h)"
        );
        assert_eq!(
            err("1.5"),
            "'1.5' needs a unit after each number (ns, us, ms, s, m or h), like 300ms, 1.5s, 2m or 1h30m"
        );
        assert_eq!(
            err(""),
            "a duration is empty: write one like 300ms, 1.5s, 2m or 1h30m"
        );
        assert!(err("1 h").contains("without spaces"));
        for huge in ["99999999999999999999h", "2562048h"] {
            assert_eq!(
                err(huge),
                format!(
                    "'{huge}' is not a duration (like 300ms, 1.5s, 2m or 1h30m, at most 2562047h)"
                )
            );
        }
        let flag = Cli::try_parse_from(["x", "--leaf-lifetime=99999999999999999999h"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            flag.contains("--leaf-lifetime") && flag.contains("at most 2562047h"),
            "{flag}"
        );
    }

    #[test]
    fn combinations_that_cannot_work_are_refused() {
        let dir = std::env::temp_dir();
        let src = format!("--source={}", dir.display());
        let parse = |args: &[&str]| {
            let mut all = vec!["x"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).unwrap().c.validate()
        };
        assert_eq!(parse(&[]), Ok(()));
        let err = parse(&[&src, "--identity-secret=weft/issuer"]).unwrap_err();
        assert!(
            err.starts_with("--identity-secret needs --source=kube"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let err = parse(&[&src, "--identity-dir=/ca"]).unwrap_err();
        assert!(err.contains("needs --identity-tokens"), "{err}");
        assert_eq!(
            parse(&[&src, "--identity-dir=/ca", "--identity-tokens=/t.yaml"]),
            Ok(())
        );
        assert_eq!(parse(&["--identity-secret=weft/issuer"]), Ok(()));
        let err = parse(&["--webhook"]).unwrap_err();
        assert!(err.starts_with("--webhook needs an issuer"), "{err}");
        assert_eq!(
            parse(&["--webhook", "--identity-secret=weft/issuer"]),
            Ok(())
        );
    }

    #[test]
    fn identity_flags() {
        let c = Cli::try_parse_from(["x"]).unwrap().c;
        assert_eq!(c.identity_token_audience, "weft");
        assert_eq!(c.identity_secret, None);
        let c = Cli::try_parse_from(["x", "--identity-secret=weft/weft-issuer"])
            .unwrap()
            .c;
        assert_eq!(
            c.identity_secret,
            Some(SecretRef {
                namespace: "weft".into(),
                name: "weft-issuer".into()
            })
        );
        let err = Cli::try_parse_from(["x", "--identity-secret=weft-issuer"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("'weft-issuer' is not NAMESPACE/NAME"), "{err}");
        assert!(Cli::try_parse_from(["x", "--identity-secret=a/B"]).is_err());
        assert!(Cli::try_parse_from(["x", "--identity-token-audience="]).is_err());
        let err = Cli::try_parse_from(["x", "--identity-secret=a/b", "--identity-dir=/tmp"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot be used with"), "{err}");
    }
}
