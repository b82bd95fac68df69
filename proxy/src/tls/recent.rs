//! A map that keeps what was used recently, within a fixed bound: the
//! cache of TLS client configurations, one per identity discovery named,
//! which would otherwise grow with every identity the proxy ever met.
//!
//! Two generations instead of a true LRU list: entries go into `hot`; when
//! `hot` is full it becomes `cold` and the old `cold` is dropped whole; a
//! hit in `cold` moves the entry back into `hot`. So at most `2 × half`
//! entries are held, and an entry used at least once every `half` new
//! entries is never evicted. A lookup is one or two hash probes, no list
//! to maintain under the lock.

use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub(super) struct Recent<K, V> {
    hot: HashMap<K, V>,
    cold: HashMap<K, V>,
    half: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Recent<K, V> {
    /// A map of at most `bound` entries (rounded up to even, at least 2).
    pub(super) fn new(bound: usize) -> Self {
        Self {
            hot: HashMap::new(),
            cold: HashMap::new(),
            half: bound.div_ceil(2).max(1),
        }
    }

    /// The value for `key`, made by `make` when it is not held.
    pub(super) fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> V {
        if let Some(v) = self.hot.get(key) {
            return v.clone();
        }
        let v = match self.cold.remove(key) {
            Some(v) => v,
            None => make(),
        };
        if self.hot.len() >= self.half {
            self.cold = std::mem::take(&mut self.hot);
        }
        self.hot.insert(key.clone(), v.clone());
        v
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.hot.len() + self.cold.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_holds_more_than_the_bound() {
        let mut m = Recent::new(100);
        let mut made = 0;
        for k in 0..10_000 {
            m.get_or_insert_with(&k, || {
                made += 1;
                k
            });
            assert!(m.len() <= 100, "{} entries", m.len());
        }
        assert_eq!(made, 10_000);
        assert_eq!(m.len(), 100);
    }

    #[test]
    fn an_entry_in_use_survives_a_stream_of_new_ones() {
        let mut m = Recent::new(10);
        let mut made = Vec::new();
        for k in 1..=1000 {
            m.get_or_insert_with(&k, || {
                made.push(k);
                k
            });
            // The busy entry, used once every four new ones.
            if k % 4 == 0 {
                m.get_or_insert_with(&0, || {
                    made.push(0);
                    0
                });
            }
        }
        assert_eq!(made.iter().filter(|k| **k == 0).count(), 1, "rebuilt");
        // An entry not used since: made again.
        let again = m.get_or_insert_with(&1, || -1);
        assert_eq!(again, -1);
    }
}
