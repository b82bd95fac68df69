//! A fake Kubernetes API server for tests of the kube-rs paths: real HTTP on
//! 127.0.0.1, list (paginated, at a resourceVersion) and watch (replay from a
//! resourceVersion, bookmarks, 410 Expired, streaming lists) of any resource,
//! driven from the test through a [`FakeKube`] handle.
//!
//! ```no_run
//! use serde_json::json;
//! use weft_tests::fakekube::{FakeKube, SERVICES};
//!
//! let kube = FakeKube::start();
//! // The code under test: kube::Client::try_from(kube::Config::new(kube.url().parse()?))
//! kube.apply(&SERVICES, json!({
//!     "metadata": {"name": "web", "namespace": "shop"},
//!     "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
//! }));
//! kube.break_watches(); // watchers resume from their last resourceVersion
//! kube.compact();       // with this before the break, they would relist
//! kube.delete(&SERVICES, "shop", "web");
//! // TokenReview (POST): this token is shop/web's, for the audience "weft".
//! kube.add_token("t0k3n", "system:serviceaccount:shop:web", &["weft"]);
//! println!("{} lists, {} watches", kube.lists(&SERVICES), kube.watches(&SERVICES));
//! ```
//!
//! The handle is synchronous and cloneable, usable from plain `#[test]`s and
//! from async ones alike: the server runs on its own thread with its own
//! tokio runtime, and stops (the thread joined, every connection closed)
//! when the last handle is dropped. All it touches is that thread and one
//! TCP port on 127.0.0.1.
//!
//! Served: `GET` of `/version`, discovery (`/api`, `/api/v1`, `/apis`,
//! `/apis/{group}/{version}`), and for every registered resource its
//! collections (list, watch; cluster-wide and per namespace) and its objects
//! by name; `POST` of TokenReviews, answered from the tokens the test added
//! with [`FakeKube::add_token`]; `POST` of SelfSubjectAccessReviews,
//! answered from the rules granted with [`FakeKube::allow`]; `POST` (create) into any served collection,
//! through the mutating admission webhooks of the stored
//! MutatingWebhookConfigurations (`admission`); `PATCH` of an object with
//! a JSON patch, a JSON merge patch or a server-side apply (which creates). Anything else is 404, other methods
//! 405, each with a `Status`.
//! Objects are JSON values; the server fills in apiVersion, kind, namespace,
//! uid, creationTimestamp, generation and resourceVersion. One
//! resourceVersion counter is bumped by every change of any resource, as
//! etcd's is.
//!
//! Files: `store` (objects and history), `list`, `watch`, `server` (HTTP and
//! routing), `request` (paths and query strings), `selector`, `object` (what
//! the server writes into objects), `discovery`, `review` (TokenReview),
//! `access` (SelfSubjectAccessReview),
//! `create` (POST and PATCH), `admission` (mutating webhooks), `resource`,
//! `shared` (state and counters).

mod access;
mod admission;
mod create;
mod discovery;
mod list;
mod object;
mod objects;
mod request;
mod resource;
mod review;
mod selector;
mod server;
mod shared;
mod store;
mod watch;

#[cfg(test)]
mod tests;

pub use access::Access;
pub use admission::Call;
pub use objects::{issuer_secret, webhook_configuration};
pub use resource::{
    Resource, CONFIG_MAPS, CUSTOM_RESOURCE_DEFINITIONS, DEPLOYMENTS, ENDPOINT_SLICES, EVENTS,
    GRPC_ROUTES, HTTP_ROUTES, HTTP_ROUTE_GROUPS, MUTATING_WEBHOOKS, NAMESPACES, NODES, PODS,
    SECRETS, SELF_SUBJECT_ACCESS_REVIEWS, SERVICES, TCP_ROUTES, TOKEN_REVIEWS, TRAFFIC_SPLITS,
};
pub use review::API_AUDIENCE;

use serde_json::Value;
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

use shared::Shared;

