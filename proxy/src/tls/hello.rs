//! Reading a TLS ClientHello far enough to see its ALPN protocols, so that
//! the inbound side can tell mesh TLS (a weft ALPN protocol) from the app's
//! own TLS (anything else, passed through untouched) before any byte is
//! answered.

/// The TLS record header: content type, legacy version, length.
const RECORD_HEADER: usize = 5;
const HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 0x01;
const EXT_ALPN: u16 = 16;
/// The largest record TLS allows (2^14 plus the header).
pub const MAX_RECORD: usize = RECORD_HEADER + (1 << 14);

/// What the first bytes of a connection say about TLS.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello<'a> {
    /// Not a TLS handshake.
    NotTls,
    /// A TLS handshake record, not complete yet.
    NeedMore,
    /// A whole ClientHello; the ALPN protocols it offers (wire format:
    /// length-prefixed names), empty when it offers none.
    ClientHello { alpn: Alpn<'a> },
}

/// The ALPN protocol list of a ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alpn<'a>(&'a [u8]);

impl<'a> Alpn<'a> {
    pub fn iter(self) -> impl Iterator<Item = &'a [u8]> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let len = usize::from(len);
            if len == 0 || tail.len() < len {
                rest = &[];
                return None;
            }
            let (name, tail) = tail.split_at(len);
            rest = tail;
            Some(name)
        })
    }
}

/// Looks at the first bytes of a connection. A ClientHello split over
/// several records is read from the first record only (ALPN is almost
/// always there); a malformed one is [`Hello::NotTls`].
pub fn parse(buf: &[u8]) -> Hello<'_> {
    match buf {
        [] => return Hello::NeedMore,
        [HANDSHAKE] | [HANDSHAKE, 3] => return Hello::NeedMore,
        [HANDSHAKE, 3, ..] => {}
        _ => return Hello::NotTls,
    }
    if buf.len() < RECORD_HEADER {
        return Hello::NeedMore;
    }
    let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    let Some(record) = buf.get(RECORD_HEADER..RECORD_HEADER + len) else {
        return Hello::NeedMore;
    };
    match client_hello_alpn(record) {
        Some(alpn) => Hello::ClientHello { alpn: Alpn(alpn) },
        None => Hello::NotTls,
    }
}

/// A cursor that fails instead of panicking on short input.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    /// A vector with a 1- or 2-byte length in front.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The ALPN extension's protocol list (possibly empty) of the ClientHello
/// at the start of `record`; None when it is not a well-formed ClientHello.
fn client_hello_alpn(record: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(record);
    if r.u8()? != usize::from(CLIENT_HELLO) {
        return None;
    }
    // The handshake length (3 bytes); the body may continue in a next
    // record, so it is not required to fit in this one.
    r.take(3)?;
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    let mut extensions = Reader(r.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if kind == usize::from(EXT_ALPN) {
            return Reader(data).vec16();
        }
    }
    Some(&[])
}

/// A ClientHello as rustls writes it, offering `alpn` (for tests).
#[cfg(test)]
pub fn rustls_hello(alpn: &[&[u8]]) -> Vec<u8> {
    use rustls::pki_types::ServerName;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from("example.test").unwrap();
    let mut conn = rustls::ClientConnection::new(config.into(), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_alpn_of_a_real_client_hello() {
        let bytes = rustls_hello(&[b"weft.h2", b"h2"]);
        let Hello::ClientHello { alpn } = parse(&bytes) else {
            panic!("not parsed");
        };
        let names: Vec<_> = alpn.iter().collect();
        assert_eq!(names, [&b"weft.h2"[..], b"h2"]);

        let bytes = rustls_hello(&[]);
        let Hello::ClientHello { alpn } = parse(&bytes) else {
            panic!("not parsed");
        };
        assert_eq!(alpn.iter().count(), 0);
    }

    #[test]
    fn waits_for_the_whole_record() {
        let bytes = rustls_hello(&[b"weft.http1"]);
        for cut in [0, 1, 2, 4, 5, 40, bytes.len() - 1] {
            assert_eq!(parse(&bytes[..cut]), Hello::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn anything_else_is_not_tls() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse(b"\x16\x02"), Hello::NotTls);
        // A handshake record that is not a ClientHello, or is cut short inside.
        assert_eq!(parse(b"\x16\x03\x01\x00\x02\x02\x00"), Hello::NotTls);
        assert_eq!(
            parse(b"\x16\x03\x01\x00\x04\x01\x00\x00\x50"),
            Hello::NotTls
        );
        // ALPN list lengths that lie do not panic.
        let mut bytes = rustls_hello(&[b"weft.h2"]);
        let at = bytes.windows(7).position(|w| w == b"weft.h2").unwrap();
        bytes[at - 1] = 200;
        if let Hello::ClientHello { alpn } = parse(&bytes) {
            assert_eq!(alpn.iter().count(), 0);
        }
    }
}
