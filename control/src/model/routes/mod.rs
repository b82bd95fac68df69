//! Traffic routing: SMI TrafficSplit, HTTPRouteGroup and TCPRoute, and the
//! Gateway API's HTTPRoute and GRPCRoute attached to a Service (GAMMA).
//!
//! The types as written are in [`smi`] and [`gateway`]; [`check`] checks
//! each object alone (the model refuses a bad one and keeps its last good
//! version) into what the model keeps; [`table`] is the plain-data form of
//! a destination's routing.

pub mod check;
pub mod gateway;
pub mod smi;
pub mod table;

pub use table::*;