/// How the fake API server behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// How many changes are remembered for watches and paginated lists;
    /// older resourceVersions get 410 Expired.
    pub history: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bookmark_interval: Duration::from_secs(1),
            history: 10_000,
        }
    }
}

/// A running fake API server; clones control the same server.
#[derive(Clone)]
pub struct FakeKube {
    shared: Arc<Shared>,
    server: Arc<Server>,
}

/// The server's thread, stopped and joined when the last handle goes.
#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeKube {
    /// Starts a server with the default [`Options`] that serves services,
    /// pods, namespaces, endpointslices, secrets and configmaps (empty), and
    /// TokenReviews (no token valid yet).
    ///
    /// # Panics
    /// If 127.0.0.1 cannot be bound or the thread not started.
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    /// Starts a server with `options`.
    ///
    /// # Panics
    /// If 127.0.0.1 cannot be bound or the thread not started.
    pub fn start_with(options: Options) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("fakekube binds 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("fakekube listener is non-blocking");
        let addr = listener
            .local_addr()
            .expect("fakekube listener has an address");
        let shared = Arc::new(Shared::new(options));
        for r in [
            SERVICES,
            PODS,
            NAMESPACES,
            ENDPOINT_SLICES,
            SECRETS,
            CONFIG_MAPS,
        ] {
            shared.change(|s| s.register(&r));
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fakekube-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fakekube runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("fakekube listener");
                    server::run(listener, serving, async {
                        let _ = stopped.await;
                    })
                    .await;
                });
            })
            .expect("fakekube thread starts");
        let server = Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        };
        FakeKube {
            shared,
            server: Arc::new(server),
        }
    }

    /// The address it listens on (127.0.0.1, a free port).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// `http://127.0.0.1:PORT`, for `kube::Config::new(url.parse()?)`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Serves `r` (a CRD, say) from now on, with no objects yet. Until then
    /// its paths answer 404, as a CRD that is not installed.
    pub fn register(&self, r: &Resource) {
        self.shared.change(|s| s.register(r));
    }

    /// Creates or replaces an object of `r` (registering `r` if needed):
    /// watchers get ADDED or MODIFIED. Returns the object as stored. A
    /// namespaced object without `metadata.namespace` goes to `default`.
    /// Applying what is already stored changes nothing.
    ///
    /// # Panics
    /// If `obj` is not a JSON object with a `metadata.name`.
    pub fn apply(&self, r: &Resource, obj: Value) -> Value {
        self.shared.change(|s| s.apply(r, obj))
    }

    /// Deletes an object (`namespace` is ignored for cluster-scoped `r`):
    /// watchers get DELETED. Returns it, or `None` if it did not exist.
    pub fn delete(&self, r: &Resource, namespace: &str, name: &str) -> Option<Value> {
        self.shared.change(|s| s.delete(r, namespace, name))
    }

    /// The stored object, if any.
    pub fn get(&self, r: &Resource, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.store();
        let t = store.find(&r.group, &r.version, &r.plural)?;
        let ns = if r.namespaced { namespace } else { "" };
        store.tables[t]
            .objects
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The first stored object of `r` for which `pred` holds, waiting for
    /// one at most `within` (see [`FakeKube::until_some`]); None if none came.
    pub async fn until(
        &self,
        r: &Resource,
        pred: impl Fn(&Value) -> bool,
        within: Duration,
    ) -> Option<Value> {
        self.until_some(|| self.objects(r).into_iter().find(|o| pred(o)), within)
            .await
    }

    /// What `f` (which reads this server's objects) returns once it
    /// returns something, asked again at each change to the store, at most
    /// `within`; None if it never did.
    pub async fn until_some<T>(
        &self,
        mut f: impl FnMut() -> Option<T>,
        within: Duration,
    ) -> Option<T> {
        let mut changed = self.shared.subscribe_changes();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            changed.borrow_and_update();
            if let Some(found) = f() {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Every stored object of `r`, ordered by namespace and name.
    pub fn objects(&self, r: &Resource) -> Vec<Value> {
        let store = self.shared.store();
        store
            .find(&r.group, &r.version, &r.plural)
            .map(|t| store.tables[t].objects.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Makes `token` valid for the TokenReview API: it authenticates as
    /// `username` (a ServiceAccount's is `system:serviceaccount:NS:NAME`)
    /// for a review that wants one of `audiences` (a review that names none
    /// wants [`API_AUDIENCE`]). Replaces what `token` was before.
    pub fn add_token(&self, token: &str, username: &str, audiences: &[&str]) {
        self.shared.add_token(token, username, audiences);
    }

    /// Lets SelfSubjectAccessReviews allow what `access` covers, from now
    /// on (see [`Access`]); before any call nothing is allowed.
    pub fn allow(&self, access: Access) {
        self.shared.granted().push(access);
    }

    /// Makes `/version` claim release `major.minor` (`"1"`, `"28"`) from now
    /// on; the default is 1.35.
    pub fn set_version(&self, major: &str, minor: &str) {
        *self.shared.version() = (major.to_owned(), minor.to_owned());
    }

    /// Makes `token` unknown to the TokenReview API again (as a deleted
    /// ServiceAccount's). Returns whether it was known.
    pub fn remove_token(&self, token: &str) -> bool {
        self.shared.tokens().remove(token).is_some()
    }

    /// The current resourceVersion (of the last change).
    pub fn resource_version(&self) -> u64 {
        self.shared.store().rv()
    }

    /// Forgets history before now, as etcd compaction does: a list or watch
    /// naming an older resourceVersion, or a continue token from before,
    /// gets 410 Expired from now on. Open watches keep streaming.
    pub fn compact(&self) {
        self.shared.change(|s| s.compact());
    }

    /// Aborts every open watch stream mid-body (the connection closes
    /// without the final chunk), as a lost connection does. Watchers resume
    /// from their last resourceVersion.
    pub fn break_watches(&self) {
        self.shared.break_watches();
    }

    /// While `true`, every request gets 503 ServiceUnavailable and open
    /// watches are aborted: the API server is away. Changes applied meanwhile
    /// are kept and replayed to watches that resume afterwards.
    ///
    /// kube-rs' client retries 503 by itself (up to 15 times, backing off from
    /// 5 ms), so a watcher notices an outage late and recovers up to one
    /// backoff step after it ends, unless its `kube::Config` has
    /// `default_retry = false`.
    pub fn set_unavailable(&self, away: bool) {
        self.shared.set_unavailable(away);
    }

    /// From now on every request waits `latency` before it is answered
    /// (a watch: before its stream starts; events then flow at once), as an
    /// overloaded API server does: an informer takes that long to sync.
    /// Requests already waiting keep their delay. Zero (the default) turns
    /// it off.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.set_latency(latency);
    }

    /// Every call the API server made to an admission webhook, in order
    /// (see [`Call`]).
    pub fn webhook_calls(&self) -> Vec<Call> {
        self.shared.calls()
    }

    /// How many list requests `r` got (cluster-wide and per namespace,
    /// each page counted, whatever the answer).
    pub fn lists(&self, r: &Resource) -> u64 {
        self.shared.counts(r).lists
    }

    /// How many watch requests `r` got (whatever the answer).
    pub fn watches(&self, r: &Resource) -> u64 {
        self.shared.counts(r).watches
    }

    /// How many get requests (one object by name) `r` got.
    pub fn gets(&self, r: &Resource) -> u64 {
        self.shared.counts(r).gets
    }

    /// How many create (POST) requests `r` got, e.g. TokenReviews
    /// (whatever the answer).
    pub fn creates(&self, r: &Resource) -> u64 {
        self.shared.counts(r).creates
    }

    /// How many watch streams of `r` are open now.
    pub fn open_watches(&self, r: &Resource) -> usize {
        self.shared.counts(r).open_watches
    }
}

impl fmt::Debug for FakeKube {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeKube")
            .field("addr", &self.server.addr)
            .field("resource_version", &self.resource_version())
            .finish_non_exhaustive()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
