//! The state the test's handle and the server's tasks share: the store, the
//! signals that wake watches, the availability switch, the tokens the
//! TokenReview API knows and the request counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

use super::access::Access;
use super::admission::Call;
use super::review::{Token, Tokens};
use super::store::Store;
use super::{Options, Resource};

/// How often each verb was asked of one resource.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) lists: u64,
    pub(crate) watches: u64,
    pub(crate) gets: u64,
    pub(crate) creates: u64,
    pub(crate) open_watches: usize,
}

/// Counters are keyed by what a URL names: (group, version, plural).
type CountKey = (String, String, String);

/// Shared by the handle and every connection and watch task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) options: Options,
    store: Mutex<Store>,
    /// The resourceVersion after the last change: wakes watches.
    changed: watch::Sender<u64>,
    /// Bumped to drop every open watch stream.
    breaks: watch::Sender<u64>,
    unavailable: AtomicBool,
    /// How long each request waits before it is answered, in microseconds.
    latency_us: AtomicU64,
    tokens: Mutex<Tokens>,
    /// What SelfSubjectAccessReviews allow.
    granted: Mutex<Vec<Access>>,
    /// The `(major, minor)` release `/version` claims.
    version: Mutex<(String, String)>,
    counts: Mutex<HashMap<CountKey, Counts>>,
    /// Every admission webhook call, in order.
    calls: Mutex<Vec<Call>>,
    /// Names made from `generateName`.
    generated: AtomicU64,
}

impl Shared {
    pub(crate) fn new(options: Options) -> Self {
        let store = Store::new(options.history);
        Shared {
            changed: watch::Sender::new(store.rv()),
            breaks: watch::Sender::new(0),
            store: Mutex::new(store),
            unavailable: AtomicBool::new(false),
            latency_us: AtomicU64::new(0),
            tokens: Mutex::default(),
            granted: Mutex::default(),
            version: Mutex::new((
                super::discovery::VERSION.0.to_owned(),
                super::discovery::VERSION.1.to_owned(),
            )),
            counts: Mutex::new(HashMap::new()),
            calls: Mutex::default(),
            generated: AtomicU64::new(0),
            options,
        }
    }

    /// The store, also after a panicking test thread poisoned its lock.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the store and wakes watches if it changed anything.
    pub(crate) fn change<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let mut store = self.store();
        let out = f(&mut store);
        self.changed
            .send_if_modified(|rv| std::mem::replace(rv, store.rv()) != store.rv());
        out
    }

    pub(crate) fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn subscribe_breaks(&self) -> watch::Receiver<u64> {
        self.breaks.subscribe()
    }

    pub(crate) fn break_watches(&self) {
        self.breaks.send_modify(|n| *n += 1);
    }

    pub(crate) fn unavailable(&self) -> bool {
        self.unavailable.load(Ordering::SeqCst)
    }

    pub(crate) fn set_unavailable(&self, away: bool) {
        self.unavailable.store(away, Ordering::SeqCst);
        if away {
            self.break_watches();
        }
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Ordering::SeqCst))
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.store(us, Ordering::SeqCst);
    }

    /// The tokens the TokenReview API knows.
    pub(crate) fn tokens(&self) -> MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add_token(&self, token: &str, username: &str, audiences: &[&str]) {
        let token_info = Token {
            username: username.to_owned(),
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
        };
        self.tokens().insert(token.to_owned(), token_info);
    }

    /// What SelfSubjectAccessReviews allow.
    pub(crate) fn granted(&self) -> MutexGuard<'_, Vec<Access>> {
        self.granted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `(major, minor)` release `/version` claims.
    pub(crate) fn version(&self) -> MutexGuard<'_, (String, String)> {
        self.version.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record_call(&self, call: Call) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A suffix for a `generateName`, never the same twice.
    pub(crate) fn generated_suffix(&self) -> String {
        let n = self.generated.fetch_add(1, Ordering::SeqCst);
        format!("{:05x}", n & 0xfffff)
    }

    /// Updates the counters of the resource a URL names.
    pub(crate) fn count(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        f: impl FnOnce(&mut Counts),
    ) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        f(counts
            .entry((group.into(), version.into(), plural.into()))
            .or_default());
    }

    /// The counters of `r`.
    pub(crate) fn counts(&self, r: &Resource) -> Counts {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let key = (
            r.group.to_string(),
            r.version.to_string(),
            r.plural.to_string(),
        );
        counts.get(&key).copied().unwrap_or_default()
    }
}
