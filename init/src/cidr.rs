//! IPv4 and IPv6 CIDRs (`10.0.0.0/8`, `fd00::/8`, or a bare address).
//!
//! Pure parsing; nothing here touches the system.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network: its address with the host bits cleared, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not a CIDR: '{addr}' is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => {
                    return Err(format!(
                        "'{s}' is not a CIDR: prefix length '{p}' must be 0-{max}"
                    ))
                }
            },
        };
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(Self { addr, prefix })
    }
}

/// The form `iptables-save` prints, so generated rules compare equal to saved ones.
impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "10.1.2.3".parse::<Cidr>().unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!("fd00::1/8".parse::<Cidr>().unwrap().to_string(), "fd00::/8");
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert!(!"fd00::/8".parse::<Cidr>().unwrap().is_ipv4());
    }

    #[test]
    fn refuses_bad_cidrs_with_a_reason() {
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err("'10.0.0.0/33' is not a CIDR: prefix length '33' must be 0-32".into())
        );
        assert_eq!(
            "fd00::/129".parse::<Cidr>(),
            Err("'fd00::/129' is not a CIDR: prefix length '129' must be 0-128".into())
        );
        assert_eq!(
            "10.0.0/8".parse::<Cidr>(),
            Err("'10.0.0/8' is not a CIDR: '10.0.0' is not an IP address".into())
        );
        assert!("10.0.0.0/".parse::<Cidr>().is_err());
        assert!("10.0.0.0/-1".parse::<Cidr>().is_err());
    }
}
