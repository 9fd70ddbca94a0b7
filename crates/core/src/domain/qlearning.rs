//! A generic tabular Q-learning core for any finite MDP.
//!
//! States are any ordered key (`S: Ord + Clone`), actions are indices `0..n_actions`. The table
//! is an ordered map, so iterating it, and so every checkpoint and export, is in a fixed order.
//! It is a persistent map ([`imbl::OrdMap`]): cloning it is O(1) and shares structure, so a
//! checkpoint can snapshot a table of 100k states without stalling the event loop; updates after
//! a snapshot copy only the few nodes they touch.
//!
//! ```
//! use rl_v2_core::domain::qlearning::{ActionSet, Hyperparameters, QLearning};
//! let mut q: QLearning<u32> = QLearning::new(2, Hyperparameters::default());
//! q.update(&0, 1, 1.0, Some(&1), &ActionSet::all(2)).unwrap();
//! assert_eq!(q.greedy(&0, &ActionSet::all(2)), 1);
//! ```
//!
//! Exploration randomness is never owned by the core: callers pass an RNG, and the engine
//! derives one from `(seed, sequence)` with [`decision_rng`], so that the same events always give
//! the same choices and no RNG state needs saving.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::invalid::Invalid;

/// How large a step each update takes towards its target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepSize {
    /// α on every update (the textbook rule).
    #[default]
    Constant,
    /// `max(α, 1/n)`, where `n` counts the updates of that (state, action) including this one:
    /// the first update takes the target whole, the next ones keep a running mean of the targets
    /// until `1/n` falls to α, which then keeps following them.
    VisitCount,
}

/// Learning rate, discount, the ε-greedy schedule, the step-size rule and the value of an
/// unseen (state, action).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hyperparameters {
    /// Learning rate α (with [`StepSize::VisitCount`], the smallest step).
    pub alpha: f64,
    /// Discount factor γ.
    pub gamma: f64,
    /// Initial exploration rate ε.
    pub epsilon: f64,
    /// Factor applied to ε after every update.
    pub epsilon_decay: f64,
    /// Floor below which ε does not decay.
    pub epsilon_min: f64,
    /// How large a step each update takes.
    pub step_size: StepSize,
    /// Q-value of a (state, action) never updated; above the rewards it is optimistic and makes
    /// the greedy choice try every action once.
    pub initial_q: f64,
}

impl Default for Hyperparameters {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            gamma: 0.99,
            epsilon: 0.1,
            epsilon_decay: 0.999,
            epsilon_min: 0.01,
            step_size: StepSize::Constant,
            initial_q: 0.0,
        }
    }
}

impl Hyperparameters {
    /// Checks ranges; the error names the offending field.
    pub fn validate(&self) -> Result<(), Invalid> {
        let unit = |name: &str, v: f64, lo_open: bool| {
            let ok = v.is_finite() && v <= 1.0 && if lo_open { v > 0.0 } else { v >= 0.0 };
            if ok {
                Ok(())
            } else {
                Err(Invalid::new(
                    Some("learning"),
                    name,
                    format!(
                        "must be in {}0, 1], got {v}",
                        if lo_open { "(" } else { "[" }
                    ),
                ))
            }
        };
        unit("alpha", self.alpha, true)?;
        unit("gamma", self.gamma, false)?;
        unit("epsilon", self.epsilon, false)?;
        unit("epsilon_decay", self.epsilon_decay, true)?;
        unit("epsilon_min", self.epsilon_min, false)?;
        if !self.initial_q.is_finite() {
            return Err(Invalid::new(
                Some("learning"),
                "initial_q",
                format!("must be a finite number, got {}", self.initial_q),
            ));
        }
        Ok(())
    }
}

/// The two readings of the update rule that decide whether a table imported from the Python
/// version keeps its meaning.
///
/// * [`Semantics::Design`]: the next-state value is the max over every allowed action, an untried
///   one counting 0; ε becomes `max(ε·decay, floor)`, so it settles exactly on the floor; greedy
///   ties are broken by [`f64::total_cmp`] (`-0.0` below `0.0`), then the lowest index.
/// * [`Semantics::Python`]: as the Python version computes it. The next-state value is the max
///   over the actions *stored* for that state (the ones updated there, or read from an imported
///   table), so it is negative when every tried action is; 0 for a state with no row. ε is
///   multiplied by the decay while it is above the floor, so it ends just below it
///   (0.009994334856146604 for 0.1, 0.999, 0.01). Greedy compares with `>`, so `-0.0` and `0.0`
///   tie and the lower index keeps the choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Semantics {
    /// rl-v2's own rules.
    #[default]
    Design,
    /// The Python version's rules.
    Python,
}

