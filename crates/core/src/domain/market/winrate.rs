//! Bounded windows over closed trades: the win rate and the P&L series behind the Sharpe signal.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Closes the win rate looks back over.
pub const WINRATE_WINDOW: usize = 20;
/// Fewest closes from which a win rate is computed.
const MIN_CLOSES_FOR_WINRATE: usize = 3;
/// Win rate reported before there are enough closes.
const DEFAULT_WINRATE: f64 = 0.5;

/// Trailing win rate over the last [`WINRATE_WINDOW`] closes; a win is `pnl_pct > 0`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WinRateTracker {
    outcomes: VecDeque<bool>,
}

impl WinRateTracker {
    /// Records one close.
    pub fn record(&mut self, pnl_pct: f64) {
        if self.outcomes.len() == WINRATE_WINDOW {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(pnl_pct > 0.0);
    }

    /// Share of wins in the window, or 0.5 with fewer than three closes.
    pub fn win_rate(&self) -> f64 {
        if self.outcomes.len() < MIN_CLOSES_FOR_WINRATE {
            return DEFAULT_WINRATE;
        }
        self.outcomes.iter().filter(|w| **w).count() as f64 / self.outcomes.len() as f64
    }
}

/// The last [`WINRATE_WINDOW`] `pnl_pct` values, for the Sharpe signal of the meta reward.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PnlWindow {
    values: VecDeque<f64>,
}

impl PnlWindow {
    /// Records one close's `pnl_pct`.
    pub fn record(&mut self, pnl_pct: f64) {
        if self.values.len() == WINRATE_WINDOW {
            self.values.pop_front();
        }
        self.values.push_back(pnl_pct);
    }

    /// The values, oldest first.
    pub fn values(&self) -> impl Iterator<Item = f64> + Clone + '_ {
        self.values.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn win_rate_defaults_until_three_closes() {
        let mut t = WinRateTracker::default();
        assert_eq!(t.win_rate(), 0.5);
        t.record(1.0);
        t.record(1.0);
        assert_eq!(t.win_rate(), 0.5);
        t.record(-1.0);
        assert!((t.win_rate() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn zero_pnl_is_not_a_win_and_window_keeps_twenty() {
        let mut t = WinRateTracker::default();
        for _ in 0..20 {
            t.record(1.0);
        }
        assert_eq!(t.win_rate(), 1.0);
        for _ in 0..10 {
            t.record(0.0);
        }
        assert_eq!(t.win_rate(), 0.5);
    }

    #[test]
    fn pnl_window_keeps_the_last_twenty() {
        let mut w = PnlWindow::default();
        for i in 0..25 {
            w.record(i as f64);
        }
        let v: Vec<f64> = w.values().collect();
        assert_eq!(v.len(), 20);
        assert_eq!(v[0], 5.0);
        assert_eq!(v[19], 24.0);
    }
}
