//! Fan-out: every destination's current state, and the delta that made it,
//! published once per change to every watcher of that destination.
//!
//! Each destination has a `tokio::sync::watch` channel holding its latest
//! state. A watcher that keeps up applies the delta computed once here; one
//! that fell behind finds versions skipped and diffs the latest full state
//! against what it last sent: its memory stays one state, whatever the rate
//! of change (coalescing).
//!
//! A destination's watchers may see different profiles: those in a
//! namespace with consumer routes see that namespace's routes, everyone
//! else the producer routes ([`DestView::profile_for`]). Each version's
//! `Snapshot`, and each delta's updates, are encoded once per such view:
//! one for the producer profile, one per consumer namespace.
//!
//! Pods are published by IP, for watches on a pod's own address: one
//! entry per pod IP in the model (none for an IP no pod holds, whoever
//! asks), with a channel once someone watches it, removed when the pod goes.
//!
//! A watch of an address nothing answers waits on that IP alone
//! ([`Hub::wait_for`]): a Service or pod appearing wakes the watchers of its
//! own addresses, not every waiting watcher (pod churn would wake them all).
//! One entry per IP waited on, gone with its last waiter.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use tokio::sync::watch;
use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::update::Kind as U;

use crate::encoded::Encoded;
use crate::model::{DestKey, DestView, ObjKey, PodView};

/// What changed between two versions of a destination.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    /// Some watcher's profile changed (the producer one or a consumer
    /// namespace's).
    pub profile_changed: bool,
    pub added: Vec<pb::Endpoint>,
    pub removed: Vec<SocketAddr>,
    /// The updates that say it to watchers that see the producer profile
    /// in both versions, encoded once for every one that kept up
    /// ([`Delta::updates`]).
    encoded: OnceLock<Vec<Encoded>>,
    /// The same for watchers in each namespace with consumer routes in
    /// either version.
    by_ns: BTreeMap<String, OnceLock<Vec<Encoded>>>,
}

impl Delta {
    pub fn between(old: &DestView, new: &DestView) -> Self {
        let added = new
            .endpoints
            .iter()
            .filter(|(a, e)| old.endpoints.get(a) != Some(e))
            .map(|(_, e)| e.clone())
            .collect();
        let removed = old
            .endpoints
            .keys()
            .filter(|a| !new.endpoints.contains_key(a))
            .copied()
            .collect();
        let by_ns = old
            .consumers
            .keys()
            .chain(new.consumers.keys())
            .map(|ns| (ns.clone(), OnceLock::new()))
            .collect();
        Self {
            profile_changed: old.profile != new.profile || old.consumers != new.consumers,
            added,
            removed,
            encoded: OnceLock::new(),
            by_ns,
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.profile_changed && self.added.is_empty() && self.removed.is_empty()
    }

    /// The updates that take a watcher in namespace `client_ns` from `old`
    /// to `new` (the two views this delta is between), encoded by the
    /// first caller that sees the same profiles: the new profile if it
    /// changed, then `NoEndpoints` when the last endpoint went, else the
    /// removes and the adds.
    pub fn updates(&self, old: &DestView, new: &DestView, client_ns: &str) -> &[Encoded] {
        let cell = self.by_ns.get(client_ns).unwrap_or(&self.encoded);
        cell.get_or_init(|| {
            let mut out = Vec::with_capacity(2);
            let profile = new.profile_for(client_ns);
            if old.profile_for(client_ns) != profile {
                out.push(Encoded::new(U::Profile(profile.clone())));
            }
            if new.endpoints.is_empty() && !old.endpoints.is_empty() {
                out.push(Encoded::new(U::NoEndpoints(pb::NoEndpoints {})));
                return out;
            }
            if !self.removed.is_empty() {
                let addrs = self.removed.iter().map(|a| (*a).into()).collect();
                out.push(Encoded::new(U::Remove(pb::Remove { addrs })));
            }
            if !self.added.is_empty() {
                out.push(Encoded::new(U::Add(pb::Add {
                    endpoints: self.added.clone(),
                })));
            }
            out
        })
    }
}

/// One version of a destination as published, with its `Snapshot`
/// encoded by the first watcher that sends it: one for the producer
/// profile, one per namespace with consumer routes.
#[derive(Debug)]
pub struct Published {
    view: DestView,
    snapshot: OnceLock<Encoded>,
    by_ns: BTreeMap<String, OnceLock<Encoded>>,
}

impl Published {
    pub fn new(view: DestView) -> Self {
        let by_ns = view
            .consumers
            .keys()
            .map(|ns| (ns.clone(), OnceLock::new()))
            .collect();
        Self {
            view,
            snapshot: OnceLock::new(),
            by_ns,
        }
    }

