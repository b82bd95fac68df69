//! weft: the command-line tool of a weft installation.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use weft_control::identity::ca;
use weft_control::inject::{self, manifest::Mode};

const LONG_ABOUT: &str = "\
The command-line tool of a weft installation.

  weft identity init --out DIR    makes a trust anchor and an issuer (ECDSA
                                  P-256) for a new installation, so nobody
                                  needs openssl
  weft identity rotate-issuer --dir DIR
                                  replaces the issuer in DIR with a new one
                                  signed by the same trust anchor (ca.key):
                                  weft-control picks it up, and proxies keep
                                  trusting leaves of both
  weft inject FILE|DIR|-          meshes the workloads of Kubernetes YAML:
                                  adds weft.dev/inject: enabled to each pod
                                  template (the webhook injects at admission),
                                  or with --manual writes the sidecar itself
  weft uninject FILE|DIR|-        removes what inject added
  weft check [--pre]              says whether the cluster is ready for weft
                                  (--pre) or whether the installation is
                                  healthy, as `linkerd check` does
  weft stat deploy|pod|route      golden metrics from the proxies' /metrics

inject and uninject write the YAML to stdout and say on stderr what they did
to each workload (injected, or skipped and why); objects that are not
workloads, and fields they do not know, are written back as read.

Exit codes: 0 on success, 64 for invalid arguments, 1 when the work failed
(for check: when a check failed; warnings do not fail).";

const CHECK_ABOUT: &str = "\
Checks a cluster, reading only (nothing is changed), against the current
kubeconfig context (KUBECONFIG, ~/.kube/config, or the in-cluster
configuration) or --kube-api-server.

One line per check, grouped: √ success, ‼ warning (does not fail), × failure
(with a hint line below), - skipped (a check it depends on failed).

With --pre, before installing:
  kubernetes-api        a client, an answer from /version, Kubernetes 1.29+,
                        native sidecars: the API server and every node's
                        kubelet 1.29+ (SidecarContainers is on by default
                        from 1.29; a feature gate an admin turned off cannot
                        be seen through the API)
  pre-kubernetes-setup  you may create what the chart installs (a
                        SelfSubjectAccessReview per kind: CRDs,
                        ClusterRoles and their bindings, the webhook
                        configuration, the namespace if missing; in
                        --namespace Deployments, Services, ServiceAccounts,
                        Secrets, ConfigMaps, Roles, RoleBindings,
                        PodDisruptionBudgets), and no SMI CRD is installed at
                        other versions than weft's
