//! The event loop's shadow policies ([`crate::shadow`]): each applies the message the live
//! engine just applied, and its decisions are published on its own subjects only.

use bytes::Bytes;

use crate::shadow::Shadow;
use crate::source::{Delivery, Inbound};

use super::EventLoop;

impl EventLoop {
    /// Runs these shadows beside the live engine.
    pub fn with_shadows(mut self, shadows: Vec<Shadow>) -> Self {
        self.shadows = shadows;
        self
    }

    /// Applies the message at `seq` to every shadow and publishes their decisions on their own
    /// subjects (`Nats-Msg-Id` `shadow-<name>-<decision id>` in JetStream mode), through the
    /// hot standby's gate as the live decisions (a follower keeps them for a takeover).
    pub(super) async fn run_shadows(&mut self, seq: u64, msg: &Inbound) {
        if self.shadows.is_empty() {
            return;
        }
        let limit = self.settings.limits.max_payload_bytes;
        let mut shadows = std::mem::take(&mut self.shadows);
        for shadow in &mut shadows {
            let decisions = shadow.apply(seq, msg.kind, &msg.payload, msg.received_at, limit);
            for d in decisions {
                let payload = Bytes::from(serde_json::to_vec(&d).unwrap_or_default());
                let id = format!("shadow-{}-{}", shadow.name(), d.decision_id);
                let msg_id = match msg.delivery {
                    Delivery::JetStream { .. } => Some(id.as_str()),
                    Delivery::Core { .. } => None,
                };
                let subject = shadow.subject(d.agent).to_string();
                if self.publish_gated(seq, &subject, payload, msg_id).await {
                    shadow.published();
                }
            }
        }
        self.shadows = shadows;
    }
}
