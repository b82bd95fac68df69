//! weft-proxy: the sidecar data plane.
//!
//! The path of a connection, stage by stage (each a module):
//!
//! ```text
//! transport::listen   accept (bounded by a connection limit)
//! transport::orig_dst the original destination iptables redirected from
//! proxy               loop check, target (outbound: a Service's balanced
//!                     endpoints or the original destination; inbound: the
//!                     app on 127.0.0.1:<port>)
//! discover            Discovery.Watch per outbound destination → balancer
//! balance             p2c over Peak-EWMA, failure accrual
//! detect              HTTP/1, HTTP/2 (prior knowledge) or opaque TCP
//! http                hyper server → upstream connection of the same protocol
//! opaque              bidirectional copy with half-close and idle timeout
//! ```
//!
//! mTLS and routing plug in between `proxy` and `http`/`opaque`: the
//! upstream connection becomes a TLS one, the target a route's backend.
#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod config;
pub mod detect;
pub mod discover;
pub mod errors;
pub mod http;
pub mod opaque;
pub mod proxy;
pub mod run;
pub mod telemetry;
pub mod transport;
