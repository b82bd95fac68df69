//! The cluster the benchmark loads into the fake API server: how many
//! Services, how their endpoints are cut into EndpointSlices, and the JSON of
//! each object. Pure data, no I/O.
//!
//! The endpoints are spread over three tiers, as in a real cluster where a
//! few Services are large and most are small: 1% of the Services have 200
//! endpoints each (two full slices of 100), 9% have 100 (one full slice),
//! and the other 90% share the rest evenly (the default 1,000 Services and
//! 20,000 endpoints: 10 × 200, 90 × 100, 900 × 10). No slice holds more
//! than [`SLICE_MAX`] endpoints.

use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// The most endpoints in one EndpointSlice (the EndpointSlice controller's
/// default `--max-endpoints-per-slice`).
pub const SLICE_MAX: usize = 100;
/// Namespaces the Services are spread over.
pub const NAMESPACES: usize = 10;
/// Every Service's port, and the port its endpoints listen on.
pub const SERVICE_PORT: u16 = 80;
pub const TARGET_PORT: u16 = 8080;
const LARGE: usize = 200;
const MEDIUM: usize = 100;

/// One Service and the endpoints of each of its slices, as they are now.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub slices: Vec<Vec<Ipv4Addr>>,
}

impl ServiceSpec {
    pub fn endpoints(&self) -> usize {
        self.slices.iter().map(Vec::len).sum()
    }

    pub fn json(&self) -> Value {
        json!({
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "clusterIP": self.cluster_ip.to_string(),
                "clusterIPs": [self.cluster_ip.to_string()],
                "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
        })
    }

    pub fn slice_name(&self, slice: usize) -> String {
        format!("{}-{slice}", self.name)
    }

    /// Slice `slice` with its current endpoints, as the EndpointSlice
    /// controller writes it (each endpoint a ready pod on some node).
    pub fn slice_json(&self, slice: usize) -> Value {
        let endpoints: Vec<Value> = self.slices[slice]
            .iter()
            .map(|ip| {
                let n = u32::from(*ip);
                json!({
                    "addresses": [ip.to_string()],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                    "nodeName": format!("node-{}", n % 50),
                    "zone": format!("zone-{}", n % 3),
                    "targetRef": {"kind": "Pod", "namespace": self.namespace, "name": pod_name(*ip)},
                })
            })
            .collect();
        json!({
            "metadata": {
                "name": self.slice_name(slice),
                "namespace": self.namespace,
                "labels": {"kubernetes.io/service-name": self.name},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}],
            "endpoints": endpoints,
        })
    }

    /// The meshed Pods behind the Service's endpoints.
    pub fn pods_json(&self) -> impl Iterator<Item = Value> + '_ {
        self.slices.iter().flatten().map(|ip| {
            json!({
                "metadata": {"name": pod_name(*ip), "namespace": self.namespace},
                "spec": {
                    "serviceAccountName": self.name,
                    "containers": [{"name": "app", "image": "app"}, {"name": "weft-proxy", "image": "weft-proxy"}],
                },
                "status": {"podIP": ip.to_string()},
            })
        })
    }
}

fn pod_name(ip: Ipv4Addr) -> String {
    let [_, b, c, d] = ip.octets();
    format!("pod-{b}-{c}-{d}")
}

/// Every Service of the benchmark cluster.
#[derive(Clone, Debug)]
pub struct Layout {
    pub services: Vec<ServiceSpec>,
}

