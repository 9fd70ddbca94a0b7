//! Decisions out: what the agents chose, as published on the decision subjects.

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// `<agent>-<event_seq>`: the same event always gives the same id, so readers can drop
    /// duplicates after a replay.
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

impl Decision {
    /// The id of `agent`'s decision for the event at `seq`.
    pub fn id_for(agent: AgentKind, seq: u64) -> String {
        format!("{}-{seq}", agent.as_str())
    }

    pub(crate) fn new(
        agent: AgentKind,
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
            decision_id: Self::id_for(agent, seq),
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
