//! ServiceAccount tokens without a cluster: a file that says which token
//! belongs to which ServiceAccount, as the files source's stand-in for the
//! TokenReview API. One `token: namespace/serviceaccount` pair per line
//! (YAML), e.g.
//!
//! ```yaml
//! # weft-control --identity-tokens tokens.yaml
//! "3f9c...e1": shop/web
//! "77ab...02": shop/db
//! ```
//!
//! The file is read again when it changes (looked at on each review, on
//! tokio's blocking pool); a file that does not parse is reported and the
//! tokens known before stay valid. It is looked at (one `stat`) at most
//! once per [`CHECK_EVERY`], so a flood of Certify calls costs one look a
//! second, not one each on the blocking pool (85 threads for 208 requests
//! in flight, in floods.rs, before).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

use super::{Identity, ReviewError, Reviewer};

/// How often the file is looked at for changes, at most.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    state: RwLock<(Option<SystemTime>, HashMap<String, Identity>)>,
    /// When the file was last looked at.
    checked: Mutex<Instant>,
}

/// Parses the file's text.
pub fn parse(text: &str) -> Result<HashMap<String, Identity>, String> {
    let map: HashMap<String, String> = serde_saphyr::from_str(text)
        .map_err(|e| format!("not a map of token: namespace/serviceaccount: {e}"))?;
    map.into_iter()
        .map(|(token, who)| {
            if token.len() < 16 {
                return Err(format!("the token for {who} is shorter than 16 characters"));
            }
            let (ns, sa) = who
                .split_once('/')
                .filter(|(ns, sa)| super::valid_name(ns) && super::valid_name(sa))
                .ok_or_else(|| format!("{who:?} is not namespace/serviceaccount"))?;
            Ok((
                token,
                Identity {
                    namespace: ns.to_owned(),
                    service_account: sa.to_owned(),
                },
            ))
        })
        .collect()
}

impl TokenFile {
    /// Reads `path` (it must parse at start).
    pub fn load(path: &Path) -> Result<Self, String> {
        let file = Self {
            path: path.to_owned(),
            state: RwLock::default(),
            checked: Mutex::new(Instant::now()),
        };
        file.refresh()?;
        Ok(file)
    }

    /// Reads the file again if it changed; on error the old tokens stay.
    /// Blocking: for start-up; [`Reviewer::review`] reads off the runtime.
    pub fn refresh(&self) -> Result<(), String> {
        match read_if_changed(&self.path, self.modified()).map_err(|e| self.error(e))? {
            Some((modified, text)) => self.take(modified, &text),
            None => Ok(()),
        }
    }

    /// [`TokenFile::refresh`] on tokio's blocking pool, so that a slow disk
    /// stalls one Certify, not the runtime.
    async fn refresh_async(&self) -> Result<(), String> {
        let (path, known) = (self.path.clone(), self.modified());
        let read = tokio::task::spawn_blocking(move || read_if_changed(&path, known))
            .await
            .map_err(|e| format!("{}: {e}", self.path.display()))?
            .map_err(|e| self.error(e))?;
        match read {
            Some((modified, text)) => self.take(modified, &text),
            None => Ok(()),
        }
    }

    /// Whether the file is to be looked at now (once per [`CHECK_EVERY`]:
    /// the first caller after it, not every caller at once).
    fn due(&self) -> bool {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(*checked) < CHECK_EVERY {
            return false;
        }
        *checked = now;
        true
    }

    fn error(&self, e: std::io::Error) -> String {
        format!("{}: {e}", self.path.display())
    }

    fn modified(&self) -> Option<SystemTime> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).0
    }

    fn take(&self, modified: SystemTime, text: &str) -> Result<(), String> {
        let tokens = parse(text).map_err(|e| format!("{}: {e}", self.path.display()))?;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = (Some(modified), tokens);
        Ok(())
    }
}

/// The file's text and modification time, unless it is still `known`.
fn read_if_changed(
    path: &Path,
    known: Option<SystemTime>,
) -> std::io::Result<Option<(SystemTime, String)>> {
    let modified = std::fs::metadata(path)?.modified()?;
    if known == Some(modified) {
        return Ok(None);
    }
    Ok(Some((modified, std::fs::read_to_string(path)?)))
}

#[tonic::async_trait]
impl Reviewer for TokenFile {
    async fn review(
        &self,
        token: &str,
        _client: Option<std::net::IpAddr>,
    ) -> Result<Identity, ReviewError> {
        if self.due() {
            if let Err(error) = self.refresh_async().await {
                tracing::warn!(%error, "token file not reloaded; the tokens known before stay");
            }
        }
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .get(token)
            .cloned()
            .ok_or_else(|| ReviewError::Invalid("the token is not one the token file names".into()))
    }
}
