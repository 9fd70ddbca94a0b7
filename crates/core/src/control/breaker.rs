//! Circuit breakers: rules on the account's closes that move the trading state by themselves.
//!
//! They run inside the engine on event data only (each close's `pnl_pct`, the equity curve and
//! the transport's time), so a replay trips them at the same sequence.
//!
//! | breaker | condition, evaluated at every close | moves to |
//! |---|---|---|
//! | `drawdown` | equity below its peak by ≥ `breakers.max_drawdown_pct` percent | `REDUCING` |
//! | `losing_streak` | ≥ `breakers.max_consecutive_losses` closes in a row with `pnl_pct < 0` | `HALTED` |
//! | `window_loss` | the `pnl_pct` of the closes in the last `breakers.window_secs` sum to ≤ −`breakers.max_window_loss_pct` | `HALTED` |
//!
//! A breaker trips when its condition has held at `breakers.confirmations` (K) consecutive
//! closes: the K-th close in a row that meets it trips it, and a close that does not meet it
//! starts the count again. A breaker never lowers the state (a drawdown does not move `HALTED`
//! to `REDUCING`). Leaving the state takes an operator's `resume`, or, for `HALTED` set by a
//! breaker, `breakers.halt_cooldown_secs` of the engine's clock when that is set. A resume (or
//! the cooldown) re-arms every breaker from the current figures: the peak becomes the current
//! equity, and the streak, the window and the counts start over.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

use super::TradingState;
use crate::invalid::Invalid;

/// Closes the window-loss breaker keeps at most (the oldest go first).
pub const MAX_WINDOW_CLOSES: usize = 10_000;

/// Which breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerKind {
    /// Drawdown of the equity curve from its peak.
    Drawdown,
    /// Consecutive losing closes.
    LosingStreak,
    /// Loss over a rolling window of the engine's clock.
    WindowLoss,
}

impl BreakerKind {
    /// The state a trip moves to.
    pub fn target(&self) -> TradingState {
        match self {
            Self::Drawdown => TradingState::Reducing,
            Self::LosingStreak | Self::WindowLoss => TradingState::Halted,
        }
    }

    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Drawdown => "drawdown",
            Self::LosingStreak => "losing_streak",
            Self::WindowLoss => "window_loss",
        }
    }
}

/// Breaker settings; 0 turns a breaker off. All off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Drawdown from the equity peak, percent, that moves to `REDUCING`; 0 = off.
    pub max_drawdown_pct: f64,
    /// Losing closes in a row that move to `HALTED`; 0 = off.
    pub max_consecutive_losses: u32,
    /// Summed `pnl_pct` loss over `window_secs` that moves to `HALTED`; 0 = off.
    pub max_window_loss_pct: f64,
    /// Length of the window-loss breaker's window, seconds of the engine's clock.
    pub window_secs: f64,
    /// Consecutive closes at which a condition must hold before its breaker trips (K ≥ 1).
    pub confirmations: u32,
    /// Seconds after a breaker's halt at which trading resumes by itself; 0 = only an
    /// operator's `resume`.
    pub halt_cooldown_secs: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            max_drawdown_pct: 0.0,
            max_consecutive_losses: 0,
            max_window_loss_pct: 0.0,
            window_secs: 3600.0,
            confirmations: 3,
            halt_cooldown_secs: 0.0,
        }
    }
}

impl BreakerConfig {
    /// Checks every value; the error names the field (`control.breakers.…`).
    pub fn validate(&self) -> Result<(), Invalid> {
        let invalid = |field: &str, problem: String| {
            Err(Invalid::new(Some("control.breakers"), field, problem))
        };
        for (key, value) in [
            ("max_drawdown_pct", self.max_drawdown_pct),
            ("max_window_loss_pct", self.max_window_loss_pct),
            ("halt_cooldown_secs", self.halt_cooldown_secs),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return invalid(key, format!("must be a number ≥ 0 (0 = off), got {value}"));
            }
        }
        if self.max_drawdown_pct >= 100.0 {
            return invalid("max_drawdown_pct", "must be below 100".into());
        }
        if !(self.window_secs.is_finite() && self.window_secs > 0.0) {
            return invalid(
                "window_secs",
                format!("must be a positive number, got {}", self.window_secs),
            );
        }
        if self.confirmations == 0 {
            return invalid("confirmations", "must be at least 1".into());
        }
        Ok(())
    }

    fn on(&self, kind: BreakerKind) -> bool {
        match kind {
            BreakerKind::Drawdown => self.max_drawdown_pct > 0.0,
            BreakerKind::LosingStreak => self.max_consecutive_losses > 0,
            BreakerKind::WindowLoss => self.max_window_loss_pct > 0.0,
        }
    }
}

