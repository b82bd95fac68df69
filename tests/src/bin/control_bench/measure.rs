//! From the streams' logs to the figures: for each change, when its
//! address reached the first and the last of the streams watching its
//! Service; which deliveries are missing (coalesced or lost) and which came
//! unasked. Pure, no I/O.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::plan::{Change, Op, Watches};
use crate::watchers::Log;

/// Per stream: (op, addr) → arrival times in order, each taken once.
type Arrivals = HashMap<(Op, SocketAddr), Vec<Option<Instant>>>;

/// Change → watcher latencies and delivery counts.
#[derive(Debug, Default)]
pub struct Fanout {
    /// Per change of the hot Service that every watcher got: apply → last watcher.
    pub hot_last: Vec<Duration>,
    /// The same for the warm Services.
    pub warm_last: Vec<Duration>,
    /// Per change: apply → first watcher.
    pub first: Vec<Duration>,
    /// Changes that some watcher never got (left out of the latencies).
    pub incomplete: usize,
    /// (change, watcher) pairs expected, received and missing.
    pub expected: usize,
    pub received: usize,
    pub missed: usize,
    /// Addresses received that no change explains.
    pub unexpected: usize,
    /// Snapshots after the first (the server coalesced changes), and
    /// `NoEndpoints`/`DoesNotExist`/`Profile` updates: none expected.
    pub resnapshots: usize,
    pub others: usize,
}

/// Matches each change (applied at `applied[i]`) with its arrival at every
/// stream watching its Service.
pub fn fanout(changes: &[Change], applied: &[Instant], watches: &Watches, logs: &[Log]) -> Fanout {
    let mut arrivals: Vec<Arrivals> = logs
        .iter()
        .map(|log| {
            let mut m: HashMap<_, Vec<_>> = HashMap::new();
            for (op, addr, at) in &log.deliveries {
                m.entry((*op, *addr)).or_default().push(Some(*at));
            }
            m
        })
        .collect();
    let mut streams_of: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, service) in watches.streams.iter().enumerate() {
        streams_of.entry(*service).or_default().push(i);
    }
    let mut f = Fanout::default();
    for (change, at) in changes.iter().zip(applied) {
        let (mut first, mut last, mut complete) = (None::<Duration>, Duration::ZERO, true);
        for &i in streams_of.get(&change.service).into_iter().flatten() {
            f.expected += 1;
            let got = arrivals[i]
                .get_mut(&(change.op, change.addr))
                .and_then(|times| times.get_mut(change.occurrence))
                .and_then(Option::take);
            let Some(arrival) = got else {
                f.missed += 1;
                complete = false;
                continue;
            };
            f.received += 1;
            let latency = arrival.saturating_duration_since(*at);
            first = Some(first.map_or(latency, |d| d.min(latency)));
            last = last.max(latency);
        }
        f.first.extend(first);
        match (complete, change.service == watches.hot) {
            (false, _) => f.incomplete += 1,
            (true, true) => f.hot_last.push(last),
            (true, false) => f.warm_last.push(last),
        }
    }
    let total: usize = logs.iter().map(|l| l.deliveries.len()).sum();
    f.unexpected = total - f.received;
    f.resnapshots = logs.iter().map(|l| l.resnapshots).sum();
    f.others = logs.iter().map(|l| l.others).sum();
    f
}

/// The `q` quantile (0..=1) of `values` by nearest rank; zero when empty.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// When the streams got their first snapshot, counted from `opened`:
/// how many did, the median and the last.
pub fn snapshots(logs: &[Log], opened: Instant) -> (usize, Duration, Duration) {
    let times: Vec<Duration> = logs
        .iter()
        .filter_map(|l| {
            l.snapshot
                .map(|(at, _)| at.saturating_duration_since(opened))
        })
        .collect();
    (
        times.len(),
        quantile(&times, 0.5),
        times.iter().max().copied().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use crate::plan::{self, Watches};

    #[test]
    fn quantiles_by_nearest_rank() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        let values = ms(&[5, 1, 4, 2, 3, 6, 7, 8, 9, 10]);
        assert_eq!(quantile(&values, 0.5), Duration::from_millis(5));
        assert_eq!(quantile(&values, 0.99), Duration::from_millis(10));
        assert_eq!(quantile(&values, 0.0), Duration::from_millis(1));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn matches_changes_with_arrivals() {
        let layout = Layout::new(10, 2000).unwrap();
        // Streams 0 and 1 on the hot Service, 2 on a warm one.
        let watches = Watches::new(&layout, 3, 2, 1);
        let changes = plan::changes(&layout, &watches, 3); // hot remove, warm remove, hot add
        let t0 = Instant::now();
        let applied: Vec<Instant> = (0..3)
            .map(|i| t0 + Duration::from_millis(100 * i))
            .collect();
        let at = |change: usize, ms: u64| {
            let c = &changes[change];
            (c.op, c.addr, applied[change] + Duration::from_millis(ms))
        };
        let log = |deliveries| Log {
            deliveries,
            ..Log::default()
        };
        let logs = vec![
            log(vec![at(0, 2), at(2, 3)]),
            log(vec![at(0, 7)]),           // missed the hot add
            log(vec![at(1, 1), at(1, 9)]), // the second is unexplained
        ];
        let f = fanout(&changes, &applied, &watches, &logs);
        assert_eq!(f.hot_last, vec![Duration::from_millis(7)]);
        assert_eq!(f.warm_last, vec![Duration::from_millis(1)]);
        assert_eq!(f.first.len(), 3);
        assert_eq!(f.incomplete, 1);
        assert_eq!(
            (f.expected, f.received, f.missed, f.unexpected),
            (5, 4, 1, 1)
        );
    }
}
