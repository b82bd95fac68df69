//! The files source: a directory of Kubernetes YAML, read at start and
//! polled for changes (every file under it ending in .yaml, .yml or .json).
//!
//! A changed file is parsed whole before anything is applied: a file that
//! fails to parse is reported with its path, the document index and the
//! reason, and the objects it held before stay as they were. Objects that a
//! changed file no longer holds (and every object of a deleted file) are
//! deleted. Polling, rather than inotify, works on every file system and
//! for files replaced by ConfigMap updates (symlink swaps).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::parse;
use crate::metrics::Metrics;
use crate::model::{Change, Kind, ObjKey, Object};

pub const SOURCE: &str = "files";

#[derive(Debug, Default)]
struct FileState {
    stamp: Option<(SystemTime, u64)>,
    held: BTreeSet<(Kind, ObjKey)>,
}

#[derive(Debug)]
pub struct FilesSource {
    dir: PathBuf,
    files: HashMap<PathBuf, FileState>,
    changes: mpsc::Sender<Change>,
    metrics: Metrics,
}

impl FilesSource {
    pub fn new(dir: PathBuf, changes: mpsc::Sender<Change>, metrics: Metrics) -> Self {
        Self {
            dir,
            files: HashMap::new(),
            changes,
            metrics,
        }
    }

    /// Scans now, reports the initial sync, then every `interval` until the
    /// model goes away.
    pub async fn run(mut self, interval: Duration) {
        if self.scan().await.is_err() {
            return;
        }
        info!(dir = %self.dir.display(), files = self.files.len(), "files source synced");
        if self.changes.send(Change::Synced(SOURCE)).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(interval).await;
            if self.scan().await.is_err() {
                return;
            }
        }
    }

    /// One pass over the directory. Errs only when the model is gone.
    async fn scan(&mut self) -> Result<(), ()> {
        let mut present = Vec::new();
        walk(&self.dir, &mut present);
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !present.iter().any(|(q, _)| q == *p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(state) = self.files.remove(&path) {
                info!(path = %path.display(), "file removed: deleting its objects");
                for (kind, key) in state.held {
                    self.send(Change::Delete { kind, key }).await?;
                }
            }
        }
        for (path, stamp) in present {
            let state = self.files.entry(path.clone()).or_default();
            if state.stamp == Some(stamp) {
                continue;
            }
            state.stamp = Some(stamp);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot read file; keeping its objects");
                    self.metrics.source_error(SOURCE, "file");
                    continue;
                }
            };
            let Some(objects) = self.parse(&path, &text) else {
                continue;
            };
            let held: BTreeSet<(Kind, ObjKey)> =
                objects.iter().map(|(_, o)| (o.kind(), o.key())).collect();
            let old = std::mem::replace(
                &mut self.files.get_mut(&path).expect("entry made above").held,
                held.clone(),
            );
            for (kind, key) in old.difference(&held) {
                self.send(Change::Delete {
                    kind: *kind,
                    key: key.clone(),
                })
                .await?;
            }
            for (origin, object) in objects {
                self.send(Change::Apply {
                    source: SOURCE,
                    origin,
                    object,
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Every object of a file with its origin, or `None` (reported) when a
    /// document fails.
    fn parse(&self, path: &Path, text: &str) -> Option<Vec<(String, Object)>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, doc) in parse::documents(text).iter().enumerate() {
            match parse::objects(doc) {
                Ok(objects) => {
                    let origin = format!("{}#{i}", path.display());
                    out.extend(objects.into_iter().map(|o| (origin.clone(), o)));
                }
                Err(reason) => {
                    warn!(path = %path.display(), document = i, %reason, "file refused; its objects stay as they were");
                    self.metrics.source_error(SOURCE, "file");
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    async fn send(&self, change: Change) -> Result<(), ()> {
        self.changes.send(change).await.map_err(|_| ())
    }
}

/// Every manifest file under `dir` with its modification time and size.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, (SystemTime, u64))>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Follow symlinks (ConfigMap mounts are symlinks).
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if meta.is_dir() && !hidden {
            walk(&path, out);
        } else if meta.is_file()
            && !hidden
            && path
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((path, (mtime, meta.len())));
        }
    }
}
