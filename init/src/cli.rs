//! The command line: every flag also reads a `WEFT_INIT_*` environment
//! variable, so the same binary is configured by an injector (env) or by hand.

use clap::{ArgAction, Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;

use crate::backend::Mode;
use crate::cidr::Cidr;
use crate::ports::PortRange;
use crate::rules::Redirect;
use crate::select::Selector;
use crate::validate::Validate;

const ABOUT: &str = "Redirects a pod's TCP traffic into the weft-proxy sidecar with iptables.";

const LONG_ABOUT: &str = "\
Redirects a pod's TCP traffic into the weft-proxy sidecar with iptables.

Run once per pod, in the pod's network namespace, with CAP_NET_ADMIN, before
the application starts. It installs, in the nat table:

  PREROUTING -> WEFT_INBOUND:  TCP to any pod port (but the skipped ones and the
                               proxy's admin port) goes to the proxy's inbound port;
  OUTPUT     -> WEFT_OUTBOUND: TCP leaving the pod goes to the proxy's outbound
                               port, except traffic of the proxy's uid (and gid),
                               traffic over loopback, and skipped ports and CIDRs.

Each address family is changed in one iptables-restore transaction: the rule
set is installed whole or nothing changes. Running it again replaces weft's
rules with identical ones; --cleanup removes exactly weft's chains and jumps.

Lists are comma separated. Ports are `8080` or ranges `9000-9100`; CIDRs are
IPv4 or IPv6 (`10.0.0.0/8`, `fd00::/8`) and are applied to their own family.

Exit codes: 0 success, 64 invalid command line, 1 anything else (nothing was
changed unless the message says so).";

#[derive(Debug, Parser)]
#[command(name = "weft-init", version, about = ABOUT, long_about = LONG_ABOUT)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub init: InitArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prove that outbound TCP really is redirected to the proxy's port.
    ///
    /// Connects to an address nothing serves and checks that the connection lands on a listener it holds on
    /// the outbound port with that address as original destination. Run it
    /// after the rules are installed, as a uid other than the proxy's. Exits
    /// 0 when every target was redirected, 1 with the failing part otherwise.
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// User id the proxy runs as; its own connections are never redirected.
    #[arg(long, env = "WEFT_INIT_PROXY_UID", default_value_t = 2102)]
    pub proxy_uid: u32,

    /// Group id whose connections are never redirected either (optional).
    #[arg(long, env = "WEFT_INIT_PROXY_GID")]
    pub proxy_gid: Option<u32>,

    /// The proxy's inbound listener: inbound TCP is redirected here.
    #[arg(long, env = "WEFT_INIT_INBOUND_PORT", default_value_t = 4143, value_parser = port)]
    pub inbound_port: u16,

    /// The proxy's outbound listener: outbound TCP is redirected here.
    #[arg(long, env = "WEFT_INIT_OUTBOUND_PORT", default_value_t = 4140, value_parser = port)]
    pub outbound_port: u16,

    /// The proxy's admin port; inbound traffic to it is never redirected.
    #[arg(long, env = "WEFT_INIT_ADMIN_PORT", default_value_t = 4191, value_parser = port)]
    pub admin_port: u16,

    /// Inbound ports to redirect: `*` for every port, or a list.
    #[arg(
        long,
        env = "WEFT_INIT_INBOUND_PORTS",
        value_name = "PORTS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub inbound_ports: Vec<Selector<PortRange>>,

    /// Inbound ports never redirected (the admin port is always added).
    #[arg(
        long,
        env = "WEFT_INIT_SKIP_INBOUND_PORTS",
        value_name = "PORTS",
        value_delimiter = ','
    )]
    pub skip_inbound_ports: Vec<PortRange>,

    /// Outbound destination ports never redirected (e.g. 25,3306).
    #[arg(
        long,
        env = "WEFT_INIT_SKIP_OUTBOUND_PORTS",
        value_name = "PORTS",
        value_delimiter = ','
    )]
    pub skip_outbound_ports: Vec<PortRange>,

    /// Outbound destinations to redirect: `*` for all, or a CIDR list (e.g.
    /// the cluster's pod and service CIDRs, to leave everything else alone).
    #[arg(
        long,
        env = "WEFT_INIT_OUTBOUND_CIDRS",
        value_name = "CIDRS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub outbound_cidrs: Vec<Selector<Cidr>>,

    /// Outbound destinations never redirected (e.g. 169.254.169.254/32).
    #[arg(
        long,
        env = "WEFT_INIT_SKIP_OUTBOUND_CIDRS",
        value_name = "CIDRS",
        value_delimiter = ','
    )]
    pub skip_outbound_cidrs: Vec<Cidr>,

    /// Redirect inbound traffic at all.
    #[arg(long, env = "WEFT_INIT_REDIRECT_INBOUND", default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub redirect_inbound: bool,

    /// Redirect outbound traffic at all.
    #[arg(long, env = "WEFT_INIT_REDIRECT_OUTBOUND", default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub redirect_outbound: bool,

    /// Also program IPv6 (ip6tables); `false` leaves IPv6 alone.
    #[arg(long, env = "WEFT_INIT_IPV6", default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub ipv6: bool,

    /// iptables back end. Default: the one already holding rules in this
    /// network namespace, else the one `iptables` itself uses, else nft.
    #[arg(long, env = "WEFT_INIT_IPTABLES_MODE", value_enum)]
    pub iptables_mode: Option<Mode>,

    /// Remove everything weft installed (its chains and the jumps to them) and nothing else.
    #[arg(long, env = "WEFT_INIT_CLEANUP")]
    pub cleanup: bool,

    /// Print the iptables-restore input that would be applied; change nothing.
    #[arg(long, env = "WEFT_INIT_DRY_RUN", conflicts_with = "cleanup")]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The port the redirect must lead to (the proxy's outbound port); validate listens on it.
    #[arg(long, env = "WEFT_INIT_OUTBOUND_PORT", default_value_t = 4140, value_parser = port)]
    pub outbound_port: u16,

    /// The proxy's uid: validate refuses to run as it, since its traffic is never redirected.
    #[arg(long, env = "WEFT_INIT_PROXY_UID", default_value_t = 2102)]
    pub proxy_uid: u32,

    /// Addresses to connect to; repeat for IPv6. The default is in TEST-NET-1
    /// (RFC 5737), which no network routes, so a failed redirect sends nothing anywhere.
    #[arg(
        long = "target",
        env = "WEFT_INIT_VALIDATE_TARGETS",
        value_delimiter = ',',
        default_value = "192.0.2.1:20001"
    )]
    pub targets: Vec<SocketAddr>,

    /// How long to wait for the redirected connection, in milliseconds.
    #[arg(long, env = "WEFT_INIT_VALIDATE_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
}

