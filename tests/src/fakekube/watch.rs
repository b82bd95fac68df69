//! `GET collection?watch=true`: a stream of newline-delimited JSON events
//! (`{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{…}}`) in a
//! chunked response.
//!
//! Where a watch starts, as the API server decides it:
//!
//! - `resourceVersion=N`: every change after N, replayed from the store's
//!   history, then live ones. N older than the history (or than `compact`):
//!   one ERROR event with a 410 Expired `Status`, then the end of the stream;
//!   kube-runtime's watcher relists on it.
//! - no `resourceVersion`, or `0`: a synthetic ADDED event for every object
//!   that exists now, then live changes.
//! - `sendInitialEvents=true` (a streaming list; needs
//!   `resourceVersionMatch=NotOlderThan` and `allowWatchBookmarks=true`):
//!   the same ADDED events, then a BOOKMARK annotated
//!   `k8s.io/initial-events-end: "true"`, then live changes.
//!   `sendInitialEvents=false` skips the initial events.
//!
//! With `allowWatchBookmarks=true` a BOOKMARK carrying the latest
//! resourceVersion comes every `Options::bookmark_interval` and once more
//! just before `timeoutSeconds` ends the stream cleanly. An object that
//! stops matching the selectors comes as DELETED, one that starts matching
//! as ADDED. `break_watches` (and `set_unavailable(true)`) abort every open
//! stream mid-body: the connection closes without the final chunk.
//!
//! Each watch is one task that catches up from its cursor in the history
//! whenever the store changes, so no change is lost between the replay and
//! the live part; a client too slow for the history's capacity gets 410.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http_body_util::BodyExt;
use hyper::body::Frame;
use serde_json::{json, Value};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::object;
use super::request::Query;
use super::selector::Filter;
use super::server::{status_response, Response};
use super::shared::Shared;
use super::store::Change;
use super::Resource;

/// Events buffered between a watch's task and its connection.
const BUFFER: usize = 64;

/// Where a watch starts.
enum Start {
    /// ADDED for every object now, then changes; with the end-of-initial-events
    /// bookmark if `marked`.
    Now { marked: bool },
    /// Changes after this resourceVersion.
    After(u64),
    /// Changes from now on (`sendInitialEvents=false` without a resourceVersion).
    Latest,
}

/// Answers a watch of `table` in `namespace` (or all namespaces).
pub(crate) fn watch(
    shared: &Arc<Shared>,
    table: usize,
    namespace: Option<String>,
    query: &Query,
    partial: bool,
) -> Response {
    let (filter, start, timeout) = match params(namespace, query) {
        Ok(p) => p,
        Err((code, reason, msg)) => return status_response(code, reason, &msg),
    };
    let changes = shared.subscribe_changes();
    let mut breaks = shared.subscribe_breaks();
    let store = shared.store();
    let resource = store.tables[table].resource.clone();
    let (api_version, kind) = if partial {
        (
            "meta.k8s.io/v1".to_owned(),
            "PartialObjectMetadata".to_owned(),
        )
    } else {
        (resource.api_version(), resource.kind.to_string())
    };
    let (tx, rx) = mpsc::channel(BUFFER);
    let mut task = Task {
        shared: shared.clone(),
        table,
        filter,
        partial,
        bookmarks: query.flag("allowWatchBookmarks"),
        deadline: timeout.map(|t| Instant::now() + t),
        api_version,
        kind,
        cursor: store.rv(),
        tx,
    };
    let (mut first, mut done) = (Vec::new(), false);
    match start {
        Start::After(rv) if rv < store.oldest() => {
            first.push(expired(rv, store.oldest()));
            done = true;
        }
        Start::After(rv) => task.cursor = rv,
        Start::Latest => {}
        Start::Now { marked } => {
            let objects = store.tables[table].objects.values();
            first.extend(
                objects
                    .filter(|o| task.filter.matches(o))
                    .map(|o| task.line("ADDED", o.clone())),
            );
            if marked {
                let end = json!({ "k8s.io/initial-events-end": "true" });
                first.push(task.bookmark(Some(end)));
            }
        }
    }
    drop(store);
    tokio::spawn(task.run(first, done, changes, resource));
    let body = WatchBody {
        lines: rx,
        broken: Some(Box::pin(async move {
            let _ = breaks.changed().await;
        })),
    };
    http::Response::builder()
        .status(200)
        .header(CONTENT_TYPE, "application/json")
        .body(body.boxed_unsync())
        .expect("a valid response")
}

