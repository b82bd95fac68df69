//! What the benchmark watches and changes: which Service each stream
//! watches, and the sequence of EndpointSlice changes. Pure data, no I/O.
//!
//! Service 0 (one of the largest) is the hot one, watched by `hot_streams`
//! streams; the other streams are spread round-robin over `warm_services`
//! Services picked evenly across the tiers. Changes alternate between the
//! hot Service and the warm ones in turn. The n-th change of a Service
//! removes one endpoint from one of its slices when n is even and puts it
//! back when n is odd, so slices never grow past their size and every
//! change is exactly one `Remove` or one `Add` of one address for each
//! watcher.

use std::net::{Ipv4Addr, SocketAddr};

use crate::layout::{Layout, TARGET_PORT};

/// Which Services the streams watch.
#[derive(Clone, Debug)]
pub struct Watches {
    pub hot: usize,
    pub warm: Vec<usize>,
    /// The Service of each stream.
    pub streams: Vec<usize>,
}

impl Watches {
    /// `streams` streams, `hot_streams` of them on the hot Service, the
    /// others over `warm_services` Services (which must be fewer than the
    /// Services of `layout`).
    pub fn new(layout: &Layout, streams: usize, hot_streams: usize, warm_services: usize) -> Self {
        let n = layout.services.len();
        let warm: Vec<usize> = (0..warm_services)
            .map(|k| 1 + k * (n - 1) / warm_services.max(1))
            .collect();
        let streams = (0..streams)
            .map(|w| match w.checked_sub(hot_streams) {
                Some(i) if !warm.is_empty() => warm[i % warm.len()],
                _ => 0,
            })
            .collect();
        Self {
            hot: 0,
            warm,
            streams,
        }
    }

    /// How many streams watch `service`.
    pub fn watchers_of(&self, service: usize) -> usize {
        self.streams.iter().filter(|s| **s == service).count()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Remove,
    Add,
}

/// One EndpointSlice change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub service: usize,
    pub slice: usize,
    pub op: Op,
    /// The endpoint removed or added, as watchers see it (ip:target port).
    pub addr: SocketAddr,
    /// How many earlier changes had the same service, op and address.
    pub occurrence: usize,
}

impl Change {
    /// Applies the change to `layout` (the source's current state).
    pub fn apply_to(&self, layout: &mut Layout) {
        let SocketAddr::V4(v4) = self.addr else {
            unreachable!("the layout is IPv4")
        };
        let ips = &mut layout.services[self.service].slices[self.slice];
        match self.op {
            Op::Remove => ips.retain(|ip| ip != v4.ip()),
            Op::Add => ips.push(*v4.ip()),
        }
    }
}

/// `count` changes, alternating hot and warm (all hot without warm Services).
pub fn changes(layout: &Layout, watches: &Watches, count: usize) -> Vec<Change> {
    let mut per_service = vec![0usize; layout.services.len()];
    (0..count)
        .map(|i| {
            let service = match (i % 2, watches.warm.is_empty()) {
                (0, _) | (_, true) => watches.hot,
                _ => watches.warm[(i / 2) % watches.warm.len()],
            };
            let n = per_service[service];
            per_service[service] += 1;
            let spec = &layout.services[service];
            let total = spec.endpoints();
            let round = n / 2;
            // The round-th endpoint of the Service, in slice order.
            let mut pos = round % total;
            let slice = spec
                .slices
                .iter()
                .position(|s| {
                    let here = pos < s.len();
                    if !here {
                        pos -= s.len();
                    }
                    here
                })
                .expect("pos is below the Service's endpoint count");
            let ip: Ipv4Addr = spec.slices[slice][pos];
            Change {
                service,
                slice,
                op: if n.is_multiple_of(2) {
                    Op::Remove
                } else {
                    Op::Add
                },
                addr: SocketAddr::from((ip, TARGET_PORT)),
                occurrence: round / total,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::SLICE_MAX;

    #[test]
    fn streams_spread_over_hot_and_warm_services() {
        let layout = Layout::new(1000, 20_000).unwrap();
        let w = Watches::new(&layout, 2000, 500, 100);
        assert_eq!(w.streams.len(), 2000);
        assert_eq!(w.watchers_of(0), 500);
        assert_eq!(w.warm.len(), 100);
        assert!(!w.warm.contains(&0) && w.warm.iter().all(|s| *s < 1000));
        assert!(w.warm.iter().all(|s| w.watchers_of(*s) == 15));
        let sizes: Vec<usize> = w
            .warm
            .iter()
            .map(|s| layout.services[*s].endpoints())
            .collect();
        assert!(
            sizes.contains(&200) && sizes.contains(&100) && sizes.contains(&10),
            "{sizes:?}"
        );
    }

    #[test]
    fn changes_remove_then_restore_and_keep_slices_small() {
        let mut layout = Layout::new(100, 2000).unwrap();
        let w = Watches::new(&layout, 200, 50, 10);
        let plan = changes(&layout, &w, 40);
        assert_eq!(plan.iter().filter(|c| c.service == 0).count(), 20);
        assert_eq!(plan[0].op, Op::Remove);
        assert_eq!((plan[2].op, plan[2].addr), (Op::Add, plan[0].addr));
        let mut seen = std::collections::HashSet::new();
        for c in &plan {
            assert!(
                seen.insert((c.service, c.op, c.addr, c.occurrence)),
                "{c:?} twice"
            );
            let before = layout.services[c.service].slices[c.slice].len();
            c.apply_to(&mut layout);
            let after = layout.services[c.service].slices[c.slice].len();
            match c.op {
                Op::Remove => assert_eq!(after + 1, before),
                Op::Add => assert_eq!(after, before + 1),
            }
            assert!(after <= SLICE_MAX);
        }
        assert_eq!(layout.endpoints(), 2000, "every removal was put back");
    }

    #[test]
    fn without_warm_services_every_change_is_hot() {
        let layout = Layout::new(10, 2000).unwrap();
        let w = Watches::new(&layout, 5, 5, 0);
        assert!(changes(&layout, &w, 6).iter().all(|c| c.service == 0));
    }
}