/// A breaker that tripped, with the figures that tripped it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerTrip {
    /// Which breaker.
    pub breaker: BreakerKind,
    /// The figure at the trip: drawdown percent, losing closes, or window loss percent.
    pub value: f64,
    /// The setting it reached.
    pub threshold: f64,
    /// Consecutive closes at which the condition held.
    pub confirmations: u32,
}

impl BreakerTrip {
    /// The trip in words, for the change's `reason`.
    pub fn describe(&self) -> String {
        let what = match self.breaker {
            BreakerKind::Drawdown => format!(
                "equity {:.4} % below its peak (limit {} %)",
                self.value, self.threshold
            ),
            BreakerKind::LosingStreak => format!(
                "{} losing closes in a row (limit {})",
                self.value, self.threshold
            ),
            BreakerKind::WindowLoss => format!(
                "closes lost {:.4} % over the window (limit {} %)",
                self.value, self.threshold
            ),
        };
        format!(
            "breaker {}: {what}, at {} consecutive closes",
            self.breaker.as_str(),
            self.confirmations
        )
    }
}

/// The breakers' figures: part of the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakerBook {
    /// Highest equity since the breakers were (re-)armed.
    pub peak_equity: Option<f64>,
    /// Losing closes in a row.
    pub losing_streak: u32,
    /// (transport time, pnl_pct) of the closes in the window, oldest first.
    pub window: VecDeque<(f64, f64)>,
    /// Consecutive closes at which each condition held: drawdown, losing streak, window loss.
    pub held: [u32; 3],
    /// Transport time of the halt a breaker made, while it lasts.
    pub halted_at: Option<f64>,
}

impl BreakerBook {
    /// Re-arms every breaker from `equity`.
    pub fn rearm(&mut self, equity: f64) {
        *self = Self {
            peak_equity: Some(equity),
            ..Self::default()
        };
    }

    /// Records one close and returns the breakers it trips (most severe first). `before` and
    /// `after` are the equity around the close, `now` the transport time.
    pub fn on_close(
        &mut self,
        config: &BreakerConfig,
        pnl_pct: f64,
        before: f64,
        after: f64,
        now: f64,
    ) -> Vec<BreakerTrip> {
        let peak = self.peak_equity.unwrap_or(before).max(before).max(after);
        self.peak_equity = Some(peak);
        self.losing_streak = if pnl_pct < 0.0 {
            self.losing_streak.saturating_add(1)
        } else {
            0
        };
        let mut window_loss = 0.0;
        if config.on(BreakerKind::WindowLoss) {
            self.window.push_back((now, pnl_pct));
            while self
                .window
                .front()
                .is_some_and(|(t, _)| now - t >= config.window_secs)
                || self.window.len() > MAX_WINDOW_CLOSES
            {
                self.window.pop_front();
            }
            window_loss = -self.window.iter().map(|(_, p)| p).sum::<f64>();
        }
        let drawdown = if peak > 0.0 {
            (peak - after) / peak * 100.0
        } else {
            0.0
        };
        let figures = [
            (BreakerKind::Drawdown, drawdown, config.max_drawdown_pct),
            (
                BreakerKind::LosingStreak,
                f64::from(self.losing_streak),
                f64::from(config.max_consecutive_losses),
            ),
            (
                BreakerKind::WindowLoss,
                window_loss,
                config.max_window_loss_pct,
            ),
        ];
        let mut trips = Vec::new();
        for (i, (kind, value, threshold)) in figures.into_iter().enumerate() {
            // A NaN figure never meets its threshold.
            let holds = value.total_cmp(&threshold).is_ge() && !value.is_nan();
            if !config.on(kind) || !holds {
                self.held[i] = 0;
                continue;
            }
            self.held[i] += 1;
            if self.held[i] >= config.confirmations {
                trips.push(BreakerTrip {
                    breaker: kind,
                    value,
                    threshold,
                    confirmations: self.held[i],
                });
                self.held[i] = 0;
            }
        }
        trips.sort_by_key(|t| std::cmp::Reverse(t.breaker.target()));
        trips
    }

