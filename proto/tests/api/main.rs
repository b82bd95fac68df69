//! Tests of the weft control-plane API as other crates see it: its wire
//! format, its documentation, and its generated clients and servers talking
//! over loopback.
//!
//! One test binary with a module per concern, so the crate links once.

mod descriptor;
mod grpc;
mod wire;
