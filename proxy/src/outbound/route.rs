//! Outbound routing: one pure function from what discovery said about a
//! connection's destination and a request's head to a [`Plan`] for that
//! request. Today a plan is "this Service's balancer" or "the original
//! destination"; SMI and Gateway API routes will pick backends, timeouts
//! and retries here.

use std::net::SocketAddr;

use crate::discovery::{Resolution, Resolved};
use crate::http::Target;

/// What to do with one request (HTTP) or one connection (opaque TCP).
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    pub target: Target<'a>,
}

/// The plan for a request to `orig` with head `req`.
pub fn route<'a, B>(view: &'a Resolved, orig: SocketAddr, req: &http::Request<B>) -> Plan<'a> {
    let _ = req; // Routes match on the head; none are read yet.
    route_tcp(view, orig)
}

/// The plan for an opaque TCP connection to `orig`.
pub fn route_tcp(view: &Resolved, orig: SocketAddr) -> Plan<'_> {
    let target = match view {
        Resolved::Passthrough => Target::Addr(orig),
        Resolved::Service(dest) => Target::Balanced(dest),
    };
    Plan { target }
}

/// Whether a connection to `orig` is worth protocol detection: not when its
/// Service or its port is marked opaque.
pub fn detects_http(view: &Resolved, orig: SocketAddr, opaque_ports: &[u16]) -> bool {
    let opaque_service = matches!(view, Resolved::Service(d)
        if d.resolution() == (Resolution::Service { opaque: true }));
    !(opaque_service || opaque_ports.contains(&orig.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Dest;

    fn get(path: &str) -> http::Request<()> {
        http::Request::get(path).body(()).unwrap()
    }

    #[test]
    fn unknown_destinations_go_to_their_original_address() {
        let orig: SocketAddr = "10.1.2.3:5432".parse().unwrap();
        let plan = route(&Resolved::Passthrough, orig, &get("/"));
        assert!(matches!(plan.target, Target::Addr(a) if a == orig));
        assert!(
            matches!(route_tcp(&Resolved::Passthrough, orig).target, Target::Addr(a) if a == orig)
        );
    }

    #[test]
    fn a_service_is_balanced_whatever_the_request() {
        let orig: SocketAddr = "10.96.0.10:80".parse().unwrap();
        let view = Resolved::Service(Dest::for_test(orig, Resolution::Service { opaque: false }));
        for req in [
            get("/"),
            get("/api/v1?x=1"),
            http::Request::post("/").body(()).unwrap(),
        ] {
            let plan = route(&view, orig, &req);
            assert!(matches!(plan.target, Target::Balanced(d) if d.addr == orig));
        }
        assert!(matches!(route_tcp(&view, orig).target, Target::Balanced(d) if d.addr == orig));
    }

    #[test]
    fn opaque_services_and_ports_skip_detection() {
        let orig: SocketAddr = "10.96.0.10:80".parse().unwrap();
        let http = Resolved::Service(Dest::for_test(orig, Resolution::Service { opaque: false }));
        let opaque = Resolved::Service(Dest::for_test(orig, Resolution::Service { opaque: true }));
        assert!(detects_http(&http, orig, &[]));
        assert!(!detects_http(&opaque, orig, &[]));
        assert!(!detects_http(&http, orig, &[80]));
        assert!(detects_http(&Resolved::Passthrough, orig, &[25]));
        assert!(!detects_http(
            &Resolved::Passthrough,
            "10.0.0.1:25".parse().unwrap(),
            &[25]
        ));
    }
}
