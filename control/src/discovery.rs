//! The `weft.discovery.v1.Discovery` gRPC service: one stream per watched
//! destination, the current state first, then changes as they happen.
//!
//! An address is a Service's ClusterIP:port, else a pod's own IP (any
//! port: that pod as the one endpoint, with its identity when meshed), else
//! unknown (`DoesNotExist`, and looked up again whenever destinations
//! appear). Before the sources synced, nothing is answered: UNAVAILABLE.
//!
//! A client connection (its peer address) holds at most
//! `--max-watches-per-connection` streams at once: one more is refused with
//! RESOURCE_EXHAUSTED, so a client cannot make the hub hold names without
//! bound (each watched name is one hub entry while it is watched).

use futures_util::Stream;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::debug;
use weft_proto::discovery::v1 as pb;
use weft_proto::discovery::v1::update::Kind as U;

use crate::encoded::Encoded;
use crate::hub::{snapshot_of, Delta, Hub, Published, Subscription};
use crate::metrics::Metrics;
use crate::model::{parse_host, DestKey, DestView, PodView};
use crate::ready::Readiness;

/// What a watch asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A ClusterIP and port, or a pod's IP and port: which Service or pod
    /// it is may change.
    Addr(SocketAddr),
    /// A Service port by name.
    Name(DestKey),
}

#[derive(Debug, Clone)]
pub struct DiscoveryServer {
    hub: Arc<Hub>,
    metrics: Metrics,
    cluster_domain: String,
    /// Until the sources synced, watches are refused with UNAVAILABLE.
    ready: Readiness,
    /// Ends every watch (shutdown): a watch never ends by itself, and a
    /// graceful shutdown waits for the streams in flight.
    stop: CancellationToken,
    connections: Arc<Connections>,
}

/// Open watches per client connection, keyed by peer address (`None`: a
/// transport without one, in-process; those share one count). An entry
/// lives while its connection has a watch open.
#[derive(Debug)]
struct Connections {
    max: u32,
    open: Mutex<HashMap<Option<SocketAddr>, u32>>,
}

/// One open watch, counted against its connection until dropped.
struct Slot {
    connections: Arc<Connections>,
    peer: Option<SocketAddr>,
}

impl Connections {
    fn take(self: &Arc<Self>, peer: Option<SocketAddr>) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(peer).or_default();
        if *n >= self.max {
            if *n == 0 {
                open.remove(&peer);
            }
            return None;
        }
        *n += 1;
        Some(Slot {
            connections: self.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

impl DiscoveryServer {
    pub fn new(
        hub: Arc<Hub>,
        metrics: Metrics,
        cluster_domain: &str,
        ready: Readiness,
        stop: CancellationToken,
    ) -> Self {
        Self {
            hub,
            metrics,
            cluster_domain: cluster_domain.to_owned(),
            ready,
            stop,
            connections: Arc::new(Connections {
                max: 10_000,
                open: Mutex::default(),
            }),
        }
    }

    /// At most `max` concurrent watches per client connection (default
    /// 10,000).
    pub fn with_max_watches_per_connection(mut self, max: u32) -> Self {
        self.connections = Arc::new(Connections {
            max,
            open: Mutex::default(),
        });
        self
    }

    /// The watch's target, or why the request is not one.
    pub fn target(&self, req: &pb::WatchRequest) -> Result<Target, Status> {
        let default_ns = req
            .context
            .as_ref()
            .map(|c| c.pod_namespace.as_str())
            .filter(|ns| !ns.is_empty())
            .unwrap_or("default");
        match &req.destination {
            Some(pb::watch_request::Destination::Addr(addr)) => SocketAddr::try_from(addr)
                .map(Target::Addr)
                .map_err(|e| Status::invalid_argument(format!("destination address: {e}"))),
            Some(pb::watch_request::Destination::Authority(authority)) => {
                let (host, port) = authority.rsplit_once(':').ok_or_else(|| {
                    Status::invalid_argument(format!("authority '{authority}' has no port"))
                })?;
                let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                    Status::invalid_argument(format!("authority '{authority}': bad port"))
                })?;
                let service = parse_host(host, default_ns, &self.cluster_domain).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "authority '{authority}' is not a Service name (svc, svc.ns, svc.ns.svc[.{}])",
                        self.cluster_domain
                    ))
                })?;
                Ok(Target::Name(DestKey { service, port }))
            }
            None => Err(Status::invalid_argument("no destination in the request")),
        }
    }
}

