//! Outcome events: each Q-update of a close is published on `subjects.outcome` as an
//! [`OutcomeEvent`], with `Nats-Msg-Id` `outcome-<decision id>` so a stream capturing the subject
//! keeps one copy when a replay after a crash publishes it again.

use bytes::Bytes;

use rl_v2_core::audit::Update;
use rl_v2_core::outcome::OutcomeEvent;

use super::EventLoop;

impl EventLoop {
    /// Publishes one outcome per update (refused updates too, marked `applied: false`).
    pub(super) async fn publish_outcomes(&self, updates: &[Update]) {
        for update in updates {
            let outcome = OutcomeEvent::of(update);
            let payload = match serde_json::to_vec(&outcome) {
                Ok(bytes) => Bytes::from(bytes),
                Err(e) => {
                    // Only a non-finite number can fail here, and the engine stores none.
                    tracing::warn!(decision_id = %outcome.decision_id, error = %e, "outcome not serialisable; not published");
                    continue;
                }
            };
            let subject = self.settings.subjects.outcome.clone();
            if self
                .publish(subject, payload, Some(&outcome.msg_id()))
                .await
            {
                self.metrics.outcome_published();
            }
        }
    }
}
