//! Decisions as replies: the `<service.name>.decide.<event subject>` endpoint.
//!
//! In JetStream mode the stream captures the event subjects, so a core-NATS request sent on an
//! event subject is answered by the stream's PubAck, never by a decision. This endpoint gives
//! RPC callers the exactly-once path instead: a request on `rl_v2.decide.PREDICTION_GENERATED`
//! (the event subject after the prefix) is published into the stream with the marker header
//! [`REQUEST_HEADER`], and the task handling it waits, up to `delivery.decide_timeout_secs`, for
//! the event loop to apply that very stream sequence; the reply is what a core-mode request on
//! the event subject gets: the decision, a close's summary, or the rejection. When the wait runs
//! out, the reply says that the event is in the stream at its sequence and will be applied, so
//! the caller must not send it again. Headers of the request travel with the event: a caller's
//! `Nats-Msg-Id` lets the stream drop a retried request, which is answered with the sequence of
//! the first.
//!
//! A request still waiting when the service stops is answered `shutting_down` (with the event's
//! stream sequence: it will be applied after a restart) before the connection closes; see
//! [`serve`].
//!
//! In core mode the endpoint forwards the request to the event subject and relays the reply, so
//! callers can use the same subject in both modes.

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::settings::{DeliveryMode, Subjects};

/// Header that marks a stream message published by the decide endpoint: the event loop hands
/// the outcome of such a message to the waiting request.
pub const REQUEST_HEADER: &str = "Rl-V2-Decide";
/// Decide requests handled at once; more are answered `busy` at once.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Outcomes of marked messages kept for a request that has not claimed them yet (its PubAck may
/// arrive after the event was applied); the oldest go first.
const MAX_UNCLAIMED: usize = 4096;

enum Claim {
    Ready(Bytes),
    Wait(oneshot::Receiver<Bytes>),
}

#[derive(Default)]
struct Slots {
    waiting: HashMap<u64, oneshot::Sender<Bytes>>,
    unclaimed: BTreeMap<u64, Bytes>,
}

/// Requests waiting for the outcome of their stream sequence, shared by the event loop and the
/// decide tasks.
#[derive(Default)]
pub struct Waiters {
    slots: Mutex<Slots>,
    /// Cancelled when the event loop has stopped: no outcome will come any more.
    closed: CancellationToken,
}

impl Waiters {
    /// Hands the outcome of stream sequence `seq` (a marked message, just applied) to its
    /// request, or keeps it until the request claims it.
    pub fn deliver(&self, seq: u64, reply: Bytes) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        match slots.waiting.remove(&seq) {
            Some(tx) => {
                let _ = tx.send(reply);
            }
            None => {
                slots.unclaimed.insert(seq, reply);
                while slots.unclaimed.len() > MAX_UNCLAIMED {
                    slots.unclaimed.pop_first();
                }
            }
        }
    }

    fn claim(&self, seq: u64) -> Option<Claim> {
        let mut slots = self.slots.lock().ok()?;
        if let Some(reply) = slots.unclaimed.remove(&seq) {
            return Some(Claim::Ready(reply));
        }
        let (tx, rx) = oneshot::channel();
        slots.waiting.insert(seq, tx);
        Some(Claim::Wait(rx))
    }

    /// Says that the event loop has stopped: every request still waiting is answered at once
    /// that its event will be applied after a restart.
    pub fn close(&self) {
        self.closed.cancel();
    }

    fn forget(&self, seq: u64) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.waiting.remove(&seq);
            slots.unclaimed.remove(&seq);
        }
    }
}

/// Whether a stream message was published by the decide endpoint.
pub fn requested(message: &async_nats::jetstream::Message) -> bool {
    message
        .headers
        .as_ref()
        .is_some_and(|h| h.get(REQUEST_HEADER).is_some())
}