impl Layout {
    /// `services` Services with `endpoints` endpoints in all, in the tiers
    /// of the module documentation.
    pub fn new(services: usize, endpoints: usize) -> Result<Self> {
        if services == 0 {
            bail!("there must be at least one Service");
        }
        let large = (services / 100).max(1);
        let medium = (services * 9 / 100).min(services - large);
        let small = services - large - medium;
        let rest = endpoints.checked_sub(large * LARGE + medium * MEDIUM);
        let sizes: Vec<usize> = match rest {
            Some(rest) if small == 0 && rest == 0 => vec![],
            Some(rest) if small > 0 && rest >= 2 * small => {
                (0..small).map(|i| rest / small + usize::from(i < rest % small)).collect()
            }
            _ => bail!(
                "{endpoints} endpoints are too few for {services} Services \
                 ({large} × {LARGE} + {medium} × {MEDIUM} + at least 2 for each of the other {small})"
            ),
        };
        let sizes = std::iter::repeat_n(LARGE, large)
            .chain(std::iter::repeat_n(MEDIUM, medium))
            .chain(sizes);
        let mut next_ip = u32::from(Ipv4Addr::new(10, 244, 0, 1));
        let services = sizes
            .enumerate()
            .map(|(i, size)| {
                let ips: Vec<Ipv4Addr> = (0..size)
                    .map(|k| Ipv4Addr::from(next_ip + k as u32))
                    .collect();
                next_ip += size as u32;
                ServiceSpec {
                    namespace: format!("bench-{}", i % NAMESPACES),
                    name: format!("svc-{i:04}"),
                    cluster_ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i as u32),
                    slices: ips.chunks(SLICE_MAX).map(<[_]>::to_vec).collect(),
                }
            })
            .collect();
        Ok(Self { services })
    }

    pub fn endpoints(&self) -> usize {
        self.services.iter().map(ServiceSpec::endpoints).sum()
    }

    pub fn slices(&self) -> usize {
        self.services.iter().map(|s| s.slices.len()).sum()
    }

    pub fn namespaces(&self) -> Vec<Value> {
        (0..NAMESPACES.min(self.services.len()))
            .map(|i| json!({"metadata": {"name": format!("bench-{i}")}}))
            .collect()
    }

    /// `1,000 Services, 20,000 endpoints in 1,010 EndpointSlices (10 × 200, 90 × 100, 900 × 10)`.
    pub fn describe(&self) -> String {
        let mut tiers: Vec<(usize, usize)> = Vec::new();
        for s in &self.services {
            match tiers.last_mut() {
                Some((n, size)) if *size == s.endpoints() => *n += 1,
                _ => tiers.push((1, s.endpoints())),
            }
        }
        let tiers: Vec<String> = tiers
            .iter()
            .map(|(n, size)| format!("{} × {size}", thousands(*n)))
            .collect();
        format!(
            "{} Services, {} endpoints in {} EndpointSlices of at most {SLICE_MAX} ({} endpoints per Service)",
            thousands(self.services.len()),
            thousands(self.endpoints()),
            thousands(self.slices()),
            tiers.join(", ")
        )
    }
}

/// `20,000`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_default_cluster_adds_up() {
        let l = Layout::new(1000, 20_000).unwrap();
        assert_eq!(l.services.len(), 1000);
        assert_eq!(l.endpoints(), 20_000);
        assert_eq!(l.slices(), 10 * 2 + 90 + 900);
        assert!(l
            .services
            .iter()
            .flat_map(|s| &s.slices)
            .all(|s| !s.is_empty() && s.len() <= SLICE_MAX));
        assert_eq!(l.services[0].slices.len(), 2);
        assert_eq!(l.services[999].endpoints(), 10);
        let ips: BTreeSet<_> = l
            .services
            .iter()
            .flat_map(|s| s.slices.iter().flatten())
            .collect();
        assert_eq!(ips.len(), 20_000, "every endpoint has its own address");
        let cips: BTreeSet<_> = l.services.iter().map(|s| s.cluster_ip).collect();
        assert_eq!(cips.len(), 1000);
        assert_eq!(
            l.describe(),
            "1,000 Services, 20,000 endpoints in 1,010 EndpointSlices of at most 100 \
             (10 × 200, 90 × 100, 900 × 10 endpoints per Service)"
        );
    }

    #[test]
    fn other_sizes_add_up_or_are_refused() {
        for (s, e) in [(100, 2000), (7, 2000), (1, 200), (333, 12_345)] {
            let l = Layout::new(s, e).unwrap();
            assert_eq!((l.services.len(), l.endpoints()), (s, e));
            assert!(l
                .services
                .iter()
                .flat_map(|s| &s.slices)
                .all(|s| s.len() <= SLICE_MAX));
        }
        assert!(Layout::new(1000, 5000).is_err());
        assert!(Layout::new(0, 10).is_err());
        assert!(Layout::new(1, 201).is_err());
    }

    #[test]
    fn objects_name_each_other() {
        let l = Layout::new(100, 2000).unwrap();
        let s = &l.services[3];
        let slice = s.slice_json(0);
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            s.name.as_str()
        );
        assert_eq!(slice["endpoints"].as_array().unwrap().len(), 100);
        let pod = s.pods_json().next().unwrap();
        assert_eq!(
            slice["endpoints"][0]["targetRef"]["name"],
            pod["metadata"]["name"]
        );
        assert_eq!(s.json()["spec"]["clusterIP"], "10.96.0.4");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
