//! weft-proxy: the sidecar data plane.
//!
//! The path of a connection, stage by stage (each a module):
//!
//! ```text
//! transport::listen   accept (bounded by a connection limit)
//! transport::orig_dst the original destination iptables redirected from
//! proxy               loop check, target (outbound: the original destination;
//!                     inbound: the app on 127.0.0.1:<port>)
//! detect              HTTP/1, HTTP/2 (prior knowledge) or opaque TCP
//! http                hyper server → upstream connection of the same protocol
//! opaque              bidirectional copy with half-close and idle timeout
//! ```
//!
//! Discovery, balancing, mTLS and routing plug in between `proxy` and
//! `http`/`opaque`: the target becomes a balanced endpoint, the upstream
//! connection a TLS one.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod detect;
pub mod errors;
pub mod http;
pub mod opaque;
pub mod proxy;
pub mod run;
pub mod telemetry;
pub mod transport;