/// The actions an agent may choose from: a non-empty, ascending list of indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSet(Vec<usize>);

impl ActionSet {
    /// Every action of an `n`-action space.
    pub fn all(n: usize) -> Self {
        Self((0..n).collect())
    }

    /// The given actions, sorted and deduplicated; `None` when empty.
    pub fn from_indices(mut indices: Vec<usize>) -> Option<Self> {
        indices.sort_unstable();
        indices.dedup();
        (!indices.is_empty()).then_some(Self(indices))
    }

    /// The indices, ascending.
    pub fn indices(&self) -> &[usize] {
        &self.0
    }

    /// Number of allowed actions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: an action set is never empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The outcome of an ε-greedy choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selection {
    /// The chosen action index.
    pub action: usize,
    /// Whether the random branch chose it.
    pub explored: bool,
    /// Probability that the ε-greedy policy picks this action in this state.
    pub propensity: f64,
    /// Q-value of the chosen action before the choice.
    pub q_value: f64,
    /// ε at the time of the choice.
    pub epsilon: f64,
    /// Size of the action set it was chosen from.
    pub allowed: usize,
}

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpdateError {
    /// The action index is outside the action space.
    #[error("action {action} is outside 0..{n_actions}")]
    ActionOutOfRange {
        /// The index given.
        action: usize,
        /// Size of the action space.
        n_actions: usize,
    },
    /// The reward or the resulting Q-value is not a finite number.
    #[error("non-finite value refused (reward {reward}, new Q {new_q})")]
    NonFinite {
        /// The reward given.
        reward: f64,
        /// The Q-value the update would have stored.
        new_q: f64,
    },
}

/// State → Q-value per action.
pub type Table<S> = imbl::OrdMap<S, Vec<f64>>;

/// A Q-table with its learning schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "S: Ord + Clone + Serialize",
    deserialize = "S: Ord + Clone + Deserialize<'de>"
))]
pub struct QLearning<S: Ord + Clone> {
    n_actions: usize,
    #[serde(skip)]
    params: Hyperparameters,
    epsilon: f64,
    update_count: u64,
    table: Table<S>,
    /// Updates applied per state.
    #[serde(default)]
    visits: imbl::OrdMap<S, u64>,
    /// The actions stored per state, in the order they were first stored (by an update or an
    /// import): the row the Python version would hold. States absent here (checkpoints written
    /// before it was kept) count every action as stored.
    #[serde(default, skip_serializing_if = "imbl::OrdMap::is_empty")]
    stored: imbl::OrdMap<S, Vec<u32>>,
    /// Not stored in checkpoints: it follows the discretizer, set after loading.
    #[serde(skip)]
    semantics: Semantics,
    /// Updates applied per (state, action), for [`StepSize::VisitCount`]. Tables written before
    /// these counts existed load with none: their actions count as never updated.
    #[serde(default)]
    action_visits: imbl::OrdMap<S, Vec<u64>>,
}

impl<S: Ord + Clone> QLearning<S> {
    /// An empty table over `n_actions` actions; ε starts at `params.epsilon`.
    pub fn new(n_actions: usize, params: Hyperparameters) -> Self {
        Self {
            n_actions,
            params,
            epsilon: params.epsilon,
            update_count: 0,
            table: Table::new(),
            visits: imbl::OrdMap::new(),
            stored: imbl::OrdMap::new(),
            semantics: Semantics::Design,
            action_visits: imbl::OrdMap::new(),
        }
    }

    /// Chooses how updates read the next state and decay ε (after loading a checkpoint, which
    /// does not store it).
    pub fn set_semantics(&mut self, semantics: Semantics) {
        self.semantics = semantics;
    }

    /// The update semantics in use.
    pub fn semantics(&self) -> Semantics {
        self.semantics
    }

