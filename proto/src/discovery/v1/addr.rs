//! Conversions between the API's address messages ([`IpAddress`],
//! [`SocketAddr`]) and `std::net`'s types.
//!
//! Going to the wire cannot fail. Coming from the wire checks what protobuf
//! cannot express: the octet count and the port's range.

use std::net::{self, IpAddr, Ipv4Addr, Ipv6Addr};

use super::{IpAddress, SocketAddr};

/// Why an address message does not hold a valid address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// `IpAddress.octets` is neither 4 (IPv4) nor 16 (IPv6) bytes long.
    #[error("an IP address has 4 (IPv4) or 16 (IPv6) octets, not {0}")]
    BadLength(usize),
    /// `SocketAddr.ip` is absent.
    #[error("the socket address has no IP address")]
    MissingIp,
    /// `SocketAddr.port` does not fit in 16 bits.
    #[error("port {0} is out of range (0..=65535)")]
    PortOutOfRange(u32),
}

impl From<IpAddr> for IpAddress {
    /// IPv4 becomes 4 octets, IPv6 16 (an IPv4-mapped IPv6 address stays 16).
    fn from(ip: IpAddr) -> Self {
        let octets = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        IpAddress { octets }
    }
}

impl TryFrom<&IpAddress> for IpAddr {
    type Error = AddrError;

    fn try_from(ip: &IpAddress) -> Result<Self, AddrError> {
        if let Ok(v4) = <[u8; 4]>::try_from(ip.octets.as_slice()) {
            Ok(IpAddr::V4(Ipv4Addr::from(v4)))
        } else if let Ok(v6) = <[u8; 16]>::try_from(ip.octets.as_slice()) {
            Ok(IpAddr::V6(Ipv6Addr::from(v6)))
        } else {
            Err(AddrError::BadLength(ip.octets.len()))
        }
    }
}

impl From<net::SocketAddr> for SocketAddr {
    /// An IPv6 socket address's flow info and scope id are not carried.
    fn from(addr: net::SocketAddr) -> Self {
        SocketAddr {
            ip: Some(addr.ip().into()),
            port: addr.port().into(),
        }
    }
}

impl TryFrom<&SocketAddr> for net::SocketAddr {
    type Error = AddrError;

    /// Checks the octet count and that the port fits in 16 bits. Port 0 is
    /// accepted here: whether it is meaningful is up to the message using it.
    fn try_from(addr: &SocketAddr) -> Result<Self, AddrError> {
        let ip = IpAddr::try_from(addr.ip.as_ref().ok_or(AddrError::MissingIp)?)?;
        let port = u16::try_from(addr.port).map_err(|_| AddrError::PortOutOfRange(addr.port))?;
        Ok(net::SocketAddr::new(ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(s: &str) -> net::SocketAddr {
        let std_addr: net::SocketAddr = s.parse().unwrap();
        let msg = SocketAddr::from(std_addr);
        net::SocketAddr::try_from(&msg).unwrap()
    }

    #[test]
    fn ipv4_goes_out_as_four_octets_and_comes_back() {
        let msg = SocketAddr::from("10.96.0.20:80".parse::<net::SocketAddr>().unwrap());
        assert_eq!(msg.ip.as_ref().unwrap().octets, vec![10, 96, 0, 20]);
        assert_eq!(msg.port, 80);
        assert_eq!(roundtrip("10.96.0.20:80").to_string(), "10.96.0.20:80");
    }

    #[test]
    fn ipv6_goes_out_as_sixteen_octets_and_comes_back() {
        let msg = SocketAddr::from("[fd00:10:96::1]:8080".parse::<net::SocketAddr>().unwrap());
        let octets = &msg.ip.as_ref().unwrap().octets;
        assert_eq!(octets.len(), 16);
        assert_eq!(&octets[..4], &[0xfd, 0x00, 0x00, 0x10]);
        assert_eq!(octets[15], 1);
        assert_eq!(msg.port, 8080);
        assert_eq!(
            roundtrip("[fd00:10:96::1]:8080").to_string(),
            "[fd00:10:96::1]:8080"
        );
        assert_eq!(roundtrip("[::1]:65535").to_string(), "[::1]:65535");
    }

    #[test]
    fn ipv4_mapped_ipv6_stays_ipv6() {
        let addr = roundtrip("[::ffff:10.0.0.1]:80");
        assert!(addr.is_ipv6());
    }

    #[test]
    fn bad_octet_counts_are_refused_with_the_count() {
        for len in [0, 1, 3, 5, 15, 17, 32] {
            let ip = IpAddress {
                octets: vec![1; len],
            };
            let err = IpAddr::try_from(&ip).unwrap_err();
            assert_eq!(err, AddrError::BadLength(len));
            assert!(err.to_string().contains(&format!("not {len}")), "{err}");
        }
    }

    #[test]
    fn missing_ip_and_large_ports_are_refused() {
        let no_ip = SocketAddr { ip: None, port: 80 };
        assert_eq!(net::SocketAddr::try_from(&no_ip), Err(AddrError::MissingIp));

        let big_port = SocketAddr {
            ip: Some(IpAddress {
                octets: vec![127, 0, 0, 1],
            }),
            port: 65_536,
        };
        assert_eq!(
            net::SocketAddr::try_from(&big_port),
            Err(AddrError::PortOutOfRange(65_536))
        );

        let bad_ip = SocketAddr {
            ip: Some(IpAddress {
                octets: vec![127, 0, 0],
            }),
            port: 80,
        };
        assert_eq!(
            net::SocketAddr::try_from(&bad_ip),
            Err(AddrError::BadLength(3))
        );
    }
}
