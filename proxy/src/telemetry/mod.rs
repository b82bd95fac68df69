//! What the proxy tells operators: Prometheus metrics (served by the admin
//! server) and logs.

pub mod histogram;
pub mod metrics;
pub mod process;
mod series;

pub use metrics::{ConnMetrics, Direction, HttpMetrics, MeshIds, Metrics, Protocol};
