//! A pod as the destination of a watch on its own address (discovery.proto:
//! "a watch on a pod's own address returns exactly that pod as the only
//! endpoint"): what the proxy needs to reach the pod the application chose,
//! with TLS when it is meshed, without balancing away from it.
//!
//! Pure: built by the [`super::Store`] from its pods and namespaces.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use weft_proto::discovery::v1 as pb;

use super::objects::ObjKey;
use super::store::DestView;

/// One pod, whatever port is watched on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub key: ObjKey,
    pub meshed: bool,
    /// The SPIFFE ID its proxy presents, when meshed.
    pub identity: Option<String>,
    pub node: String,
    /// Ports that the pod's or its namespace's `weft.dev/opaque-ports` mark
    /// opaque.
    pub opaque_ports: BTreeSet<u16>,
}

impl PodView {
    /// The destination `addr` (one of the pod's IPs and any port): a profile
    /// that names no Service, and the pod as its one endpoint, ready and
    /// serving (the application chose it; the proxy only adds TLS).
    pub fn at(&self, addr: SocketAddr) -> DestView {
        let protocol = if self.opaque_ports.contains(&addr.port()) {
            pb::Protocol::Opaque
        } else {
            pb::Protocol::Unspecified
        };
        let profile = pb::Profile {
            port: u32::from(addr.port()),
            protocol: protocol as i32,
            ..pb::Profile::default()
        };
        let endpoint = pb::Endpoint {
            addr: Some(addr.into()),
            weight: 10_000,
            conditions: Some(pb::EndpointConditions {
                ready: true,
                serving: true,
                terminating: false,
            }),
            node_name: self.node.clone(),
            tls_identity: self
                .identity
                .clone()
                .map(|spiffe_id| pb::TlsIdentity { spiffe_id }),
            meshed: self.meshed,
            pod_name: self.key.1.clone(),
            pod_namespace: self.key.0.clone(),
            // The profile already says what the pod says.
            protocol_hint: pb::Protocol::Unspecified as i32,
            ..pb::Endpoint::default()
        };
        DestView {
            profile,
            consumers: BTreeMap::new(),
            endpoints: BTreeMap::from([(addr, endpoint)]),
        }
    }
}