    pub fn view(&self) -> &DestView {
        &self.view
    }

    /// The whole state as one `Snapshot` update, as a watcher in
    /// `client_ns` sees it.
    pub fn snapshot(&self, client_ns: &str) -> &Encoded {
        self.by_ns
            .get(client_ns)
            .unwrap_or(&self.snapshot)
            .get_or_init(|| snapshot_of(&self.view, client_ns))
    }
}

/// `view` as a `Snapshot` update for a watcher in `client_ns`.
pub fn snapshot_of(view: &DestView, client_ns: &str) -> Encoded {
    Encoded::new(U::Snapshot(pb::Snapshot {
        profile: Some(view.profile_for(client_ns).clone()),
        endpoints: view.endpoints.values().cloned().collect(),
    }))
}

/// A destination's state at one version; `view` is `None` while it does
/// not exist (its Service was deleted, or never existed).
#[derive(Clone, Debug)]
pub struct DestState {
    pub version: u64,
    pub view: Option<Arc<Published>>,
    /// From `version - 1` to `version`, when both existed.
    pub delta: Option<Arc<Delta>>,
}

/// The published state of every destination, indexed by the Service it
/// belongs to: a change to one Service touches its own ports only.
///
/// Bounded by the model plus what is watched: a Service's entries live while
/// it exists or someone watches them, and an entry for a name nobody
/// publishes goes with its last [`Subscription`].
#[derive(Debug, Default)]
pub struct Hub {
    dests: Mutex<HashMap<ObjKey, BTreeMap<u16, watch::Sender<DestState>>>>,
    by_ip: RwLock<HashMap<IpAddr, ObjKey>>,
    /// Each pod IP's pod (`None` sent to its watchers when it goes, just
    /// before the entry is removed).
    pods: RwLock<HashMap<IpAddr, PodEntry>>,
    /// IPs that watchers wait on (nothing answers there yet), each bumped
    /// when a Service port or pod appears there.
    waiting: Mutex<HashMap<IpAddr, watch::Sender<u64>>>,
}

/// A pod IP's pod, and the channel its watchers follow: made by the first
/// watch of that IP, since most pods are reached through Services and never
/// watched by their own address (a channel is about 250 bytes: 25 MB at
/// 100,000 pods), and dropped at the next change once nobody follows it.
#[derive(Debug)]
struct PodEntry {
    pod: Arc<PodView>,
    tx: Option<watch::Sender<Option<Arc<PodView>>>>,
}

/// Waits for something to appear at one IP; the last one dropped forgets
/// the IP.
#[derive(Debug)]
pub struct IpWait<'a> {
    hub: &'a Hub,
    ip: IpAddr,
    rx: watch::Receiver<u64>,
}

impl IpWait<'_> {
    /// Returns once a Service port or a pod may have appeared at the IP
    /// since this wait was made (or since the last call).
    pub async fn appeared(&mut self) {
        // The sender lives while this receiver does (removed only by the
        // last waiter's drop), so this cannot fail.
        let _ = self.rx.changed().await;
    }

    pub fn has_appeared(&self) -> bool {
        self.rx.has_changed().unwrap_or(true)
    }
}

impl Drop for IpWait<'_> {
    fn drop(&mut self) {
        let mut waiting = self.hub.waiting.lock().unwrap_or_else(|e| e.into_inner());
        // Made under this lock: a count of one is this receiver alone.
        if waiting
            .get(&self.ip)
            .is_some_and(|tx| tx.receiver_count() == 1)
        {
            waiting.remove(&self.ip);
        }
    }
}