    /// The actions stored for `state`, in the order they were first stored; `None` when the
    /// state has no row, or a row from a checkpoint that did not record them (then every action
    /// counts as stored).
    pub fn stored_actions(&self, state: &S) -> Option<&[u32]> {
        self.table.get(state)?;
        self.stored.get(state).map(Vec::as_slice)
    }

    /// Replaces the hyperparameters (after loading a checkpoint, which stores only state).
    pub fn set_params(&mut self, params: Hyperparameters) {
        self.params = params;
    }

    /// The hyperparameters in use.
    pub fn params(&self) -> &Hyperparameters {
        &self.params
    }

    /// Size of the action space.
    pub fn n_actions(&self) -> usize {
        self.n_actions
    }

    /// Current exploration rate.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// Number of updates applied.
    pub fn update_count(&self) -> u64 {
        self.update_count
    }

    /// The table: state → Q-value per action.
    pub fn table(&self) -> &Table<S> {
        &self.table
    }

    /// Updates applied in `state`.
    pub fn visits(&self, state: &S) -> u64 {
        self.visits.get(state).copied().unwrap_or(0)
    }

    /// Updates applied to (`state`, `action`).
    pub fn action_visits(&self, state: &S, action: usize) -> u64 {
        self.action_visits
            .get(state)
            .and_then(|row| row.get(action))
            .copied()
            .unwrap_or(0)
    }

