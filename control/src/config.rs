//! weft-control's configuration: every setting a flag and a
//! `WEFT_CONTROL_*` environment variable.

use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
            log_format: LogFormat::Plain,
            log: None,
            identity_dir: None,
            identity_tokens: None,
            leaf_lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (like 500ms, 2s, 24h)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("'{s}' has an unknown unit (use ms, s, m or h)")),
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

    /// The CA directory (`ca.crt` trust anchors, `tls.crt`/`tls.key` issuer,
    /// as `weft identity init` writes it): serve
    /// weft.identity.v1.Identity/Certify. Reloaded when its files change.
    #[arg(long, env = "WEFT_CONTROL_IDENTITY_DIR", value_name = "DIR")]
    pub identity_dir: Option<std::path::PathBuf>,

    /// Which ServiceAccount token belongs to whom (a YAML map of
    /// `token: namespace/serviceaccount`), for Certify without a cluster.
    /// Needed with --identity-dir: the TokenReview API is not used yet.
    #[arg(long, env = "WEFT_CONTROL_IDENTITY_TOKENS", value_name = "FILE")]
    pub identity_tokens: Option<std::path::PathBuf>,

    /// Lifetime of the leaf certificates Certify issues (cut to the
    /// issuer's own expiry).
    #[arg(long, env = "WEFT_CONTROL_LEAF_LIFETIME", value_parser = duration, default_value = "24h")]
    pub leaf_lifetime: Duration,

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
        let err = Cli::try_parse_from(["x", "--source=/no/such/dir"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("'/no/such/dir' is neither `kube` nor a directory"),
            "{err}"
        );
        assert!(Cli::try_parse_from(["x", "--poll-interval=5d"]).is_err());
    }
}
