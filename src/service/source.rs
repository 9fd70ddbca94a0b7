//! Where events come from: tasks that take messages off the broker and hand them, in order per
//! subject, to the single event loop that owns the engine.

use bytes::Bytes;
use futures::StreamExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ServiceError;
use crate::event::EventKind;
use crate::settings::Subjects;

/// Longest wait, at shutdown, for messages the broker already sent to arrive.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How a message was delivered, and so how to finish it.
pub enum Delivery {
    /// A core-NATS message: its sequence is the engine's own counter, and a reply subject, if
    /// any, gets the decision.
    Core {
        /// Reply subject of a request.
        reply: Option<async_nats::Subject>,
    },
    /// A JetStream message: its sequence is the stream sequence, and it is acked once applied.
    JetStream {
        /// Stream sequence.
        seq: u64,
        /// The message, for acking.
        message: Box<async_nats::jetstream::Message>,
    },
}

/// One message for the event loop.
pub struct Inbound {
    /// Which event subject it came on.
    pub kind: EventKind,
    /// The subject.
    pub subject: String,
    /// The raw payload.
    pub payload: Bytes,
    /// Transport time, epoch seconds: the event time when the event carries none.
    pub received_at: f64,
    /// When this process got it, for the decision-latency histogram.
    pub arrived: std::time::Instant,
    /// How it was delivered.
    pub delivery: Delivery,
}

/// Now, in epoch seconds.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Subscribes to the three event subjects with plain core-NATS subscriptions. Each subscription
/// is forwarded by its own task; on shutdown each drains (the server stops sending, messages
/// already sent are still forwarded) and then drops its sender, so the event loop sees the
/// channel close once every in-flight message is handed over.
pub async fn core(
    client: &async_nats::Client,
    subjects: &Subjects,
    tx: mpsc::Sender<Inbound>,
    shutdown: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, ServiceError> {
    let mut tasks = Vec::new();
    for kind in EventKind::ALL {
        let subject = subjects.event(kind).to_string();
        let mut sub = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| ServiceError::Nats(format!("subscribe to {subject}: {e}")))?;
        let tx = tx.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let forward = |msg: async_nats::Message| Inbound {
                kind,
                subject: msg.subject.to_string(),
                payload: msg.payload,
                received_at: now_secs(),
                arrived: std::time::Instant::now(),
                delivery: Delivery::Core { reply: msg.reply },
            };
            loop {
                tokio::select! {
                    msg = sub.next() => match msg {
                        Some(msg) => {
                            if tx.send(forward(msg)).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                    _ = shutdown.cancelled() => break,
                }
            }
            if let Err(e) = sub.drain().await {
                tracing::warn!(subject, error = %e, "drain failed");
            }
            let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
            while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await {
                if tx.send(forward(msg)).await.is_err() {
                    return;
                }
            }
        }));
    }
    Ok(tasks)
}
