//! Finding and running the iptables tools: `iptables-save` and
//! `iptables-restore` (and the `ip6tables` pair), in the nft or the legacy
//! flavour.
//!
//! This is the only module that runs external programs.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::rules::Family;

/// The kernel interface behind the iptables tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// iptables over nf_tables (`iptables-nft`), the default on current distributions.
    Nft,
    /// the x_tables interface (`iptables-legacy`).
    Legacy,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Nft => "nft",
            Mode::Legacy => "legacy",
        }
    }

    /// How `iptables --version` names this mode: `iptables v1.8.9 (nf_tables)`.
    fn version_marker(self) -> &'static str {
        match self {
            Mode::Nft => "(nf_tables)",
            Mode::Legacy => "(legacy)",
        }
    }
}

/// The save and restore programs of one family in one mode.
#[derive(Clone, Debug)]
pub struct Tables {
    pub family: Family,
    pub mode: Mode,
    save: PathBuf,
    restore: PathBuf,
}

fn base(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The mode of an unsuffixed tool, from what it prints with `--version`.
fn mode_of(program: &Path) -> Option<Mode> {
    let out = Command::new(program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    [Mode::Nft, Mode::Legacy]
        .into_iter()
        .find(|m| text.contains(m.version_marker()))
}

impl Tables {
    /// Finds `iptables-nft-save`/`-restore` (say) in `PATH`, or the unsuffixed
    /// `iptables-save`/`-restore` when they are of the wanted mode.
    pub fn find(family: Family, mode: Mode) -> Result<Self> {
        let b = base(family);
        let m = mode.name();
        let suffixed = (
            which(&format!("{b}-{m}-save")),
            which(&format!("{b}-{m}-restore")),
        );
        let (save, restore) = match suffixed {
            (Some(s), Some(r)) => (s, r),
            _ => match (which(&format!("{b}-save")), which(&format!("{b}-restore"))) {
                (Some(s), Some(r)) if mode_of(&r) == Some(mode) => (s, r),
                (Some(_), Some(_)) => bail!(
                    "{b}-{m}-restore not found in PATH and {b}-restore is not the {m} variant \
                     (use --iptables-mode to choose the other back end)"
                ),
                _ => bail!(
                    "{b}-restore not found in PATH: install the iptables package{}",
                    if family == Family::V6 {
                        ", or pass --ipv6=false"
                    } else {
                        ""
                    }
                ),
            },
        };
        Ok(Self {
            family,
            mode,
            save,
            restore,
        })
    }

    /// Picks the mode already in use in this network namespace: the one whose
    /// tables hold more rules (as kube-proxy's iptables wrapper does). With no
    /// rules anywhere, the mode of the unsuffixed `iptables` tool, else nft.
    pub fn detect(family: Family) -> Result<Self> {
        let found: Vec<Tables> = [Mode::Nft, Mode::Legacy]
            .into_iter()
            .filter_map(|m| Self::find(family, m).ok())
            .collect();
        match found.len() {
            0 => return Self::find(family, Mode::Nft),
            1 => return Ok(found.into_iter().next().expect("one element")),
            _ => {}
        }
        let rules = |t: &Tables| {
            t.run_save(&[])
                .map(|s| s.lines().filter(|l| l.starts_with("-A")).count())
                .unwrap_or(0)
        };
        let counts: Vec<usize> = found.iter().map(rules).collect();
        let chosen = if counts[0] != counts[1] {
            if counts[0] > counts[1] {
                0
            } else {
                1
            }
        } else {
            let preferred = which(base(family))
                .and_then(|p| mode_of(&p))
                .unwrap_or(Mode::Nft);
            found.iter().position(|t| t.mode == preferred).unwrap_or(0)
        };
        Ok(found.into_iter().nth(chosen).expect("index in range"))
    }

    pub fn describe(&self) -> String {
        format!(
            "{} ({} back end, {})",
            self.family.name(),
            self.mode.name(),
            self.restore.display()
        )
    }

    fn run_save(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.save)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.save.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                self.save.display(),
                first_line(&String::from_utf8_lossy(&out.stderr))
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `nat` table as `iptables-save -t nat` prints it (with counters
    /// when asked, so that a rollback restores them too).
    pub fn save_nat(&self, counters: bool) -> Result<String> {
        if counters {
            self.run_save(&["-c", "-t", "nat"])
        } else {
            self.run_save(&["-t", "nat"])
        }
    }

    /// Runs one `iptables-restore` transaction: it applies whole or not at all.
    /// `noflush` keeps the rules the input does not mention.
    pub fn restore(&self, input: &str, noflush: bool) -> Result<()> {
        let mut cmd = Command::new(&self.restore);
        if noflush {
            cmd.arg("--noflush");
        } else {
            cmd.args(["--counters", "--table", "nat"]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.restore.display()))?;
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())
            .with_context(|| format!("cannot write to {}", self.restore.display()))?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "{} refused the rule set: {}",
                self.restore.display(),
                error_summary(&String::from_utf8_lossy(&out.stderr))
            );
        }
        Ok(())
    }
}

fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// iptables-restore reports an error over several lines ("...: reason",
/// "Error occurred at line: N", "Try ... --help"): keep the first two.
fn error_summary(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Try `"))
        .take(2)
        .collect();
    if lines.is_empty() {
        "no reason given".into()
    } else {
        let mut out = String::new();
        for line in lines {
            if !out.is_empty() {
                out.push_str(if out.ends_with(':') { " " } else { "; " });
            }
            out.push_str(line);
        }
        out
    }
}

/// Whether this process may change the firewall (CAP_NET_ADMIN in its
/// effective set), read from /proc so that the answer needs no iptables call.
pub fn has_net_admin() -> Result<bool> {
    const CAP_NET_ADMIN: u32 = 12;
    let status = std::fs::read_to_string("/proc/self/status")
        .context("cannot read /proc/self/status to check for CAP_NET_ADMIN")?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff line in /proc/self/status")?;
    let bits = u64::from_str_radix(eff.trim(), 16).context("unreadable CapEff")?;
    Ok(bits & (1 << CAP_NET_ADMIN) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_errors_are_summarised_on_one_line() {
        let stderr = "iptables-restore v1.8.9 (legacy): Couldn't load target `NOPE':No such file or directory\n\nError occurred at line: 5\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\n";
        assert_eq!(
            error_summary(stderr),
            "iptables-restore v1.8.9 (legacy): Couldn't load target `NOPE':No such file or directory; Error occurred at line: 5"
        );
        assert_eq!(
            error_summary("iptables-nft-restore v1.8.9 (nf_tables): \nline 6: CHAIN_DEL failed\n"),
            "iptables-nft-restore v1.8.9 (nf_tables): line 6: CHAIN_DEL failed"
        );
        assert_eq!(error_summary(""), "no reason given");
    }
}
