//! Outcome events: one per Q-update, the decision joined with its reward. With the decision it
//! is the full logged-bandit record (context, action, propensity, reward) that off-policy
//! evaluation reads (`rl-v2 evaluate`).
//!
//! Built from the engine's own [`Update`] audit, so no shell recomputes a reward or a
//! propensity: the propensity and ε are the ones the decision was drawn with, remembered with
//! the pending decision until its close.

use serde::{Deserialize, Serialize};

use crate::audit::{RewardParts, Update};
use crate::domain::agent::AgentKind;

/// What one Q-update learned from, as published on the outcome subject (`RL_V2_OUTCOME`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeEvent {
    /// The decision rewarded.
    pub decision_id: String,
    /// The agent that made it.
    pub agent: AgentKind,
    /// Upper-cased symbol of the position.
    pub symbol: String,
    /// Q-table key of the state the decision was made in.
    pub state_key: String,
    /// Index of the chosen action in the agent's action space.
    pub action_index: usize,
    /// The chosen action's readable key (`dual_momentum|lstm|1.0`, `1.5x|20x`).
    pub action: String,
    /// Probability that the policy picked that action in that state; `null` for a decision
    /// pending in a checkpoint written before propensities were kept.
    pub propensity: Option<f64>,
    /// ε the action was drawn with (`null` as for `propensity`).
    pub epsilon: Option<f64>,
    /// Size of the action set it was drawn from (`null` as for `propensity`).
    pub allowed_actions: Option<usize>,
    /// The reward that reached the Q-update (bounded by `plausibility.max_abs_reward`).
    pub reward: f64,
    /// The reward the formula gave, before the bound.
    pub raw_reward: f64,
    /// The reward's terms, each before its weight; those the agent's formula does not use are
    /// `null`.
    pub reward_parts: RewardParts,
    /// Q-table key of the state built at close.
    pub next_state_key: String,
    /// Whether the close ended the decision's episode (the update did not bootstrap from
    /// `next_state_key`).
    pub terminal: bool,
    /// False when the update was refused (a non-finite value).
    pub applied: bool,
    /// Sequence number of the close: a meta and a sizing outcome with the same `seq` rewarded
    /// the same trade.
    pub seq: u64,
    /// The close's time, epoch seconds.
    pub timestamp: f64,
}

impl OutcomeEvent {
    /// The outcome of one update.
    pub fn of(update: &Update) -> Self {
        Self {
            decision_id: update.decision_id.clone(),
            agent: update.agent,
            symbol: update.symbol.clone(),
            state_key: update.state_key.clone(),
            action_index: update.action,
            action: update.agent.action_key(update.action).unwrap_or_default(),
            propensity: update.logged.map(|l| l.propensity),
            epsilon: update.logged.map(|l| l.epsilon),
            allowed_actions: update.logged.map(|l| l.allowed_actions),
            reward: update.reward,
            raw_reward: update.raw_reward,
            reward_parts: update.parts,
            next_state_key: update.state_at_close.clone(),
            terminal: update.next_state_key.is_none(),
            applied: update.applied,
            seq: update.seq,
            timestamp: update.time,
        }
    }

    /// `Nats-Msg-Id` of the outcome: `outcome-<decision id>`, so a stream capturing the outcome
    /// subject drops the copy a replay after a crash publishes again.
    pub fn msg_id(&self) -> String {
        format!("outcome-{}", self.decision_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Logged;

    #[test]
    fn an_outcome_carries_the_update_and_reads_back() {
        let update = Update {
            agent: AgentKind::PositionSizing,
            decision_id: "position_sizing-2".into(),
            symbol: "BTCUSDT".into(),
            state_key: "conf=3|exp=1".into(),
            action: 1,
            logged: Some(Logged {
                propensity: 0.0025,
                epsilon: 0.1,
                allowed_actions: 40,
            }),
            raw_reward: 2.5,
            reward: 2.5,
            parts: RewardParts {
                pnl_pct: 3.0,
                risk_penalty: Some(1.5),
                volatility_adjustment: Some(0.5),
                ..RewardParts::default()
            },
            next_state_key: None,
            state_at_close: "conf=3|exp=0".into(),
            applied: true,
            seq: 3,
            time: 1.5,
        };
        let o = OutcomeEvent::of(&update);
        assert_eq!(o.action, "0.5x|10x");
        assert_eq!(o.msg_id(), "outcome-position_sizing-2");
        assert!(o.terminal);
        assert_eq!(o.propensity, Some(0.0025));
        let text = serde_json::to_string(&o).unwrap();
        assert!(text.contains(r#""reward_parts":{"pnl_pct":3.0,"max_drawdown_pct":null"#));
        assert_eq!(serde_json::from_str::<OutcomeEvent>(&text).unwrap(), o);
    }
}
