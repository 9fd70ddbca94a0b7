//! The two agents: a Q-learning core over string state keys, an action space, a discretizer,
//! and episode statistics.

use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::actions::{MetaAction, SizingAction, META_ACTIONS, SIZING_ACTIONS};
use super::episode::{EpisodeStats, EpisodeTracker};
use super::qlearning::{ActionSet, Hyperparameters, QLearning, Selection, UpdateError};

/// Which agent a decision or update belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    /// Chooses strategy, model and confidence weight for a signal.
    MetaStrategy,
    /// Chooses size multiplier and leverage for a trade.
    PositionSizing,
}

impl AgentKind {
    /// The wire name (`meta_strategy`, `position_sizing`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::MetaStrategy => "meta_strategy",
            Self::PositionSizing => "position_sizing",
        }
    }

    /// Size of the agent's action space.
    pub fn action_space_size(&self) -> usize {
        match self {
            Self::MetaStrategy => META_ACTIONS,
            Self::PositionSizing => SIZING_ACTIONS,
        }
    }

    /// The readable key of an action index.
    pub fn action_key(&self, index: usize) -> Option<String> {
        match self {
            Self::MetaStrategy => MetaAction::from_index(index).map(|a| a.to_string()),
            Self::PositionSizing => SizingAction::from_index(index).map(|a| a.to_string()),
        }
    }

    /// The index of a readable action key.
    pub fn parse_action_key(&self, key: &str) -> Option<usize> {
        match self {
            Self::MetaStrategy => MetaAction::parse_key(key).map(|a| a.index()),
            Self::PositionSizing => SizingAction::parse_key(key).map(|a| a.index()),
        }
    }
}

/// The Q-learning statistics of an agent, in the seed's `get_stats()` shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QLearningStats {
    /// Learning rate.
    pub alpha: f64,
    /// Discount factor.
    pub gamma: f64,
    /// Current exploration rate.
    pub epsilon: f64,
    /// Updates applied.
    pub update_count: u64,
    /// States with a row in the table.
    pub states_visited: usize,
    /// Q-values stored (states × actions).
    pub total_q_entries: usize,
    /// Mean of the stored Q-values.
    pub avg_q_value: f64,
    /// Largest stored Q-value.
    pub max_q_value: f64,
    /// Smallest stored Q-value.
    pub min_q_value: f64,
}

/// One agent's statistics, in the seed's `get_stats()` shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStats {
    /// `meta_strategy` or `position_sizing`.
    pub agent_type: AgentKind,
    /// Q-learning statistics.
    pub q_learning_stats: QLearningStats,
    /// Episode statistics over the last 100 episodes.
    pub episode_stats: EpisodeStats,
    /// Number of actions.
    pub action_space_size: usize,
}

/// A tabular Q-learning agent over string state keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    kind: AgentKind,
    q: QLearning<String>,
    episodes: EpisodeTracker,
    /// Not stored in checkpoints: it comes from settings, and [`Agent::configure`] sets it after
    /// loading.
    #[serde(skip, default = "unconfigured_actions")]
    allowed: ActionSet,
}

/// The action set of an agent read from a checkpoint before [`Agent::configure`] runs.
fn unconfigured_actions() -> ActionSet {
    ActionSet::all(1)
}

impl Agent {
    /// A fresh agent of `kind`, restricted to `allowed` actions.
    pub fn new(kind: AgentKind, params: Hyperparameters, allowed: ActionSet) -> Self {
        Self {
            kind,
            q: QLearning::new(kind.action_space_size(), params),
            episodes: EpisodeTracker::default(),
            allowed,
        }
    }

    /// Re-applies settings that checkpoints do not store.
    pub fn configure(&mut self, params: Hyperparameters, allowed: ActionSet) {
        self.q.set_params(params);
        self.allowed = allowed;
    }

    /// Which agent this is.
    pub fn kind(&self) -> AgentKind {
        self.kind
    }

