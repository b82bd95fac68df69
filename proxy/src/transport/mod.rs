//! Transport: sockets, and what the proxy learns from and wraps around them.

pub mod connect;
pub mod io;
pub mod listen;
pub mod orig_dst;
