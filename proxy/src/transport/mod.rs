//! Transport: sockets, and what the proxy learns from and wraps around them;
//! the byte-for-byte copy of opaque TCP.

pub mod connect;
pub mod io;
pub mod listen;
pub mod opaque;
pub mod orig_dst;
pub mod tasks;
