//! The files source: a directory of Kubernetes YAML, read at start and
//! polled for changes (every file under it ending in .yaml, .yml or .json).
//!
//! A changed file is parsed whole before anything is applied: a file that
//! fails to parse, or holds an object Kubernetes would not know (a
//! misspelled kind, an apiVersion it does not serve), is reported with its
//! path, the document index and the reason, counted
//! (`weft_control_source_errors_total{source="files",kind="file"}`), and
//! the objects it held before stay as they were. Objects that a
//! changed file no longer holds (and every object of a deleted file) are
//! deleted. Polling, rather than inotify, works on every file system and
//! for files replaced by ConfigMap updates (symlink swaps).
//!
//! A file larger than `--files-max-bytes` is not read: it is reported with
//! its path, its size and the limit, counted
//! (`weft_control_source_errors_total{source="files",kind="file_too_large"}`),
//! and the objects it held before stay, as for a file that does not parse.
//! Parsing holds a file several times over (its text, its documents, their
//! YAML values), so the cap is what bounds the source's memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::parse;
use crate::metrics::Metrics;
use crate::model::apply::Changes;
use crate::model::{Change, Kind, ObjKey, Object};

pub const SOURCE: &str = "files";

/// The default `--files-max-bytes`.
pub const MAX_BYTES: u64 = 8 * 1024 * 1024;

/// A file's modification time and size: a change to either is a change.
type Stamp = (SystemTime, u64);

#[derive(Debug, Default)]
struct FileState {
    stamp: Option<Stamp>,
    held: BTreeSet<(Kind, ObjKey)>,
}

#[derive(Debug)]
pub struct FilesSource {
    dir: PathBuf,
    files: HashMap<PathBuf, FileState>,
    changes: Changes,
    metrics: Metrics,
    /// Files larger are refused unread.
    max_bytes: u64,
}

impl FilesSource {
    pub fn new(dir: PathBuf, changes: Changes, metrics: Metrics) -> Self {
        Self {
            dir,
            files: HashMap::new(),
            changes,
            metrics,
            max_bytes: MAX_BYTES,
        }
    }