    /// Whether a breaker's halt has outlasted `config.halt_cooldown_secs` at `now`.
    pub fn cooled_down(&self, config: &BreakerConfig, now: f64) -> bool {
        config.halt_cooldown_secs > 0.0
            && self
                .halted_at
                .is_some_and(|t| now - t >= config.halt_cooldown_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(k: u32) -> BreakerConfig {
        BreakerConfig {
            confirmations: k,
            ..BreakerConfig::default()
        }
    }

    /// Feeds closes of `pnl`, each moving equity by `pnl` percent, and returns at which close
    /// (1-based) each trip came.
    fn feed(
        book: &mut BreakerBook,
        config: &BreakerConfig,
        pnls: &[f64],
    ) -> Vec<(usize, BreakerTrip)> {
        let mut equity = 10_000.0;
        let mut out = Vec::new();
        for (i, &p) in pnls.iter().enumerate() {
            let after = equity * (1.0 + p / 100.0);
            for trip in book.on_close(config, p, equity, after, i as f64) {
                out.push((i + 1, trip));
            }
            equity = after;
        }
        out
    }

    #[test]
    fn the_losing_streak_trips_after_exactly_k_confirmations() {
        for k in 1..=4u32 {
            let c = BreakerConfig {
                max_consecutive_losses: 3,
                ..config(k)
            };
            let mut book = BreakerBook::default();
            let trips = feed(&mut book, &c, &[-1.0; 10]);
            // The condition first holds at close 3; the K-th close in a row that meets it trips.
            let first = 3 + k as usize - 1;
            assert_eq!(trips[0].0, first, "k = {k}");
            assert_eq!(trips[0].1.breaker, BreakerKind::LosingStreak);
            assert_eq!(trips[0].1.confirmations, k);
            assert_eq!(trips[0].1.value, f64::from(3 + k - 1));
            // Not before: one close fewer trips nothing.
            let mut book = BreakerBook::default();
            assert!(
                feed(&mut book, &c, &vec![-1.0; first - 1]).is_empty(),
                "k = {k}"
            );
        }
    }

    #[test]
    fn a_win_between_confirmations_starts_the_count_again() {
        let c = BreakerConfig {
            max_consecutive_losses: 2,
            ..config(2)
        };
        let mut book = BreakerBook::default();
        assert!(feed(&mut book, &c, &[-1.0, -1.0, 1.0, -1.0, -1.0]).is_empty());
        assert_eq!(feed(&mut book, &c, &[-1.0]).len(), 1);
    }

    #[test]
    fn the_drawdown_trips_after_exactly_k_confirmations_and_moves_to_reducing() {
        let c = BreakerConfig {
            max_drawdown_pct: 5.0,
            ..config(2)
        };
        let mut book = BreakerBook::default();
        // -3 %: 3 % below peak; -3 %: 5.91 % (holds once); 0 %: still 5.91 % (holds twice: trips).
        let trips = feed(&mut book, &c, &[1.0, -3.0, -3.0, 0.0, 0.0]);
        assert_eq!(trips.len(), 1, "{trips:?}");
        assert_eq!(trips[0].0, 4);
        assert_eq!(trips[0].1.breaker.target(), TradingState::Reducing);
        assert!((trips[0].1.value - 5.91).abs() < 1e-9, "{:?}", trips[0]);
    }

    #[test]
    fn the_window_loss_counts_only_closes_inside_the_window() {
        let c = BreakerConfig {
            max_window_loss_pct: 5.0,
            window_secs: 3.0,
            ..config(1)
        };
        let mut book = BreakerBook::default();
        // Times 0,1,2,3,4: at t=3 the close at t=0 has left the window (with it the sum would
        // be -6.5 and trip); at t=4 the window holds -0.5, -2, -3.
        let trips = feed(&mut book, &c, &[-2.0, -2.0, -0.5, -2.0, -3.0]);
        assert_eq!(trips.len(), 1, "{trips:?}");
        assert_eq!(trips[0].0, 5);
        assert_eq!(trips[0].1.breaker, BreakerKind::WindowLoss);
        assert!((trips[0].1.value - 5.5).abs() < 1e-12, "{:?}", trips[0]);
    }

    #[test]
    fn off_breakers_never_trip_and_cooldown_needs_a_breaker_halt() {
        let c = config(1);
        let mut book = BreakerBook::default();
        assert!(feed(&mut book, &c, &[-50.0; 20]).is_empty());
        let c = BreakerConfig {
            halt_cooldown_secs: 10.0,
            ..c
        };
        assert!(!book.cooled_down(&c, 1e9));
        book.halted_at = Some(100.0);
        assert!(!book.cooled_down(&c, 109.9));
        assert!(book.cooled_down(&c, 110.0));
    }
}
