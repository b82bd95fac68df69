//! Port lists as users write them: `8080`, `8000-8100`, comma separated.
//!
//! Pure parsing; nothing here touches the system.

use std::fmt;
use std::str::FromStr;

/// One TCP port or an inclusive range of ports, each in 1..=65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty port".into());
    }
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range 1-65535")),
        Err(_) => Err(format!("'{s}' is not a port number")),
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('-') {
            None => parse_port(s).map(Self::single),
            Some((a, b)) => {
                let (first, last) = (parse_port(a)?, parse_port(b)?);
                if first > last {
                    return Err(format!("port range {first}-{last} is reversed"));
                }
                Ok(Self { first, last })
            }
        }
    }
}

/// The form iptables takes after `--dport`: `8080` or `8000:8100`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_and_ranges() {
        assert_eq!("8080".parse(), Ok(PortRange::single(8080)));
        assert_eq!(
            " 8000-8100 ".parse(),
            Ok(PortRange {
                first: 8000,
                last: 8100
            })
        );
        assert_eq!(PortRange::single(1).to_string(), "1");
        assert_eq!("10-20".parse::<PortRange>().unwrap().to_string(), "10:20");
    }

    #[test]
    fn refuses_bad_ports_with_a_reason() {
        assert_eq!(
            "70000".parse::<PortRange>(),
            Err("port 70000 is out of range 1-65535".into())
        );
        assert_eq!(
            "0".parse::<PortRange>(),
            Err("port 0 is out of range 1-65535".into())
        );
        assert_eq!(
            "http".parse::<PortRange>(),
            Err("'http' is not a port number".into())
        );
        assert_eq!(
            "20-10".parse::<PortRange>(),
            Err("port range 20-10 is reversed".into())
        );
        assert!("".parse::<PortRange>().is_err());
        assert!("-5".parse::<PortRange>().is_err());
    }
}
