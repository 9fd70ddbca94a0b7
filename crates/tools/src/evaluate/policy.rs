//! Target policies: what `evaluate` estimates the value of, each as the probability it gives a
//! logged action in a logged state, and the value it expects under a reward model (for the
//! doubly robust estimator).

use std::collections::BTreeMap;

use rl_v2_core::domain::agent::AgentKind;
use rl_v2_core::domain::qlearning::ActionSet;
use rl_v2_core::engine::Engine;

use super::log::Logged;

/// A policy to evaluate on the logged decisions.
#[derive(Debug, Clone)]
pub enum Target {
    /// The policy that logged the data: its value is the mean reward (on-policy).
    Logging,
    /// The greedy policy (ε = 0) of a checkpoint's Q-tables.
    Greedy {
        /// Where the checkpoint came from.
        name: String,
        /// The checkpoint, loaded with the settings' allowed actions.
        engine: Box<Engine>,
    },
    /// A uniformly random choice among the allowed actions.
    Uniform,
    /// The same (meta, sizing) actions in every state.
    Constant {
        /// Meta-strategy action.
        meta: usize,
        /// Position-sizing action.
        sizing: usize,
    },
    /// A target chosen by looking at the even-numbered trades of the log, estimated on the
    /// odd-numbered ones only, so the choice does not inflate its estimate (the best of many
    /// noisy estimates is biased upwards).
    HeldOut(Box<Target>),
    /// A policy given by the actions it would choose for each logged decision id, uniformly
    /// among them (for a policy that decides on what the log does not carry, such as
    /// simulate's oracle). A decision without an entry gets probability 0.
    PerDecision {
        /// What it is.
        name: String,
        /// Decision id → the actions it would choose among (sorted, not empty).
        actions: BTreeMap<String, Vec<usize>>,
    },
}

impl Target {
    /// Whether the target is estimated on the `index`-th trade of the log.
    pub fn uses_trade(&self, index: usize) -> bool {
        !matches!(self, Target::HeldOut(_)) || index % 2 == 1
    }

    /// A short name for tables.
    pub fn name(&self) -> String {
        match self {
            Target::Logging => "logging policy".into(),
            Target::Greedy { name, .. } => format!("greedy {name}"),
            Target::Uniform => "uniformly random".into(),
            Target::Constant { meta, sizing } => format!(
                "constant {} + {}",
                AgentKind::MetaStrategy
                    .action_key(*meta)
                    .unwrap_or_default(),
                AgentKind::PositionSizing
                    .action_key(*sizing)
                    .unwrap_or_default()
            ),
            Target::PerDecision { name, .. } => name.clone(),
            Target::HeldOut(inner) => format!("{} (held out)", inner.name()),
        }
    }

    /// The action a deterministic target takes for `d`; `None` for the random ones.
    fn action(&self, agent: AgentKind, d: &Logged) -> Option<usize> {
        match self {
            Target::Greedy { engine, .. } => {
                let a = agent_of(engine, agent);
                Some(a.q().greedy(&d.state_key, a.allowed()))
            }
            Target::Constant { meta, sizing } => Some(match agent {
                AgentKind::MetaStrategy => *meta,
                AgentKind::PositionSizing => *sizing,
            }),
            Target::HeldOut(inner) => inner.action(agent, d),
            Target::Logging | Target::Uniform | Target::PerDecision { .. } => None,
        }
    }

    /// π(a | s) for the logged action.
    pub fn probability(&self, agent: AgentKind, d: &Logged, allowed: &ActionSet) -> f64 {
        match self {
            Target::Logging => d.propensity,
            Target::Uniform => {
                if allowed.indices().binary_search(&d.action).is_ok() {
                    1.0 / allowed.len() as f64
                } else {
                    0.0
                }
            }
            Target::PerDecision { actions, .. } => match actions.get(&d.decision_id) {
                Some(set) if set.contains(&d.action) => 1.0 / set.len() as f64,
                _ => 0.0,
            },
            Target::HeldOut(inner) => inner.probability(agent, d, allowed),
            _ => match self.action(agent, d) {
                Some(a) if a == d.action => 1.0,
                _ => 0.0,
            },
        }
    }

    /// Σ_a π(a | s) q̂(s, a) under the reward model `model`.
    pub fn expected(
        &self,
        agent: AgentKind,
        d: &Logged,
        allowed: &ActionSet,
        model: &Engine,
    ) -> f64 {
        let q = agent_of(model, agent).q();
        match self {
            Target::Logging => q.q(&d.state_key, d.action),
            Target::Uniform => {
                let sum: f64 = allowed
                    .indices()
                    .iter()
                    .map(|&a| q.q(&d.state_key, a))
                    .sum();
                sum / allowed.len() as f64
            }
            Target::PerDecision { actions, .. } => match actions.get(&d.decision_id) {
                Some(set) if !set.is_empty() => {
                    set.iter().map(|&a| q.q(&d.state_key, a)).sum::<f64>() / set.len() as f64
                }
                _ => 0.0,
            },
            Target::HeldOut(inner) => inner.expected(agent, d, allowed, model),
            _ => self.action(agent, d).map_or(0.0, |a| q.q(&d.state_key, a)),
        }
    }
}

/// The agent of `engine` that `agent` names.
pub fn agent_of(engine: &Engine, agent: AgentKind) -> &rl_v2_core::domain::agent::Agent {
    match agent {
        AgentKind::MetaStrategy => &engine.state().meta,
        AgentKind::PositionSizing => &engine.state().sizing,
    }
}
