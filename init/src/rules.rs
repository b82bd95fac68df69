//! The rule set weft-init installs, as a pure function of its configuration.
//!
//! Everything lives in the `nat` table, in chains whose names start with
//! [`CHAIN_PREFIX`], reached by one jump from `PREROUTING` (inbound) and one
//! from `OUTPUT` (outbound). Nothing here touches the system: [`crate::apply`]
//! turns these rules into an `iptables-restore` transaction.

use crate::cidr::Cidr;
use crate::ports::PortRange;

/// Every chain weft owns starts with this; `--cleanup` removes exactly these.
pub const CHAIN_PREFIX: &str = "WEFT_";
pub const INBOUND: &str = "WEFT_INBOUND";
pub const INBOUND_REDIRECT: &str = "WEFT_INBOUND_REDIRECT";
pub const OUTBOUND: &str = "WEFT_OUTBOUND";
pub const OUTBOUND_REDIRECT: &str = "WEFT_OUTBOUND_REDIRECT";

/// The chains of the rule set, in the order they are declared.
pub const CHAINS: [&str; 4] = [INBOUND, INBOUND_REDIRECT, OUTBOUND, OUTBOUND_REDIRECT];

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// What to redirect where; built from the command line by [`crate::cli`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub proxy_uid: u32,
    pub proxy_gid: Option<u32>,
    pub inbound_port: u16,
    pub outbound_port: u16,
    /// Inbound ports never redirected (the proxy's admin port is always among them).
    pub skip_inbound_ports: Vec<PortRange>,
    /// Inbound ports to redirect; `None` means every port.
    pub inbound_ports: Option<Vec<PortRange>>,
    pub skip_outbound_ports: Vec<PortRange>,
    pub skip_outbound_cidrs: Vec<Cidr>,
    /// Outbound destinations to redirect; `None` means every destination.
    pub outbound_cidrs: Option<Vec<Cidr>>,
    pub redirect_inbound: bool,
    pub redirect_outbound: bool,
}

/// The rules of one family: chain names and `-A` lines in `iptables-save` form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    pub family: Family,
    pub rules: Vec<String>,
}

