//! Turning a [`RuleSet`] into `iptables-restore` transactions: install (or
//! re-install) it, and remove it.
//!
//! Each family is changed by one `iptables-restore --noflush` transaction,
//! which the kernel applies whole or not at all. When IPv4 succeeded and IPv6
//! then fails, the IPv4 `nat` table is put back exactly as it was (with its
//! counters), so a failed run changes nothing.

use anyhow::{Context, Result};

use crate::backend::Tables;
use crate::rules::{RuleSet, CHAINS, CHAIN_PREFIX};

/// What weft already has in a `nat` table, read from `iptables-save`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Installed {
    /// Rules in built-in chains that jump into a weft chain, as saved (`-A ...`).
    pub jumps: Vec<String>,
    /// weft's chains, by name.
    pub chains: Vec<String>,
}

impl Installed {
    pub fn parse(save: &str) -> Self {
        let mut found = Self::default();
        let mut in_nat = false;
        for line in save.lines() {
            // `iptables-save -c` puts the counters before each rule.
            let line = match line.trim_end().strip_prefix('[') {
                Some(rest) => rest.split_once("] ").map_or(line, |(_, rule)| rule),
                None => line.trim_end(),
            };
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table == "nat";
            } else if !in_nat {
                continue;
            } else if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or("");
                if name.starts_with(CHAIN_PREFIX) {
                    found.chains.push(name.to_owned());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let chain = rule.split_whitespace().next().unwrap_or("");
                let target = rule
                    .split_whitespace()
                    .skip_while(|w| *w != "-j" && *w != "-g")
                    .nth(1);
                if !chain.starts_with(CHAIN_PREFIX)
                    && target.is_some_and(|t| t.starts_with(CHAIN_PREFIX))
                {
                    found.jumps.push(line.to_owned());
                }
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.jumps.is_empty() && self.chains.is_empty()
    }

    fn delete_jumps(&self, out: &mut String) {
        for jump in &self.jumps {
            out.push_str("-D ");
            out.push_str(&jump["-A ".len()..]);
            out.push('\n');
        }
    }
}

/// The transaction that installs `set` over whatever weft installed before:
/// declaring a chain flushes it, old jumps are deleted, chains weft no longer
/// uses are removed, then every rule is appended.
pub fn install_script(set: &RuleSet, installed: &Installed) -> String {
    let mut out = String::from("*nat\n");
    for chain in CHAINS {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    installed.delete_jumps(&mut out);
    let stale: Vec<&String> = installed
        .chains
        .iter()
        .filter(|c| !CHAINS.contains(&c.as_str()))
        .collect();
    for chain in &stale {
        out.push_str(&format!("-F {chain}\n"));
    }
    for chain in &stale {
        out.push_str(&format!("-X {chain}\n"));
    }
    for rule in &set.rules {
        out.push_str(rule);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out
}

/// The transaction that removes everything weft installed, and nothing else.
pub fn cleanup_script(installed: &Installed) -> String {
    let mut out = String::from("*nat\n");
    installed.delete_jumps(&mut out);
    for chain in &installed.chains {
        out.push_str(&format!("-F {chain}\n"));
    }
    for chain in &installed.chains {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

/// Runs one transaction per family in order; if a later one fails, the
/// families already changed are restored from their snapshots.
fn transact(
    families: &[Tables],
    script: impl Fn(&Installed, usize) -> Option<String>,
) -> Result<Vec<bool>> {
    // Read everything first: a family that cannot even be read stops the run
    // before anything changed.
    let mut snapshots = Vec::new();
    for tables in families {
        let snapshot = tables
            .save_nat(true)
            .with_context(|| format!("cannot read the {} nat table", tables.family.name()))?;
        snapshots.push(snapshot);
    }
    let mut changed = Vec::new();
    for (i, tables) in families.iter().enumerate() {
        let Some(input) = script(&Installed::parse(&snapshots[i]), i) else {
            changed.push(false);
            continue;
        };
        if let Err(err) = tables.restore(&input, true) {
            for (j, done) in families.iter().enumerate().take(i) {
                if changed[j] {
                    done.restore(&snapshots[j], false).with_context(|| {
                        format!(
                            "{}: {err:#}; and rolling back {} failed too",
                            tables.family.name(),
                            done.family.name()
                        )
                    })?;
                }
            }
            return Err(err.context(format!("{}: nothing was changed", tables.describe())));
        }
        changed.push(true);
    }
    Ok(changed)
}

/// Installs each family's rule set (replacing an earlier weft rule set).
pub fn install(families: &[Tables], sets: &[RuleSet]) -> Result<()> {
    transact(families, |installed, i| {
        Some(install_script(&sets[i], installed))
    })?;
    Ok(())
}

/// Removes weft's rules from each family; returns, per family, whether there
/// was anything to remove.
pub fn cleanup(families: &[Tables]) -> Result<Vec<bool>> {
    transact(families, |installed, _| {
        (!installed.is_empty()).then(|| cleanup_script(installed))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Family;

    const SAVED: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j WEFT_NOT_NAT
COMMIT
*nat
:PREROUTING ACCEPT [3:180]
:OUTPUT ACCEPT [0:0]
:WEFT_INBOUND - [0:0]
:WEFT_OLD - [0:0]
:OTHER - [0:0]
[7:420] -A PREROUTING -p tcp -j WEFT_INBOUND
[0:0] -A PREROUTING -p udp -j OTHER
-A OUTPUT -p tcp -m tcp --dport 9 -j RETURN
-A WEFT_INBOUND -p tcp -j WEFT_OLD
-A OTHER -j RETURN
COMMIT
";

    #[test]
    fn finds_only_weft_jumps_and_chains_in_nat() {
        let found = Installed::parse(SAVED);
        assert_eq!(found.jumps, vec!["-A PREROUTING -p tcp -j WEFT_INBOUND"]);
        assert_eq!(found.chains, vec!["WEFT_INBOUND", "WEFT_OLD"]);
        assert!(Installed::parse("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n").is_empty());
    }

    #[test]
    fn cleanup_deletes_jumps_then_chains() {
        let script = cleanup_script(&Installed::parse(SAVED));
        assert_eq!(
            script,
            "*nat\n-D PREROUTING -p tcp -j WEFT_INBOUND\n-F WEFT_INBOUND\n-F WEFT_OLD\n-X WEFT_INBOUND\n-X WEFT_OLD\nCOMMIT\n"
        );
    }

    #[test]
    fn install_replaces_old_rules_and_drops_stale_chains() {
        let set = RuleSet {
            family: Family::V4,
            rules: vec!["-A PREROUTING -p tcp -j WEFT_INBOUND".into()],
        };
        let script = install_script(&set, &Installed::parse(SAVED));
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "*nat");
        assert_eq!(lines[1], ":WEFT_INBOUND - [0:0]");
        assert_eq!(lines[5], "-D PREROUTING -p tcp -j WEFT_INBOUND");
        assert_eq!(lines[6], "-F WEFT_OLD");
        assert_eq!(lines[7], "-X WEFT_OLD");
        assert_eq!(lines[8], "-A PREROUTING -p tcp -j WEFT_INBOUND");
        assert_eq!(lines[9], "COMMIT");
    }
}