/// What the decide tasks need.
#[derive(Clone)]
pub struct Context {
    /// The connection.
    pub client: async_nats::Client,
    /// Delivery mode: JetStream publishes into the stream, core forwards the request.
    pub mode: DeliveryMode,
    /// The stream that must capture the event.
    pub stream: String,
    /// Event subjects.
    pub subjects: Subjects,
    /// `<service.name>.decide.`
    pub prefix: String,
    /// Longest wait for the decision.
    pub timeout: Duration,
    /// Shared with the event loop.
    pub waiters: Arc<Waiters>,
}

fn answer(value: serde_json::Value) -> Bytes {
    Bytes::from(value.to_string())
}

fn failure(reason: &str, error: impl std::fmt::Display) -> Bytes {
    answer(serde_json::json!({"reason": reason, "error": error.to_string()}))
}

/// Serves the decide endpoint until the event loop has stopped ([`Waiters::close`]); each
/// request runs in its own task. While the service drains, requests are still taken: their
/// events go into the stream and are answered with their decision or, once the loop has
/// stopped, `shutting_down`. Requests already delivered when the loop stops are answered
/// `shutting_down` too, and the task ends only when every accepted request has its reply.
pub fn serve(
    mut endpoint: async_nats::service::endpoint::Endpoint,
    ctx: Context,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut in_flight = tokio::task::JoinSet::new();
        let closed = ctx.waiters.closed.clone();
        loop {
            let request = tokio::select! {
                r = endpoint.next() => match r {
                    Some(r) => r,
                    None => break,
                },
                () = closed.cancelled() => break,
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                let body = failure(
                    "busy",
                    format!("more than {MAX_IN_FLIGHT} decide requests in flight; retry later"),
                );
                respond(request, body).await;
                continue;
            };
            let ctx = ctx.clone();
            in_flight.spawn(async move {
                let body = decide(&ctx, &request.message).await;
                respond(request, body).await;
                drop(permit);
            });
        }
        while let Some(Some(request)) = endpoint.next().now_or_never() {
            respond(request, shutting_down(None)).await;
        }
        while in_flight.join_next().await.is_some() {}
    })
}

/// The answer to a request whose event was not applied before the service stopped.
fn shutting_down(seq: Option<u64>) -> Bytes {
    let error = match seq {
        Some(seq) => format!(
            "rl-v2 stopped before applying the event; it is in the stream at sequence {seq} and will be applied when rl-v2 runs again: do not send it again"
        ),
        None => "rl-v2 stopped before the event was applied".to_string(),
    };
    answer(serde_json::json!({"reason": "shutting_down", "event_seq": seq, "error": error}))
}

async fn respond(request: async_nats::service::Request, body: Bytes) {
    if let Err(e) = request.respond(Ok(body)).await {
        tracing::warn!(error = %e, "decide reply failed");
    }
}

/// The reply to one decide request.
async fn decide(ctx: &Context, message: &async_nats::Message) -> Bytes {
    let subject = message
        .subject
        .as_str()
        .strip_prefix(&ctx.prefix)
        .unwrap_or_default();
    if ctx.subjects.kind_of(subject).is_none() {
        return failure(
            "unknown_subject",
            format!(
                "`{subject}` is not an event subject: request {}<event subject>, one of {}, {}, {}",
                ctx.prefix,
                ctx.subjects.prediction_generated,
                ctx.subjects.trade_executed,
                ctx.subjects.position_closed
            ),
        );
    }
    let headers = message.headers.clone().unwrap_or_default();
    match ctx.mode {
        DeliveryMode::Core => decide_core(ctx, subject, headers, message.payload.clone()).await,
        DeliveryMode::Jetstream => {
            decide_jetstream(ctx, subject, headers, message.payload.clone()).await
        }
    }
}

/// Core mode: the request is forwarded to the event subject, whose reply is the decision.
async fn decide_core(
    ctx: &Context,
    subject: &str,
    headers: async_nats::HeaderMap,
    payload: Bytes,
) -> Bytes {
    let forwarded = ctx
        .client
        .request_with_headers(subject.to_string(), headers, payload);
    tokio::select! {
        reply = tokio::time::timeout(ctx.timeout, forwarded) => match reply {
            Ok(Ok(reply)) => reply.payload,
            Ok(Err(e)) => failure("unavailable", e),
            Err(_) => failure("timeout", format!("no decision within {:?}", ctx.timeout)),
        },
        () = ctx.waiters.closed.cancelled() => shutting_down(None),
    }
}

