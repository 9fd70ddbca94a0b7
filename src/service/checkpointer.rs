//! The background checkpoint writer.
//!
//! The event loop hands a snapshot of the engine state to this task and goes on; the task writes
//! it off the async runtime's worker threads. The queue holds one snapshot: a periodic
//! checkpoint that comes due while another is queued is coalesced into the next one, so a slow
//! disk never makes snapshots pile up in memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::metrics::ServiceMetrics;
use crate::checkpoint::CheckpointStore;
use crate::engine::EngineState;

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

/// Handle to the writer task.
pub struct Checkpointer {
    tx: mpsc::Sender<Job>,
    task: JoinHandle<()>,
}

impl Checkpointer {
    /// Starts the writer for `store`.
    pub fn start(store: CheckpointStore, metrics: Arc<ServiceMetrics>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(1);
        let task = tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let store = store.clone();
                let started = Instant::now();
                let state = job.state;
                let seq = state.last_applied_seq;
                let updates = state.counters.updates;
                let result = tokio::task::spawn_blocking(move || store.write(&state))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                let elapsed = started.elapsed();
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
        Self { tx, task }
    }

    /// Queues a periodic checkpoint unless one is already queued; returns whether it was
    /// queued (if not, the caller tries again later).
    pub fn offer(&self, state: &EngineState) -> bool {
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
