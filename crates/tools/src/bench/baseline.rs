//! The bare baselines: the least any service must do for the same load. Each decodes every
//! event as JSON and, for predictions and trades, publishes a fixed decision of the size of
//! rl-v2's to the decision subject (with the event's trace id, so the load can match it).

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use rl_v2_service::settings::Subjects;

/// A decision-shaped body of about the size of rl-v2's decisions.
fn fixed_decision(trace_id: &str) -> Bytes {
    let body = serde_json::json!({
        "decision_id": "meta_strategy-0", "agent": "meta_strategy", "symbol": "BTCUSDT",
        "event_seq": 0, "trace_id": trace_id, "strategy": "dual_momentum", "model": "lstm",
        "weight": 1.0, "action_index": 2, "explored": false, "propensity": 0.9016666666666667,
        "epsilon": 0.1, "q_value": 0.0, "state_key": "UNKNOWN|vol=3|press=2|conf=2|wr=2|health=2",
        "timestamp": 1764633600.0,
    });
    Bytes::from(body.to_string())
}

/// The decision for one event, or none for a close or an undecodable payload.
fn answer(subjects: &Subjects, subject: &str, payload: &[u8]) -> Option<(String, Bytes)> {
    let event: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let trace = event.get("trace_id").and_then(|t| t.as_str()).unwrap_or("");
    if subject == subjects.prediction_generated {
        Some((subjects.meta_decision.clone(), fixed_decision(trace)))
    } else if subject == subjects.trade_executed {
        Some((subjects.sizing_decision.clone(), fixed_decision(trace)))
    } else {
        None
    }
}

/// Starts the core-NATS baseline: three subscriptions merged into one loop.
pub async fn core(
    client: async_nats::Client,
    subjects: Subjects,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, String> {
    let mut subs = Vec::new();
    for s in [
        &subjects.prediction_generated,
        &subjects.trade_executed,
        &subjects.position_closed,
    ] {
        subs.push(
            client
                .subscribe(s.clone())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    client.flush().await.map_err(|e| e.to_string())?;
    let mut merged = futures::stream::select_all(subs);
    Ok(tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = merged.next() => m,
                _ = shutdown.cancelled() => None,
            };
            let Some(msg) = msg else { break };
            if let Some((subject, body)) = answer(&subjects, msg.subject.as_str(), &msg.payload) {
                let _ = client.publish(subject, body).await;
            }
        }
        let _ = client.flush().await;
    }))
}

/// Starts the JetStream baseline: a stream over the event subjects, one pull consumer, ack
/// after publishing the decision.
pub async fn jetstream(
    client: async_nats::Client,
    subjects: Subjects,
    stream_name: &str,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, String> {
    let js = jetstream::new(client.clone());
    let stream = js
        .get_or_create_stream(stream::Config {
            name: stream_name.to_string(),
            subjects: vec![
                subjects.prediction_generated.clone(),
                subjects.trade_executed.clone(),
                subjects.position_closed.clone(),
            ],
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(256)
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    Ok(tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = messages.next() => m,
                _ = shutdown.cancelled() => None,
            };
            let Some(Ok(msg)) = msg else { break };
            if let Some((subject, body)) = answer(&subjects, msg.subject.as_str(), &msg.payload) {
                let _ = client.publish(subject, body).await;
            }
            let _ = msg.ack().await;
        }
        let _ = client.flush().await;
    }))
}
