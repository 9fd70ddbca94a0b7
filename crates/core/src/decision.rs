//! Decisions out: what the agents chose, as published on the decision subjects.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use crate::domain::actions::{MetaAction, SizingAction};
use crate::domain::agent::AgentKind;
use crate::domain::qlearning::Selection;

/// What the agent chose, in the agent's own terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Choice {
    /// A meta-strategy choice.
    Meta {
        /// Strategy to route the signal to.
        strategy: String,
        /// Model to trust.
        model: String,
        /// Weight to apply to the signal's confidence.
        weight: f64,
    },
    /// A position-sizing choice.
    Sizing {
        /// Multiplier on the proposed position size.
        size_multiplier: f64,
        /// Leverage to use.
        leverage: u32,
    },
}

impl From<MetaAction> for Choice {
    fn from(a: MetaAction) -> Self {
        Self::Meta {
            strategy: a.strategy.to_string(),
            model: a.model.to_string(),
            weight: a.weight,
        }
    }
}

impl From<SizingAction> for Choice {
    fn from(a: SizingAction) -> Self {
        Self::Sizing {
            size_multiplier: a.size_multiplier,
            leverage: a.leverage,
        }
    }
}

/// One decision of one agent for one event.
///
/// Serialized flat, the choice's fields between `trace_id` and `action_index` (written by hand:
/// `#[serde(flatten)]` would buffer every decision through an intermediate map).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Decision {
    /// `<agent>-<event_seq>`, and `<agent>-e<epoch>-<event_seq>` once the sequence numbers
    /// have started over (epoch 1 and later): the same event always gives the same id, so
    /// readers can drop duplicates after a replay, and no id is used for two events.
    pub decision_id: String,
    /// The agent that decided.
    pub agent: AgentKind,
    /// Upper-cased symbol.
    pub symbol: String,
    /// Sequence number of the event the decision answers.
    pub event_seq: u64,
    /// Trace id of that event, when it had one.
    pub trace_id: Option<String>,
    /// What was chosen.
    #[serde(flatten)]
    pub choice: Choice,
    /// Index of the chosen action in the agent's action space.
    pub action_index: usize,
    /// Whether the choice came from the random branch of ε-greedy.
    pub explored: bool,
    /// Probability that the policy picks this action in this state.
    pub propensity: f64,
    /// ε at the time of the choice.
    pub epsilon: f64,
    /// Q-value of the chosen action at the time of the choice.
    pub q_value: f64,
    /// Q-table key of the state.
    pub state_key: String,
    /// Event time, epoch seconds.
    pub timestamp: f64,
}

impl Serialize for Decision {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let choice_fields = match self.choice {
            Choice::Meta { .. } => 3,
            Choice::Sizing { .. } => 2,
        };
        let mut d = serializer.serialize_struct("Decision", 12 + choice_fields)?;
        d.serialize_field("decision_id", &self.decision_id)?;
        d.serialize_field("agent", &self.agent)?;
        d.serialize_field("symbol", &self.symbol)?;
        d.serialize_field("event_seq", &self.event_seq)?;
        d.serialize_field("trace_id", &self.trace_id)?;
        match &self.choice {
            Choice::Meta {
                strategy,
                model,
                weight,
            } => {
                d.serialize_field("strategy", strategy)?;
                d.serialize_field("model", model)?;
                d.serialize_field("weight", weight)?;
            }
            Choice::Sizing {
                size_multiplier,
                leverage,
            } => {
                d.serialize_field("size_multiplier", size_multiplier)?;
                d.serialize_field("leverage", leverage)?;
            }
        }
        d.serialize_field("action_index", &self.action_index)?;
        d.serialize_field("explored", &self.explored)?;
        d.serialize_field("propensity", &self.propensity)?;
        d.serialize_field("epsilon", &self.epsilon)?;
        d.serialize_field("q_value", &self.q_value)?;
        d.serialize_field("state_key", &self.state_key)?;
        d.serialize_field("timestamp", &self.timestamp)?;
        d.end()
    }
}

impl Decision {
    /// The id of `agent`'s decision for the event at `seq`, in the first epoch.
    pub fn id_for(agent: AgentKind, seq: u64) -> String {
        Self::id_in(agent, 0, seq)
    }

    /// The id of `agent`'s decision for the event at `seq` in decision-id epoch `epoch`.
    pub fn id_in(agent: AgentKind, epoch: u64, seq: u64) -> String {
        match epoch {
            0 => format!("{}-{seq}", agent.as_str()),
            _ => format!("{}-e{epoch}-{seq}", agent.as_str()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        agent: AgentKind,
        epoch: u64,
        seq: u64,
        symbol: &str,
        trace_id: Option<&str>,
        state_key: String,
        selection: &Selection,
        timestamp: f64,
    ) -> Self {
        let choice = match agent {
            AgentKind::MetaStrategy => MetaAction::from_index(selection.action).map(Choice::from),
            AgentKind::PositionSizing => {
                SizingAction::from_index(selection.action).map(Choice::from)
            }
        };
        Self {
            decision_id: Self::id_in(agent, epoch, seq),
            agent,
            symbol: symbol.to_string(),
            event_seq: seq,
            trace_id: trace_id.map(str::to_string),
            // The core only returns indices of the agent's own action space.
            choice: choice.unwrap_or(Choice::Sizing {
                size_multiplier: 1.0,
                leverage: 0,
            }),
            action_index: selection.action,
            explored: selection.explored,
            propensity: selection.propensity,
            epsilon: selection.epsilon,
            q_value: selection.q_value,
            state_key,
            timestamp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(choice: Choice) -> Decision {
        Decision {
            decision_id: "meta_strategy-42".into(),
            agent: AgentKind::MetaStrategy,
            symbol: "BTCUSDT".into(),
            event_seq: 42,
            trace_id: Some("t".into()),
            choice,
            action_index: 2,
            explored: false,
            propensity: 0.9,
            epsilon: 0.1,
            q_value: 0.12,
            state_key: "K".into(),
            timestamp: 1.5,
        }
    }

    #[test]
    fn serializes_flat_in_the_documented_order_and_reads_back() {
        let meta = decision(Choice::Meta {
            strategy: "dual_momentum".into(),
            model: "lstm".into(),
            weight: 1.0,
        });
        let text = serde_json::to_string(&meta).unwrap();
        assert_eq!(
            text,
            r#"{"decision_id":"meta_strategy-42","agent":"meta_strategy","symbol":"BTCUSDT","event_seq":42,"trace_id":"t","strategy":"dual_momentum","model":"lstm","weight":1.0,"action_index":2,"explored":false,"propensity":0.9,"epsilon":0.1,"q_value":0.12,"state_key":"K","timestamp":1.5}"#
        );
        assert_eq!(serde_json::from_str::<Decision>(&text).unwrap(), meta);
        let sizing = decision(Choice::Sizing {
            size_multiplier: 1.5,
            leverage: 20,
        });
        let text = serde_json::to_string(&sizing).unwrap();
        assert!(
            text.contains(r#""trace_id":"t","size_multiplier":1.5,"leverage":20,"action_index":2"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Decision>(&text).unwrap(), sizing);
    }
}
