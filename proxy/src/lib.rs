//! weft-proxy: the sidecar data plane.
//!
//! So far this holds the transport pieces the interception path needs (the
//! original destination of a redirected connection); the listeners, protocol
//! detection and forwarding are built on them.
#![forbid(unsafe_code)]

pub mod transport;
