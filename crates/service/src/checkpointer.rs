//! The background checkpoint writer.
//!
//! The event loop hands snapshots of the engine state to this task and goes on at once: handing
//! one over never waits for the writer. There is one slot for a snapshot waiting to be written;
//! a snapshot handed over while another waits replaces it (the newer one covers everything the
//! older one did), and requests waiting on the older one are answered by the write of the newer.
//! So a slow disk never makes snapshots pile up in memory, and any number of concurrent
//! `rl_v2.checkpoint` requests cost at most the write in progress plus one more.
//!
//! Periodic checkpoints are paced by the writer itself: one starts no sooner than `min_interval`
//! after the previous write finished, nor sooner than twice as long as the previous write took.
//! The writer waits out that gap on its own timer, so a checkpoint that came due is written
//! when the gap ends whether or not more events arrive. Under a flood of updates the writer so
//! takes at most about a third of a core, and the event loop keeps the rest; on-demand and final
//! checkpoints are never paced.
//!
//! Before writing, the writer flushes the NATS client: every decision made for an event the
//! snapshot includes was queued before the snapshot was taken, so once the checkpoint is on disk
//! those decisions have reached the broker, and a crash cannot lose a decision that a replay
//! would not publish again.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use crate::checkpoint::CheckpointStore;
use crate::fault::FaultPoints;
use crate::metrics::ServiceMetrics;
use rl_v2_core::engine::EngineState;

/// Where a checkpoint went, and what it covers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    /// Path of `checkpoint.json`.
    pub path: PathBuf,
    /// Sequence number of the last event it includes.
    pub last_applied_seq: u64,
    /// Q-updates it includes.
    pub updates: u64,
}

/// The outcome a requester of a checkpoint receives.
pub type Outcome = Result<Written, String>;

/// A snapshot waiting to be written.
struct Pending {
    state: Box<EngineState>,
    /// Periodic (paced) rather than requested.
    paced: bool,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

/// What the event loop and the writer share.
#[derive(Default)]
struct Slot {
    pending: Option<Pending>,
    /// When the last write finished and how long it took.
    last: Option<(Instant, Duration)>,
    /// No more snapshots will come: write what waits, then stop.
    closed: bool,
}

struct Shared {
    slot: Mutex<Slot>,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // The slot holds plain data that every writer leaves consistent.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `state` in the slot (replacing a waiting one) and wakes the writer.
    fn hand_over(
        &self,
        state: &EngineState,
        paced: bool,
        waiter: Option<oneshot::Sender<Outcome>>,
    ) {
        let mut slot = self.lock();
        match &mut slot.pending {
            Some(pending) => {
                *pending.state = state.clone();
                pending.paced &= paced;
                pending.waiters.extend(waiter);
            }
            None => {
                slot.pending = Some(Pending {
                    state: Box::new(state.clone()),
                    paced,
                    waiters: waiter.into_iter().collect(),
                });
            }
        }
        drop(slot);
        self.wake.notify_one();
    }
}

/// Time between periodic checkpoints, as a multiple of the last one's duration.
const SPACING_FACTOR: u32 = 2;

/// Handle to the writer task.
pub struct Checkpointer {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Checkpointer {
    /// Starts the writer for `store`; periodic checkpoints are at least `min_interval` apart, and
    /// `client`, when given, is flushed before each write.
    pub fn start(
        store: CheckpointStore,
        metrics: Arc<ServiceMetrics>,
        min_interval: Duration,
        client: Option<async_nats::Client>,
    ) -> Self {
        Self::start_with_faults(store, metrics, min_interval, client, FaultPoints::default())
    }

