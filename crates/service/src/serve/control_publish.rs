//! Publishing what operator control caused: refusals on `subjects.risk_refused` and changes of
//! the trading state on `subjects.trading_state`.

use bytes::Bytes;

use super::EventLoop;
use crate::source::Delivery;
use rl_v2_core::control::{Refusal, TradingStateChange};
use rl_v2_core::decision::Decision;

impl EventLoop {
    /// Publishes the refusals and trading-state changes of the message at `seq` (through the
    /// hot standby's gate, like decisions), and checkpoints a change at once. In JetStream mode each carries a `Nats-Msg-Id` derived from its sequence, so a replay after a crash publishes
    /// no duplicate into a stream that captures these subjects.
    pub(super) async fn publish_control(
        &mut self,
        seq: u64,
        refusals: &[Refusal],
        changes: &[TradingStateChange],
        delivery: &Delivery,
    ) {
        let jetstream = matches!(delivery, Delivery::JetStream { .. });
        let epoch = self.engine.epoch();
        for refusal in refusals {
            let payload = Bytes::from(serde_json::to_vec(refusal).unwrap_or_default());
            let id = format!(
                "refused-{}",
                Decision::id_in(refusal.agent, epoch, refusal.event_seq)
            );
            let subject = self.settings.subjects.risk_refused.clone();
            self.publish_gated(seq, &subject, payload, jetstream.then_some(id.as_str()))
                .await;
        }
        for change in changes {
            let payload = Bytes::from(serde_json::to_vec(change).unwrap_or_default());
            let id = format!("trading_state-e{epoch}-{}", change.sequence);
            let subject = self.settings.subjects.trading_state.clone();
            self.publish_gated(seq, &subject, payload, jetstream.then_some(id.as_str()))
                .await;
        }
        if !changes.is_empty() {
            // A kill switch must survive a crash: in core mode nothing else would bring the
            // change back, so it is checkpointed at once (unpaced; the outcome is not awaited).
            drop(self.checkpointer.request(self.engine.state()));
        }
    }
}

/// The reply to a request whose message was refused or changed the trading state: the refusal,
/// else the change; `None` when it did neither.
pub(super) fn answer(refusals: &[Refusal], changes: &[TradingStateChange]) -> Option<Bytes> {
    let json = match (refusals.first(), changes.first()) {
        (Some(r), _) => serde_json::to_vec(r),
        (None, Some(c)) => serde_json::to_vec(c),
        (None, None) => return None,
    };
    Some(Bytes::from(json.unwrap_or_default()))
}