impl RuleSet {
    /// The rule set as a complete `iptables-restore` input for the `nat`
    /// table, as `--dry-run` prints it (declarations, rules, COMMIT).
    pub fn to_restore(&self) -> String {
        let mut out = String::from("*nat\n");
        for chain in CHAINS {
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for rule in &self.rules {
            out.push_str(rule);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
        out
    }
}

impl Redirect {
    pub fn rules(&self, family: Family) -> RuleSet {
        let mut rules = Vec::new();
        let mut add = |chain: &str, spec: String| rules.push(format!("-A {chain} {spec}"));
        let in_family = |c: &&Cidr| c.is_ipv4() == (family == Family::V4);

        add(
            INBOUND_REDIRECT,
            format!("-p tcp -j REDIRECT --to-ports {}", self.inbound_port),
        );
        for port in &self.skip_inbound_ports {
            add(INBOUND, format!("-p tcp -m tcp --dport {port} -j RETURN"));
        }
        match &self.inbound_ports {
            None => add(INBOUND, format!("-p tcp -j {INBOUND_REDIRECT}")),
            Some(ports) => {
                for port in ports {
                    add(
                        INBOUND,
                        format!("-p tcp -m tcp --dport {port} -j {INBOUND_REDIRECT}"),
                    );
                }
            }
        }

        add(
            OUTBOUND_REDIRECT,
            format!("-p tcp -j REDIRECT --to-ports {}", self.outbound_port),
        );
        add(
            OUTBOUND,
            format!("-m owner --uid-owner {} -j RETURN", self.proxy_uid),
        );
        if let Some(gid) = self.proxy_gid {
            add(OUTBOUND, format!("-m owner --gid-owner {gid} -j RETURN"));
        }
        // Loopback (and the pod talking to its own address, which the kernel
        // routes over lo) is the app talking to itself or to the proxy: never
        // redirected.
        add(OUTBOUND, "-o lo -j RETURN".into());
        for port in &self.skip_outbound_ports {
            add(OUTBOUND, format!("-p tcp -m tcp --dport {port} -j RETURN"));
        }
        for cidr in self.skip_outbound_cidrs.iter().filter(in_family) {
            add(OUTBOUND, format!("-d {cidr} -j RETURN"));
        }
        match &self.outbound_cidrs {
            None => add(OUTBOUND, format!("-p tcp -j {OUTBOUND_REDIRECT}")),
            Some(cidrs) => {
                for cidr in cidrs.iter().filter(in_family) {
                    add(OUTBOUND, format!("-d {cidr} -p tcp -j {OUTBOUND_REDIRECT}"));
                }
            }
        }

        if self.redirect_inbound {
            add("PREROUTING", format!("-p tcp -j {INBOUND}"));
        }
        if self.redirect_outbound {
            add("OUTPUT", format!("-p tcp -j {OUTBOUND}"));
        }
        RuleSet { family, rules }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn defaults() -> Redirect {
        Redirect {
            proxy_uid: 2102,
            proxy_gid: None,
            inbound_port: 4143,
            outbound_port: 4140,
            skip_inbound_ports: vec![PortRange::single(4191)],
            inbound_ports: None,
            skip_outbound_ports: vec![],
            skip_outbound_cidrs: vec![],
            outbound_cidrs: None,
            redirect_inbound: true,
            redirect_outbound: true,
        }
    }

    #[test]
    fn default_rule_set() {
        let expected = "\
*nat
:WEFT_INBOUND - [0:0]
:WEFT_INBOUND_REDIRECT - [0:0]
:WEFT_OUTBOUND - [0:0]
:WEFT_OUTBOUND_REDIRECT - [0:0]
-A WEFT_INBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 4143
-A WEFT_INBOUND -p tcp -m tcp --dport 4191 -j RETURN
-A WEFT_INBOUND -p tcp -j WEFT_INBOUND_REDIRECT
-A WEFT_OUTBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 4140
-A WEFT_OUTBOUND -m owner --uid-owner 2102 -j RETURN
-A WEFT_OUTBOUND -o lo -j RETURN
-A WEFT_OUTBOUND -p tcp -j WEFT_OUTBOUND_REDIRECT
-A PREROUTING -p tcp -j WEFT_INBOUND
-A OUTPUT -p tcp -j WEFT_OUTBOUND
COMMIT
";
        assert_eq!(defaults().rules(Family::V4).to_restore(), expected);
        assert_eq!(defaults().rules(Family::V6).to_restore(), expected);
    }

    #[test]
    fn skips_and_includes_split_by_family() {
        let r = Redirect {
            proxy_gid: Some(2103),
            skip_inbound_ports: vec![PortRange::single(4191), "9000-9010".parse().unwrap()],
            inbound_ports: Some(vec![PortRange::single(8080)]),
            skip_outbound_ports: vec![PortRange::single(25)],
            skip_outbound_cidrs: vec![
                "169.254.0.0/16".parse().unwrap(),
                "fd00::/8".parse().unwrap(),
            ],
            outbound_cidrs: Some(vec!["10.96.0.0/12".parse().unwrap()]),
            ..defaults()
        };
        let v4 = r.rules(Family::V4).rules.join("\n");
        assert!(v4.contains("-A WEFT_INBOUND -p tcp -m tcp --dport 9000:9010 -j RETURN"));
        assert!(v4.contains("-A WEFT_INBOUND -p tcp -m tcp --dport 8080 -j WEFT_INBOUND_REDIRECT"));
        assert!(!v4.contains("-A WEFT_INBOUND -p tcp -j WEFT_INBOUND_REDIRECT"));
        assert!(v4.contains("-A WEFT_OUTBOUND -m owner --gid-owner 2103 -j RETURN"));
        assert!(v4.contains("-A WEFT_OUTBOUND -p tcp -m tcp --dport 25 -j RETURN"));
        assert!(v4.contains("-A WEFT_OUTBOUND -d 169.254.0.0/16 -j RETURN"));
        assert!(!v4.contains("fd00::/8"));
        assert!(v4.contains("-A WEFT_OUTBOUND -d 10.96.0.0/12 -p tcp -j WEFT_OUTBOUND_REDIRECT"));

        let v6 = r.rules(Family::V6).rules.join("\n");
        assert!(v6.contains("-A WEFT_OUTBOUND -d fd00::/8 -j RETURN"));
        assert!(!v6.contains("169.254.0.0/16"));
        // Only IPv4 destinations were included: IPv6 outbound is never redirected.
        assert!(!v6.contains("-j WEFT_OUTBOUND_REDIRECT"));
    }

    #[test]
    fn directions_can_be_turned_off() {
        let r = Redirect {
            redirect_inbound: false,
            ..defaults()
        };
        let v4 = r.rules(Family::V4).rules;
        assert!(!v4.iter().any(|l| l.starts_with("-A PREROUTING")));
        assert!(v4.iter().any(|l| l.starts_with("-A OUTPUT")));
    }
}
