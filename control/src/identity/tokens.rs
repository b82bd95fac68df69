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
//! The file is read again when it changes; a file that does not parse is
//! reported and the tokens known before stay valid.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use super::{Identity, ReviewError, Reviewer};

#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    state: RwLock<(Option<SystemTime>, HashMap<String, Identity>)>,
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
        };
        file.refresh()?;
        Ok(file)
    }

    /// Reads the file again if it changed; on error the old tokens stay.
    pub fn refresh(&self) -> Result<(), String> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        if self.state.read().unwrap_or_else(|e| e.into_inner()).0 == Some(modified) {
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let tokens = parse(&text).map_err(|e| format!("{}: {e}", self.path.display()))?;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = (Some(modified), tokens);
        Ok(())
    }
}

#[tonic::async_trait]
impl Reviewer for TokenFile {
    async fn review(&self, token: &str) -> Result<Identity, ReviewError> {
        if let Err(error) = self.refresh() {
            tracing::warn!(%error, "token file not reloaded; the tokens known before stay");
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
