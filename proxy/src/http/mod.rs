//! HTTP/1 and HTTP/2 proxying, shared by both directions: a detected
//! connection is served with hyper ([`server`]), and each request is
//! forwarded to the [`Target`] its direction's chain chose for it over a
//! reused upstream connection of the same protocol, bodies streamed both
//! ways ([`forward`]).
//!
//! | file | what |
//! |---|---|
//! | `server.rs` | hyper's server builders; serving one client connection |
//! | `forward.rs` | one client connection's forwarding state; a request in, a response out |
//! | `dispatch.rs` | the deadline and the retries around a request |
//! | `send.rs` | one attempt: to an address or a balanced endpoint |
//! | `flood.rs` | an HTTP/2 client's control-frame budget |
//! | `upgrade.rs` | WebSocket / h2c upgrades spliced after 101 |
//! | `body.rs` | the body type sent upstream and answered with |
//! | `replay.rs` | a request's body shared by its attempts, kept up to 64 KiB |
//! | `deadline.rs` | the deadline headers (`grpc-timeout`, `weft-timeout`) |
//! | `headers.rs` | hop-by-hop headers |
//! | `session.rs` | a client connection's upstream HTTP/1 connection |
//!
//! Upstream connections themselves are made and kept by [`crate::client`]:
//! a balanced endpoint's by the endpoint, a plain address's HTTP/2 one by
//! the client connection.

pub mod body;
pub mod deadline;
mod dispatch;
mod flood;
pub mod forward;
pub mod headers;
mod replay;
mod send;
pub mod server;
pub mod session;
mod upgrade;

use std::net::SocketAddr;

use crate::discovery::Dest;

pub use forward::Forward;
pub use server::{Ended, HttpServer};

pub use body::{Body, BodyError};

/// Where one request goes, as its direction's chain decided.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// One address: the original destination, or the app inbound.
    Addr(SocketAddr),
    /// An endpoint of a Service, picked by its balancer, with the Service's
    /// retry and timeout policy.
    Balanced(&'a Dest),
}

impl Target<'_> {
    /// The address errors name (a balanced target's is the Service's).
    pub fn addr(&self) -> SocketAddr {
        match self {
            Target::Addr(a) => *a,
            Target::Balanced(d) => d.addr,
        }
    }
}
