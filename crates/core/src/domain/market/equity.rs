//! The account's equity curve: its slope and the account health derived from drawdown.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Points the equity curve keeps.
pub const EQUITY_WINDOW: usize = 30;
/// Fewest points from which a slope is computed.
const MIN_POINTS_FOR_SLOPE: usize = 5;
/// Fewest points from which account health is computed.
const MIN_POINTS_FOR_HEALTH: usize = 3;
/// Health reported before there are enough points.
const DEFAULT_HEALTH: f64 = 0.7;

/// The last [`EQUITY_WINDOW`] equity values, one per close.
///
/// A close that carries `account_balance` sets the equity to it; otherwise the equity moves by
/// the close's `pnl_usd` (by nothing when the close has neither), starting from the configured
/// initial balance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EquityCurve {
    equity: f64,
    points: VecDeque<f64>,
}

impl EquityCurve {
    /// An empty curve whose running equity starts at `initial_balance`.
    pub fn new(initial_balance: f64) -> Self {
        Self {
            equity: initial_balance,
            points: VecDeque::new(),
        }
    }

    /// Records one close and returns the equity it leaves.
    pub fn record(&mut self, account_balance: Option<f64>, pnl_usd: Option<f64>) -> f64 {
        let next = match (account_balance, pnl_usd) {
            (Some(balance), _) => balance,
            (None, Some(pnl)) => self.equity + pnl,
            (None, None) => self.equity,
        };
        if next.is_finite() {
            self.equity = next;
        }
        if self.points.len() == EQUITY_WINDOW {
            self.points.pop_front();
        }
        self.points.push_back(self.equity);
        self.equity
    }

    /// The running equity.
    pub fn equity(&self) -> f64 {
        self.equity
    }

    /// The points of the window, oldest first.
    pub fn points(&self) -> impl Iterator<Item = f64> + '_ {
        self.points.iter().copied()
    }

    /// Least-squares slope of equity against the point index, divided by mean equity; 0 with
    /// fewer than five points or a non-positive mean.
    pub fn slope(&self) -> f64 {
        let n = self.points.len();
        if n < MIN_POINTS_FOR_SLOPE {
            return 0.0;
        }
        let nf = n as f64;
        let x_mean = (nf - 1.0) / 2.0;
        let y_mean = self.points.iter().sum::<f64>() / nf;
        if y_mean <= 0.0 {
            return 0.0;
        }
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (i, y) in self.points.iter().enumerate() {
            let dx = i as f64 - x_mean;
            sxy += dx * (y - y_mean);
            sxx += dx * dx;
        }
        let slope = sxy / sxx / y_mean;
        if slope.is_finite() {
            slope
        } else {
            0.0
        }
    }

    /// Health from the drawdown of the latest point off the window's peak: 1.0 below 5 %, 0.8
    /// below 10 %, 0.6 below 20 %, 0.4 otherwise; 0.7 with fewer than three points.
    pub fn account_health(&self) -> f64 {
        if self.points.len() < MIN_POINTS_FOR_HEALTH {
            return DEFAULT_HEALTH;
        }
        let peak = self.points.iter().copied().fold(f64::MIN, f64::max);
        let last = self.points.back().copied().unwrap_or(peak);
        if peak <= 0.0 {
            return 0.4;
        }
        let drawdown = (peak - last) / peak;
        if drawdown < 0.05 {
            1.0
        } else if drawdown < 0.10 {
            0.8
        } else if drawdown < 0.20 {
            0.6
        } else {
            0.4
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(points: &[f64]) -> EquityCurve {
        let mut c = EquityCurve::new(10_000.0);
        for p in points {
            c.record(Some(*p), None);
        }
        c
    }

    #[test]
    fn slope_is_least_squares_over_mean_equity() {
        assert_eq!(curve(&[100.0, 101.0, 102.0, 103.0]).slope(), 0.0);
        let s = curve(&[100.0, 101.0, 102.0, 103.0, 104.0]).slope();
        assert!((s - 1.0 / 102.0).abs() < 1e-12, "{s}");
        let flat = curve(&[100.0; 8]).slope();
        assert_eq!(flat, 0.0);
    }

    #[test]
    fn running_equity_follows_pnl_when_no_balance_is_given() {
        let mut c = EquityCurve::new(1_000.0);
        assert_eq!(c.record(None, Some(10.0)), 1_010.0);
        assert_eq!(c.record(None, None), 1_010.0);
        assert_eq!(c.record(Some(900.0), Some(5.0)), 900.0);
        assert_eq!(c.record(None, Some(-50.0)), 850.0);
    }

    #[test]
    fn health_steps_at_the_drawdown_boundaries() {
        assert_eq!(curve(&[100.0, 100.0]).account_health(), 0.7);
        assert_eq!(curve(&[100.0, 100.0, 95.01]).account_health(), 1.0);
        assert_eq!(curve(&[100.0, 100.0, 95.0]).account_health(), 0.8);
        assert_eq!(curve(&[100.0, 100.0, 90.0]).account_health(), 0.6);
        assert_eq!(curve(&[100.0, 100.0, 80.01]).account_health(), 0.6);
        assert_eq!(curve(&[100.0, 100.0, 80.0]).account_health(), 0.4);
    }

    #[test]
    fn window_keeps_thirty_points() {
        let pts: Vec<f64> = (0..40).map(|i| 100.0 + i as f64).collect();
        let c = curve(&pts);
        assert_eq!(c.points.len(), 30);
        assert_eq!(c.points[0], 110.0);
    }
}
