//! The two action spaces: what each agent can choose.
//!
//! Actions are enumerated in a fixed order so that an action is also a stable index into a
//! Q-table row. The meta-strategy space is strategy × model × weight (3 × 4 × 5 = 60), the
//! position-sizing space is size multiplier × leverage (5 × 8 = 40). Both orders match the seed's
//! nesting: the last component changes fastest.

use std::fmt;

/// Strategies the meta-strategy agent can route a signal to.
pub const STRATEGIES: [&str; 3] = ["dual_momentum", "mean_reversion", "momentum_flip"];
/// Prediction models the meta-strategy agent can trust.
pub const MODELS: [&str; 4] = ["lstm", "gru", "transformer", "ensemble"];
/// Confidence weights the meta-strategy agent can apply.
pub const WEIGHTS: [f64; 5] = [0.5, 0.75, 1.0, 1.25, 1.5];
/// Size multipliers the position-sizing agent can apply.
pub const SIZE_MULTIPLIERS: [f64; 5] = [0.5, 0.75, 1.0, 1.5, 2.0];
/// Leverage levels the position-sizing agent can choose.
pub const LEVERAGES: [u32; 8] = [5, 10, 15, 20, 25, 30, 40, 50];

/// Number of meta-strategy actions.
pub const META_ACTIONS: usize = STRATEGIES.len() * MODELS.len() * WEIGHTS.len();
/// Number of position-sizing actions.
pub const SIZING_ACTIONS: usize = SIZE_MULTIPLIERS.len() * LEVERAGES.len();

/// One meta-strategy choice: which strategy, which model, and how much to weight the signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetaAction {
    /// Strategy name, one of [`STRATEGIES`].
    pub strategy: &'static str,
    /// Model name, one of [`MODELS`].
    pub model: &'static str,
    /// Confidence weight, one of [`WEIGHTS`].
    pub weight: f64,
}

impl MetaAction {
    /// The action at `index`, or `None` when the index is outside `0..META_ACTIONS`.
    pub fn from_index(index: usize) -> Option<Self> {
        if index >= META_ACTIONS {
            return None;
        }
        let per_strategy = MODELS.len() * WEIGHTS.len();
        Some(Self {
            strategy: STRATEGIES[index / per_strategy],
            model: MODELS[(index % per_strategy) / WEIGHTS.len()],
            weight: WEIGHTS[index % WEIGHTS.len()],
        })
    }

    /// The index of this action in the meta-strategy space.
    pub fn index(&self) -> usize {
        let s = STRATEGIES
            .iter()
            .position(|x| *x == self.strategy)
            .unwrap_or(0);
        let m = MODELS.iter().position(|x| *x == self.model).unwrap_or(0);
        let w = WEIGHTS.iter().position(|x| *x == self.weight).unwrap_or(0);
        (s * MODELS.len() + m) * WEIGHTS.len() + w
    }

    /// Every meta action, in index order.
    pub fn all() -> impl Iterator<Item = Self> {
        (0..META_ACTIONS).filter_map(Self::from_index)
    }

    /// Parses a key written by [`fmt::Display`] (`strategy|model|weight`).
    pub fn parse_key(key: &str) -> Option<Self> {
        Self::all().find(|a| a.to_string() == key)
    }
}

impl fmt::Display for MetaAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}|{}|{:?}", self.strategy, self.model, self.weight)
    }
}

/// One position-sizing choice: a multiplier on the proposed size and a leverage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizingAction {
    /// Multiplier applied to the proposed position size, one of [`SIZE_MULTIPLIERS`].
    pub size_multiplier: f64,
    /// Leverage, one of [`LEVERAGES`].
    pub leverage: u32,
}

impl SizingAction {
    /// The action at `index`, or `None` when the index is outside `0..SIZING_ACTIONS`.
    pub fn from_index(index: usize) -> Option<Self> {
        if index >= SIZING_ACTIONS {
            return None;
        }
        Some(Self {
            size_multiplier: SIZE_MULTIPLIERS[index / LEVERAGES.len()],
            leverage: LEVERAGES[index % LEVERAGES.len()],
        })
    }

    /// The index of this action in the position-sizing space.
    pub fn index(&self) -> usize {
        let s = SIZE_MULTIPLIERS
            .iter()
            .position(|x| *x == self.size_multiplier)
            .unwrap_or(0);
        let l = LEVERAGES
            .iter()
            .position(|x| *x == self.leverage)
            .unwrap_or(0);
        s * LEVERAGES.len() + l
    }

    /// Every sizing action, in index order.
    pub fn all() -> impl Iterator<Item = Self> {
        (0..SIZING_ACTIONS).filter_map(Self::from_index)
    }

    /// Parses a key written by [`fmt::Display`] (`multiplier|leverage`).
    pub fn parse_key(key: &str) -> Option<Self> {
        Self::all().find(|a| a.to_string() == key)
    }

    /// Indices of the actions whose leverage does not exceed `max_leverage`.
    pub fn allowed_up_to(max_leverage: u32) -> Vec<usize> {
        Self::all()
            .filter(|a| a.leverage <= max_leverage)
            .map(|a| a.index())
            .collect()
    }
}

impl fmt::Display for SizingAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}x|{}x", self.size_multiplier, self.leverage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_have_the_seed_sizes() {
        assert_eq!(META_ACTIONS, 60);
        assert_eq!(SIZING_ACTIONS, 40);
        assert_eq!(MetaAction::all().count(), 60);
        assert_eq!(SizingAction::all().count(), 40);
    }

    #[test]
    fn index_and_action_round_trip_both_ways() {
        for i in 0..META_ACTIONS {
            let a = MetaAction::from_index(i).unwrap();
            assert_eq!(a.index(), i);
            assert_eq!(MetaAction::parse_key(&a.to_string()), Some(a));
        }
        for i in 0..SIZING_ACTIONS {
            let a = SizingAction::from_index(i).unwrap();
            assert_eq!(a.index(), i);
            assert_eq!(SizingAction::parse_key(&a.to_string()), Some(a));
        }
        assert_eq!(MetaAction::from_index(60), None);
        assert_eq!(SizingAction::from_index(40), None);
    }

    #[test]
    fn order_is_strategy_then_model_then_weight() {
        let first = MetaAction::from_index(0).unwrap();
        assert_eq!(first.to_string(), "dual_momentum|lstm|0.5");
        let a = MetaAction::from_index(1).unwrap();
        assert_eq!(
            (a.strategy, a.model, a.weight),
            ("dual_momentum", "lstm", 0.75)
        );
        let a = MetaAction::from_index(5).unwrap();
        assert_eq!(
            (a.strategy, a.model, a.weight),
            ("dual_momentum", "gru", 0.5)
        );
        let a = MetaAction::from_index(59).unwrap();
        assert_eq!(
            (a.strategy, a.model, a.weight),
            ("momentum_flip", "ensemble", 1.5)
        );
        let s = SizingAction::from_index(9).unwrap();
        assert_eq!((s.size_multiplier, s.leverage), (0.75, 10));
        assert_eq!(s.to_string(), "0.75x|10x");
    }

    #[test]
    fn leverage_cap_keeps_only_allowed_actions() {
        let allowed = SizingAction::allowed_up_to(20);
        assert_eq!(allowed.len(), 5 * 4);
        assert!(allowed
            .iter()
            .all(|&i| SizingAction::from_index(i).unwrap().leverage <= 20));
        assert!(SizingAction::allowed_up_to(4).is_empty());
    }
}