/// Follows one destination; dropping the last one of a destination that
/// does not exist forgets it.
#[derive(Debug)]
pub struct Subscription<'a> {
    hub: &'a Hub,
    key: DestKey,
    rx: watch::Receiver<DestState>,
}

impl Subscription<'_> {
    pub fn borrow_and_update(&mut self) -> watch::Ref<'_, DestState> {
        self.rx.borrow_and_update()
    }

    /// Waits for a new version; an error once the destination was dropped
    /// from the hub (it can no longer change).
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.rx.changed().await
    }

    pub fn has_changed(&self) -> Result<bool, watch::error::RecvError> {
        self.rx.has_changed()
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        // Every subscribe happens under this lock, so a count of one is
        // this receiver alone: nobody else watches.
        let mut all = self.hub.lock();
        let Some(ports) = all.get_mut(&self.key.service) else {
            return;
        };
        let unwatched = ports
            .get(&self.key.port)
            .is_some_and(|tx| tx.receiver_count() == 1 && tx.borrow().view.is_none());
        if unwatched {
            ports.remove(&self.key.port);
            if ports.is_empty() {
                all.remove(&self.key.service);
            }
        }
    }
}

impl Hub {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ObjKey, BTreeMap<u16, watch::Sender<DestState>>>> {
        self.dests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the destinations of `service` as they are now (`dests`
    /// empty: the Service is gone), and its ClusterIPs.
    pub fn publish(&self, service: &ObjKey, dests: Vec<(DestKey, DestView)>, ips: Vec<IpAddr>) {
        let mut appeared_or_gone = false;
        {
            let mut by_ip = self.by_ip.write().unwrap_or_else(|e| e.into_inner());
            let before = by_ip.len();
            by_ip.retain(|ip, s| s != service || ips.contains(ip));
            for ip in &ips {
                if by_ip.insert(*ip, service.clone()).as_ref() != Some(service) {
                    appeared_or_gone = true;
                }
            }
            appeared_or_gone |= by_ip.len() != before;
        }
        let mut current: BTreeMap<u16, DestView> = dests
            .into_iter()
            .filter(|(k, _)| &k.service == service)
            .map(|(k, v)| (k.port, v))
            .collect();
        let mut all = self.lock();
        let ports = all.entry(service.clone()).or_default();
        // Ports of this service that no longer exist.
        ports.retain(|port, tx| {
            if current.contains_key(port) {
                return true;
            }
            if tx.borrow().view.is_some() {
                tx.send_modify(|s| {
                    s.version += 1;
                    s.view = None;
                    s.delta = None;
                });
                appeared_or_gone = true;
            }
            tx.receiver_count() > 0
        });
        for (port, view) in std::mem::take(&mut current) {
            match ports.get(&port) {
                Some(tx) => {
                    let old = tx.borrow().view.clone();
                    let delta = match &old {
                        Some(old) => {
                            let d = Delta::between(old.view(), &view);
                            if d.is_empty() {
                                continue;
                            }
                            Some(Arc::new(d))
                        }
                        None => {
                            appeared_or_gone = true;
                            None
                        }
                    };
                    tx.send_modify(|s| {
                        s.version += 1;
                        s.view = Some(Arc::new(Published::new(view)));
                        s.delta = delta;
                    });
                }
                None => {
                    appeared_or_gone = true;
                    let (tx, _) = watch::channel(DestState {
                        version: 1,
                        view: Some(Arc::new(Published::new(view))),
                        delta: None,
                    });
                    ports.insert(port, tx);
                }
            }
        }
        if ports.is_empty() {
            all.remove(service);
        }
        drop(all);
        if appeared_or_gone {
            self.appeared(&ips);
        }
    }

    /// Wakes whoever waits on one of `ips`.
    fn appeared(&self, ips: &[IpAddr]) {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        for ip in ips {
            if let Some(tx) = waiting.get(ip) {
                tx.send_modify(|n| *n += 1);
            }
        }
    }

    /// A wait for a Service port or pod to appear at `ip`: make it before
    /// looking the address up, so that nothing appears unseen in between.
    pub fn wait_for(&self, ip: IpAddr) -> IpWait<'_> {
        let rx = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ip)
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe();
        IpWait { hub: self, ip, rx }
    }