    /// As [`Self::start`], with test-only fault points (see [`crate::fault`]).
    pub fn start_with_faults(
        store: CheckpointStore,
        metrics: Arc<ServiceMetrics>,
        min_interval: Duration,
        client: Option<async_nats::Client>,
        faults: FaultPoints,
    ) -> Self {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::default()),
            wake: Notify::new(),
        });
        let writer = Writer {
            store,
            metrics,
            min_interval,
            client,
            faults: Arc::new(faults),
            shared: shared.clone(),
        };
        let task = tokio::spawn(writer.run());
        Self { shared, task }
    }

    /// Hands over a snapshot for a periodic checkpoint, written once pacing allows. Never waits.
    pub fn offer(&self, state: &EngineState) {
        self.shared.hand_over(state, true, None);
    }

    /// Hands over a snapshot for a checkpoint written as soon as the writer is free, and returns
    /// a receiver for its outcome. Never waits; requests that arrive while a snapshot waits
    /// share its write.
    pub fn request(&self, state: &EngineState) -> oneshot::Receiver<Outcome> {
        let (done, rx) = oneshot::channel();
        self.shared.hand_over(state, false, Some(done));
        rx
    }

    /// Writes a last checkpoint, waits for it, and stops the writer.
    pub async fn finish(self, state: &EngineState) -> Outcome {
        let rx = self.request(state);
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        let result = rx
            .await
            .unwrap_or_else(|_| Err("checkpoint writer stopped".into()));
        let _ = self.task.await;
        result
    }
}

/// The writer task.
struct Writer {
    store: CheckpointStore,
    metrics: Arc<ServiceMetrics>,
    min_interval: Duration,
    client: Option<async_nats::Client>,
    faults: Arc<FaultPoints>,
    shared: Arc<Shared>,
}

impl Writer {
    async fn run(self) {
        while let Some(pending) = self.next().await {
            let outcome = self.write(pending.state).await;
            for waiter in pending.waiters {
                let _ = waiter.send(outcome.clone());
            }
        }
    }

    /// Waits for a snapshot that may be written now and takes it; `None` once closed and empty.
    async fn next(&self) -> Option<Pending> {
        loop {
            let wait_until = {
                let mut slot = self.shared.lock();
                match &slot.pending {
                    None if slot.closed => return None,
                    None => None,
                    Some(p) => match slot.last {
                        Some((finished, took)) if p.paced && !slot.closed => {
                            let ready = finished + self.min_interval.max(took * SPACING_FACTOR);
                            if Instant::now() >= ready {
                                return slot.pending.take();
                            }
                            Some(ready)
                        }
                        _ => return slot.pending.take(),
                    },
                }
            };
            match wait_until {
                // Woken early when a request makes the waiting snapshot unpaced.
                Some(ready) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(ready.into()) => {}
                        _ = self.shared.wake.notified() => {}
                    }
                }
                None => self.shared.wake.notified().await,
            }
        }
    }

    async fn write(&self, state: Box<EngineState>) -> Outcome {
        let started = Instant::now();
        let seq = state.last_applied_seq;
        let updates = state.counters.updates;
        if let Some(client) = &self.client {
            if let Err(e) = client.flush().await {
                tracing::warn!(error = %e, last_applied_seq = seq, "flush before checkpoint failed; writing it anyway");
            }
        }
        let store = self.store.clone();
        let faults = self.faults.clone();
        let result = tokio::task::spawn_blocking(move || {
            faults.hold();
            store.write_with(&state, &mut |step| faults.after_step(step))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        let elapsed = started.elapsed();
        self.shared.lock().last = Some((Instant::now(), elapsed));
        match result {
            Ok(path) => {
                self.metrics.checkpoint_written(seq, elapsed);
                tracing::info!(path = %path.display(), last_applied_seq = seq, updates, ms = elapsed.as_millis() as u64, "checkpoint written");
                Ok(Written {
                    path,
                    last_applied_seq: seq,
                    updates,
                })
            }
            Err(e) => {
                self.metrics.checkpoint_failed();
                tracing::error!(error = %e, last_applied_seq = seq, "checkpoint failed");
                Err(e)
            }
        }
    }
}
