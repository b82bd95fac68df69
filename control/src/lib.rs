//! weft-control: the control plane. Sources (Kubernetes, or a directory of
//! the same YAML) feed one model; the discovery server streams each
//! destination's state to the proxies that watch it.
#![forbid(unsafe_code)]

pub mod admin;
pub mod authz;
pub mod check;
pub mod config;
pub mod conn_limit;
pub mod discovery;
pub mod encoded;
pub mod events;
pub mod hub;
pub mod identity;
pub mod inject;
pub mod metrics;
pub mod model;
pub mod ready;
pub mod run;
pub mod sources;
pub mod stat;
pub mod trace;
pub mod webhook;
