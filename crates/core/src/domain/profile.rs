//! Learning profiles: named sets of learning settings.
//!
//! * [`LearningProfile::Seed`] is the original design's numbers, kept so that a deployment can
//!   reproduce its behaviour exactly and keep Q-tables learned under it (the Python version's
//!   included) meaning what they meant: α 0.01 on every update, γ 0.99 bootstrapping each close
//!   from the state at close, ε 0.1 decaying ×0.999 per update to 0.01, unseen Q = 0.
//! * [`LearningProfile::Tuned`], the default, treats each trade as what it is, an independent
//!   one-step decision: a close ends the episode, each (state, action) keeps the running mean of
//!   its rewards until `1/n` falls to α, unseen actions start optimistic so each is tried, and
//!   ε stays at a floor high enough to keep sampling all actions. The README's simulate section
//!   measures what each change is worth.
//!
//! A profile gives every learning setting a value; settings named explicitly override it.

use serde::{Deserialize, Serialize};

use super::qlearning::{Hyperparameters, StepSize};
use super::state::BucketEdges;

/// A named set of learning settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LearningProfile {
    /// The original design's numbers.
    Seed,
    /// One-step episodes, visit-count step sizes, optimistic start, lasting exploration.
    #[default]
    Tuned,
}

/// The learning settings a profile stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileLearning {
    /// The Q-learning core's settings.
    pub hyperparameters: Hyperparameters,
    /// Whether a close ends its decision's episode (no bootstrap from the state at close).
    pub close_ends_episode: bool,
    /// Bucket edges of the state features (with the `buckets` discretizer).
    pub edges: BucketEdges,
}

impl LearningProfile {
    /// Every profile.
    pub const ALL: [LearningProfile; 2] = [Self::Seed, Self::Tuned];

    /// The profile's name in settings.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Seed => "seed",
            Self::Tuned => "tuned",
        }
    }

    /// The learning settings of the profile.
    pub fn learning(&self) -> ProfileLearning {
        match self {
            Self::Seed => ProfileLearning {
                // The original design's numbers are the generic core's defaults.
                hyperparameters: Hyperparameters::default(),
                close_ends_episode: false,
                edges: BucketEdges::default(),
            },
            Self::Tuned => ProfileLearning {
                hyperparameters: Hyperparameters {
                    alpha: TUNED_ALPHA,
                    gamma: 0.99,
                    epsilon: TUNED_EPSILON,
                    epsilon_decay: 0.999,
                    epsilon_min: TUNED_EPSILON,
                    step_size: StepSize::VisitCount,
                    initial_q: TUNED_INITIAL_Q,
                },
                close_ends_episode: true,
                edges: tuned_edges(),
            },
        }
    }
}

/// The tuned profile's state buckets: the seed's, except that win rate only tells winning from
/// losing, the equity curve only rising from falling, and market pressure and account health
/// are left out, so that each state gathers enough trades to rank 40 or 60 actions.
fn tuned_edges() -> BucketEdges {
    BucketEdges {
        winrate: vec![0.5],
        equity_slope: vec![0.0],
        market_pressure: vec![],
        account_health: vec![],
        ..BucketEdges::default()
    }
}

/// Smallest step of the tuned profile.
const TUNED_ALPHA: f64 = 0.001;
/// Exploration rate of the tuned profile, from the first update to the last.
const TUNED_EPSILON: f64 = 0.1;
/// Value of an untried (state, action) in the tuned profile.
const TUNED_INITIAL_Q: f64 = 0.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_profile_is_the_original_design() {
        let seed = LearningProfile::Seed.learning();
        assert_eq!(seed.hyperparameters, Hyperparameters::default());
        assert_eq!(seed.edges, BucketEdges::default());
        assert!(!seed.close_ends_episode);
    }

    #[test]
    fn every_profile_is_valid_and_named() {
        for p in LearningProfile::ALL {
            assert!(p.learning().hyperparameters.validate().is_ok());
            assert!(p.learning().edges.validate().is_ok());
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert_eq!(LearningProfile::default(), LearningProfile::Tuned);
    }
}
