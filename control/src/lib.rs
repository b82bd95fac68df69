//! weft-control: the control plane (discovery, identity, policy).
//!
//! Reserved in the workspace; its sources, model and gRPC servers are the
//! subject of their own issues and are not built yet.
#![forbid(unsafe_code)]
