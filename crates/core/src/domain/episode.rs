//! Episodes: one per decision, from the decision to the close that rewards it.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

use super::market::mean_std;

/// Episodes kept for the statistics.
pub const EPISODE_WINDOW: usize = 100;

/// Discounted return `G = Σ γ^t r_t` of a reward sequence.
pub fn discounted_return(rewards: &[f64], gamma: f64) -> f64 {
    rewards.iter().rev().fold(0.0, |g, r| r + gamma * g)
}

/// One finished episode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// Discounted return.
    pub discounted_return: f64,
    /// Number of steps (rewards).
    pub length: u32,
}

/// Statistics over the last [`EPISODE_WINDOW`] episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeStats {
    /// Episodes finished since the start.
    pub total_episodes: u64,
    /// Episodes in the window.
    pub recent_episodes: usize,
    /// Mean discounted return over the window.
    pub avg_return: f64,
    /// Population std of the discounted return over the window.
    pub std_return: f64,
    /// Best discounted return in the window.
    pub max_return: f64,
    /// Worst discounted return in the window.
    pub min_return: f64,
    /// Mean episode length over the window.
    pub avg_length: f64,
}

/// Keeps the last [`EPISODE_WINDOW`] episodes and a total count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpisodeTracker {
    total: u64,
    recent: VecDeque<Episode>,
}

impl EpisodeTracker {
    /// Records a finished episode with its rewards; returns its discounted return.
    pub fn finish(&mut self, rewards: &[f64], gamma: f64) -> f64 {
        let g = discounted_return(rewards, gamma);
        if self.recent.len() == EPISODE_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(Episode {
            discounted_return: g,
            length: rewards.len() as u32,
        });
        self.total += 1;
        g
    }

    /// Statistics over the window; zeros when empty.
    pub fn stats(&self) -> EpisodeStats {
        let returns = self.recent.iter().map(|e| e.discounted_return);
        let (avg_return, std_return) = mean_std(returns.clone()).unwrap_or((0.0, 0.0));
        let n = self.recent.len();
        EpisodeStats {
            total_episodes: self.total,
            recent_episodes: n,
            avg_return,
            std_return,
            max_return: if n == 0 {
                0.0
            } else {
                returns.clone().fold(f64::MIN, f64::max)
            },
            min_return: if n == 0 {
                0.0
            } else {
                returns.fold(f64::MAX, f64::min)
            },
            avg_length: if n == 0 {
                0.0
            } else {
                self.recent.iter().map(|e| e.length as f64).sum::<f64>() / n as f64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discounted_return_sums_gamma_powers() {
        assert_eq!(discounted_return(&[], 0.99), 0.0);
        assert_eq!(discounted_return(&[2.0], 0.99), 2.0);
        let g = discounted_return(&[1.0, 1.0, 1.0], 0.5);
        assert_eq!(g, 1.75);
    }

    #[test]
    fn stats_cover_the_last_hundred_episodes() {
        let mut t = EpisodeTracker::default();
        assert_eq!(t.stats().recent_episodes, 0);
        for i in 0..150 {
            t.finish(&[i as f64], 0.99);
        }
        let s = t.stats();
        assert_eq!(s.total_episodes, 150);
        assert_eq!(s.recent_episodes, 100);
        assert_eq!(s.min_return, 50.0);
        assert_eq!(s.max_return, 149.0);
        assert_eq!(s.avg_return, 99.5);
        assert_eq!(s.avg_length, 1.0);
    }
}
