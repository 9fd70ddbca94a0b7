//! Outcome events: each Q-update of a close is published on `subjects.outcome` as an
//! [`OutcomeEvent`], with `Nats-Msg-Id` `outcome-<decision id>` so a stream capturing the subject
//! keeps one copy when a replay after a crash publishes it again.

use bytes::Bytes;

use rl_v2_core::audit::Update;
use rl_v2_core::outcome::OutcomeEvent;

use super::EventLoop;

impl EventLoop {
    /// Publishes one outcome per update of the event at `seq` (refused updates too, marked
    /// `applied: false`), through the hot standby's gate as the decisions (a follower keeps them
    /// for a takeover).
    pub(super) async fn publish_outcomes(&mut self, seq: u64, updates: &[Update]) {
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
            let msg_id = outcome.msg_id();
            if self
                .publish_gated(seq, &subject, payload, Some(&msg_id))
                .await
            {
                self.metrics.outcome_published();
            }
        }
    }
}
