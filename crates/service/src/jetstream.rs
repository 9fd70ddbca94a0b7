//! JetStream delivery: a stream captures the three event subjects and the control subject, and
//! rl-v2 consumes it in one total order from its checkpoint's `last_applied_seq + 1` (so an
//! operator's command takes effect between the same two events in every replay).
//!
//! The consumer is an ephemeral pull consumer with explicit acks, created at every start (and
//! again whenever it is lost) at the next sequence rl-v2 needs. The checkpoint, not the
//! consumer, is the durable position: an event acked but not yet checkpointed when the process
//! dies is simply consumed again from the stream and applied to the checkpointed state, which
//! ends in exactly the state an uninterrupted run reaches. Redeliveries and replays of
//! sequences already applied are skipped by the event loop. Server 2.9 ignores several filters
//! on one consumer, so the consumer has none: the stream should capture only the consumed
//! subjects, and messages on any other subject are acked and skipped.

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::ServiceMetrics;
use crate::settings::{DeliverySettings, Subjects};
use crate::source::{Delivery, Inbound};
use crate::ServiceError;

/// Messages asked for per pull request.
const BATCH: usize = 256;
/// Idle heartbeat asked of the server; two missed ones mean the consumer is gone.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long an idle ephemeral consumer outlives its client.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(60);
/// Pause before recreating a lost consumer.
const RECREATE_DELAY: Duration = Duration::from_millis(250);
/// Window in which the stream drops a republished message with the same `Nats-Msg-Id`.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Where consumption starts, decided at start-up from the checkpoint and the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartPlan {
    /// First stream sequence to consume.
    pub start_seq: u64,
    /// Set when the checkpoint is ahead of the stream and that was accepted: the engine's
    /// `last_applied_seq` must be moved back to this value.
    pub rebase_to: Option<u64>,
    /// Events that aged out of the stream before they were applied.
    pub lost: u64,
}

/// Decides where to start. Pure, so its rules are unit-tested.
pub fn plan_start(
    last_applied_seq: u64,
    first_seq: u64,
    last_seq: u64,
    accept_stream_reset: bool,
    stream: &str,
) -> Result<StartPlan, ServiceError> {
    let mut rebase_to = None;
    let mut next = last_applied_seq + 1;
    if last_applied_seq > last_seq {
        if !accept_stream_reset {
            return Err(ServiceError::JetStream(format!(
                "the checkpoint has applied events up to sequence {last_applied_seq}, but stream \
                 {stream} ends at sequence {last_seq}: the stream lost its tail or was recreated \
                 (or the checkpoint was written in core mode by a version that did not record it). \
                 Set delivery.accept_stream_reset = true (RL_V2__DELIVERY__ACCEPT_STREAM_RESET=true) \
                 to keep the learned state and continue from the stream's next event"
            )));
        }
        rebase_to = Some(last_seq);
        next = last_seq + 1;
    }
    let lost = first_seq.saturating_sub(next);
    Ok(StartPlan {
        start_seq: next.max(first_seq).max(1),
        rebase_to,
        lost,
    })
}