    /// Files larger than `max` bytes are refused unread (default [`MAX_BYTES`]).
    pub fn with_max_bytes(mut self, max: u64) -> Self {
        self.max_bytes = max;
        self
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

    /// One pass over the directory. Errs only when the model is gone. The
    /// file system is read on tokio's blocking pool (a slow or hung mount
    /// stalls this source, never the runtime that serves the watches).
    async fn scan(&mut self) -> Result<(), ()> {
        let dir = self.dir.clone();
        let Ok(present) = tokio::task::spawn_blocking(move || {
            let mut present = BTreeMap::new();
            walk(&dir, &mut present);
            present
        })
        .await
        else {
            warn!(dir = %self.dir.display(), "listing the directory failed; trying again next time");
            return Ok(());
        };
        for path in gone(&self.files, &present) {
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
            let (reading, max) = (path.clone(), self.max_bytes);
            let read = tokio::task::spawn_blocking(move || read(&reading, max))
                .await
                .unwrap_or_else(|e| Read::Unreadable(std::io::Error::other(e.to_string())));
            let objects = match read {
                Read::Objects(objects) => objects,
                Read::Unreadable(error) => {
                    warn!(path = %path.display(), %error, "cannot read file; keeping its objects");
                    self.metrics.source_error(SOURCE, "file");
                    continue;
                }
                Read::TooLarge(size) => {
                    warn!(
                        path = %path.display(),
                        size,
                        limit = self.max_bytes,
                        "file refused: larger than --files-max-bytes; its objects stay as they were"
                    );
                    self.metrics.source_error(SOURCE, "file_too_large");
                    continue;
                }
                Read::Refused(errors) => {
                    for (document, reason) in errors {
                        warn!(path = %path.display(), document, %reason, "file refused; its objects stay as they were");
                        self.metrics.source_error(SOURCE, "file");
                    }
                    continue;
                }
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

    async fn send(&self, change: Change) -> Result<(), ()> {
        self.changes.send(change).await.map_err(|_| ())
    }
}

/// The files known before that are no longer present: one lookup each.
fn gone(known: &HashMap<PathBuf, FileState>, present: &BTreeMap<PathBuf, Stamp>) -> Vec<PathBuf> {
    known
        .keys()
        .filter(|p| !present.contains_key(*p))
        .cloned()
        .collect()
}

/// What reading one file gave.
#[derive(Debug)]
enum Read {
    /// Every object, with its origin (`path#document`).
    Objects(Vec<(String, Object)>),
    Unreadable(std::io::Error),
    /// Larger than the limit: its size (at least the limit plus one byte).
    TooLarge(u64),
    /// The documents that failed, by index, with the reason.
    Refused(Vec<(usize, String)>),
}

/// Reads and parses one file of at most `max` bytes (blocking: run on the
/// blocking pool). A file is taken whole or not at all.
fn read(path: &Path, max: u64) -> Read {
    let text = match read_at_most(path, max) {
        Ok(Ok(t)) => t,
        Ok(Err(size)) => return Read::TooLarge(size),
        Err(e) => return Read::Unreadable(e),
    };
    let mut objects = Vec::new();
    let mut refused = Vec::new();
    for (i, doc) in parse::documents(&text).iter().enumerate() {
        match parse::objects(doc) {
            Ok(found) => {
                let origin = format!("{}#{i}", path.display());
                objects.extend(found.into_iter().map(|o| (origin.clone(), o)));
            }
            Err(reason) => refused.push((i, reason)),
        }
    }
    if refused.is_empty() {
        Read::Objects(objects)
    } else {
        Read::Refused(refused)
    }
}

/// The file's text, or its size when it is over `max` bytes (checked
/// before reading, and while reading: the file may grow in between).
fn read_at_most(path: &Path, max: u64) -> std::io::Result<Result<String, u64>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > max {
        return Ok(Err(size));
    }
    let mut text = String::new();
    file.take(max.saturating_add(1)).read_to_string(&mut text)?;
    match text.len() as u64 {
        n if n > max => Ok(Err(n)),
        _ => Ok(Ok(text)),
    }
}

/// Every manifest file under `dir` with its modification time and size
/// (blocking).
fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Stamp>) {
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
            out.insert(path, (mtime, meta.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_taken_whole_or_refused_with_each_reason() {
        let dir = std::env::temp_dir().join(format!("weft-files-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.yaml");
        let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n";
        std::fs::write(
            &path,
            format!("{service}---\napiVersion: v1\nkind: Sevrice\n"),
        )
        .unwrap();
        let Read::Refused(errors) = read(&path, MAX_BYTES) else {
            panic!("refused")
        };
        assert_eq!(
            errors,
            [(
                1,
                "kind 'Sevrice' is not a kind of apiVersion v1 (did you mean Service?)".to_owned()
            )]
        );
        std::fs::write(&path, service).unwrap();
        let Read::Objects(objects) = read(&path, MAX_BYTES) else {
            panic!("read")
        };
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].0, format!("{}#0", path.display()));
        assert!(matches!(
            read(&dir.join("none.yaml"), MAX_BYTES),
            Read::Unreadable(_)
        ));
        // Over the limit: refused unread, with its size.
        let size = service.len() as u64;
        assert!(matches!(read(&path, size), Read::Objects(_)));
        assert!(matches!(read(&path, size - 1), Read::TooLarge(n) if n == size));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn gone_files_are_those_no_longer_present() {
        let known: HashMap<PathBuf, FileState> = ["a", "b", "c"]
            .into_iter()
            .map(|p| (PathBuf::from(p), FileState::default()))
            .collect();
        let present = BTreeMap::from([(PathBuf::from("b"), (SystemTime::UNIX_EPOCH, 1))]);
        let mut gone = gone(&known, &present);
        gone.sort();
        assert_eq!(gone, [PathBuf::from("a"), PathBuf::from("c")]);
    }
}