    /// States by the number of updates applied in them, most first (ties in key order).
    pub fn most_visited(&self, n: usize) -> Vec<(&S, u64)> {
        let mut all: Vec<(&S, u64)> = self.visits.iter().map(|(s, v)| (s, *v)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        all.truncate(n);
        all
    }

    /// Number of states with a row in the table.
    pub fn states_visited(&self) -> usize {
        self.table.len()
    }

    /// Q(s, a); [`Hyperparameters::initial_q`] (0 by default) for an unseen state.
    pub fn q(&self, state: &S, action: usize) -> f64 {
        self.table
            .get(state)
            .and_then(|row| row.get(action))
            .copied()
            .unwrap_or(self.params.initial_q)
    }

    /// The allowed action with the highest Q-value; ties go to the lowest index.
    pub fn greedy(&self, state: &S, allowed: &ActionSet) -> usize {
        let first = allowed.indices()[0];
        let Some(row) = self.table.get(state) else {
            return first;
        };
        let better = |a: f64, b: f64| match self.semantics {
            Semantics::Design => a.total_cmp(&b).is_gt(),
            Semantics::Python => a > b,
        };
        allowed.indices().iter().copied().fold(first, |best, a| {
            if better(row[a], row[best]) {
                a
            } else {
                best
            }
        })
    }

    /// The value of the next state in the TD target: under [`Semantics::Design`] the max over
    /// allowed a of Q(s, a), untried actions counting 0; under [`Semantics::Python`] the max over
    /// the allowed actions stored for the state (the first stored wins ties), 0 when none is.
    /// 0 for a state with no row.
    pub fn max_q(&self, state: &S, allowed: &ActionSet) -> f64 {
        match (
            self.semantics,
            self.table.get(state),
            self.stored.get(state),
        ) {
            (Semantics::Python, Some(row), Some(stored)) => stored
                .iter()
                .map(|&a| a as usize)
                .filter(|a| allowed.indices().binary_search(a).is_ok())
                .fold(None, |best: Option<f64>, a| match best {
                    Some(b) if row[a] <= b => Some(b),
                    _ => Some(row[a]),
                })
                .unwrap_or(0.0),
            _ => self.q(state, self.greedy(state, allowed)),
        }
    }

    /// The ε-greedy policy's probability of each allowed action in `state`, in the order of
    /// `allowed`: what [`Self::select`] reports as the propensity of the action it picks.
    pub fn policy(&self, state: &S, allowed: &ActionSet) -> Vec<(usize, f64)> {
        let greedy = self.greedy(state, allowed);
        let uniform = self.epsilon / allowed.len() as f64;
        allowed
            .indices()
            .iter()
            .map(|&a| {
                let p = if a == greedy {
                    1.0 - self.epsilon + uniform
                } else {
                    uniform
                };
                (a, p)
            })
            .collect()
    }

    /// ε-greedy choice: with probability ε a uniformly random allowed action, else the greedy
    /// one.
    pub fn select(&self, state: &S, allowed: &ActionSet, rng: &mut impl RngCore) -> Selection {
        let greedy = self.greedy(state, allowed);
        let explored = rng.random::<f64>() < self.epsilon;
        let action = if explored {
            allowed.indices()[rng.random_range(0..allowed.len())]
        } else {
            greedy
        };
        let uniform = self.epsilon / allowed.len() as f64;
        let propensity = if action == greedy {
            1.0 - self.epsilon + uniform
        } else {
            uniform
        };
        Selection {
            action,
            explored,
            propensity,
            q_value: self.q(state, action),
            epsilon: self.epsilon,
            allowed: allowed.len(),
        }
    }

    /// The TD update `Q(s,a) ← Q(s,a) + α[r + γ·max_a' Q(s',a') − Q(s,a)]`; `next` is `None` at
    /// a terminal transition. The step is α, or `max(α, 1/n(s,a))` with
    /// [`StepSize::VisitCount`]. Decays ε on success. Returns the new Q-value. Nothing is stored
    /// when the reward or the result is not finite.
    pub fn update(
        &mut self,
        state: &S,
        action: usize,
        reward: f64,
        next: Option<&S>,
        allowed_next: &ActionSet,
    ) -> Result<f64, UpdateError> {
        if action >= self.n_actions {
            return Err(UpdateError::ActionOutOfRange {
                action,
                n_actions: self.n_actions,
            });
        }
        let future = next.map_or(0.0, |s| self.max_q(s, allowed_next));
        let old = self.q(state, action);
        let Hyperparameters {
            alpha,
            gamma,
            step_size,
            initial_q,
            ..
        } = self.params;
        let tries = self.action_visits(state, action) + 1;
        let step = match step_size {
            StepSize::Constant => alpha,
            StepSize::VisitCount => alpha.max(1.0 / tries as f64),
        };
        let new_q = old + step * (reward + gamma * future - old);
        if !reward.is_finite() || !new_q.is_finite() {
            return Err(UpdateError::NonFinite { reward, new_q });
        }
        let n = self.n_actions;
        let fresh = !self.table.contains_key(state);
        self.table
            .entry(state.clone())
            .or_insert_with(|| vec![initial_q; n])[action] = new_q;
        if fresh || self.stored.contains_key(state) {
            let stored = self.stored.entry(state.clone()).or_default();
            let action = action as u32;
            if !stored.contains(&action) {
                stored.push(action);
            }
        }
        self.update_count += 1;
        *self.visits.entry(state.clone()).or_insert(0) += 1;
        let counts = self
            .action_visits
            .entry(state.clone())
            .or_insert_with(|| vec![0; n]);
        if counts.len() < n {
            counts.resize(n, 0);
        }
        counts[action] = tries;
        let Hyperparameters {
            epsilon_decay,
            epsilon_min,
            ..
        } = self.params;
        self.epsilon = match self.semantics {
            Semantics::Design => (self.epsilon * epsilon_decay).max(epsilon_min),
            Semantics::Python if self.epsilon > epsilon_min => self.epsilon * epsilon_decay,
            Semantics::Python => self.epsilon,
        };
        Ok(new_q)
    }

    /// Sets a row, as when importing a table. Non-finite values are refused.
    pub fn insert_row(&mut self, state: S, row: Vec<f64>) -> Result<(), UpdateError> {
        if let Some(bad) = row.iter().find(|v| !v.is_finite()) {
            return Err(UpdateError::NonFinite {
                reward: 0.0,
                new_q: *bad,
            });
        }
        let mut full = row;
        full.resize(self.n_actions, self.params.initial_q);
        self.stored.remove(&state);
        self.table.insert(state, full);
        Ok(())
    }

    /// Sets a row from `(action, Q)` pairs in the order they were stored, as when importing a
    /// Python-format table: the other actions hold 0 and count as untried. A repeated action
    /// keeps its first position and its last value. Out-of-range actions and non-finite values
    /// are refused.
    pub fn insert_stored(&mut self, state: S, entries: &[(usize, f64)]) -> Result<(), UpdateError> {
        let mut row = vec![0.0; self.n_actions];
        let mut order: Vec<u32> = Vec::with_capacity(entries.len());
        for &(action, q) in entries {
            if action >= self.n_actions {
                return Err(UpdateError::ActionOutOfRange {
                    action,
                    n_actions: self.n_actions,
                });
            }
            if !q.is_finite() {
                return Err(UpdateError::NonFinite {
                    reward: 0.0,
                    new_q: q,
                });
            }
            row[action] = q;
            if !order.contains(&(action as u32)) {
                order.push(action as u32);
            }
        }
        self.stored.insert(state.clone(), order);
        self.table.insert(state, row);
        Ok(())
    }

    /// Restores ε and the update count, as when importing a table; ε is clamped to [0, 1].
    pub fn restore_schedule(&mut self, epsilon: f64, update_count: u64) {
        if epsilon.is_finite() {
            self.epsilon = epsilon.clamp(0.0, 1.0);
        }
        self.update_count = update_count;
    }

    /// Whether every stored value is finite (an invariant; checked after loading).
    pub fn all_finite(&self) -> bool {
        self.table.values().flatten().all(|v| v.is_finite())
    }
}

/// An RNG determined by `(seed, stream, sequence)` alone, for reproducible exploration.
pub fn decision_rng(seed: u64, stream: u8, sequence: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&sequence.to_le_bytes());
    key[16] = stream;
    ChaCha8Rng::from_seed(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RNG that always returns the same word: `u64::MAX` makes `random::<f64>()` close to 1
    /// (the greedy branch), 0 makes it 0 (the random branch, then index 0).
    struct Constant(u64);

    impl RngCore for Constant {
        fn next_u32(&mut self) -> u32 {
            self.0 as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            dst.fill(self.0 as u8);
        }
    }

    fn learner() -> QLearning<&'static str> {
        QLearning::new(3, Hyperparameters::default())
    }

