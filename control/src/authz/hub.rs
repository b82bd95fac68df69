//! Each pod's current inbound policy, in a `tokio::sync::watch` channel
//! per pod: one entry per pod in the model, plus one per pod a proxy
//! watches that the model does not know (yet), which is removed with its
//! last watcher. A pod the model does not know gets its namespace's
//! default policy (or the cluster's), and its own once it appears.
//!
//! Entries for pods the model does not know are made by watchers, so they
//! are bounded: at most [`MAX_UNKNOWN`] at once, beyond which a watch of
//! another unknown pod is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

use crate::model::authz::{DefaultPolicy, PodPolicy};
use crate::model::ObjKey;

/// The most pods not in the model that may be watched at once.
pub const MAX_UNKNOWN: usize = 10_000;

#[derive(Debug)]
pub struct PolicyHub {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    pods: HashMap<ObjKey, Entry>,
    /// The policy of pods not in the model, per namespace with a Namespace
    /// object (bounded by them).
    namespaces: HashMap<String, Arc<PodPolicy>>,
    cluster: Arc<PodPolicy>,
    /// Entries with `known == false`.
    unknown: usize,
    max_unknown: usize,
}

#[derive(Debug)]
struct Entry {
    tx: watch::Sender<Arc<PodPolicy>>,
    /// The model has the pod (else the entry lives while it is watched).
    known: bool,
}

impl Inner {
    fn unknown(&self, ns: &str) -> Arc<PodPolicy> {
        self.namespaces.get(ns).unwrap_or(&self.cluster).clone()
    }
}

/// Replaces the channel's value when it differs: watchers wake only for a
/// real change.
fn set(tx: &watch::Sender<Arc<PodPolicy>>, policy: Arc<PodPolicy>) {
    tx.send_if_modified(|cur| {
        let changed = **cur != *policy;
        if changed {
            *cur = policy;
        }
        changed
    });
}

impl PolicyHub {
    /// `cluster`: `--default-inbound-policy`, for pods in no namespace the
    /// model knows.
    pub fn new(cluster: DefaultPolicy) -> Self {
        Self {
            inner: Mutex::new(Inner {
                pods: HashMap::new(),
                namespaces: HashMap::new(),
                cluster: Arc::new(PodPolicy::default_only(cluster, None, None)),
                unknown: 0,
                max_unknown: MAX_UNKNOWN,
            }),
        }
    }

