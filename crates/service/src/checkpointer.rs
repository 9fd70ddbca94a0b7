//! The background checkpoint writer.
//!
//! The event loop hands a snapshot of the engine state to this task and goes on; the task writes
//! it off the async runtime's worker threads. The queue holds one snapshot: a periodic
//! checkpoint that comes due while another is queued is coalesced into the next one, so a slow
//! disk never makes snapshots pile up in memory.
//!
//! Periodic checkpoints are also paced: one starts no sooner than `min_interval` after the
//! previous one finished, nor sooner than twice as long as the previous one took. Under a flood
//! of updates the writer so takes at most about a third of a core, and the event loop keeps the
//! rest; on-demand and final checkpoints are never paced.
//!
//! Before writing, the writer flushes the NATS client: every decision made for an event the
//! snapshot includes was queued before the snapshot was taken, so once the checkpoint is on disk
//! those decisions have reached the broker, and a crash cannot lose a decision that a replay
//! would not publish again.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::checkpoint::CheckpointStore;
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

struct Job {
    state: Box<EngineState>,
    done: Option<oneshot::Sender<Result<Written, String>>>,
}

/// When the last checkpoint finished and how long it took.
#[derive(Debug, Clone, Copy)]
struct Pacing {
    finished: Instant,
    took: Duration,
}

/// Time between periodic checkpoints, as a multiple of the last one's duration.
const SPACING_FACTOR: u32 = 2;

/// Handle to the writer task.
pub struct Checkpointer {
    tx: mpsc::Sender<Job>,
    task: JoinHandle<()>,
    pacing: Arc<Mutex<Option<Pacing>>>,
    min_interval: Duration,
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
        let (tx, mut rx) = mpsc::channel::<Job>(1);
        let pacing = Arc::new(Mutex::new(None));
        let paced = pacing.clone();
        let task = tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let store = store.clone();
                let started = Instant::now();
                let state = job.state;
                let seq = state.last_applied_seq;
                let updates = state.counters.updates;
                if let Some(client) = &client {
                    if let Err(e) = client.flush().await {
                        tracing::warn!(error = %e, last_applied_seq = seq, "flush before checkpoint failed; writing it anyway");
                    }
                }
                let result = tokio::task::spawn_blocking(move || store.write(&state))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                let elapsed = started.elapsed();
                if let Ok(mut p) = paced.lock() {
                    *p = Some(Pacing {
                        finished: Instant::now(),
                        took: elapsed,
                    });
                }
                let outcome = match result {
                    Ok(path) => {
                        metrics.checkpoint_written(seq, elapsed);
                        tracing::info!(path = %path.display(), last_applied_seq = seq, updates, ms = elapsed.as_millis() as u64, "checkpoint written");
                        Ok(Written {
                            path,
                            last_applied_seq: seq,
                            updates,
                        })
                    }
                    Err(e) => {
                        metrics.checkpoint_failed();
                        tracing::error!(error = %e, last_applied_seq = seq, "checkpoint failed");
                        Err(e)
                    }
                };
                if let Some(done) = job.done {
                    let _ = done.send(outcome);
                }
            }
        });
        Self {
            tx,
            task,
            pacing,
            min_interval,
        }
    }

    /// Whether pacing lets a periodic checkpoint start now.
    fn paced_ready(&self) -> bool {
        let last = self.pacing.lock().ok().and_then(|p| *p);
        match last {
            None => true,
            Some(p) => {
                let gap = self.min_interval.max(p.took * SPACING_FACTOR);
                p.finished.elapsed() >= gap
            }
        }
    }

    /// Queues a periodic checkpoint unless one is already queued or pacing says wait; returns
    /// whether it was queued (if not, the caller tries again later).
    pub fn offer(&self, state: &EngineState) -> bool {
        if !self.paced_ready() {
            return false;
        }
        match self.tx.try_reserve() {
            Ok(permit) => {
                permit.send(Job {
                    state: Box::new(state.clone()),
                    done: None,
                });
                true
            }
            Err(_) => false,
        }
    }

    /// Queues a checkpoint and returns a receiver for its outcome, waiting for room in the
    /// queue.
    pub async fn request(&self, state: &EngineState) -> oneshot::Receiver<Result<Written, String>> {
        let (done, rx) = oneshot::channel();
        let job = Job {
            state: Box::new(state.clone()),
            done: Some(done),
        };
        if let Err(e) = self.tx.send(job).await {
            if let Some(done) = e.0.done {
                let _ = done.send(Err("checkpoint writer stopped".into()));
            }
        }
        rx
    }

    /// Writes a last checkpoint, waits for it, and stops the writer.
    pub async fn finish(self, state: &EngineState) -> Result<Written, String> {
        let rx = self.request(state).await;
        let result = rx
            .await
            .unwrap_or_else(|_| Err("checkpoint writer stopped".into()));
        drop(self.tx);
        let _ = self.task.await;
        result
    }
}