fn port(s: &str) -> Result<u16, String> {
    match s.parse::<PortRange>()? {
        r if r.first == r.last => Ok(r.first),
        r => Err(format!("expected one port, not the range {r}")),
    }
}

/// `None` when the list says `*`.
fn only<T: Copy>(list: &[impl Into<Option<T>> + Clone]) -> Option<Vec<T>> {
    list.iter().cloned().map(Into::into).collect()
}

impl InitArgs {
    /// The rule configuration, or the reason the flags do not make one.
    pub fn redirect(&self) -> Result<Redirect, String> {
        if self.inbound_port == self.outbound_port {
            return Err(format!(
                "--inbound-port and --outbound-port are both {}: the proxy needs two ports",
                self.inbound_port
            ));
        }
        let mut skip_inbound = vec![PortRange::single(self.admin_port)];
        for p in &self.skip_inbound_ports {
            if !skip_inbound.contains(p) {
                skip_inbound.push(*p);
            }
        }
        Ok(Redirect {
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid,
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            skip_inbound_ports: skip_inbound,
            // `*` anywhere in the list means every port; so does a list that
            // names a port and `*`.
            inbound_ports: only(&self.inbound_ports),
            skip_outbound_ports: self.skip_outbound_ports.clone(),
            skip_outbound_cidrs: self.skip_outbound_cidrs.clone(),
            outbound_cidrs: only(&self.outbound_cidrs),
            redirect_inbound: self.redirect_inbound,
            redirect_outbound: self.redirect_outbound,
        })
    }
}

impl ValidateArgs {
    pub fn validate(&self) -> Validate {
        Validate {
            outbound_port: self.outbound_port,
            proxy_uid: self.proxy_uid,
            targets: self.targets.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("weft-init").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_redirect_everything_but_admin() {
        let cli = parse(&[]).unwrap();
        let r = cli.init.redirect().unwrap();
        assert_eq!(r.proxy_uid, 2102);
        assert_eq!((r.inbound_port, r.outbound_port), (4143, 4140));
        assert_eq!(r.skip_inbound_ports, vec![PortRange::single(4191)]);
        assert_eq!(r.inbound_ports, None);
        assert_eq!(r.outbound_cidrs, None);
    }

    #[test]
    fn lists_are_comma_separated() {
        let cli = parse(&[
            "--skip-inbound-ports=8081,9000-9010",
            "--outbound-cidrs",
            "10.96.0.0/12,fd00::/8",
            "--inbound-ports=8080,*",
        ])
        .unwrap();
        let r = cli.init.redirect().unwrap();
        assert_eq!(r.skip_inbound_ports.len(), 3);
        assert_eq!(r.outbound_cidrs.unwrap().len(), 2);
        assert_eq!(r.inbound_ports, None);
    }

    #[test]
    fn bad_values_name_the_flag_and_the_reason() {
        let err = parse(&["--skip-inbound-ports=70000"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--skip-inbound-ports"), "{err}");
        assert!(err.contains("port 70000 is out of range 1-65535"), "{err}");
        let err = parse(&["--skip-outbound-cidrs=10.0.0.0/33"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("prefix length '33' must be 0-32"), "{err}");
        let err = parse(&["--inbound-port=4140"]).unwrap();
        assert!(err.init.redirect().unwrap_err().contains("both 4140"));
        assert!(parse(&["--no-such-flag"]).is_err());
        assert!(parse(&["--cleanup", "--dry-run"]).is_err());
    }

    #[test]
    fn validate_takes_targets() {
        let cli = parse(&[
            "validate",
            "--target",
            "[2001:db8::1]:20001",
            "--timeout-ms=50",
        ])
        .unwrap();
        let Some(Command::Validate(v)) = cli.command else {
            panic!("not validate")
        };
        let v = v.validate();
        assert_eq!(v.targets, vec!["[2001:db8::1]:20001".parse().unwrap()]);
        assert_eq!(v.timeout, Duration::from_millis(50));
    }
}