    /// How many IPs watchers wait on.
    pub fn waited_ips(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
    /// Publishes the pod whose own address `ip` is now (`None`: no pod).
    pub fn publish_pod(&self, ip: IpAddr, pod: Option<PodView>) {
        let appeared = {
            let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
            match (pods.get_mut(&ip), pod) {
                (Some(entry), Some(pod)) => {
                    if *entry.pod != pod {
                        entry.pod = Arc::new(pod);
                        if entry.tx.as_ref().is_some_and(|tx| tx.receiver_count() == 0) {
                            entry.tx = None;
                        }
                        if let Some(tx) = &entry.tx {
                            tx.send_replace(Some(entry.pod.clone()));
                        }
                    }
                    false
                }
                (None, Some(pod)) => {
                    let pod = Arc::new(pod);
                    pods.insert(ip, PodEntry { pod, tx: None });
                    true
                }
                (Some(_), None) => {
                    if let Some(tx) = pods.remove(&ip).and_then(|e| e.tx) {
                        tx.send_replace(None);
                    }
                    false
                }
                (None, None) => false,
            }
        };
        if appeared {
            self.appeared(&[ip]);
        }
    }

    /// The pod whose own address `ip` is, to follow, if there is one.
    pub fn pod(&self, ip: IpAddr) -> Option<watch::Receiver<Option<Arc<PodView>>>> {
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        let entry = pods.get_mut(&ip)?;
        Some(
            entry
                .tx
                .get_or_insert_with(|| watch::Sender::new(Some(entry.pod.clone())))
                .subscribe(),
        )
    }

    /// How many pod IPs are published.
    pub fn pod_ips(&self) -> usize {
        self.pods.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The Service port behind a ClusterIP:port.
    pub fn by_addr(&self, addr: SocketAddr) -> Option<DestKey> {
        let service = self
            .by_ip
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr.ip())?
            .clone();
        let key = DestKey {
            service,
            port: addr.port(),
        };
        self.exists(&key).then_some(key)
    }

    pub fn exists(&self, key: &DestKey) -> bool {
        self.lock()
            .get(&key.service)
            .and_then(|ports| ports.get(&key.port))
            .is_some_and(|tx| tx.borrow().view.is_some())
    }

    /// Subscribes to a destination (made, as not existing, if unknown, and
    /// forgotten again with its last subscription while it does not exist).
    pub fn subscribe(&self, key: &DestKey) -> Subscription<'_> {
        let rx = self
            .lock()
            .entry(key.service.clone())
            .or_default()
            .entry(key.port)
            .or_insert_with(|| {
                watch::channel(DestState {
                    version: 0,
                    view: None,
                    delta: None,
                })
                .0
            })
            .subscribe();
        Subscription {
            hub: self,
            key: key.clone(),
            rx,
        }
    }

