//! Where the issuer comes from, and its reloads: a CA directory
//! (`--identity-dir`, polled for changed files) or a Kubernetes Secret
//! (`--identity-secret`, watched). A set of files or a Secret that does not
//! parse is reported (a warning, `weft_control_issuer_loads_total{result="invalid"}`)
//! and the issuer in use stays; until a first good one, there is none and
//! Certify answers UNAVAILABLE.
//!
//! Touches the CA directory or the one Secret (get, list, watch), nothing
//! else.

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::{info, warn};

use super::ca::{Authority, ANCHORS_FILE, ISSUER_CERT_FILE, ISSUER_KEY_FILE};
use super::{valid_name, ResultLabel};

/// The issuer in use, shared by Certify and the task that reloads it.
#[derive(Clone, Debug)]
pub struct Issuer {
    current: Arc<ArcSwapOption<Authority>>,
    /// Bumped at each issuer taken into use, for readiness.
    taken: Arc<watch::Sender<u64>>,
    trust_domain: String,
    loads: Family<ResultLabel, Counter>,
}

/// A Secret named `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl SecretRef {
    /// Parses `namespace/name`.
    pub fn parse(s: &str) -> Result<Self, String> {
        s.split_once('/')
            .filter(|(ns, name)| valid_name(ns) && valid_name(name))
            .map(|(ns, name)| Self {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            })
            .ok_or_else(|| format!("'{s}' is not NAMESPACE/NAME"))
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl Issuer {
    /// No issuer yet, for `trust_domain`.
    pub fn new(trust_domain: &str, registry: &mut Registry) -> Self {
        let loads = Family::<ResultLabel, Counter>::default();
        registry.sub_registry_with_prefix("weft_control").register(
            "issuer_loads",
            "Issuers read from the CA directory or Secret, by result (loaded, invalid)",
            loads.clone(),
        );
        Self {
            current: Arc::default(),
            taken: Arc::new(watch::Sender::new(0)),
            trust_domain: trust_domain.to_owned(),
            loads,
        }
    }

    /// The issuer in use, if one was loaded.
    pub fn current(&self) -> Option<Arc<Authority>> {
        self.current.load_full()
    }

    /// Changes whenever an issuer is taken into use.
    pub fn taken(&self) -> watch::Receiver<u64> {
        self.taken.subscribe()
    }

    /// Uses `loaded` if it parsed; else reports it and keeps the issuer in
    /// use. `from` says where it came from.
    fn take(&self, from: &str, loaded: Result<Authority, String>) -> Result<(), String> {
        let result = match loaded {
            Ok(authority) => {
                info!(from, "issuer loaded");
                self.current.store(Some(Arc::new(authority)));
                self.taken.send_modify(|n| *n += 1);
                Ok(())
            }
            Err(error) => {
                warn!(from, %error, "issuer not loaded; the one in use (if any) stays");
                Err(error)
            }
        };
        let label = if result.is_ok() { "loaded" } else { "invalid" };
        self.loads
            .get_or_create(&ResultLabel { result: label })
            .inc();
        result
    }

    /// Reads the CA directory `dir`.
    pub fn load_dir(&self, dir: &Path) -> Result<(), String> {
        let loaded = Authority::load(dir, &self.trust_domain);
        self.take(&dir.display().to_string(), loaded)
    }

    /// Reads `dir` again whenever one of its files changes (looking
    /// `every` so often).
    pub fn watch_dir(&self, dir: PathBuf, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut seen = stamps(&dir);
            loop {
                tokio::time::sleep(every).await;
                let now = stamps(&dir);
                if now != seen {
                    seen = now;
                    let _ = this.load_dir(&dir);
                }
            }
        })
    }

    /// Watches the Secret `secret` and loads each new version of it.
    pub fn watch_secret(&self, client: Client, secret: SecretRef) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let api = Api::<Secret>::namespaced(client, &secret.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", secret.name));
        let from = format!("Secret {secret}");
        tokio::spawn(async move {
            let mut events = watcher::watcher(api, config).default_backoff().boxed();
            // The resourceVersion last read, so a relist reads nothing again.
            let (mut version, mut found) = (None, false);
            while let Some(event) = events.next().await {
                match event {
                    Ok(Event::Init) => found = false,
                    Ok(Event::InitApply(s) | Event::Apply(s)) => {
                        found = true;
                        let read = s.metadata.resource_version.clone();
                        if read.is_none() || read != version {
                            version = read;
                            let _ = this.take(&from, from_secret(&s, &this.trust_domain));
                        }
                    }
                    Ok(Event::InitDone) if !found => {
                        warn!(from, "the issuer's Secret does not exist (yet)");
                    }
                    Ok(Event::InitDone) => {}
                    Ok(Event::Delete(_)) => {
                        warn!(
                            from,
                            "the issuer's Secret was deleted; the issuer in use stays"
                        );
                    }
                    Err(error) => warn!(from, %error, "watching the issuer's Secret; retrying"),
                }
            }
        })
    }
}

/// The issuer of a Secret: `tls.crt`, `tls.key` and `ca.crt` as in a CA
/// directory.
pub fn from_secret(secret: &Secret, trust_domain: &str) -> Result<Authority, String> {
    let data = secret.data.as_ref();
    let field = |key: &str| {
        let bytes = data
            .and_then(|d| d.get(key))
            .ok_or_else(|| format!("the Secret has no {key}"))?;
        std::str::from_utf8(&bytes.0).map_err(|_| format!("{key} is not PEM text"))
    };
    Authority::from_pem(
        field(ISSUER_CERT_FILE)?,
        field(ISSUER_KEY_FILE)?,
        field(ANCHORS_FILE)?,
        trust_domain,
    )
}

fn stamps(dir: &Path) -> Vec<Option<SystemTime>> {
    [ANCHORS_FILE, ISSUER_CERT_FILE, ISSUER_KEY_FILE]
        .iter()
        .map(|f| {
            std::fs::metadata(dir.join(f))
                .and_then(|m| m.modified())
                .ok()
        })
        .collect()
}