type Invalid = (u16, &'static str, String);

/// The filter, the start and the timeout a watch asks for, checked as the
/// API server checks them.
fn params(
    namespace: Option<String>,
    query: &Query,
) -> Result<(Filter, Start, Option<Duration>), Invalid> {
    let bad = |msg: String| (400, "BadRequest", msg);
    let invalid = |msg: &str| (422, "Invalid", msg.to_owned());
    let filter = Filter::new(namespace, query).map_err(bad)?;
    let timeout = match query.str("timeoutSeconds") {
        "" => None,
        t => Some(Duration::from_secs(
            t.parse()
                .map_err(|_| bad(format!("invalid timeoutSeconds {t:?}")))?,
        )),
    };
    let rv = match query.str("resourceVersion") {
        "" | "0" => None,
        rv => Some(
            rv.parse::<u64>()
                .map_err(|_| bad(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let initial = query.get("sendInitialEvents").map(|v| v == "true");
    let not_older = query.str("resourceVersionMatch") == "NotOlderThan";
    let start = match initial {
        Some(_) if !not_older => {
            return Err(invalid(
                "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ))
        }
        Some(true) if !query.flag("allowWatchBookmarks") => {
            return Err(invalid(
                "allowWatchBookmarks: Forbidden: sendInitialEvents requires allowWatchBookmarks=true",
            ))
        }
        Some(true) => Start::Now { marked: true },
        Some(false) => rv.map_or(Start::Latest, Start::After),
        None if !query.str("resourceVersionMatch").is_empty() => {
            return Err(invalid(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ))
        }
        None => rv.map_or(Start::Now { marked: false }, Start::After),
    };
    Ok((filter, start, timeout))
}

/// The task that feeds one watch stream.
struct Task {
    shared: Arc<Shared>,
    table: usize,
    filter: Filter,
    partial: bool,
    bookmarks: bool,
    deadline: Option<Instant>,
    /// apiVersion and kind of bookmarks.
    api_version: String,
    kind: String,
    /// Every change up to here has been looked at.
    cursor: u64,
    tx: mpsc::Sender<Bytes>,
}

impl Task {
    /// Sends `pending`, then (unless `done`) every change after the cursor
    /// and live ones, until the timeout, the client leaving or an expiry.
    async fn run(
        mut self,
        mut pending: Vec<Bytes>,
        mut done: bool,
        mut changes: watch::Receiver<u64>,
        resource: Resource,
    ) {
        let _open = OpenWatch::new(self.shared.clone(), resource);
        let period = self.shared.options.bookmark_interval;
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if !done {
                done = self.catch_up(&mut pending, &mut changes);
            }
            for line in pending.drain(..) {
                if self.tx.send(line).await.is_err() {
                    return; // the client went away, or the stream was broken
                }
            }
            if done {
                return;
            }
            let deadline = async {
                match self.deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = deadline => {
                    if self.bookmarks {
                        let _ = self.tx.send(self.bookmark(None)).await;
                    }
                    return;
                }
                _ = ticks.tick(), if self.bookmarks => pending.push(self.bookmark(None)),
                () = self.tx.closed() => return,
            }
        }
    }

    /// Queues every change after the cursor that this watch selects; true if
    /// the history no longer reaches back to the cursor (an ERROR was queued).
    fn catch_up(&mut self, pending: &mut Vec<Bytes>, changes: &mut watch::Receiver<u64>) -> bool {
        let store = self.shared.store();
        changes.borrow_and_update();
        match store.changes_after(self.cursor) {
            Err(e) => {
                pending.push(expired(self.cursor, e.oldest));
                return true;
            }
            Ok(all) => pending.extend(
                all.filter(|c| c.table == self.table)
                    .filter_map(|c| self.event(c)),
            ),
        }
        self.cursor = store.rv();
        false
    }

    /// The event a change makes for this watch, if it selects the object
    /// before or after.
    fn event(&self, change: &Change) -> Option<Bytes> {
        let before = change.before.as_ref().filter(|o| self.filter.matches(o));
        let after = change.after.as_ref().filter(|o| self.filter.matches(o));
        Some(match (before, after) {
            (None, Some(now)) => self.line("ADDED", now.clone()),
            (Some(_), Some(now)) => self.line("MODIFIED", now.clone()),
            (Some(then), None) => {
                let mut gone = then.clone();
                object::set_resource_version(&mut gone, change.rv);
                self.line("DELETED", gone)
            }
            (None, None) => return None,
        })
    }

    fn line(&self, kind: &str, obj: Value) -> Bytes {
        let obj = if self.partial {
            object::partial(&obj)
        } else {
            obj
        };
        encode(kind, obj)
    }

    fn bookmark(&self, annotations: Option<Value>) -> Bytes {
        encode(
            "BOOKMARK",
            object::bookmark(&self.api_version, &self.kind, self.cursor, annotations),
        )
    }
}

/// The ERROR event for a resourceVersion the history no longer reaches.
fn expired(rv: u64, oldest: u64) -> Bytes {
    let msg = format!("too old resource version: {rv} ({oldest})");
    encode("ERROR", object::status(410, "Expired", &msg))
}

fn encode(kind: &str, obj: Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({ "type": kind, "object": obj })).expect("JSON values serialize");
    line.push(b'\n');
    Bytes::from(line)
}

/// Counts a watch as open while its task runs.
struct OpenWatch {
    shared: Arc<Shared>,
    resource: Resource,
}

impl OpenWatch {
    fn new(shared: Arc<Shared>, resource: Resource) -> Self {
        shared.count(&resource.group, &resource.version, &resource.plural, |c| {
            c.open_watches += 1
        });
        OpenWatch { shared, resource }
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        let r = &self.resource;
        self.shared
            .count(&r.group, &r.version, &r.plural, |c| c.open_watches -= 1);
    }
}

/// The body of a watch response: the task's lines, until the task ends
/// (a clean end of the stream) or the watch is broken (an aborted body).
struct WatchBody {
    lines: mpsc::Receiver<Bytes>,
    /// Completes on `break_watches`; `None` once it has.
    broken: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let broken = match self.broken.as_mut() {
            Some(b) => b.as_mut().poll(cx).is_ready(),
            None => true,
        };
        if broken {
            self.broken = None;
            let e = io::Error::new(io::ErrorKind::ConnectionAborted, "fakekube: watch broken");
            return Poll::Ready(Some(Err(e)));
        }
        self.lines
            .poll_recv(cx)
            .map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}