/// Whether a stream subject (possibly with wildcards) captures `subject`.
pub fn captures(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn unavailable(url: &str, e: impl std::fmt::Display) -> ServiceError {
    ServiceError::JetStream(format!(
        "JetStream is not available on {url} ({e}). Enable it on the server (nats-server -js, or \
         `jetstream {{}}` in its configuration), or run rl-v2 without it: \
         delivery.mode = \"core\" (RL_V2__DELIVERY__MODE=core)"
    ))
}

/// Gets the stream or creates it; an error that says how to fix it when the server has no
/// JetStream. (Account info is not used: 2.9 servers answer it in a shape this client
/// rejects.)
pub async fn prepare_stream(
    js: &jetstream::Context,
    url: &str,
    delivery: &DeliverySettings,
    subjects: &Subjects,
) -> Result<stream::Stream, ServiceError> {
    let wanted = subjects.consumed();
    match js.get_stream(&delivery.stream).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| ServiceError::jetstream(format!("stream {}", delivery.stream), e))?;
            let control = &subjects.control;
            if !info.config.subjects.iter().any(|p| captures(p, control)) {
                return capture_control(js, info.config.clone(), control).await;
            }
            for subject in &wanted {
                if !info.config.subjects.iter().any(|p| captures(p, subject)) {
                    tracing::warn!(
                        stream = %delivery.stream,
                        subject,
                        stream_subjects = ?info.config.subjects,
                        "the existing stream does not capture this event subject: its events will not reach rl-v2"
                    );
                }
            }
            if info.config.num_replicas != delivery.stream_replicas {
                tracing::warn!(
                    stream = %delivery.stream,
                    replicas = info.config.num_replicas,
                    wanted = delivery.stream_replicas,
                    "the existing stream keeps its own number of replicas"
                );
            }
            Ok(existing)
        }
        Err(e) => {
            let not_found = matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            );
            if !not_found {
                // Without JetStream the server answers "not enabled", or nothing answers at all.
                return Err(unavailable(url, e));
            }
            let config = stream::Config {
                name: delivery.stream.clone(),
                subjects: wanted,
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                max_age: Duration::from_secs(delivery.stream_max_age_secs),
                max_bytes: delivery.stream_max_bytes,
                num_replicas: delivery.stream_replicas,
                duplicate_window: DUPLICATE_WINDOW,
                description: Some("rl-v2 trading events".into()),
                ..Default::default()
            };
            let created = js.create_stream(config).await.map_err(|e| {
                ServiceError::jetstream(format!("create stream {}", delivery.stream), e)
            })?;
            tracing::info!(stream = %delivery.stream, "stream created");
            Ok(created)
        }
    }
}

/// Adds the control subject to a stream created before it was captured (by an older rl-v2), so
/// commands are ordered with events.
async fn capture_control(
    js: &jetstream::Context,
    mut config: stream::Config,
    control: &str,
) -> Result<stream::Stream, ServiceError> {
    config.subjects.push(control.to_string());
    let what = format!("add {control} to stream {}", config.name);
    js.update_stream(&config)
        .await
        .map_err(|e| ServiceError::jetstream(what.clone(), e))?;
    tracing::info!(stream = %config.name, subject = control, "the stream now captures the control subject");
    js.get_stream(&config.name)
        .await
        .map_err(|e| ServiceError::jetstream(what, e))
}

/// The stream's first and last sequence.
pub async fn bounds(stream: &mut stream::Stream) -> Result<(u64, u64), ServiceError> {
    let info = stream
        .info()
        .await
        .map_err(|e| ServiceError::jetstream("stream info", e))?;
    Ok((info.state.first_sequence, info.state.last_sequence))
}

/// Consumes the stream from `start_seq`, handing messages to the event loop in stream order,
/// until `shutdown`. A lost consumer (missed heartbeats, deleted, broker restarted) is recreated
/// at the sequence after the last one handed over.
pub fn consume(
    stream: stream::Stream,
    start_seq: u64,
    delivery: DeliverySettings,
    subjects: Subjects,
    tx: mpsc::Sender<Inbound>,
    shutdown: CancellationToken,
    metrics: Arc<ServiceMetrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        crate::supervise::fault_point("jetstream_consumer");
        let mut feed = Feed {
            next: start_seq,
            subjects,
            tx,
            metrics,
        };
        while !shutdown.is_cancelled() {
            match open(&stream, feed.next, &delivery).await {
                Ok(mut messages) => {
                    tracing::info!(start_seq = feed.next, "consuming");
                    if let Flow::Stop = feed.forward(&mut messages, &shutdown).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, start_seq = feed.next, "cannot consume; retrying")
                }
            }
            if pause(&shutdown).await {
                break;
            }
        }
    })
}

/// An ephemeral pull consumer from `start_seq` with explicit acks, and its message stream.
async fn open(
    stream: &stream::Stream,
    start_seq: u64,
    delivery: &DeliverySettings,
) -> Result<consumer::pull::Stream, crate::serve::BoxError> {
    let config = consumer::pull::Config {
        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
            start_sequence: start_seq,
        },
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs_f64(delivery.ack_wait_secs),
        inactive_threshold: INACTIVE_THRESHOLD,
        description: Some("rl-v2".into()),
        ..Default::default()
    };
    let consumer = stream.create_consumer(config).await?;
    Ok(consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .heartbeat(HEARTBEAT)
        .messages()
        .await?)
}

/// What the consumer task does after a consumer's messages end.
enum Flow {
    /// Create a new consumer at the next sequence.
    Recreate,
    /// Shutdown, or the event loop is gone.
    Stop,
}

