//! The fake API server's storage, an etcd in miniature: objects per
//! resource, one global resourceVersion counter bumped by every change, and a
//! bounded history of changes from which watches replay and from which a
//! list page is served at the resourceVersion of its first page.
//!
//! Pure data behind the server's mutex: no I/O, no clock except the
//! creationTimestamp it fills in.

use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};

use super::object;
use super::Resource;

/// (namespace, name); namespace is `""` for cluster-scoped objects.
pub(crate) type Key = (String, String);

/// One change: what the object under `key` was before and after it.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) table: usize,
    pub(crate) before: Option<Value>,
    /// `None` for a deletion.
    pub(crate) after: Option<Value>,
    key: Key,
}

/// The objects of one resource.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) resource: Resource,
    pub(crate) objects: BTreeMap<Key, Value>,
}

/// A resourceVersion older than the store can answer for: 410 Gone.
#[derive(Debug, PartialEq)]
pub(crate) struct Expired {
    /// The oldest resourceVersion still answered for.
    pub(crate) oldest: u64,
}

/// Every object and the recent history of changes.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) tables: Vec<Table>,
    history: VecDeque<Change>,
    capacity: usize,
    /// The resourceVersion of the last change.
    rv: u64,
    /// History holds every change after this resourceVersion.
    floor: u64,
    /// Requests naming a resourceVersion below this get 410 (`compact`).
    compacted: u64,
    uids: u64,
}

impl Store {
    /// An empty store that remembers the last `capacity` changes.
    pub(crate) fn new(capacity: usize) -> Self {
        Store {
            tables: Vec::new(),
            history: VecDeque::new(),
            capacity: capacity.max(1),
            rv: 1,
            floor: 1,
            compacted: 0,
            uids: 0,
        }
    }

    /// The current resourceVersion.
    pub(crate) fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a new list or watch may name.
    pub(crate) fn oldest(&self) -> u64 {
        self.floor.max(self.compacted)
    }

