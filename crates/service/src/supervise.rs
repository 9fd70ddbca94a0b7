//! Watching the service's long-lived tasks, so that a task that panics takes the service down
//! with an error instead of leaving it half alive (or letting it exit 0 as if it had finished).
//!
//! For tests only, the environment variable [`FAULT_ENV`] names a task that panics on purpose
//! when it starts (`RL_V2_TEST_PANIC=jetstream_consumer`), so the exit path of a panic can be
//! tested against the real binary. Operators never set it.

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use std::future::Future;
use std::pin::Pin;
use tokio::task::{JoinError, JoinHandle};

/// Test-only fault injection: the name of a task that panics when it starts.
pub const FAULT_ENV: &str = "RL_V2_TEST_PANIC";

/// Panics when [`FAULT_ENV`] names `point`. Test-only fault injection.
pub fn fault_point(point: &str) {
    if std::env::var(FAULT_ENV).is_ok_and(|v| v == point) {
        panic!("fault injected by {FAULT_ENV}={point}");
    }
}

/// A task that ended, and how.
pub struct Ended {
    /// What the task was for.
    pub name: &'static str,
    result: Result<(), JoinError>,
}

impl Ended {
    /// The panic message, when the task panicked.
    pub fn panicked(&self) -> Option<String> {
        let Err(e) = &self.result else {
            return None;
        };
        if !e.is_panic() {
            return None;
        }
        Some(e.to_string())
    }
}

type Watched = Pin<Box<dyn Future<Output = Ended> + Send>>;

/// The long-lived tasks of the service; polling [`Tasks::next`] yields each as it ends.
#[derive(Default)]
pub struct Tasks {
    running: FuturesUnordered<Watched>,
}

impl Tasks {
    /// Watches `task`.
    pub fn add(&mut self, name: &'static str, task: JoinHandle<()>) {
        self.running.push(Box::pin(async move {
            Ended {
                name,
                result: task.await,
            }
        }));
    }

    /// Whether no task is left.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// The next task to end; `None` when none is left. Cancel-safe.
    pub async fn next(&mut self) -> Option<Ended> {
        self.running.next().await
    }
}