/// Hands the stream's messages to the event loop, and knows the next sequence to ask for.
struct Feed {
    next: u64,
    subjects: Subjects,
    tx: mpsc::Sender<Inbound>,
    metrics: Arc<ServiceMetrics>,
}

impl Feed {
    /// Forwards `messages` until they end, fail, or skip a sequence.
    async fn forward(
        &mut self,
        messages: &mut consumer::pull::Stream,
        shutdown: &CancellationToken,
    ) -> Flow {
        // The first message of a new consumer fixes where the stream really is (messages may
        // have been deleted); after it, a jump in sequence means messages were lost in
        // transit, and the consumer is recreated at the gap.
        let mut contiguous_from: Option<u64> = None;
        loop {
            let item = tokio::select! {
                item = messages.next() => item,
                _ = shutdown.cancelled() => return Flow::Stop,
            };
            let message = match item {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer lost; recreating it at sequence {}", self.next);
                    return Flow::Recreate;
                }
                None => return Flow::Recreate,
            };
            let (seq, published, redelivered) = match message.info() {
                Ok(info) => (
                    info.stream_sequence,
                    info.published.unix_timestamp_nanos() as f64 / 1e9,
                    info.delivered > 1,
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "message without JetStream metadata; skipped");
                    continue;
                }
            };
            if let Some(expected) = contiguous_from.filter(|e| !redelivered && seq > *e) {
                tracing::warn!(
                    expected,
                    got = seq,
                    "gap in delivery; recreating the consumer"
                );
                return Flow::Recreate;
            }
            if !self.hand_over(message, seq, published).await {
                return Flow::Stop;
            }
            self.next = self.next.max(seq + 1);
            contiguous_from = Some(self.next);
        }
    }

    /// Sends one message to the event loop (or acks and skips one on a subject rl-v2 does not
    /// consume); false when the event loop is gone.
    async fn hand_over(&self, message: jetstream::Message, seq: u64, published: f64) -> bool {
        let Some(kind) = self.subjects.topic_of(message.subject.as_str()) else {
            self.metrics.message(message.subject.as_str());
            tracing::warn!(subject = %message.subject, seq, "not an event subject; acked and skipped");
            let _ = message.ack().await;
            return true;
        };
        let inbound = Inbound {
            kind,
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
            received_at: published,
            arrived: std::time::Instant::now(),
            delivery: Delivery::JetStream {
                seq,
                message: Box::new(message),
            },
        };
        self.tx.send(inbound).await.is_ok()
    }
}

/// Waits before a retry; true when shutdown came first.
async fn pause(shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(RECREATE_DELAY) => false,
        _ = shutdown.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_after_the_checkpoint() {
        let p = plan_start(41, 1, 100, false, "S").unwrap();
        assert_eq!(
            p,
            StartPlan {
                start_seq: 42,
                rebase_to: None,
                lost: 0
            }
        );
        assert_eq!(plan_start(0, 0, 0, false, "S").unwrap().start_seq, 1);
        assert_eq!(plan_start(100, 1, 100, false, "S").unwrap().start_seq, 101);
    }

    #[test]
    fn checkpoint_ahead_of_the_stream_is_refused_unless_accepted() {
        let err = plan_start(500, 1, 120, false, "RL")
            .unwrap_err()
            .to_string();
        assert!(err.contains("500") && err.contains("120"), "{err}");
        assert!(err.contains("delivery.accept_stream_reset"), "{err}");
        let p = plan_start(500, 1, 120, true, "RL").unwrap();
        assert_eq!(
            p,
            StartPlan {
                start_seq: 121,
                rebase_to: Some(120),
                lost: 0
            }
        );
    }

    #[test]
    fn aged_out_events_are_counted() {
        let p = plan_start(10, 50, 80, false, "RL").unwrap();
        assert_eq!(
            p,
            StartPlan {
                start_seq: 50,
                rebase_to: None,
                lost: 39
            }
        );
    }

    #[test]
    fn subject_patterns() {
        assert!(captures("POSITION_CLOSED", "POSITION_CLOSED"));
        assert!(captures("events.>", "events.trade.executed"));
        assert!(captures("events.*", "events.closed"));
        assert!(!captures("events.*", "events.a.b"));
        assert!(!captures("TRADE", "TRADE_EXECUTED"));
        assert!(captures(">", "ANY"));
    }
}