    /// The Q-learning core.
    pub fn q(&self) -> &QLearning<String> {
        &self.q
    }

    /// The Q-learning core, mutably (for imports).
    pub fn q_mut(&mut self) -> &mut QLearning<String> {
        &mut self.q
    }

    /// The actions this agent may choose.
    pub fn allowed(&self) -> &ActionSet {
        &self.allowed
    }

    /// ε-greedy choice in state `key`.
    pub fn select(&self, key: &String, rng: &mut impl RngCore) -> Selection {
        self.q.select(key, &self.allowed, rng)
    }

    /// ε-greedy choice in state `key` among `allowed` (a subset of [`Self::allowed`] that the
    /// risk gate left): the propensity is over `allowed`.
    pub fn select_among(
        &self,
        key: &String,
        allowed: &ActionSet,
        rng: &mut impl RngCore,
    ) -> Selection {
        self.q.select(key, allowed, rng)
    }

    /// Learns from one finished decision: a TD update towards `reward + γ·max Q(next)`, or
    /// towards `reward` alone when `next` is `None` (the decision's episode ended), and an
    /// episode record.
    pub fn learn(
        &mut self,
        key: &String,
        action: usize,
        reward: f64,
        next: Option<&String>,
    ) -> Result<f64, UpdateError> {
        let new_q = self.q.update(key, action, reward, next, &self.allowed)?;
        self.episodes.finish(&[reward], self.q.params().gamma);
        Ok(new_q)
    }

    /// Statistics in the seed's shape.
    pub fn stats(&self) -> AgentStats {
        let (mut n, mut sum, mut max, mut min) = (0usize, 0.0, f64::MIN, f64::MAX);
        for q in self.q.table().values().flatten() {
            n += 1;
            sum += q;
            max = max.max(*q);
            min = min.min(*q);
        }
        let params = self.q.params();
        let or_zero = |v: f64| if n == 0 { 0.0 } else { v };
        AgentStats {
            agent_type: self.kind,
            q_learning_stats: QLearningStats {
                alpha: params.alpha,
                gamma: params.gamma,
                epsilon: self.q.epsilon(),
                update_count: self.q.update_count(),
                states_visited: self.q.states_visited(),
                total_q_entries: n,
                avg_q_value: or_zero(sum / n.max(1) as f64),
                max_q_value: or_zero(max),
                min_q_value: or_zero(min),
            },
            episode_stats: self.episodes.stats(),
            action_space_size: self.kind.action_space_size(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::qlearning::decision_rng;

    #[test]
    fn agent_learns_and_reports_stats() {
        let mut a = Agent::new(
            AgentKind::PositionSizing,
            Hyperparameters::default(),
            ActionSet::all(SIZING_ACTIONS),
        );
        let s = "s".to_string();
        let sel = a.select(&s, &mut decision_rng(1, 0, 1));
        assert!(sel.action < 40);
        let q = a.learn(&s, 3, 2.0, Some(&"t".to_string())).unwrap();
        assert!((q - 0.02).abs() < 1e-15);
        let st = a.stats();
        assert_eq!(st.action_space_size, 40);
        assert_eq!(st.q_learning_stats.update_count, 1);
        assert_eq!(st.q_learning_stats.states_visited, 1);
        assert_eq!(st.q_learning_stats.total_q_entries, 40);
        assert_eq!(st.q_learning_stats.max_q_value, 0.02);
        assert_eq!(st.episode_stats.total_episodes, 1);
        assert_eq!(st.episode_stats.avg_return, 2.0);
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["agent_type"], "position_sizing");
    }

    #[test]
    fn action_keys_round_trip_through_the_kind() {
        for kind in [AgentKind::MetaStrategy, AgentKind::PositionSizing] {
            for i in 0..kind.action_space_size() {
                let key = kind.action_key(i).unwrap();
                assert_eq!(kind.parse_action_key(&key), Some(i));
            }
        }
    }
}