/// JetStream mode: the event is published into the stream, and the answer is the decision made
/// when the event loop applies it at its sequence.
async fn decide_jetstream(
    ctx: &Context,
    subject: &str,
    mut headers: async_nats::HeaderMap,
    payload: Bytes,
) -> Bytes {
    headers.insert(REQUEST_HEADER, "1");
    let js = async_nats::jetstream::new(ctx.client.clone());
    let deadline = tokio::time::Instant::now() + ctx.timeout;
    let published = async {
        js.publish_with_headers(subject.to_string(), headers, payload)
            .await?
            .await
            .map_err(async_nats::Error::from)
    };
    let ack = match tokio::time::timeout_at(deadline, published).await {
        Ok(Ok(ack)) => ack,
        Ok(Err(e)) => return failure("publish_failed", format!("the stream did not take the event: {e}")),
        Err(_) => {
            return failure(
                "publish_failed",
                format!("the stream did not acknowledge the event within {:?}; it may or may not be in the stream", ctx.timeout),
            )
        }
    };
    let seq = ack.sequence;
    if ack.stream != ctx.stream {
        return answer(serde_json::json!({
            "reason": "wrong_stream",
            "event_seq": seq,
            "error": format!("the event went into stream {}, which rl-v2 does not consume (it consumes {})", ack.stream, ctx.stream),
        }));
    }
    if ack.duplicate {
        return answer(serde_json::json!({
            "reason": "duplicate",
            "event_seq": seq,
            "error": "the stream already holds this event (same Nats-Msg-Id): it was applied, or will be, once",
        }));
    }
    wait_for_outcome(ctx, seq, deadline).await
}

/// The event loop's answer for the event at `seq`, or why there is none by `deadline`.
async fn wait_for_outcome(ctx: &Context, seq: u64, deadline: tokio::time::Instant) -> Bytes {
    let rx = match ctx.waiters.claim(seq) {
        Some(Claim::Ready(reply)) => return reply,
        Some(Claim::Wait(rx)) => rx,
        None => return failure("internal", "decide waiters unavailable"),
    };
    let outcome = tokio::select! {
        outcome = tokio::time::timeout_at(deadline, rx) => outcome,
        () = ctx.waiters.closed.cancelled() => {
            ctx.waiters.forget(seq);
            return shutting_down(Some(seq));
        }
    };
    match outcome {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) | Err(_) => {
            ctx.waiters.forget(seq);
            answer(serde_json::json!({
                "reason": "timeout",
                "event_seq": seq,
                "error": format!(
                    "no decision within {:?}; the event is in the stream at sequence {seq} and will be applied: do not send it again",
                    ctx.timeout
                ),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_delivered_before_the_claim_is_kept_for_it() {
        let w = Waiters::default();
        w.deliver(7, Bytes::from_static(b"early"));
        match w.claim(7) {
            Some(Claim::Ready(b)) => assert_eq!(b, "early"),
            _ => panic!("the early outcome was lost"),
        }
        let Some(Claim::Wait(mut rx)) = w.claim(8) else {
            panic!("nothing to wait for");
        };
        w.deliver(8, Bytes::from_static(b"late"));
        assert_eq!(rx.try_recv().unwrap(), "late");
    }

    #[test]
    fn unclaimed_outcomes_are_bounded() {
        let w = Waiters::default();
        for seq in 0..(MAX_UNCLAIMED as u64 + 10) {
            w.deliver(seq, Bytes::new());
        }
        let slots = w.slots.lock().unwrap();
        assert_eq!(slots.unclaimed.len(), MAX_UNCLAIMED);
        assert_eq!(slots.unclaimed.first_key_value().map(|(k, _)| *k), Some(10));
    }
}