    /// How many destinations are held: those that exist and those watched.
    pub fn destinations(&self) -> usize {
        self.lock().values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn view(addrs: &[&str]) -> DestView {
        DestView {
            profile: pb::Profile {
                service_name: "web".into(),
                ..Default::default()
            },
            consumers: Default::default(),
            endpoints: addrs
                .iter()
                .map(|a| {
                    let addr: SocketAddr = a.parse().unwrap();
                    (
                        addr,
                        pb::Endpoint {
                            addr: Some(addr.into()),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
        }
    }

    fn svc() -> ObjKey {
        ("shop".into(), "web".into())
    }

    fn key() -> DestKey {
        DestKey {
            service: svc(),
            port: 80,
        }
    }

    #[test]
    fn deltas_are_computed_once_and_slow_watchers_see_only_the_latest() {
        let hub = Hub::default();
        let mut slow = hub.subscribe(&key());
        let mut fast = hub.subscribe(&key());
        assert!(slow.borrow_and_update().view.is_none());
        fast.borrow_and_update();

        hub.publish(
            &svc(),
            vec![(key(), view(&["10.0.0.1:80"]))],
            vec!["10.96.0.1".parse().unwrap()],
        );
        assert_eq!(fast.borrow_and_update().version, 1);
        hub.publish(
            &svc(),
            vec![(key(), view(&["10.0.0.1:80", "10.0.0.2:80"]))],
            vec!["10.96.0.1".parse().unwrap()],
        );
        {
            let s = fast.borrow_and_update();
            assert_eq!(s.version, 2);
            let d = s.delta.as_ref().unwrap();
            assert_eq!(d.added.len(), 1);
            assert!(d.removed.is_empty() && !d.profile_changed);
            // Encoded once, by whoever asks first, then shared.
            let (old, new) = (
                view(&["10.0.0.1:80"]),
                s.view.as_ref().unwrap().view().clone(),
            );
            let first = d.updates(&old, &new, "");
            assert_eq!(first.len(), 1);
            assert_eq!(first[0].kind(), "add");
            assert!(std::ptr::eq(first, d.updates(&old, &new, "")));
            let published = s.view.as_ref().unwrap();
            assert!(std::ptr::eq(published.snapshot(""), published.snapshot("")));
            let Some(U::Snapshot(snap)) = published.snapshot("").decode().kind else {
                panic!("a snapshot")
            };
            assert_eq!(snap.endpoints.len(), 2);
        }
        // An identical publish is not a change.
        hub.publish(
            &svc(),
            vec![(key(), view(&["10.0.0.1:80", "10.0.0.2:80"]))],
            vec!["10.96.0.1".parse().unwrap()],
        );
        assert!(!fast.has_changed().unwrap());
        hub.publish(
            &svc(),
            vec![(key(), view(&["10.0.0.2:80"]))],
            vec!["10.96.0.1".parse().unwrap()],
        );

        // The slow watcher missed versions: it sees one state, the latest.
        let s = slow.borrow_and_update();
        assert_eq!(s.version, 3);
        assert_eq!(s.view.as_ref().unwrap().view().endpoints.len(), 1);
        drop(s);
        assert_eq!(hub.by_addr("10.96.0.1:80".parse().unwrap()), Some(key()));
        assert_eq!(hub.by_addr("10.96.0.1:81".parse().unwrap()), None);

        // The Service goes: watchers are told, the address no longer resolves.
        hub.publish(&svc(), vec![], vec![]);
        assert!(slow.borrow_and_update().view.is_none());
        assert_eq!(hub.by_addr("10.96.0.1:80".parse().unwrap()), None);

        // It comes back: whoever waits on its address is woken.
        let wait = hub.wait_for("10.96.0.1".parse().unwrap());
        let elsewhere = hub.wait_for("10.96.0.2".parse().unwrap());
        assert_eq!(hub.waited_ips(), 2);
        hub.publish(
            &svc(),
            vec![(key(), view(&["10.0.0.2:80"]))],
            vec!["10.96.0.1".parse().unwrap()],
        );
        assert!(wait.has_appeared());
        assert!(!elsewhere.has_appeared(), "not its address");
        drop((wait, elsewhere));
        assert_eq!(hub.waited_ips(), 0);
    }

    #[test]
    fn pods_are_published_by_ip_and_forgotten_when_they_go() {
        let hub = Hub::default();
        let ip: IpAddr = "10.244.1.5".parse().unwrap();
        let pod = PodView {
            key: ("db".into(), "pg-0".into()),
            meshed: true,
            identity: Some("spiffe://cluster.local/ns/db/sa/pg".into()),
            node: String::new(),
            opaque_ports: Default::default(),
        };
        assert!(hub.pod(ip).is_none(), "no entry for an IP no pod holds");
        let other = hub.wait_for("10.244.1.6".parse().unwrap());
        let mut wait = hub.wait_for(ip);
        hub.publish_pod(ip, Some(pod.clone()));
        assert!(wait.has_appeared(), "a pod appeared");
        assert!(!other.has_appeared(), "at another address");
        wait.rx.borrow_and_update();
        let mut rx = hub.pod(ip).unwrap();
        assert_eq!(rx.borrow_and_update().as_deref(), Some(&pod));

        // The same again is no change; a changed pod is.
        hub.publish_pod(ip, Some(pod.clone()));
        assert!(!rx.has_changed().unwrap());
        let unmeshed = PodView {
            meshed: false,
            identity: None,
            ..pod.clone()
        };
        hub.publish_pod(ip, Some(unmeshed.clone()));
        assert_eq!(rx.borrow_and_update().as_deref(), Some(&unmeshed));
        assert!(!wait.has_appeared(), "not an appearance");

        // Nobody follows any more: the next change drops the channel, and
        // a new watch makes one again with the pod as it is.
        drop(rx);
        hub.publish_pod(ip, Some(pod.clone()));
        assert!(hub.pods.read().unwrap()[&ip].tx.is_none());
        let mut rx = hub.pod(ip).unwrap();
        assert_eq!(rx.borrow_and_update().as_deref(), Some(&pod));

        // Gone: watchers see None, the entry is dropped.
        hub.publish_pod(ip, None);
        assert!(rx.borrow_and_update().is_none());
        assert!(rx.has_changed().is_err(), "the channel is closed");
        assert!(hub.pod(ip).is_none());
        assert_eq!(hub.pod_ips(), 0);
        assert!(!wait.has_appeared(), "a pod going wakes nobody who waits");
        // Publishing an absent pod twice is nothing.
        hub.publish_pod(ip, None);
        assert_eq!(hub.pod_ips(), 0);
    }

    #[test]
    fn a_change_wakes_only_the_watchers_of_its_own_service() {
        let hub = Hub::default();
        let other: ObjKey = ("shop".into(), "cart".into());
        let other_key = DestKey {
            service: other.clone(),
            port: 80,
        };
        hub.publish(&svc(), vec![(key(), view(&["10.0.0.1:80"]))], vec![]);
        hub.publish(
            &other,
            vec![(other_key.clone(), view(&["10.0.1.1:80"]))],
            vec![],
        );
        let mut web = hub.subscribe(&key());
        let mut cart = hub.subscribe(&other_key);
        web.borrow_and_update();
        cart.borrow_and_update();

        hub.publish(
            &svc(),
            vec![(key(), view(&["10.0.0.1:80", "10.0.0.2:80"]))],
            vec![],
        );
        assert!(web.has_changed().unwrap());
        assert!(!cart.has_changed().unwrap(), "cart did not change");
        // Publishing one Service never drops another's ports.
        hub.publish(&svc(), vec![], vec![]);
        assert!(hub.exists(&other_key));
        assert!(!cart.has_changed().unwrap());
        assert_eq!(hub.destinations(), 2, "web is still watched");
        drop(web);
        assert_eq!(hub.destinations(), 1, "web is gone and unwatched");
    }

    #[test]
    fn a_name_nobody_publishes_is_held_while_watched() {
        let hub = Hub::default();
        let missing = DestKey {
            service: ("nowhere".into(), "nothing".into()),
            port: 1,
        };
        let a = hub.subscribe(&missing);
        let b = hub.subscribe(&missing);
        assert_eq!(hub.destinations(), 1);
        drop(a);
        assert_eq!(hub.destinations(), 1, "still watched by b");
        drop(b);
        assert_eq!(hub.destinations(), 0);

        // An existing Service's entry stays without watchers; once deleted,
        // it goes with its last watcher.
        hub.publish(&svc(), vec![(key(), view(&["10.0.0.1:80"]))], vec![]);
        let w = hub.subscribe(&key());
        drop(hub.subscribe(&key()));
        assert_eq!(hub.destinations(), 1);
        hub.publish(&svc(), vec![], vec![]);
        assert_eq!(hub.destinations(), 1, "deleted, still watched");
        drop(w);
        assert_eq!(hub.destinations(), 0);
    }
}