impl DiscoveryServer {
    /// `Discovery.Watch`: served over gRPC by [`crate::encoded::DiscoveryService`].
    pub async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let target = self.target(request.get_ref())?;
        if let Some(why) = self.ready.discovery() {
            // The model holds part of the cluster: an answer from it could
            // say DoesNotExist for a Service that exists (discovery.proto).
            return Err(Status::unavailable(why));
        }
        let peer = request.remote_addr();
        let Some(slot) = self.connections.take(peer) else {
            self.metrics.watches_refused.inc();
            return Err(Status::resource_exhausted(format!(
                "this connection already has {} watches open (--max-watches-per-connection)",
                self.connections.max
            )));
        };
        self.metrics.watchers.inc();
        let hub = self.hub.clone();
        let stop = self.stop.clone();
        let handoff = Arc::new(Mutex::new(None));
        let mut out = Sender {
            handoff: handoff.clone(),
            metrics: self.metrics.clone(),
        };
        let watched = target.clone();
        let client_ns = request
            .get_ref()
            .context
            .as_ref()
            .map(|c| c.pod_namespace.clone())
            .unwrap_or_default();
        let run = async move {
            tokio::select! {
                _ = serve_watch(&hub, &watched, &client_ns, &mut out) => None,
                // The proxy keeps its endpoints and reconnects (elsewhere).
                _ = stop.cancelled() => Some(Status::unavailable("weft-control is shutting down")),
            }
        };
        Ok(Response::new(WatchStream {
            run: Some(Box::pin(run)),
            end: None,
            handoff,
            _open: Open {
                slot,
                metrics: self.metrics.clone(),
                target,
            },
        }))
    }
}

/// A watch's updates, as tonic takes them.
///
/// No task and no channel per watch: the watch runs inside the stream,
/// polled by whoever reads it (hyper's task for the HTTP/2 stream), and
/// each update is handed over through a one-update slot: [`Sender::send`]
/// leaves it there and yields, `poll_next` takes it out and returns it, and
/// the next `poll_next` resumes the watch. A reader that stops reading
/// (HTTP/2 flow control) stops the watch where it is, and it resumes with
/// the latest state (the hub's channels coalesce): memory stays one state.
/// A task and a channel per watch cost 2.5 KB and two wake-ups per update
/// (heaptrack and perf at 2,000 watches).
pub struct WatchStream {
    /// The watch; `None` once it ended.
    run: Option<Pin<Box<dyn Future<Output = Option<Status>> + Send>>>,
    /// The status that ends the stream, once the watch ended with one.
    end: Option<Status>,
    handoff: Arc<Mutex<Option<Encoded>>>,
    _open: Open,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("target", &self._open.target)
            .finish_non_exhaustive()
    }
}

impl Stream for WatchStream {
    type Item = Result<Encoded, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(run) = self.run.as_mut() {
            if let Poll::Ready(end) = run.as_mut().poll(cx) {
                self.run = None;
                self.end = end;
            }
        }
        let handed = self
            .handoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match handed {
            // Even from a watch that just ended (shutdown won the race):
            // the update first, the end at the next poll.
            Some(update) => Poll::Ready(Some(Ok(update))),
            None if self.run.is_none() => Poll::Ready(self.end.take().map(Err)),
            None => Poll::Pending,
        }
    }
}

/// What an open watch holds until it is dropped: its place in its
/// connection's count, and the `weft_control_watchers` gauge.
struct Open {
    slot: Slot,
    metrics: Metrics,
    target: Target,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.watchers.dec();
        debug!(target = ?self.target, peer = ?self.slot.peer, "watch ended");
    }
}

struct Sender {
    handoff: Arc<Mutex<Option<Encoded>>>,
    metrics: Metrics,
}

impl Sender {
    /// Hands one update to the stream and waits until it was taken (the
    /// next poll). Always `true`: a reader that goes drops the watch.
    async fn send(&mut self, update: Encoded) -> bool {
        self.metrics.update_sent(update.kind());
        Handoff {
            slot: &self.handoff,
            update: Some(update),
        }
        .await;
        true
    }
}

/// Leaves an update in the slot and yields once; ready when polled again.
struct Handoff<'a> {
    slot: &'a Mutex<Option<Encoded>>,
    update: Option<Encoded>,
}

impl Future for Handoff<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        match self.update.take() {
            Some(update) => {
                // Pending without a waker: the stream returns the update
                // now, and its reader polls again for the next one.
                *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(update);
                Poll::Pending
            }
            None => Poll::Ready(()),
        }
    }
}

/// The one `DoesNotExist` update, encoded once.
fn does_not_exist() -> Encoded {
    static ENCODED: LazyLock<Encoded> =
        LazyLock::new(|| Encoded::new(U::DoesNotExist(pb::DoesNotExist {})));
    ENCODED.clone()
}

