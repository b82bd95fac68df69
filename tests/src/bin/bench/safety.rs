//! Where the benchmark may send traffic: loopback, or a pod address of the
//! harness (10.244.0.0/16, fd00:10:244::/64) or a Service address of its
//! manifests (10.96.0.0/16, which weft-init redirects to the pod's proxy)
//! from inside a harness pod. Such an address is only allowed when this process sits in a namespace that looks
//! exactly like a harness pod (interfaces `lo` and `eth0` only, 10.244.0.0/16
//! directly on `eth0`), so `weft-bench load 10.244.0.3:8080` run by mistake on
//! a host whose own network uses 10/8 refuses instead of sending anything.

use anyhow::{bail, Result};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Fails unless `addr` may be sent to from here.
pub fn check_target(addr: SocketAddr) -> Result<()> {
    let ip = addr.ip();
    if ip.is_loopback() {
        return Ok(());
    }
    if !is_pod_address(ip) {
        bail!("refusing to send to {addr}: only loopback, harness pod addresses (10.244.0.0/16, fd00:10:244::/64) and harness Service addresses (10.96.0.0/16) are allowed");
    }
    let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    let route = std::fs::read_to_string("/proc/self/net/route").unwrap_or_default();
    if !looks_like_pod(&dev, &route) {
        bail!("refusing to send to {addr}: this process is not in a harness pod namespace (run `weft-bench run`, which starts the load inside the pods)");
    }
    Ok(())
}

/// Whether `ip` is in the harness's pod or Service ranges.
pub fn is_pod_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets(), [10, 244 | 96, _, _]),
        IpAddr::V6(v6) => v6.segments()[..4] == [0xfd00, 0x10, 0x244, 0],
    }
}

/// Whether `/proc/net/dev` and `/proc/net/route` describe a harness pod.
fn looks_like_pod(dev: &str, route: &str) -> bool {
    let mut ifaces: Vec<&str> = dev
        .lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .collect();
    ifaces.sort_unstable();
    let pod_net = route.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 8
            && f[0] == "eth0"
            && hex_addr(f[1]) == Some(Ipv4Addr::new(10, 244, 0, 0))
            && hex_addr(f[2]) == Some(Ipv4Addr::UNSPECIFIED)
            && hex_addr(f[7]) == Some(Ipv4Addr::new(255, 255, 0, 0))
    });
    ifaces == ["eth0", "lo"] && pod_net
}

/// An address as `/proc/net/route` prints it: the raw 32 bits in host order.
fn hex_addr(s: &str) -> Option<Ipv4Addr> {
    u32::from_str_radix(s, 16)
        .ok()
        .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive\n face |bytes\n    lo: 0 0\n  eth0: 1 2\n";
    fn route(net: Ipv4Addr) -> String {
        let hex = |a: Ipv4Addr| format!("{:08X}", u32::from_ne_bytes(a.octets()));
        format!(
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t{}\t00000000\t0001\t0\t0\t0\t{}\t0\t0\t0\n",
            hex(net),
            hex(Ipv4Addr::new(255, 255, 0, 0))
        )
    }

    #[test]
    fn only_a_harness_pod_passes() {
        assert!(looks_like_pod(DEV, &route(Ipv4Addr::new(10, 244, 0, 0))));
        assert!(!looks_like_pod(DEV, &route(Ipv4Addr::new(10, 0, 0, 0))));
        let host_dev = format!("{DEV}  wlan0: 1 2\n");
        assert!(!looks_like_pod(
            &host_dev,
            &route(Ipv4Addr::new(10, 244, 0, 0))
        ));
    }

    #[test]
    fn pod_addresses() {
        assert!(is_pod_address("10.244.0.3".parse().unwrap()));
        assert!(is_pod_address("10.96.0.10".parse().unwrap()));
        assert!(!is_pod_address("10.97.0.10".parse().unwrap()));
        assert!(is_pod_address("fd00:10:244::3".parse().unwrap()));
        assert!(!is_pod_address("10.95.0.20".parse().unwrap()));
        assert!(!is_pod_address("192.0.2.1".parse().unwrap()));
        assert!(check_target("192.0.2.1:80".parse().unwrap()).is_err());
        assert!(check_target("127.0.0.1:80".parse().unwrap()).is_ok());
        // A Service address from outside a harness pod: refused.
        assert!(check_target("10.96.0.10:80".parse().unwrap()).is_err());
    }
}