    /// At most `max` pods not in the model watched at once.
    pub fn with_max_unknown(self, max: usize) -> Self {
        self.lock().max_unknown = max;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pod's policy now (`None`: the pod is gone from the model).
    pub fn publish_pod(&self, pod: &ObjKey, policy: Option<PodPolicy>) {
        let mut inner = self.lock();
        match policy {
            Some(p) => {
                let p = Arc::new(p);
                match inner.pods.get_mut(pod) {
                    Some(e) => {
                        let was_unknown = !e.known;
                        e.known = true;
                        set(&e.tx, p);
                        inner.unknown -= usize::from(was_unknown);
                    }
                    None => {
                        let entry = Entry {
                            tx: watch::Sender::new(p),
                            known: true,
                        };
                        inner.pods.insert(pod.clone(), entry);
                    }
                }
            }
            None => {
                let fallback = inner.unknown(&pod.0);
                if let Some(e) = inner.pods.get_mut(pod) {
                    if e.tx.receiver_count() == 0 {
                        inner.pods.remove(pod);
                    } else if e.known {
                        e.known = false;
                        set(&e.tx, fallback);
                        inner.unknown += 1;
                    }
                }
            }
        }
    }

    /// The policy of the namespace's pods that the model does not know.
    pub fn publish_namespace(&self, ns: &str, policy: PodPolicy) {
        let mut inner = self.lock();
        let policy = Arc::new(policy);
        inner.namespaces.insert(ns.to_owned(), policy.clone());
        for (key, e) in &inner.pods {
            if !e.known && key.0 == ns {
                set(&e.tx, policy.clone());
            }
        }
    }

    /// Watches a pod's policy; `None` when the pod is not in the model
    /// and [`MAX_UNKNOWN`] such pods are watched already.
    pub fn subscribe(self: &Arc<Self>, pod: ObjKey) -> Option<PodWatch> {
        let mut inner = self.lock();
        let rx = match inner.pods.get(&pod) {
            Some(e) => e.tx.subscribe(),
            None if inner.unknown >= inner.max_unknown => return None,
            None => {
                let tx = watch::Sender::new(inner.unknown(&pod.0));
                let rx = tx.subscribe();
                inner.pods.insert(pod.clone(), Entry { tx, known: false });
                inner.unknown += 1;
                rx
            }
        };
        drop(inner);
        Some(PodWatch {
            hub: self.clone(),
            pod,
            rx,
        })
    }

    /// Entries held (pods in the model, and unknown pods watched).
    pub fn pods(&self) -> usize {
        self.lock().pods.len()
    }
}

/// A watch of one pod's policy; dropping the last watch of a pod the model
/// does not know removes its entry.
#[derive(Debug)]
pub struct PodWatch {
    hub: Arc<PolicyHub>,
    pod: ObjKey,
    pub rx: watch::Receiver<Arc<PodPolicy>>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        // Our own receiver is still counted here.
        if let Some(e) = inner.pods.get(&self.pod) {
            if !e.known && e.tx.receiver_count() <= 1 {
                inner.pods.remove(&self.pod);
                inner.unknown -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> ObjKey {
        (ns.into(), name.into())
    }

    #[test]
    fn an_unknown_pod_has_its_namespace_default_until_it_appears() {
        let hub = Arc::new(PolicyHub::new(DefaultPolicy::AllUnauthenticated));
        let mut w = hub.subscribe(key("shop", "web-1")).unwrap();
        assert_eq!(w.rx.borrow_and_update().source, "cluster");
        hub.publish_namespace(
            "shop",
            PodPolicy::default_only(
                DefaultPolicy::AllUnauthenticated,
                Some(DefaultPolicy::Deny),
                None,
            ),
        );
        assert!(w.rx.has_changed().unwrap());
        assert_eq!(w.rx.borrow_and_update().default, DefaultPolicy::Deny);
        let own = PodPolicy::targeted(Arc::default());
        hub.publish_pod(&key("shop", "web-1"), Some(own.clone()));
        assert_eq!(**w.rx.borrow_and_update(), own);
        // The same value again wakes nobody.
        hub.publish_pod(&key("shop", "web-1"), Some(own));
        assert!(!w.rx.has_changed().unwrap());
        // Gone from the model: back to the namespace's default.
        hub.publish_pod(&key("shop", "web-1"), None);
        assert_eq!(w.rx.borrow_and_update().source, "namespace");
    }

    #[test]
    fn unknown_pods_are_held_only_while_watched() {
        let hub = Arc::new(PolicyHub::new(DefaultPolicy::Deny));
        let a = hub.subscribe(key("shop", "a")).unwrap();
        let b = hub.subscribe(key("shop", "a")).unwrap();
        assert_eq!(hub.pods(), 1);
        drop(a);
        assert_eq!(hub.pods(), 1);
        drop(b);
        assert_eq!(hub.pods(), 0);
        // A known pod stays, watched or not.
        let p = PodPolicy::default_only(DefaultPolicy::Deny, None, None);
        hub.publish_pod(&key("shop", "b"), Some(p));
        drop(hub.subscribe(key("shop", "b")));
        assert_eq!(hub.pods(), 1);
        hub.publish_pod(&key("shop", "b"), None);
        assert_eq!(hub.pods(), 0);
    }

    #[test]
    fn watches_of_unknown_pods_are_bounded() {
        let hub = Arc::new(PolicyHub::new(DefaultPolicy::Deny).with_max_unknown(2));
        let a = hub.subscribe(key("shop", "a")).unwrap();
        let b = hub.subscribe(key("shop", "b")).unwrap();
        assert!(
            hub.subscribe(key("shop", "c")).is_none(),
            "a third unknown pod"
        );
        // Another watch of one already held, and a known pod, are fine.
        let _a2 = hub.subscribe(key("shop", "a")).unwrap();
        let p = PodPolicy::default_only(DefaultPolicy::Deny, None, None);
        hub.publish_pod(&key("shop", "known"), Some(p.clone()));
        let _k = hub.subscribe(key("shop", "known")).unwrap();
        // `b` appears in the model: its slot is free again.
        hub.publish_pod(&key("shop", "b"), Some(p));
        let c = hub.subscribe(key("shop", "c")).unwrap();
        drop((a, b, c));
        assert!(hub.subscribe(key("shop", "d")).is_some());
    }
}