    #[test]
    fn td_update_follows_the_textbook() {
        let mut q = learner();
        let all = ActionSet::all(3);
        q.table.insert("b", vec![0.0, 2.0, 1.0]);
        let new_q = q.update(&"a", 0, 1.0, Some(&"b"), &all).unwrap();
        assert!((new_q - 0.01 * (1.0 + 0.99 * 2.0)).abs() < 1e-15);
        assert_eq!(q.update_count(), 1);
        assert_eq!(q.visits(&"a"), 1);
        assert!((q.epsilon() - 0.0999).abs() < 1e-15);
        let terminal = q.update(&"a", 0, 1.0, None, &all).unwrap();
        q.update(&"b", 2, 0.0, None, &all).unwrap();
        assert_eq!(q.most_visited(5), vec![(&"a", 2), (&"b", 1)]);
        assert!((terminal - (new_q + 0.01 * (1.0 - new_q))).abs() < 1e-15);
    }

    #[test]
    fn visit_count_steps_average_the_rewards_until_alpha() {
        let params = Hyperparameters {
            alpha: 0.25,
            step_size: StepSize::VisitCount,
            ..Hyperparameters::default()
        };
        let mut q: QLearning<&str> = QLearning::new(2, params);
        let all = ActionSet::all(2);
        // Steps 1, 1/2, 1/3, then α = 1/4 from the fourth update on.
        for (reward, expected) in [(4.0, 4.0), (2.0, 3.0), (0.0, 2.0), (6.0, 3.0), (7.0, 4.0)] {
            let new_q = q.update(&"s", 1, reward, None, &all).unwrap();
            assert!((new_q - expected).abs() < 1e-12, "{reward}: {new_q}");
        }
        assert_eq!(q.action_visits(&"s", 1), 5);
        assert_eq!(q.action_visits(&"s", 0), 0);
        assert_eq!(q.visits(&"s"), 5);
        // The constant rule ignores the counts.
        let mut c = learner();
        c.update(&"s", 1, 4.0, None, &all).unwrap();
        assert_eq!(c.q(&"s", 1), 0.01 * 4.0);
        assert_eq!(c.action_visits(&"s", 1), 1);
    }

