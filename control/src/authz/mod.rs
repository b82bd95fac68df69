//! Inbound policy served to proxies: the hub that holds each pod's
//! current [`PodPolicy`] ([`hub`]), and the `weft.policy.v1.Policy` gRPC
//! service that streams one pod port's policy from it ([`service`]).
//!
//! The model task computes a pod's policy once per change that affects it
//! (the pod, its namespace, a TrafficTarget, HTTPRouteGroup or TCPRoute of
//! its namespace) and publishes it here; a stream projects it onto its
//! port and sends it when that port's message changed.
//!
//! [`PodPolicy`]: crate::model::authz::PodPolicy

pub mod hub;
pub mod service;

pub use hub::PolicyHub;
pub use service::PolicyService;