/// Runs one watch until the client goes away. `client_ns` is the
/// watcher's namespace (empty when it did not say): which routes it sees.
async fn serve_watch(hub: &Hub, target: &Target, client_ns: &str, out: &mut Sender) {
    let mut said_missing = false;
    loop {
        // A watch of an address waits on it when nothing is there: the
        // wait is made before the look-up, so nothing appears unseen.
        let found = match target {
            Target::Name(key) => Ok(Found::Service(key.clone())),
            Target::Addr(addr) => {
                let wait = hub.wait_for(addr.ip());
                hub.by_addr(*addr)
                    .map(Found::Service)
                    .or_else(|| hub.pod(addr.ip()).map(Found::Pod))
                    .ok_or(wait)
            }
        };
        let again = match found {
            Ok(Found::Service(key)) => {
                follow(
                    hub.subscribe(&key),
                    target,
                    client_ns,
                    out,
                    &mut said_missing,
                )
                .await
            }
            Ok(Found::Pod(rx)) => {
                let Target::Addr(addr) = target else {
                    unreachable!("pods are found by address")
                };
                // Boxed: its state (two views of the pod) is more than
                // twice a Service's, and inline every watch's future would
                // be that large: 2,080 bytes instead of 1,208 (debug
                // build), 4.5 KB of RSS per watch stream instead of 3.6
                // (floods.rs, 10,000 streams).
                Box::pin(follow_pod(rx, *addr, out, &mut said_missing)).await
            }
            Err(mut wait) => {
                if !said_missing && !out.send(does_not_exist()).await {
                    return;
                }
                said_missing = true;
                wait.appeared().await;
                true
            }
        };
        if !again {
            return;
        }
    }
}

/// What an address or name resolved to.
enum Found {
    Service(DestKey),
    Pod(watch::Receiver<Option<Arc<PodView>>>),
}

/// Streams one destination's states; returns `true` when the target should
/// be resolved again (it stopped existing), `false` when the client is gone.
async fn follow(
    mut rx: Subscription<'_>,
    target: &Target,
    client_ns: &str,
    out: &mut Sender,
    said_missing: &mut bool,
) -> bool {
    let mut last: Option<(u64, Arc<Published>)> = None;
    loop {
        let state = rx.borrow_and_update().clone();
        match (state.view, &last) {
            (None, _) => {
                if !*said_missing && !out.send(does_not_exist()).await {
                    return false;
                }
                *said_missing = true;
                if matches!(target, Target::Addr(_)) {
                    // The address may belong to another Service (or a pod) next.
                    return true;
                }
                last = None;
            }
            (Some(view), None) => {
                *said_missing = false;
                if !out.send(view.snapshot(client_ns).clone()).await {
                    return false;
                }
                last = Some((state.version, view));
            }
            (Some(view), Some((version, old))) => {
                // Kept up: the delta computed once by the hub. Fell behind:
                // diff the latest state against what this client has.
                let computed;
                let delta = match &state.delta {
                    Some(d) if state.version == version + 1 => d.as_ref(),
                    _ => {
                        computed = Delta::between(old.view(), view.view());
                        &computed
                    }
                };
                if !send_all(out, delta.updates(old.view(), view.view(), client_ns)).await {
                    return false;
                }
                last = Some((state.version, view));
            }
        }
        if rx.changed().await.is_err() {
            return true;
        }
    }
}

/// Streams a pod as the destination `addr` (its IP, the watched port);
/// returns `true` when the address should be resolved again (the pod
/// went), `false` when the client is gone.
async fn follow_pod(
    mut rx: watch::Receiver<Option<Arc<PodView>>>,
    addr: SocketAddr,
    out: &mut Sender,
    said_missing: &mut bool,
) -> bool {
    let mut last: Option<DestView> = None;
    loop {
        let pod = rx.borrow_and_update().clone();
        let Some(pod) = pod else {
            if !*said_missing && !out.send(does_not_exist()).await {
                return false;
            }
            *said_missing = true;
            return true;
        };
        let view = pod.at(addr);
        let sent = match &last {
            None => out.send(snapshot_of(&view, "")).await,
            Some(old) => send_all(out, Delta::between(old, &view).updates(old, &view, "")).await,
        };
        if !sent {
            return false;
        }
        *said_missing = false;
        last = Some(view);
        if rx.changed().await.is_err() {
            return true;
        }
    }
}