    #[test]
    fn unseen_values_start_at_initial_q() {
        let params = Hyperparameters {
            initial_q: 5.0,
            ..Hyperparameters::default()
        };
        let mut q: QLearning<&str> = QLearning::new(3, params);
        let all = ActionSet::all(3);
        assert_eq!(q.q(&"s", 2), 5.0);
        assert_eq!(q.max_q(&"s", &all), 5.0);
        q.update(&"s", 0, 1.0, None, &all).unwrap();
        assert_eq!(q.table().get(&"s").unwrap()[1..], [5.0, 5.0]);
        // The untried actions now rank above the tried one.
        assert_eq!(q.greedy(&"s", &all), 1);
        let bad = Hyperparameters {
            initial_q: f64::NAN,
            ..Hyperparameters::default()
        };
        assert!(bad.validate().unwrap_err().field == "learning.initial_q");
    }

    #[test]
    fn a_table_saved_without_action_counts_loads_with_none() {
        let old = r#"{"n_actions": 2, "epsilon": 0.05, "update_count": 3,
                      "table": {"s": [1.5, 0.0]}, "visits": {"s": 3}}"#;
        let q: QLearning<String> = serde_json::from_str(old).unwrap();
        assert_eq!(q.q(&"s".to_string(), 0), 1.5);
        assert_eq!(q.visits(&"s".to_string()), 3);
        assert_eq!(q.action_visits(&"s".to_string(), 0), 0);
    }

    #[test]
    fn greedy_ties_go_to_the_lowest_index() {
        let mut q = learner();
        let all = ActionSet::all(3);
        assert_eq!(q.greedy(&"s", &all), 0);
        q.table.insert("s", vec![0.0, 1.0, 1.0]);
        assert_eq!(q.greedy(&"s", &all), 1);
        let masked = ActionSet::from_indices(vec![2, 0]).unwrap();
        assert_eq!(q.greedy(&"s", &masked), 2);
        q.table.insert("t", vec![-0.0, 0.0, -1.0]);
        // total_cmp orders -0.0 below 0.0
        assert_eq!(q.greedy(&"t", &all), 1);
    }

    #[test]
    fn epsilon_decays_to_its_floor() {
        let mut q = learner();
        let all = ActionSet::all(3);
        for _ in 0..5_000 {
            q.update(&"a", 0, 0.0, None, &all).unwrap();
        }
        assert_eq!(q.epsilon(), 0.01);
    }

    fn python_learner() -> QLearning<&'static str> {
        let mut q = learner();
        q.set_semantics(Semantics::Python);
        q
    }

    #[test]
    fn python_epsilon_is_multiplied_while_above_its_floor() {
        let mut q = python_learner();
        let all = ActionSet::all(3);
        for _ in 0..2302 {
            q.update(&"a", 0, 0.0, None, &all).unwrap();
        }
        // The Python version's value after 2302 updates; it then stays below the floor.
        assert_eq!(q.epsilon(), 0.009994334856146604);
        for _ in 0..100 {
            q.update(&"a", 0, 0.0, None, &all).unwrap();
        }
        assert_eq!(q.epsilon(), 0.009994334856146604);
        let mut design = learner();
        for _ in 0..2302 {
            design.update(&"a", 0, 0.0, None, &all).unwrap();
        }
        assert_eq!(design.epsilon(), 0.01);
    }

    #[test]
    fn python_next_state_value_is_the_max_over_stored_actions() {
        let all = ActionSet::all(3);
        for (semantics, expected_future) in [(Semantics::Design, 0.0), (Semantics::Python, -1.0)] {
            let mut q = learner();
            q.set_semantics(semantics);
            q.insert_stored("next", &[(2, -1.0), (1, -3.0)]).unwrap();
            let new_q = q.update(&"s", 0, 1.0, Some(&"next"), &all).unwrap();
            assert!(
                (new_q - 0.01 * (1.0 + 0.99 * expected_future)).abs() < 1e-15,
                "{semantics:?}: {new_q}"
            );
            // A state with no row is worth 0 under both.
            assert_eq!(q.max_q(&"unknown", &all), 0.0);
        }
        // The max runs over the allowed stored actions only; none allowed counts 0.
        let mut q = python_learner();
        q.insert_stored("next", &[(2, -1.0), (1, -3.0)]).unwrap();
        let only_1 = ActionSet::from_indices(vec![0, 1]).unwrap();
        assert_eq!(q.max_q(&"next", &only_1), -3.0);
        let only_0 = ActionSet::from_indices(vec![0]).unwrap();
        assert_eq!(q.max_q(&"next", &only_0), 0.0);
    }

    #[test]
    fn stored_actions_keep_first_store_order() {
        let mut q = python_learner();
        let all = ActionSet::all(3);
        q.update(&"s", 2, 1.0, None, &all).unwrap();
        q.update(&"s", 0, 1.0, None, &all).unwrap();
        q.update(&"s", 2, 1.0, None, &all).unwrap();
        assert_eq!(q.stored_actions(&"s"), Some(&[2u32, 0][..]));
        assert_eq!(q.stored_actions(&"t"), None);
        // A row set whole (a bench table, an old checkpoint) counts every action as stored.
        q.insert_row("t", vec![1.0, 2.0, 3.0]).unwrap();
        assert_eq!(q.stored_actions(&"t"), None);
        q.update(&"t", 1, 1.0, None, &all).unwrap();
        assert_eq!(q.stored_actions(&"t"), None);
        assert!(q.insert_stored("u", &[(3, 1.0)]).is_err());
        assert!(q.insert_stored("u", &[(1, f64::NAN)]).is_err());
        // A repeated action keeps its first place and its last value.
        q.insert_stored("u", &[(1, 1.0), (0, 2.0), (1, 3.0)])
            .unwrap();
        assert_eq!(q.stored_actions(&"u"), Some(&[1u32, 0][..]));
        assert_eq!(q.q(&"u", 1), 3.0);
    }

    #[test]
    fn python_greedy_ties_negative_zero_with_zero() {
        let all = ActionSet::all(3);
        let mut q = python_learner();
        q.insert_stored("t", &[(0, -0.0)]).unwrap();
        // -0.0 > 0.0 and 0.0 > -0.0 are both false in Python: index 0 keeps the choice.
        assert_eq!(q.greedy(&"t", &all), 0);
        q.set_semantics(Semantics::Design);
        assert_eq!(q.greedy(&"t", &all), 1);
    }

    #[test]
    fn non_finite_values_are_never_stored() {
        let mut q = learner();
        let all = ActionSet::all(3);
        assert!(matches!(
            q.update(&"a", 0, f64::NAN, None, &all),
            Err(UpdateError::NonFinite { .. })
        ));
        assert!(q.update(&"a", 0, f64::INFINITY, None, &all).is_err());
        // finite reward whose result overflows
        assert!(q.update(&"a", 0, f64::MAX, Some(&"a"), &all).is_ok());
        q.table.insert("big", vec![f64::MAX; 3]);
        assert!(q.update(&"a", 1, f64::MAX, Some(&"big"), &all).is_err());
        assert!(q.all_finite());
        assert_eq!(q.update_count(), 1);
        assert!(q.update(&"a", 7, 0.0, None, &all).is_err());
        assert!(q.insert_row("x", vec![f64::NAN]).is_err());
    }

    #[test]
    fn selection_reports_propensity() {
        let mut q = learner();
        q.table.insert("s", vec![0.0, 5.0, 0.0]);
        let all = ActionSet::all(3);
        let s = q.select(&"s", &all, &mut Constant(u64::MAX));
        assert_eq!(s.action, 1);
        assert!(!s.explored);
        assert!((s.propensity - (0.9 + 0.1 / 3.0)).abs() < 1e-12);
        assert_eq!(s.q_value, 5.0);
        let e = q.select(&"s", &all, &mut Constant(0));
        assert!(e.explored);
        assert_eq!(e.action, 0);
        assert!((e.propensity - 0.1 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn decision_rng_depends_on_seed_stream_and_sequence_only() {
        let draw = |seed, stream, seq| decision_rng(seed, stream, seq).next_u64();
        assert_eq!(draw(7, 0, 42), draw(7, 0, 42));
        assert_ne!(draw(7, 0, 42), draw(7, 0, 43));
        assert_ne!(draw(7, 0, 42), draw(8, 0, 42));
        assert_ne!(draw(7, 0, 42), draw(7, 1, 42));
    }
}
