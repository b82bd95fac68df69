//! weft-proxy: the sidecar data plane.
//!
//! Each direction is its own chain of plain async functions, read top to
//! bottom in its module; the layers below are shared.
//!
//! ```text
//! run          start-up: bind, build, serve until shutdown, drain
//! shared       what every handler needs; the original destination, loop check
//! outbound     app → Service: resolve, detect, route (a pure function), forward
//! inbound      peer → app: detect, terminate mesh TLS, authorize, forward
//! http         hyper server; per request: deadline, retries, send, upgrades
//! discovery    Discovery.Watch per outbound destination → balancer, policy
//! balance      p2c over Peak-EWMA, failure accrual; pick, connect, fail over;
//!              each endpoint owns its connections
//! client       HTTP/1 and HTTP/2 upstream connections: made, kept per destination
//! detect       HTTP/1, HTTP/2 (prior knowledge), mesh TLS (inbound), opaque
//! tls          mesh TLS contexts: terminated inbound, originated outbound
//! identity     the proxy's key and certificate, renewed
//! transport    listen, original destination, connect, byte counting, opaque copy
//! telemetry    metrics (bounded), process metrics
//! admin        /live /ready /metrics /config /identity /shutdown
//! errors       the proxy's errors, and the one place they become responses
//! ```
//!
//! Imports point down this list (a module uses only those below it), but
//! for `errors` and `config`, which everything may use.
#![forbid(unsafe_code)]

pub mod admin;
pub mod await_ready;
pub mod balance;
pub mod client;
pub mod config;
pub mod detect;
pub mod discovery;
pub mod errors;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod outbound;
pub mod run;
pub mod shared;
pub mod telemetry;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod time;
pub mod tls;
pub mod trace;
pub mod transport;
