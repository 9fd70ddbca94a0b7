//! Where events come from: tasks that take messages off the broker and hand them, in order per
//! subject, to the single event loop that owns the engine.

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

use crate::metrics::ServiceMetrics;
use crate::settings::Subjects;
use crate::ServiceError;
use rl_v2_core::event::EventKind;

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

/// What a message is for the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// An event of this kind.
    Event(EventKind),
    /// An operator's command on the control subject.
    Control,
}

/// One message for the event loop.
pub struct Inbound {
    /// Which consumed subject it came on.
    pub kind: Topic,
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

/// Where the event loop takes its messages from. Polling it is cancel-safe, so the loop can
/// select on it beside the service endpoints.
// One value per service, held for its whole life: the size difference between the variants
// costs nothing, and boxing the core subscriptions would add a pointer chase per message.
#[allow(clippy::large_enum_variant)]
pub enum Source {
    /// Plain core-NATS subscriptions to the three event subjects and the control subject, polled directly by the event
    /// loop (no task or channel in between).
    Core {
        /// The three subscriptions, merged.
        subscriptions: futures::stream::SelectAll<async_nats::Subscriber>,
        /// Subject names, to tell the event kinds apart.
        subjects: Box<Subjects>,
        /// Message count of the connection that carries only these subscriptions.
        received: Arc<async_nats::Statistics>,
        /// Messages handed to the event loop.
        handed: u64,
        /// Where dropped messages are counted.
        metrics: Arc<ServiceMetrics>,
    },
    /// Messages handed over by a consuming task (JetStream).
    Channel(mpsc::Receiver<Inbound>),
}

impl Source {
    /// Subscribes to the three event subjects and the control subject on `client`, a connection
    /// that carries nothing else: whenever the subscriptions are empty, every message it received and did not hand
    /// over was dropped by the client (slow consumer), and that count goes to `metrics`.
    pub async fn core(
        client: &async_nats::Client,
        subjects: &Subjects,
        metrics: Arc<ServiceMetrics>,
    ) -> Result<Self, ServiceError> {
        let mut subs = Vec::new();
        for subject in subjects.consumed() {
            subs.push(
                client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| ServiceError::nats(format!("subscribe to {subject}"), e))?,
            );
        }
        // The server has the subscriptions before the service announces itself.
        client
            .flush()
            .await
            .map_err(|e| ServiceError::nats("subscribe to the event subjects", e))?;
        Ok(Self::Core {
            subscriptions: futures::stream::select_all(subs),
            subjects: Box::new(subjects.clone()),
            received: client.statistics(),
            handed: 0,
            metrics,
        })
    }

    /// The next message; `None` once the source is stopped and everything in flight was
    /// handed over.
    pub async fn next(&mut self) -> Option<Inbound> {
        match self {
            Self::Core {
                subscriptions,
                subjects,
                received,
                handed,
                metrics,
            } => loop {
                let msg = match subscriptions.next().now_or_never() {
                    Some(msg) => msg?,
                    None => {
                        // Nothing buffered: what the connection received and was not handed
                        // over was dropped.
                        let total = received.in_messages.load(Ordering::Relaxed);
                        metrics.core_event_drops(total.saturating_sub(*handed));
                        subscriptions.next().await?
                    }
                };
                *handed += 1;
                // Only the consumed subjects are subscribed to.
                let Some(kind) = subjects.topic_of(msg.subject.as_str()) else {
                    continue;
                };
                return Some(Inbound {
                    kind,
                    subject: msg.subject.to_string(),
                    payload: msg.payload,
                    received_at: now_secs(),
                    arrived: std::time::Instant::now(),
                    delivery: Delivery::Core { reply: msg.reply },
                });
            },
            Self::Channel(rx) => rx.recv().await,
        }
    }

    /// Stops taking new messages: core subscriptions are drained (the server stops sending;
    /// what it already sent is still handed over). A channel source stops with its task.
    pub async fn stop(&mut self) {
        if let Self::Core { subscriptions, .. } = self {
            for sub in subscriptions.iter_mut() {
                if let Err(e) = sub.drain().await {
                    tracing::warn!(error = %e, "drain failed");
                }
            }
        }
    }
}
