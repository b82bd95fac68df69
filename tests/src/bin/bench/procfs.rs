//! What `/proc` says about a proxy process: CPU time and resident memory.

use anyhow::{Context, Result};
use std::time::Duration;

/// User plus system CPU time of `pid`, all its threads.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    let ticks = cpu_ticks(&stat).with_context(|| format!("bad /proc/{pid}/stat"))?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// Resident memory of `pid` (`VmRSS`), in bytes.
pub fn rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    vm_rss_kb(&status)
        .map(|kb| kb * 1024)
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// `utime + stime` from a `/proc/PID/stat` line (fields 14 and 15; the
/// command name in field 2 may hold spaces and parentheses, so count from
/// the last `)`).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `sysconf(_SC_CLK_TCK)` (USER_HZ), as rustix reads it from the aux vector.
fn clock_ticks() -> u64 {
    rustix::param::clock_ticks_per_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat =
            "4242 (weft (proxy) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 123 45 0 0 20 0 3 0 777 0";
        assert_eq!(cpu_ticks(stat), Some(168));
        assert_eq!(cpu_ticks("garbage"), None);
        let status = "Name:\tweft-proxy\nVmPeak:\t  20000 kB\nVmRSS:\t    6144 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_kb(status), Some(6144));
        assert!(rss(std::process::id()).unwrap() > 0);
        assert!(cpu_time(std::process::id()).is_ok());
    }
}
