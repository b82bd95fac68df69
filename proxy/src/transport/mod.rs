//! Transport: what the proxy learns from and does with sockets.

pub mod orig_dst;
