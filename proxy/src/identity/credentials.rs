//! The certificate in force, read by every TLS handshake, and what `/ready`,
//! `/identity` and the metrics say about it.
//!
//! Reading is lock-free (an `ArcSwapOption`); the rare changes (a new
//! certificate, a failure, the expiry) take one mutex, so the gauges and
//! the certificate never disagree.

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Leaf;
use crate::time::Converter;

/// The proxy's credentials.
#[derive(Debug)]
pub struct Credentials {
    pub id: Arc<str>,
    clock: Converter,
    current: ArcSwapOption<Held>,
    /// Changes are made under this lock.
    status: Mutex<Status>,
    /// Told of every new certificate.
    issued: watch::Sender<()>,
    certify: Family<ResultLabel, Counter>,
    expiry: Gauge,
    valid: Gauge,
}

/// A certificate with its expiry on tokio's clock.
#[derive(Debug)]
struct Held {
    leaf: Arc<Leaf>,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Status {
    /// Why the last Certify failed (cleared by a success).
    last_error: Option<String>,
    /// Whether the last certificate was dropped at its expiry.
    expired: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

impl Credentials {
    /// Credentials for `id`, without a certificate yet.
    pub fn new(id: String) -> Arc<Self> {
        Self::with_clock(id, Converter::new())
    }

    /// As [`Credentials::new`], converting wall-clock expiries with `clock`.
    pub fn with_clock(id: String, clock: Converter) -> Arc<Self> {
        Arc::new(Self {
            id: id.into(),
            clock,
            current: ArcSwapOption::empty(),
            status: Mutex::default(),
            issued: watch::Sender::new(()),
            certify: Family::default(),
            expiry: Gauge::default(),
            valid: Gauge::default(),
        })
    }

    pub fn register(&self, registry: &mut Registry) {
        let weft = registry.sub_registry_with_prefix("weft_identity");
        weft.register(
            "certify",
            "Certificate requests to the control plane, by result",
            self.certify.clone(),
        );
        weft.register(
            "cert_expiry_timestamp_seconds",
            "When the proxy's certificate expires (Unix time; 0: none yet)",
            self.expiry.clone(),
        );
        weft.register(
            "cert_valid",
            "1 while the proxy holds an unexpired certificate",
            self.valid.clone(),
        );
    }

    /// The clock expiries are converted with.
    pub fn clock(&self) -> &Converter {
        &self.clock
    }

    /// The certificate in force, if it has not expired.
    pub fn current(&self) -> Option<Arc<Leaf>> {
        let held = self.current.load();
        let held = held.as_ref()?;
        if held.expires <= Instant::now() {
            self.drop_expired();
            return None;
        }
        Some(held.leaf.clone())
    }

    /// The certificate in force, waiting at most `limit` for one when there
    /// is none yet (a connection made while the proxy starts).
    pub async fn wait_current(&self, limit: Duration) -> Option<Arc<Leaf>> {
        if let Some(leaf) = self.current() {
            return Some(leaf);
        }
        if self.status().last_error.is_some() {
            // A request for it already failed (Certify refused, the control
            // plane away): callers get their answer now, not after `limit`.
            return None;
        }
        let mut issued = self.issued();
        let wait = async {
            loop {
                if let Some(leaf) = self.current() {
                    return leaf;
                }
                if issued.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.ok()
    }

    /// Told of every new certificate.
    pub fn issued(&self) -> watch::Receiver<()> {
        self.issued.subscribe()
    }

    /// When the certificate in force expires, on tokio's clock.
    pub(crate) fn expires(&self) -> Option<Instant> {
        self.current.load().as_ref().map(|h| h.expires)
    }

    /// Why the proxy cannot do mesh TLS now, if it cannot (`/ready`).
    pub fn not_ready(&self) -> Option<String> {
        if self.current().is_some() {
            return None;
        }
        let status = self.status();
        Some(match (status.expired, &status.last_error) {
            (true, Some(e)) => format!("identity: certificate expired; renewal failing: {e}"),
            (true, None) => "identity: certificate expired".to_owned(),
            (false, Some(e)) => format!("identity: no certificate yet: {e}"),
            (false, None) => "identity: no certificate yet".to_owned(),
        })
    }

    /// What `/identity` shows.
    pub fn describe(&self) -> String {
        let mut out = format!("identity: {}\n", self.id);
        let held = self.current.load_full();
        let status = self.status();
        match held {
            Some(held) => {
                let left = held.expires.saturating_duration_since(Instant::now());
                out += &format!(
                    "issuer: {}\nvalid for: {}s\n",
                    held.leaf.issuer,
                    left.as_secs()
                );
            }
            None if status.expired => out += "certificate: expired\n",
            None => out += "certificate: none yet\n",
        }
        if let Some(e) = &status.last_error {
            out += &format!("last error: {e}\n");
        }
        out
    }

    /// Puts `leaf` in force; returns its expiry on tokio's clock.
    pub(crate) fn store(&self, leaf: Leaf) -> Instant {
        let expires = self.clock.instant(leaf.valid_until);
        let until = leaf
            .valid_until
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut status = self.status();
        self.current.store(Some(Arc::new(Held {
            leaf: Arc::new(leaf),
            expires,
        })));
        self.expiry.set(until.as_secs() as i64);
        self.valid.set(1);
        *status = Status::default();
        drop(status);
        self.certify
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
        self.issued.send_replace(());
        expires
    }

    /// Records a failed Certify; the certificate in force stays.
    pub(crate) fn failed(&self, error: String) {
        self.certify
            .get_or_create(&ResultLabel { result: "error" })
            .inc();
        self.status().last_error = Some(error);
    }

    /// Drops the certificate in force if it has expired; whether it did.
    pub(crate) fn drop_expired(&self) -> bool {
        let mut status = self.status();
        let expired = matches!(&*self.current.load(), Some(h) if h.expires <= Instant::now());
        if expired {
            self.current.store(None);
            self.valid.set(0);
            status.expired = true;
        }
        expired
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}
