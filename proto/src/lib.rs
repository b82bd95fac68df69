//! The weft control-plane API: the gRPC services that proxies call on the
//! control plane (port 8086), as protobuf and the Rust generated from it.
//!
//! | module | package | service |
//! |---|---|---|
//! | [`discovery::v1`] | `weft.discovery.v1` | `Discovery.Watch`: the endpoints and metadata of one destination, streamed |
//! | [`identity::v1`] | `weft.identity.v1` | `Identity.Certify`: a certificate for the proxy's SPIFFE identity |
//! | [`policy::v1`] | `weft.policy.v1` | `Policy.WatchInbound`: who may call a pod port, streamed |
//!
//! The `.proto` files under `proto/weft/` are the API reference: every message
//! and field is documented there, and the same text is on the generated
//! types. Each package is versioned; `v1` only ever grows compatibly.
//!
//! Each module has the messages, a client (`<service>_client::<Service>Client`)
//! and a server (`<service>_server::{<Service>, <Service>Server}`). Servers
//! can offer gRPC reflection from [`FILE_DESCRIPTOR_SET`].
//!
//! This crate holds nothing but the API and small conversions between its
//! messages and standard types (see [`discovery::v1::AddrError`]).

#![forbid(unsafe_code)]

/// The encoded `google.protobuf.FileDescriptorSet` of every weft package and
/// the well-known types they import, with source comments, for gRPC
/// reflection (e.g. `tonic_reflection`'s `register_encoded_file_descriptor_set`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/weft_descriptor.bin"));

/// The discovery API: which endpoints stand behind a destination.
pub mod discovery {
    /// Version 1 of `weft.discovery`.
    pub mod v1 {
        tonic::include_proto!("weft.discovery.v1");

        mod addr;
        pub use self::addr::AddrError;
    }
}

/// The identity API: certificates for proxies.
pub mod identity {
    /// Version 1 of `weft.identity`.
    pub mod v1 {
        tonic::include_proto!("weft.identity.v1");
    }
}

/// The policy API: inbound authorization of pod ports.
pub mod policy {
    /// Version 1 of `weft.policy`.
    pub mod v1 {
        tonic::include_proto!("weft.policy.v1");
    }
}

/// The URI a gRPC client dials for `addr` as weft's flags take it
/// (`host:port`, or `http://` / `https://` with one), or why it cannot be
/// one: weft-proxy's control-plane and collector addresses and
/// weft-control's `--trace-collector-addr` check it here alike.
pub fn grpc_uri(addr: &str) -> Result<String, String> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let parsed: tonic::codegen::http::Uri = uri
        .parse()
        .map_err(|e| format!("{addr:?} is not an address: {e}"))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) {
        return Err(format!("{addr:?}: the scheme must be http or https"));
    }
    match parsed.authority() {
        Some(a) if !a.host().is_empty() && a.port_u16().is_some() => Ok(uri),
        _ => Err(format!("{addr:?} is not host:port")),
    }
}
