//! The spans the receiver has recorded, shared by the gRPC side (which adds
//! to it), the query side and the test's handle (which read it). Bounded:
//! at most [`Store::capacity`] spans (100,000 by default, about 100 MB of
//! small spans), the oldest dropped first and counted. Every accepted or
//! refused export bumps a `watch` generation, so a waiting test wakes on it
//! instead of polling.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::watch;

use super::span::RecordedSpan;

/// The default bound on recorded spans.
pub const CAPACITY: usize = 100_000;

/// The recorded spans and the receiver's counters.
#[derive(Debug)]
pub struct Store {
    spans: Mutex<VecDeque<RecordedSpan>>,
    capacity: usize,
    dropped: AtomicU64,
    exports: AtomicU64,
    refused: AtomicU64,
    failing: AtomicBool,
    in_flight: AtomicUsize,
    generation: watch::Sender<u64>,
}

impl Store {
    /// An empty store keeping at most `capacity` spans (at least one).
    pub fn new(capacity: usize) -> Self {
        Store {
            spans: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            exports: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            generation: watch::Sender::new(0),
        }
    }

    /// The spans, also after a panicking test thread poisoned the lock.
    pub fn lock(&self) -> MutexGuard<'_, VecDeque<RecordedSpan>> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the spans of one accepted export, dropping the oldest beyond
    /// the bound, and wakes the waiters.
    pub fn record(&self, spans: Vec<RecordedSpan>) {
        {
            let mut all = self.lock();
            all.extend(spans);
            let over = all.len().saturating_sub(self.capacity);
            if over > 0 {
                all.drain(..over);
                self.dropped.fetch_add(over as u64, Ordering::Relaxed);
            }
        }
        self.exports.fetch_add(1, Ordering::Relaxed);
        self.bump();
    }

    /// Counts an export refused because the store is set failing.
    pub fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.bump();
    }

    /// Marks an export as being handled until the guard is dropped (which
    /// wakes the waiters again, so a stopping server sees it end).
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// How many exports are being handled now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Returns once no export is being handled.
    pub async fn idle(&self) {
        let mut exports = self.subscribe();
        loop {
            exports.borrow_and_update();
            if self.in_flight() == 0 || exports.changed().await.is_err() {
                return;
            }
        }
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// A receiver that changes on every export, accepted or refused.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// How many spans it keeps at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many spans were dropped to stay within the bound.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// How many export calls were accepted.
    pub fn exports(&self) -> u64 {
        self.exports.load(Ordering::Relaxed)
    }

    /// How many export calls were answered UNAVAILABLE.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether exports are answered UNAVAILABLE (and nothing recorded).
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }
}

/// An export being handled ([`Store::begin`]).
#[derive(Debug)]
pub struct InFlight<'a>(&'a Store);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.bump();
    }
}