/// Sends `updates` in order; `false` once the client has gone.
async fn send_all(out: &mut Sender, updates: &[Encoded]) -> bool {
    for update in updates {
        if !out.send(update.clone()).await {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use prometheus_client::registry::Registry;
    use std::time::{Duration, Instant};

    fn server(hub: Arc<Hub>, max: u32) -> DiscoveryServer {
        let (_, pending) = watch::channel(vec![]);
        DiscoveryServer::new(
            hub,
            Metrics::register(&mut Registry::default()),
            "cluster.local",
            Readiness::new(pending, None),
            CancellationToken::new(),
        )
        .with_max_watches_per_connection(max)
    }

    fn by_name(authority: String) -> Request<pb::WatchRequest> {
        Request::new(pb::WatchRequest {
            destination: Some(pb::watch_request::Destination::Authority(authority)),
            ..Default::default()
        })
    }

    /// Waits for `f` to hold, at most `within`.
    async fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !f() {
            assert!(Instant::now() < deadline, "not within {within:?}: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    fn endpoint(addr: &str) -> pb::Endpoint {
        let addr: SocketAddr = addr.parse().unwrap();
        pb::Endpoint {
            addr: Some(addr.into()),
            ..Default::default()
        }
    }

    /// `web:80` with these endpoints; `port_name` stands for any profile
    /// change.
    fn web(addrs: &[&str], port_name: &str) -> Vec<(DestKey, DestView)> {
        let key = DestKey {
            service: ("default".into(), "web".into()),
            port: 80,
        };
        let view = DestView {
            profile: pb::Profile {
                service_name: "web".into(),
                port_name: port_name.into(),
                ..Default::default()
            },
            consumers: Default::default(),
            endpoints: addrs
                .iter()
                .map(|a| (a.parse().unwrap(), endpoint(a)))
                .collect(),
        };
        vec![(key, view)]
    }

    #[tokio::test]
    async fn a_watch_runs_inside_its_stream_and_ends_with_the_shutdown() {
        let hub = Arc::new(Hub::default());
        let (_, pending) = watch::channel(vec![]);
        let stop = CancellationToken::new();
        let metrics = Metrics::register(&mut Registry::default());
        let server = DiscoveryServer::new(
            hub.clone(),
            metrics.clone(),
            "cluster.local",
            Readiness::new(pending, None),
            stop.clone(),
        );
        let svc: crate::model::ObjKey = ("default".into(), "web".into());
        hub.publish(&svc, web(&["10.0.0.1:80"], ""), vec![]);
        let mut stream = server
            .watch(by_name("web:80".into()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(metrics.watchers.get(), 1);
        assert_eq!(stream.next().await.unwrap().unwrap().kind(), "snapshot");
        // Nothing more until something changes.
        assert!(futures_util::poll!(stream.next()).is_pending());
        // One change that takes three updates: each in order, one per poll.
        hub.publish(&svc, web(&["10.0.0.2:80"], "http"), vec![]);
        let kinds: Vec<_> = [(); 3]
            .iter()
            .map(|_| futures_util::FutureExt::now_or_never(stream.next()))
            .map(|u| u.unwrap().unwrap().unwrap().kind())
            .collect();
        assert_eq!(kinds, ["profile", "remove", "add"]);
        // A change and the shutdown together: whichever the watch sees
        // first, the stream ends with UNAVAILABLE, and then ends.
        hub.publish(&svc, web(&["10.0.0.3:80"], "http"), vec![]);
        stop.cancel();
        let end = loop {
            match stream.next().await.unwrap() {
                Ok(u) => assert!(["remove", "add"].contains(&u.kind()), "{u:?}"),
                Err(status) => break status,
            }
        };
        assert_eq!(end.code(), tonic::Code::Unavailable);
        assert!(stream.next().await.is_none());
        assert!(stream.next().await.is_none());
        drop(stream);
        assert_eq!(metrics.watchers.get(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn names_nobody_watches_any_more_are_forgotten() {
        const NAMES: usize = 100_000;
        let hub = Arc::new(Hub::default());
        let server = server(hub.clone(), NAMES as u32);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rss = vec![("before", rss_kib())];
        for round in 1..=2 {
            let mut streams = Vec::with_capacity(NAMES);
            for _ in 0..NAMES {
                // xorshift: names no Service has, none repeated in practice.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let name = format!("n{seed:016x}.x{}:80", seed % 97);
                streams.push(server.watch(by_name(name)).await.unwrap().into_inner());
            }
            // Each stream says DoesNotExist first (a watch runs as its
            // stream is read).
            for s in &mut streams {
                let first = s.next().await.unwrap().unwrap();
                assert_eq!(first.kind(), "does_not_exist");
            }
            assert!(hub.destinations() >= NAMES - 10, "every name watched");
            rss.push(("watching", rss_kib()));
            drop(streams);
            eventually("names forgotten", Duration::from_secs(60), || {
                hub.destinations() == 0
            })
            .await;
            eventually("watch tasks ended", Duration::from_secs(60), || {
                server.metrics.watchers.get() == 0
            })
            .await;
            assert!(
                server.connections.open.lock().unwrap().is_empty(),
                "round {round}: no connection counted"
            );
            rss.push(("dropped", rss_kib()));
        }
        for (when, kib) in &rss {
            println!("RSS {when}: {} MiB", kib / 1024);
        }
        // Flat: the second client's 100,000 names reuse what the first
        // one's took (the allocator keeps freed memory for reuse, so RSS
        // does not fall back; it must not climb).
        let (first, second) = (rss[1].1, rss[3].1);
        assert!(
            second <= first + first / 10,
            "RSS grew from {first} KiB to {second} KiB between two rounds of 100,000 names"
        );
    }

    #[tokio::test]
    async fn watches_over_the_connection_limit_are_refused() {
        let hub = Arc::new(Hub::default());
        let server = server(hub.clone(), 3);
        let with_peer = |name: &str, peer: &str| {
            let mut r = by_name(name.into());
            r.extensions_mut()
                .insert(tonic::transport::server::TcpConnectInfo {
                    local_addr: None,
                    remote_addr: Some(peer.parse().unwrap()),
                });
            r
        };
        let mut held = vec![];
        for name in ["a.x:80", "b.x:80", "c.x:80"] {
            held.push(
                server
                    .watch(with_peer(name, "10.0.0.1:40000"))
                    .await
                    .unwrap(),
            );
        }
        let refused = server
            .watch(with_peer("d.x:80", "10.0.0.1:40000"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("--max-watches-per-connection"));
        assert_eq!(server.metrics.watches_refused.get(), 1);
        // Another connection has its own count.
        let other = server
            .watch(with_peer("d.x:80", "10.0.0.2:40000"))
            .await
            .unwrap();
        // A stream that ends frees its slot.
        drop(held.pop());
        let deadline = Instant::now() + Duration::from_secs(10);
        let again = loop {
            match server.watch(with_peer("e.x:80", "10.0.0.1:40000")).await {
                Ok(s) => break s,
                Err(e) => {
                    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
                    assert!(Instant::now() < deadline, "the slot was not freed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        drop((held, other, again));
        eventually("every slot freed", Duration::from_secs(10), || {
            server.connections.open.lock().unwrap().is_empty()
        })
        .await;
        eventually("names forgotten", Duration::from_secs(10), || {
            hub.destinations() == 0
        })
        .await;
    }

    #[tokio::test]
    async fn address_watches_wait_on_their_own_ip_and_are_forgotten() {
        let hub = Arc::new(Hub::default());
        let server = server(hub.clone(), 10_000);
        let by_addr = |ip: String| {
            Request::new(pb::WatchRequest {
                destination: Some(pb::watch_request::Destination::Addr(
                    SocketAddr::new(ip.parse().unwrap(), 5432).into(),
                )),
                ..Default::default()
            })
        };
        let mut streams = vec![];
        for i in 0..1000 {
            let ip = format!("10.244.{}.{}", i / 250, i % 250 + 1);
            streams.push(server.watch(by_addr(ip)).await.unwrap().into_inner());
        }
        for s in &mut streams {
            let u = s.next().await.unwrap().unwrap();
            assert_eq!(u.decode().kind, Some(U::DoesNotExist(pb::DoesNotExist {})));
        }
        assert_eq!(hub.waited_ips(), 1000);
        // A pod appears at one of them: that watch is answered, and the
        // others stay waiting on their own IP.
        hub.publish_pod(
            "10.244.0.7".parse().unwrap(),
            Some(PodView {
                key: ("db".into(), "pg-0".into()),
                meshed: true,
                identity: Some("spiffe://cluster.local/ns/db/sa/pg".into()),
                node: String::new(),
                opaque_ports: Default::default(),
            }),
        );
        let u = tokio::time::timeout(Duration::from_secs(10), streams[6].next())
            .await
            .expect("the pod's watcher is answered")
            .unwrap()
            .unwrap()
            .decode();
        assert!(matches!(u.kind, Some(U::Snapshot(_))), "{u:?}");
        eventually(
            "the found IP is no longer waited on",
            Duration::from_secs(10),
            || hub.waited_ips() == 999,
        )
        .await;
        drop(streams);
        eventually("no IP waited on", Duration::from_secs(10), || {
            hub.waited_ips() == 0
        })
        .await;
    }
}