Without it, after installing:
  kubernetes-api        as above, without the sidecar check
  weft-control          the SMI CRDs installed (Established, weft's versions)
                        and served (API discovery), the Deployment, every
                        replica ready (its status and each pod's)
  weft-identity         the issuer Secret (the one the Deployment's
                        --identity-secret names) valid, within its validity
                        (a warning under 30 days), signed by its trust
                        anchors; the trust anchors ConfigMap equal to them, in
                        --namespace and in every namespace annotated
                        weft.dev/inject=enabled
  weft-webhook          the MutatingWebhookConfiguration, pointing at the
                        weft-control Service (port 8443, /inject), ready
                        endpoints behind it, and a caBundle that verifies the
                        serving certificate: the pod network is not reachable
                        from here, so what is checked is that the issuer
                        weft-control signs it with chains to the bundle
  weft-data-plane       every meshed pod's weft-proxy container ready (which
                        needs a valid certificate), and every pod of an
                        injected namespace meshed, else listed with the reason
                        the injector recorded (its WeftNotInjected Event) or,
                        without one, the reason worked out as it would

Each API call is bounded by --timeout. Exit codes: 0 when no check failed,
1 when one did, 64 for invalid arguments.";

#[derive(Debug, Parser)]
#[command(name = "weft", version, about = "weft's command-line tool", long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Workload identity: the certificate authority.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Meshes the workloads of Kubernetes YAML (written to stdout; what was
    /// done to each workload on stderr). Injecting twice gives the same
    /// output.
    Inject(Box<InjectArgs>),
    /// Checks that the cluster is ready for weft (--pre), or that the
    /// installation is healthy.
    #[command(long_about = CHECK_ABOUT)]
    Check(Box<CheckArgs>),
    /// Removes what `weft inject` (or the webhook) added: weft's
    /// containers, volumes and annotations.
    Uninject {
        /// Kubernetes YAML: files, directories or `-` for standard input.
        #[arg(required = true, value_name = "FILE|DIR|-")]
        inputs: Vec<PathBuf>,
    },
    /// Golden metrics (success rate, rps, p50/p95/p99, mTLS share) per
    /// workload, pod or route, read from the proxies' /metrics.
    #[command(long_about = weft_control::stat::cli::ABOUT)]
    Stat(Box<weft_control::stat::cli::Args>),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Check the cluster before an install instead of the installation.
    #[arg(long)]
    pre: bool,

    /// The control plane's namespace (helm install -n).
    #[arg(short = 'n', long, default_value = "weft-system")]
    namespace: String,

    /// The API server's URL (e.g. http://127.0.0.1:8001 from `kubectl
    /// proxy`) instead of the kubeconfig's current context.
    #[arg(long, value_name = "URL")]
    kube_api_server: Option<String>,

    /// How long each API call may take (Go syntax: 500ms, 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = timeout)]
    timeout: Duration,

    /// How to write the results: text lines, or JSON with the same content.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

/// A `--timeout`: a Go duration above zero.
fn timeout(s: &str) -> Result<Duration, String> {
    match weft_control::config::duration(s)? {
        d if d.is_zero() => Err("must be above 0".into()),
        d => Ok(d),
    }
}

#[derive(Debug, clap::Args)]
struct InjectArgs {
    /// Kubernetes YAML: files, directories (their .yaml, .yml and .json
    /// files) or `-` for standard input. Multi-document files, `List`s,
    /// Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets,
    /// ReplicationControllers, Jobs and CronJobs.
    #[arg(required = true, value_name = "FILE|DIR|-")]
    inputs: Vec<PathBuf>,

    /// Write the whole sidecar (weft-init, weft-proxy, their volumes) into
    /// each pod template instead of the weft.dev/inject annotation, for
    /// clusters without weft's webhook. Namespaces in the same input lend
    /// their weft.dev/ annotations.
    #[arg(long)]
    manual: bool,

    /// The SPIFFE trust domain the proxies are in (--manual).
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,

    /// The audience of the proxies' projected token: weft-control's
    /// --identity-token-audience (--manual).
    #[arg(long, default_value = "weft")]
    token_audience: String,

    #[command(flatten)]
    settings: inject::Settings,
}

#[derive(Debug, Subcommand)]
enum IdentityCommand {
    /// Writes a new trust anchor and issuer into a directory: ca.crt (the
    /// trust anchor, for every proxy), tls.crt and tls.key (the issuer, for
    /// weft-control --identity-dir), and ca.key (the anchor's key: keep it
    /// offline, it only signs the next issuer).
    Init {
        /// Where to write the four files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The SPIFFE trust domain the certificates are for.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// How long the trust anchor is valid, in hours.
        #[arg(long, default_value_t = 10 * 365 * 24, value_parser = clap::value_parser!(u64).range(1..=100 * 365 * 24))]
        anchor_hours: u64,
        /// How long the issuer is valid, in hours (at most the anchor's).
        #[arg(long, default_value_t = 365 * 24, value_parser = clap::value_parser!(u64).range(1..=100 * 365 * 24))]
        issuer_hours: u64,
        /// Overwrite files already in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Replaces tls.crt and tls.key in a directory made by `init` with a new
    /// issuer signed by its trust anchor (ca.crt and ca.key). Leaves signed
    /// by the old issuer stay valid until they expire, since every proxy
    /// trusts the anchor; weft-control --identity-dir loads the new issuer
    /// within seconds.
    RotateIssuer {
        /// The directory `weft identity init` wrote.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The SPIFFE trust domain the certificates are for.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// How long the new issuer is valid, in hours.
        #[arg(long, default_value_t = 365 * 24, value_parser = clap::value_parser!(u64).range(1..=100 * 365 * 24))]
        issuer_hours: u64,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // clap's whole message: which required arguments are missing,
            // the values a choice takes, the usage line.
            let _ = e.print();
            return ExitCode::from(64);
        }
    };
    match cli.command {
        Command::Check(args) => check(*args),
        Command::Stat(args) => weft_control::stat::cli::main(*args),
        Command::Inject(args) => {
            let mode = if args.manual {
                Mode::Manual
            } else {
                Mode::Annotate
            };
            let settings = inject::Settings {
                trust_domain: args.trust_domain,
                token_audience: args.token_audience,
                ..args.settings
            };
            manifests(&args.inputs, &settings, mode)
        }
        Command::Uninject { inputs } => {
            manifests(&inputs, &inject::Settings::default(), Mode::Uninject)
        }
        Command::Identity {
            command:
                IdentityCommand::RotateIssuer {
                    dir,
                    trust_domain,
                    issuer_hours,
                },
        } => rotate_issuer(
            &dir,
            &trust_domain,
            Duration::from_secs(issuer_hours * 3600),
        ),
        Command::Identity {
            command:
                IdentityCommand::Init {
                    out,
                    trust_domain,
                    anchor_hours,
                    issuer_hours,
                    force,
                },
        } => {
            if issuer_hours > anchor_hours {
                eprintln!(
                    "weft: --issuer-hours {issuer_hours} outlives --anchor-hours {anchor_hours}"
                );
                return ExitCode::from(64);
            }
            let existing = [
                ca::ANCHORS_FILE,
                ca::ANCHOR_KEY_FILE,
                ca::ISSUER_CERT_FILE,
                ca::ISSUER_KEY_FILE,
            ]
            .into_iter()
            .find(|f| out.join(f).exists());
            if let (Some(f), false) = (existing, force) {
                eprintln!(
                    "weft: {} exists (--force to overwrite)",
                    out.join(f).display()
                );
                return ExitCode::from(1);
            }
            let hours = |h: u64| Duration::from_secs(h * 3600);
            let written = ca::generate(&trust_domain, hours(anchor_hours), hours(issuer_hours))
                .map_err(|e| e.to_string())
                .and_then(|g| g.write(&out).map_err(|e| format!("{}: {e}", out.display())));
            match written {
                Ok(()) => {
                    println!(
                        "wrote {dir}/ca.crt (trust anchor), {dir}/tls.crt and {dir}/tls.key (issuer), \
                         {dir}/ca.key (anchor key: keep it offline) for {trust_domain}",
                        dir = out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("weft: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// `weft check`.
fn check(args: CheckArgs) -> ExitCode {
    let options = weft_control::check::Options {
        pre: args.pre,
        namespace: args.namespace,
        api_server: args.kube_api_server,
        timeout: args.timeout,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let report = runtime.block_on(weft_control::check::run(&options));
    match args.output {
        Output::Text => print!("{}", report.text()),
        Output::Json => println!("{}", report.json()),
    }
    if report.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `weft inject` and `weft uninject`.
fn manifests(inputs: &[PathBuf], settings: &inject::Settings, mode: Mode) -> ExitCode {
    match inject::cli::run(inputs, settings, mode) {
        Ok((yaml, summary)) => {
            print!("{yaml}");
            for line in summary {
                eprintln!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.lines() {
                eprintln!("weft: {line}");
            }
            eprintln!("weft: nothing written");
            ExitCode::from(1)
        }
    }
}

/// `weft identity rotate-issuer`.
fn rotate_issuer(dir: &std::path::Path, trust_domain: &str, lifetime: Duration) -> ExitCode {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let rotated = read(ca::ANCHORS_FILE)
        .and_then(|anchor_pem| Ok((anchor_pem, read(ca::ANCHOR_KEY_FILE)?)))
        .and_then(|(anchor_pem, anchor_key_pem)| {
            let current = ca::Generated {
                anchor_pem,
                anchor_key_pem,
                issuer_pem: String::new(),
                issuer_key_pem: String::new(),
            };
            current.next_issuer(trust_domain, lifetime).map_err(|e| {
                format!(
                    "cannot sign a new issuer with the anchor in {}: {e}",
                    dir.display()
                )
            })
        })
        .and_then(|next| {
            next.write(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))
        });
    match rotated {
        Ok(()) => {
            println!(
                "wrote a new issuer to {dir}/tls.crt and {dir}/tls.key, signed by the trust anchor in {dir}/ca.crt",
                dir = dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft: {e}");
            ExitCode::from(1)
        }
    }
}