    /// The table of the resource a URL names, if it is served.
    pub(crate) fn find(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| t.resource.is(group, version, plural))
    }

    /// The table of `r`, made if `r` was not served yet.
    pub(crate) fn register(&mut self, r: &Resource) -> usize {
        self.find(&r.group, &r.version, &r.plural)
            .unwrap_or_else(|| {
                self.tables.push(Table {
                    resource: r.clone(),
                    objects: BTreeMap::new(),
                });
                self.tables.len() - 1
            })
    }

    /// Creates or replaces an object; returns it as stored. Storing what is
    /// already there changes nothing (no new resourceVersion, no event).
    pub(crate) fn apply(&mut self, r: &Resource, obj: Value) -> Value {
        let table = self.register(r);
        self.uids += 1;
        let key = object::key(r, &obj);
        let previous = self.tables[table].objects.get(&key).cloned();
        let mut obj = object::complete(r, obj, previous.as_ref(), self.uids);
        if let Some(prev) = previous.filter(|p| object::same_content(p, &obj)) {
            return prev;
        }
        object::set_resource_version(&mut obj, self.rv + 1);
        self.record(table, key, Some(obj.clone()));
        obj
    }

    /// Deletes an object; returns it (with the resourceVersion of its
    /// deletion), or `None` if there was none.
    pub(crate) fn delete(&mut self, r: &Resource, ns: &str, name: &str) -> Option<Value> {
        let table = self.register(r);
        let key = (
            if r.namespaced { ns } else { "" }.to_owned(),
            name.to_owned(),
        );
        let mut gone = self.tables[table].objects.get(&key)?.clone();
        self.record(table, key, None);
        object::set_resource_version(&mut gone, self.rv);
        Some(gone)
    }

    /// Sets `key` to `after` at a new resourceVersion and remembers the change.
    fn record(&mut self, table: usize, key: Key, after: Option<Value>) {
        self.rv += 1;
        let objects = &mut self.tables[table].objects;
        let before = match &after {
            Some(obj) => objects.insert(key.clone(), obj.clone()),
            None => objects.remove(&key),
        };
        self.history.push_back(Change {
            rv: self.rv,
            table,
            before,
            after,
            key,
        });
        while self.history.len() > self.capacity {
            let dropped = self.history.pop_front().expect("history is not empty");
            self.floor = dropped.rv;
        }
    }

    /// From now on, lists and watches from an earlier resourceVersion get
    /// 410. Watches already open keep streaming.
    pub(crate) fn compact(&mut self) {
        self.compacted = self.rv;
    }

    /// The changes after `rv`, oldest first; `Expired` if some were forgotten.
    pub(crate) fn changes_after(&self, rv: u64) -> Result<impl Iterator<Item = &Change>, Expired> {
        if rv < self.floor {
            return Err(Expired {
                oldest: self.oldest(),
            });
        }
        let skip = usize::try_from(rv - self.floor).unwrap_or(usize::MAX);
        Ok(self.history.iter().skip(skip))
    }

    /// The objects of `table` as they were at resourceVersion `rv`.
    pub(crate) fn snapshot(&self, table: usize, rv: u64) -> Result<BTreeMap<Key, Value>, Expired> {
        if rv < self.oldest() {
            return Err(Expired {
                oldest: self.oldest(),
            });
        }
        let mut objects = self.tables[table].objects.clone();
        for change in self.history.iter().rev().take_while(|c| c.rv > rv) {
            if change.table != table {
                continue;
            }
            match &change.before {
                Some(obj) => objects.insert(change.key.clone(), obj.clone()),
                None => objects.remove(&change.key),
            };
        }
        Ok(objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakekube::{PODS, SERVICES};
    use serde_json::json;

    fn svc(name: &str, port: u16) -> Value {
        json!({"metadata": {"name": name, "namespace": "a"}, "spec": {"ports": [{"port": port}]}})
    }

    #[test]
    fn every_change_gets_the_next_resource_version() {
        let mut s = Store::new(100);
        let a = s.apply(&SERVICES, svc("x", 80));
        assert_eq!(a["metadata"]["resourceVersion"], "2");
        let again = s.apply(&SERVICES, svc("x", 80));
        assert_eq!(again, a, "storing the same object is no change");
        assert_eq!(s.rv(), 2);
        let b = s.apply(&SERVICES, svc("x", 81));
        assert_eq!(b["metadata"]["resourceVersion"], "3");
        assert_eq!(b["metadata"]["uid"], a["metadata"]["uid"]);
        s.apply(&PODS, json!({"metadata": {"name": "p", "namespace": "a"}}));
        let gone = s.delete(&SERVICES, "a", "x").unwrap();
        assert_eq!(gone["metadata"]["resourceVersion"], "5");
        assert_eq!(s.delete(&SERVICES, "a", "x"), None);
        assert_eq!(
            s.changes_after(2)
                .unwrap()
                .map(|c| c.rv)
                .collect::<Vec<_>>(),
            [3, 4, 5]
        );
    }

    #[test]
    fn snapshots_undo_later_changes() {
        let mut s = Store::new(100);
        s.apply(&SERVICES, svc("x", 80)); // 2
        s.apply(&SERVICES, svc("y", 80)); // 3
        s.apply(&SERVICES, svc("x", 81)); // 4
        s.delete(&SERVICES, "a", "y"); // 5
        let t = s.register(&SERVICES);
        let at3 = s.snapshot(t, 3).unwrap();
        assert_eq!(at3.len(), 2);
        assert_eq!(
            at3[&("a".into(), "x".into())]["spec"]["ports"][0]["port"],
            80
        );
        assert_eq!(s.snapshot(t, 5).unwrap().len(), 1);
        assert_eq!(s.snapshot(t, 1).unwrap().len(), 0);
    }

    #[test]
    fn forgotten_history_is_expired() {
        let mut s = Store::new(2);
        for port in 1..=4 {
            s.apply(&SERVICES, svc("x", port)); // 2..=5
        }
        assert_eq!(s.changes_after(2).err(), Some(Expired { oldest: 3 }));
        assert_eq!(s.changes_after(3).unwrap().count(), 2);
        s.compact();
        let t = s.register(&SERVICES);
        assert!(s.snapshot(t, 4).is_err());
        assert!(s.snapshot(t, 5).is_ok());
        assert_eq!(
            s.changes_after(3).unwrap().count(),
            2,
            "open watches keep streaming"
        );
    }
}
