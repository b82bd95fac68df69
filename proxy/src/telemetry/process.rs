//! Process metrics read from /proc on each scrape: CPU time, memory, file
//! descriptors, start time (the names the Prometheus client libraries use).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug)]
pub struct ProcessCollector {
    ticks_per_second: f64,
    page_size: f64,
    boot_time: Option<u64>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        // USER_HZ is 100 on x86_64 and aarch64 Linux, but the page size is
        // 4, 16 or 64 KiB on aarch64: both are asked of the kernel (rustix
        // reads them from the aux vector, no unsafe here).
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        });
        Self {
            ticks_per_second: rustix::param::clock_ticks_per_second() as f64,
            page_size: rustix::param::page_size() as f64,
            boot_time,
        }
    }
}

/// The fields of /proc/self/stat that matter here.
#[derive(Debug, PartialEq)]
struct Stat {
    cpu_ticks: u64,
    start_ticks: u64,
    rss_pages: u64,
    vsize_bytes: u64,
}

fn parse_stat(stat: &str) -> Option<Stat> {
    // The command name is in parentheses and may hold spaces: skip past it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields counted from 3 (state) in proc(5): utime 14, stime 15,
    // starttime 22, vsize 23, rss 24.
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        vsize_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            let cpu = ConstCounter::new(stat.cpu_ticks as f64 / self.ticks_per_second);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                cpu.metric_type(),
            )?)?;
            let rss = ConstGauge::new(stat.rss_pages as f64 * self.page_size);
            rss.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                None,
                rss.metric_type(),
            )?)?;
            let vsize = ConstGauge::new(stat.vsize_bytes as f64);
            vsize.encode(encoder.encode_descriptor(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                None,
                vsize.metric_type(),
            )?)?;
            if let Some(boot) = self.boot_time {
                let start =
                    ConstGauge::new(boot as f64 + stat.start_ticks as f64 / self.ticks_per_second);
                start.encode(encoder.encode_descriptor(
                    "process_start_time_seconds",
                    "Start time of the process since the Unix epoch in seconds.",
                    None,
                    start.metric_type(),
                )?)?;
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            let open = ConstGauge::new(fds.count() as i64);
            open.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                open.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let line = "42 (weft proxy) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1234 10485760 512 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                cpu_ticks: 300,
                start_ticks: 1234,
                vsize_bytes: 10485760,
                rss_pages: 512
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn page_size_and_ticks_are_the_kernels() {
        let c = ProcessCollector::default();
        // What `getconf` says, where it is installed.
        for (var, got) in [("PAGESIZE", c.page_size), ("CLK_TCK", c.ticks_per_second)] {
            if let Ok(out) = std::process::Command::new("getconf").arg(var).output() {
                let want: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
                assert_eq!(got, want, "{var}");
            }
        }
        assert!(c.page_size >= 4096.0 && c.page_size.log2().fract() == 0.0);
    }
}
