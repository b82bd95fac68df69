//! Reading what `weft-netprobe capture` recorded: Ethernet frames back to
//! back (each one's length comes from its IPv4, IPv6 or ARP header), their
//! TCP payloads put back in order per direction of each connection, and a
//! check that a byte stream is nothing but TLS records. Each frame may be
//! there more than once (seen on each bridge port it crossed); the
//! reassembly keeps one copy of each byte.

use anyhow::{bail, ensure, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One direction of one TCP connection, as far as the capture saw it.
#[derive(Debug, Clone)]
pub struct Stream {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Whether its SYN was captured: `bytes` then starts at its first byte.
    pub from_start: bool,
    /// The payload in order, up to the first byte the capture missed.
    pub bytes: Vec<u8>,
    /// Whether payload was missed (then `bytes` stops before it).
    pub gap: bool,
}

/// A direction of a connection being put back together.
struct Flow {
    src: SocketAddr,
    dst: SocketAddr,
    /// The sequence number of the byte at offset 0.
    base: u32,
    syn: bool,
    /// (offset, payload) of each segment seen.
    segments: Vec<(u32, Vec<u8>)>,
}

struct Segment {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    syn: bool,
    payload: Vec<u8>,
}

/// Every TCP stream (one per direction and connection) in a capture, in
/// the order their first segment appeared.
///
/// # Errors
/// If the capture holds a frame this cannot size (an unknown EtherType).
pub fn tcp_streams(capture: &[u8]) -> Result<Vec<Stream>> {
    let mut flows: Vec<Flow> = Vec::new();
    for s in segments(capture)? {
        let open = flows.iter().rposition(|f| f.src == s.src && f.dst == s.dst);
        let base = if s.syn { s.seq.wrapping_add(1) } else { s.seq };
        let i = match open {
            // A second SYN with another sequence number: a new connection
            // on the same ports.
            Some(i) if !(s.syn && flows[i].base != base) => i,
            _ => {
                flows.push(Flow {
                    src: s.src,
                    dst: s.dst,
                    base,
                    syn: s.syn,
                    segments: Vec::new(),
                });
                flows.len() - 1
            }
        };
        let flow = &mut flows[i];
        if !s.payload.is_empty() {
            let offset = s.seq.wrapping_sub(flow.base);
            // Before the first byte seen (a retransmission of an earlier
            // segment of a connection caught mid-way): ignored.
            if offset < 1 << 31 {
                flow.segments.push((offset, s.payload));
            }
        }
    }
    Ok(flows
        .into_iter()
        .map(|mut f| {
            f.segments.sort_by_key(|(offset, _)| *offset);
            let mut bytes = Vec::new();
            let mut gap = false;
            for (offset, payload) in f.segments {
                let (at, len) = (offset as usize, payload.len());
                if at > bytes.len() {
                    gap = true;
                    break;
                }
                if at + len > bytes.len() {
                    bytes.extend_from_slice(&payload[bytes.len() - at..]);
                }
            }
            Stream {
                src: f.src,
                dst: f.dst,
                from_start: f.syn,
                bytes,
                gap,
            }
        })
        .collect())
}

/// The TCP segments of a capture, in capture order.
fn segments(capture: &[u8]) -> Result<Vec<Segment>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < capture.len() {
        let rest = &capture[at..];
        ensure!(rest.len() >= 14, "a truncated frame at byte {at}");
        let ethertype = u16::from_be_bytes([rest[12], rest[13]]);
        let l3 = &rest[14..];
        let (len, tcp) = match ethertype {
            0x0800 => {
                ensure!(l3.len() >= 20, "a truncated IPv4 header at byte {at}");
                let ihl = usize::from(l3[0] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([l3[2], l3[3]]));
                ensure!(
                    total >= ihl && l3.len() >= total,
                    "a bad IPv4 length at byte {at}"
                );
                let src = Ipv4Addr::new(l3[12], l3[13], l3[14], l3[15]);
                let dst = Ipv4Addr::new(l3[16], l3[17], l3[18], l3[19]);
                let tcp = (l3[9] == 6).then(|| (src.into(), dst.into(), &l3[ihl..total]));
                (total, tcp)
            }
            0x86dd => {
                ensure!(l3.len() >= 40, "a truncated IPv6 header at byte {at}");
                let total = 40 + usize::from(u16::from_be_bytes([l3[4], l3[5]]));
                ensure!(l3.len() >= total, "a bad IPv6 length at byte {at}");
                let addr = |b: &[u8]| -> IpAddr {
                    let a: [u8; 16] = b.try_into().expect("16 bytes");
                    Ipv6Addr::from(a).into()
                };
                // Extension headers are not followed: the mesh's TCP has none.
                let tcp =
                    (l3[6] == 6).then(|| (addr(&l3[8..24]), addr(&l3[24..40]), &l3[40..total]));
                (total, tcp)
            }
            0x0806 => {
                ensure!(l3.len() >= 8, "a truncated ARP header at byte {at}");
                (8 + 2 * (usize::from(l3[4]) + usize::from(l3[5])), None)
            }
            other => bail!("a frame of EtherType {other:#06x} at byte {at}: cannot size it"),
        };
        at += 14 + len;
        let Some((src, dst, t)) = tcp else { continue };
        ensure!(t.len() >= 20, "a truncated TCP header");
        let data = usize::from(t[12] >> 4) * 4;
        ensure!(t.len() >= data, "a bad TCP data offset");
        out.push(Segment {
            src: SocketAddr::new(src, u16::from_be_bytes([t[0], t[1]])),
            dst: SocketAddr::new(dst, u16::from_be_bytes([t[2], t[3]])),
            seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
            syn: t[13] & 0x02 != 0,
            payload: t[data..].to_vec(),
        });
    }
    Ok(out)
}

