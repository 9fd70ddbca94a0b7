//! Counters of the service shell (what the engine does not count itself), shared between the
//! event loop, the checkpoint writer and the stats endpoint.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

impl Default for ServiceMetrics {
    fn default() -> Self {
        Self {
            // 10 µs … ~5 s
            decision_latency: Histogram::new(exponential_buckets(1e-5, 2.0, 20)),
            // 1 ms … ~30 s
            checkpoint_duration: Histogram::new(exponential_buckets(1e-3, 2.0, 16)),
            messages_by_subject: Mutex::default(),
            decisions_published: AtomicU64::default(),
            dead_letters: AtomicU64::default(),
            outcomes_published: AtomicU64::default(),
            publish_failures: AtomicU64::default(),
            duplicates_skipped: AtomicU64::default(),
            events_lost: AtomicU64::default(),
            checkpoints: AtomicU64::default(),
            checkpoint_failures: AtomicU64::default(),
            last_checkpoint_seq: AtomicU64::default(),
            last_checkpoint_ms: AtomicU64::default(),
            checkpoint_requests: AtomicU64::default(),
            slow_consumer_drops: AtomicU64::default(),
            core_event_drops: AtomicU64::default(),
        }
    }
}

/// Service-level counters and histograms.
#[derive(Debug)]
pub struct ServiceMetrics {
    /// Seconds from a message's arrival to its decision being published.
    pub decision_latency: Histogram,
    /// Seconds to write a checkpoint.
    pub checkpoint_duration: Histogram,
    messages_by_subject: Mutex<BTreeMap<String, u64>>,
    decisions_published: AtomicU64,
    dead_letters: AtomicU64,
    outcomes_published: AtomicU64,
    publish_failures: AtomicU64,
    duplicates_skipped: AtomicU64,
    events_lost: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_failures: AtomicU64,
    last_checkpoint_seq: AtomicU64,
    last_checkpoint_ms: AtomicU64,
    checkpoint_requests: AtomicU64,
    slow_consumer_drops: AtomicU64,
    core_event_drops: AtomicU64,
}

/// A copy of the counters, as the stats endpoint reports them.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceSnapshot {
    /// Messages received, by subject (accepted and rejected).
    pub messages_by_subject: BTreeMap<String, u64>,
    /// Decisions published.
    pub decisions_published: u64,
    /// Dead letters published.
    pub dead_letters: u64,
    /// Outcome events published (one per Q-update).
    pub outcomes_published: u64,
    /// Publishes that failed.
    pub publish_failures: u64,
    /// Redelivered messages that were already applied.
    pub duplicates_skipped: u64,
    /// Events that aged out of the stream before they were applied.
    pub events_lost: u64,
    /// Checkpoints written since start.
    pub checkpoints: u64,
    /// Checkpoints that failed since start.
    pub checkpoint_failures: u64,
    /// `last_applied_seq` of the latest checkpoint written.
    pub last_checkpoint_seq: u64,
    /// How long the latest checkpoint took, in milliseconds.
    pub last_checkpoint_ms: u64,
    /// `rl_v2.checkpoint` requests received (concurrent ones share a write).
    pub checkpoint_requests: u64,
    /// Messages the NATS client dropped because rl-v2 fell behind (slow consumer). Core-mode
    /// events are counted exactly (their connection's message count less the messages handed
    /// to the event loop); other subscriptions (JetStream deliveries, endpoints) from the
    /// client's slow-consumer events, which are themselves dropped in a flood: a lower bound.
    pub slow_consumer_drops: u64,
}

impl ServiceMetrics {
    /// Counts a message on `subject`.
    pub fn message(&self, subject: &str) {
        if let Ok(mut m) = self.messages_by_subject.lock() {
            match m.get_mut(subject) {
                Some(n) => *n += 1,
                None => {
                    m.insert(subject.to_string(), 1);
                }
            }
        }
    }

    /// Counts a published decision.
    pub fn decision_published(&self) {
        self.decisions_published.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a dead letter.
    pub fn dead_letter(&self) {
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a published outcome event.
    pub fn outcome_published(&self) {
        self.outcomes_published.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed publish.
    pub fn publish_failed(&self) {
        self.publish_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a redelivery that was skipped.
    pub fn duplicate_skipped(&self) {
        self.duplicates_skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts events that aged out of the stream unapplied.
    pub fn events_lost(&self, n: u64) {
        self.events_lost.fetch_add(n, Ordering::Relaxed);
    }

    /// Records a written checkpoint.
    pub fn checkpoint_written(&self, seq: u64, took: Duration) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.checkpoint_duration.observe(took.as_secs_f64());
        self.last_checkpoint_seq.store(seq, Ordering::Relaxed);
        self.last_checkpoint_ms
            .store(took.as_millis() as u64, Ordering::Relaxed);
    }

    /// Counts a message the client dropped as a slow consumer.
    pub fn slow_consumer_drop(&self) {
        self.slow_consumer_drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the core-mode event messages dropped so far, as counted by the event
    /// connection (never decreases).
    pub fn core_event_drops(&self, dropped: u64) {
        self.core_event_drops.fetch_max(dropped, Ordering::Relaxed);
    }

    /// Messages dropped as a slow consumer so far.
    pub fn slow_consumer_drops(&self) -> u64 {
        self.slow_consumer_drops.load(Ordering::Relaxed)
            + self.core_event_drops.load(Ordering::Relaxed)
    }

    /// Counts a failed checkpoint.
    pub fn checkpoint_failed(&self) {
        self.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// An `rl_v2.checkpoint` request was received.
    pub fn checkpoint_requested(&self) {
        self.checkpoint_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> ServiceSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServiceSnapshot {
            messages_by_subject: self
                .messages_by_subject
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default(),
            decisions_published: get(&self.decisions_published),
            dead_letters: get(&self.dead_letters),
            outcomes_published: get(&self.outcomes_published),
            publish_failures: get(&self.publish_failures),
            duplicates_skipped: get(&self.duplicates_skipped),
            events_lost: get(&self.events_lost),
            checkpoints: get(&self.checkpoints),
            checkpoint_failures: get(&self.checkpoint_failures),
            last_checkpoint_seq: get(&self.last_checkpoint_seq),
            last_checkpoint_ms: get(&self.last_checkpoint_ms),
            checkpoint_requests: get(&self.checkpoint_requests),
            slow_consumer_drops: self.slow_consumer_drops(),
        }
    }
}
