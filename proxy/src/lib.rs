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
//! detect              HTTP/1, HTTP/2 (prior knowledge), mesh TLS (inbound)
//!                     or opaque TCP
//! tls                 mesh TLS: terminated inbound (client identity
//!                     recorded), originated to meshed endpoints (server
//!                     identity verified against discovery's)
//! identity            the proxy's key and certificate, renewed
//! http                hyper server → upstream connection of the same protocol
//! opaque              bidirectional copy with half-close and idle timeout
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod config;
pub mod detect;
pub mod discover;
pub mod errors;
pub mod http;
pub mod identity;
pub mod opaque;
pub mod proxy;
pub mod run;
pub mod telemetry;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod time;
pub mod tls;
pub mod transport;