/// The content types of the TLS records `bytes` is made of, from its first
/// byte; the last record may be cut short (the capture ended).
///
/// # Errors
/// At the first byte that does not start a TLS record, with its offset.
pub fn tls_records(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut types = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = &bytes[at..];
        if h.len() < 5 {
            break;
        }
        let (kind, version, len) = (
            h[0],
            u16::from_be_bytes([h[1], h[2]]),
            usize::from(u16::from_be_bytes([h[3], h[4]])),
        );
        ensure!(
            (0x14..=0x17).contains(&kind)
                && matches!(version, 0x0301 | 0x0303)
                && len <= (1 << 14) + 256,
            "byte {at} of {} starts no TLS record: {:02x?}",
            bytes.len(),
            &h[..h.len().min(16)]
        );
        types.push(kind);
        at += 5 + len;
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame.
    fn frame(
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        seq: u32,
        syn: bool,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = 20 + 20 + payload.len();
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 6, 0, 0];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        f.extend_from_slice(&ip);
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&sport.to_be_bytes());
        tcp.extend_from_slice(&dport.to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&[
            0,
            0,
            0,
            0,
            0x50,
            if syn { 0x02 } else { 0x10 },
            0,
            0,
            0,
            0,
            0,
            0,
        ]);
        f.extend_from_slice(&tcp);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn streams_are_put_back_in_order_once_each_across_arp_and_duplicates() {
        let (a, b) = ([10, 244, 0, 2], [10, 244, 0, 3]);
        let mut cap = Vec::new();
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&[0u8; 20]);
        cap.extend_from_slice(&arp);
        cap.extend(frame(a, 4000, b, 80, u32::MAX, true, b""));
        // The sequence numbers wrap; the second segment comes first, and
        // twice (two bridge ports).
        cap.extend(frame(a, 4000, b, 80, 5, false, b"world"));
        cap.extend(frame(a, 4000, b, 80, 5, false, b"world"));
        cap.extend(frame(a, 4000, b, 80, 0, false, b"hello"));
        cap.extend(frame(b, 80, a, 4000, 77, false, b"mid-way"));
        let streams = tcp_streams(&cap).unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0].bytes, b"helloworld");
        assert!(streams[0].from_start && !streams[0].gap);
        assert_eq!(streams[1].bytes, b"mid-way");
        assert!(!streams[1].from_start);
        assert_eq!(streams[1].src, "10.244.0.3:80".parse().unwrap());

        // A missed segment stops the stream there.
        let cap = [
            frame(a, 1, b, 2, 0, true, b""),
            frame(a, 1, b, 2, 9, false, b"x"),
        ]
        .concat();
        let s = &tcp_streams(&cap).unwrap()[0];
        assert!(s.gap && s.bytes.is_empty());
        let mut bad = frame(a, 1, b, 2, 0, true, b"");
        bad[12] = 0x88;
        assert!(tcp_streams(&bad).is_err());
    }

    #[test]
    fn only_tls_records_pass() {
        let hello = [&[0x16, 0x03, 0x01, 0x00, 0x02][..], &[1, 0]].concat();
        let data = [&[0x17, 0x03, 0x03, 0x00, 0x03][..], b"abc", &[0x17, 0x03]].concat();
        assert_eq!(
            tls_records(&[hello.clone(), data].concat()).unwrap(),
            vec![0x16, 0x17]
        );
        assert!(tls_records(b"GET /hello HTTP/1.1\r\n").is_err());
        assert!(tls_records(&[hello, b"HTTP/1.1 200 OK\r\n".to_vec()].concat()).is_err());
    }
}
