//! Small helpers that cut the fuzzer's bytes into the pieces a target
//! needs, in forms a person can write as a seed.

/// The first byte (0 when there is none) and the rest.
pub fn split_byte(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((b, rest)) => (*b, rest),
        None => (0, &[]),
    }
}

/// A length-prefixed piece (2 bytes, big-endian) and the rest; the whole
/// input when the length runs past its end.
pub fn split_len16(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return (data, &[]);
    };
    let len = usize::from(u16::from_be_bytes(*len));
    if len > rest.len() {
        return (rest, &[]);
    }
    rest.split_at(len)
}

/// A request written as text: `METHOD target` on the first line, then
/// `name: value` lines; `None` when http will not take it.
pub fn request(text: &[u8]) -> Option<http::Request<()>> {
    let mut lines = text.split(|b| *b == b'\n');
    let first = lines.next()?;
    let mut words = first.splitn(2, |b| *b == b' ');
    let method = http::Method::from_bytes(words.next()?).ok()?;
    let uri = http::Uri::try_from(words.next().unwrap_or(b"/")).ok()?;
    let mut req = http::Request::builder().method(method).uri(uri);
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = http::HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        let value = http::HeaderValue::from_bytes(value).ok()?;
        req = req.header(name, value);
    }
    req.body(()).ok()
}
