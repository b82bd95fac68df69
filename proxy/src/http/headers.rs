//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so a
//! proxy removes them before forwarding, together with every header that
//! `Connection` names. An upgrade keeps `Connection: upgrade` and `Upgrade`,
//! which it needs on the next hop too.

use http::header::{self, HeaderMap, HeaderName};

/// Hop-by-hop headers beyond those `Connection` lists.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Whether an HTTP/1 request asks to switch protocols (WebSocket, h2c).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers; with `upgrade`, keeps what the upgrade needs.
/// `te: trailers` stays: it says the client can take trailers, which gRPC
/// and chunked responses may carry end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names first: most requests and responses carry
    // none of these, and the ten lookups below that then find nothing were
    // 1,450 instructions a message, 2,900 a request in each proxy, 9% of
    // it (callgrind, `weft-bench --callgrind`, HTTP/1.1).
    if !upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Headers named by Connection, if any (the common request has none).
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| !(upgrade && (*n == header::UPGRADE)))
            .collect();
        for name in named {
            headers.remove(&name);
        }
    }
    for name in &HOP_BY_HOP {
        if upgrade && (*name == header::CONNECTION || *name == header::UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
    if upgrade {
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("upgrade"),
        );
    }
    if let Some(te) = headers.get(header::TE) {
        if !te.as_bytes().eq_ignore_ascii_case(b"trailers") {
            headers.remove(header::TE);
        }
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Whether `name` is one [`strip_hop_by_hop`] may remove without
/// `Connection` naming it.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
        || name == header::TE
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("host", "example"),
            ("x-end-to-end", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-end-to-end"]);
    }

    #[test]
    fn keeps_te_trailers_and_upgrade_headers_when_upgrading() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");

        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        // The one pass that lets a message without any skip the lookups
        // must see each of them.
        for name in [
            "connection",
            "transfer-encoding",
            "upgrade",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "keep-alive",
            "proxy-connection",
        ] {
            let mut h = map(&[(name, "x"), ("host", "example")]);
            strip_hop_by_hop(&mut h, false);
            let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(left, ["host"], "{name}");
        }
        let mut h = map(&[("host", "example"), ("accept", "*/*")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "nothing hop-by-hop: untouched");
    }
}
