//! What an event may claim: plausibility bounds on every reward input, a bound on the reward that
//! reaches a Q-update, and how far an event's own timestamp may stray from the transport's clock.
//!
//! Decoding accepts any finite number where a number belongs; these bounds stop the numbers no
//! real trading stack sends (a `pnl_pct` of 1e300, a balance of 1e200) before they reach
//! learning. An event outside them is rejected with reason `implausible` and changes nothing. The
//! reward clamp is a second line: whatever the weights and inputs, no single update moves a
//! Q-value by more than `α · (max_abs_reward + γ·max Q)`.
//!
//! Time works the same way: the transport's clock (the JetStream message time, or the arrival
//! time in core mode) runs reward windows and expiry, and an event's own `timestamp` is kept only
//! as information, clamped into `max_clock_skew_secs` of the transport's time.

use serde::{Deserialize, Serialize};

use crate::event::{DecodeError, Event, EventBody};
use crate::invalid::Invalid;

/// Default largest |`pnl_pct`| of a close, in percent.
pub const DEFAULT_MAX_ABS_PNL_PCT: f64 = 1_000.0;
/// Default largest `max_drawdown_pct` of a close, in percent.
pub const DEFAULT_MAX_DRAWDOWN_PCT: f64 = 1_000.0;
/// Default largest amount in USD an event may carry.
pub const DEFAULT_MAX_USD: f64 = 1e12;
/// Default largest exposure (share of the account).
pub const DEFAULT_MAX_EXPOSURE: f64 = 100.0;
/// Default largest volatility a close may report (a fraction: 0.02 is 2 %).
pub const DEFAULT_MAX_VOLATILITY: f64 = 10.0;
/// Default largest |reward| that reaches a Q-update.
pub const DEFAULT_MAX_ABS_REWARD: f64 = 1_000.0;
/// Default largest distance between an event's timestamp and the transport's time, seconds.
pub const DEFAULT_MAX_CLOCK_SKEW_SECS: f64 = 300.0;

/// Bounds on what an event may claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Plausibility {
    /// Largest |`pnl_pct`| (`pnl_percentage`) of a close, in percent.
    pub max_abs_pnl_pct: f64,
    /// Largest `max_drawdown_pct` (`drawdown`) of a close, in percent.
    pub max_drawdown_pct: f64,
    /// Largest amount in USD: `account_balance`, `position_size_usd`, `size_usd`, |`pnl_usd`|.
    pub max_usd: f64,
    /// Largest exposure: `portfolio_exposure`, and a trade's `position_size_usd ÷
    /// account_balance`.
    pub max_exposure: f64,
    /// Largest `volatility` of a close.
    pub max_volatility: f64,
    /// Largest |reward| that reaches a Q-update; a larger reward is clamped to it, counted.
    pub max_abs_reward: f64,
    /// Largest distance, in seconds, between an event's own timestamp and the transport's time;
    /// a timestamp further off is clamped to the nearest edge, counted.
    pub max_clock_skew_secs: f64,
}

impl Default for Plausibility {
    fn default() -> Self {
        Self {
            max_abs_pnl_pct: DEFAULT_MAX_ABS_PNL_PCT,
            max_drawdown_pct: DEFAULT_MAX_DRAWDOWN_PCT,
            max_usd: DEFAULT_MAX_USD,
            max_exposure: DEFAULT_MAX_EXPOSURE,
            max_volatility: DEFAULT_MAX_VOLATILITY,
            max_abs_reward: DEFAULT_MAX_ABS_REWARD,
            max_clock_skew_secs: DEFAULT_MAX_CLOCK_SKEW_SECS,
        }
    }
}

/// An event's time once checked against the transport's clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrustedTime {
    /// The event's time: its own timestamp when within the skew, else the nearest edge.
    pub time: f64,
    /// Whether the timestamp was outside the skew and clamped.
    pub clamped: bool,
}

impl Plausibility {
    /// Checks every bound; the error names the key (under `plausibility.`).
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, value) in [
            ("max_abs_pnl_pct", self.max_abs_pnl_pct),
            ("max_drawdown_pct", self.max_drawdown_pct),
            ("max_usd", self.max_usd),
            ("max_exposure", self.max_exposure),
            ("max_volatility", self.max_volatility),
            ("max_abs_reward", self.max_abs_reward),
            ("max_clock_skew_secs", self.max_clock_skew_secs),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(Invalid::new(
                    Some("plausibility"),
                    key,
                    format!("must be a positive number, got {value}"),
                ));
            }
        }
        Ok(())
    }

    /// Whether every reward input of `event` is within bounds; else the first one that is not.
    pub fn check(&self, event: &Event) -> Result<(), DecodeError> {
        match &event.body {
            EventBody::Prediction(_) => Ok(()),
            EventBody::Trade(t) => {
                self.usd("position_size_usd", t.position_size_usd)?;
                self.usd("account_balance", t.account_balance)?;
                self.at_most(
                    "portfolio_exposure",
                    t.portfolio_exposure,
                    self.max_exposure,
                )?;
                // A zero balance means "unknown" (the exposure falls back to
                // `portfolio_exposure`), so only a positive one is checked.
                match (t.position_size_usd, t.account_balance) {
                    (Some(size), Some(balance)) if balance > 0.0 => self.at_most(
                        "position_size_usd ÷ account_balance",
                        Some(size / balance),
                        self.max_exposure,
                    ),
                    _ => Ok(()),
                }
            }
            EventBody::Close(c) => {
                self.at_most("pnl_pct", Some(c.pnl_pct.abs()), self.max_abs_pnl_pct)?;
                self.at_most(
                    "max_drawdown_pct",
                    Some(c.max_drawdown_pct),
                    self.max_drawdown_pct,
                )?;
                self.usd("pnl_usd", c.pnl_usd.map(f64::abs))?;
                self.usd("account_balance", c.account_balance)?;
                self.usd("size_usd", c.size_usd)?;
                self.at_most(
                    "portfolio_exposure",
                    c.portfolio_exposure,
                    self.max_exposure,
                )?;
                self.at_most("volatility", c.volatility, self.max_volatility)
            }
        }
    }

    /// `reward` bounded to ±`max_abs_reward`, and whether it had to be clamped.
    pub fn bound_reward(&self, reward: f64) -> (f64, bool) {
        let bounded = reward.clamp(-self.max_abs_reward, self.max_abs_reward);
        // A NaN reward passes through: the Q-update refuses it and counts it.
        (bounded, bounded != reward && !reward.is_nan())
    }

    /// The event's `claimed` time checked against the transport's time `now`.
    pub fn trusted_time(&self, claimed: f64, now: f64) -> TrustedTime {
        let skew = self.max_clock_skew_secs;
        let time = claimed.clamp(now - skew, now + skew);
        TrustedTime {
            time,
            clamped: time != claimed,
        }
    }

    fn usd(&self, field: &'static str, value: Option<f64>) -> Result<(), DecodeError> {
        self.at_most(field, value, self.max_usd)
    }

    fn at_most(
        &self,
        field: &'static str,
        value: Option<f64>,
        limit: f64,
    ) -> Result<(), DecodeError> {
        match value {
            Some(v) if v > limit => Err(implausible(field, v, limit)),
            _ => Ok(()),
        }
    }
}

fn implausible(field: &'static str, value: f64, limit: f64) -> DecodeError {
    DecodeError::Implausible {
        field,
        problem: format!("is {value:e}, beyond the plausible {limit:e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, EventKind, DEFAULT_MAX_PAYLOAD_BYTES};

    fn check(kind: EventKind, raw: &str) -> Result<(), DecodeError> {
        let event = decode(kind, raw.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES, 0.0).unwrap();
        Plausibility::default().check(&event)
    }

    #[test]
    fn ordinary_events_are_plausible() {
        let close = r#"{"symbol":"A","pnl_pct":-100,"max_drawdown_pct":100,"pnl_usd":-5000,"account_balance":5000,"volatility":0.04}"#;
        assert_eq!(check(EventKind::PositionClosed, close), Ok(()));
        let trade = r#"{"symbol":"A","position_size_usd":50000,"account_balance":10000,"portfolio_exposure":5}"#;
        assert_eq!(check(EventKind::TradeExecuted, trade), Ok(()));
    }

    #[test]
    fn forged_reward_inputs_are_implausible_and_name_the_field() {
        let cases = [
            (
                EventKind::PositionClosed,
                r#"{"symbol":"A","pnl_pct":1e300}"#,
                "pnl_pct",
            ),
            (
                EventKind::PositionClosed,
                r#"{"symbol":"A","pnl_pct":-1001}"#,
                "pnl_pct",
            ),
            (
                EventKind::PositionClosed,
                r#"{"symbol":"A","pnl_pct":1,"drawdown":1e9}"#,
                "max_drawdown_pct",
            ),
            (
                EventKind::PositionClosed,
                r#"{"symbol":"A","pnl_pct":1,"pnl_usd":-1e13}"#,
                "pnl_usd",
            ),
            (
                EventKind::PositionClosed,
                r#"{"symbol":"A","pnl_pct":1,"account_balance":1e200}"#,
                "account_balance",
            ),
            (
                EventKind::PositionClosed,
                r#"{"symbol":"A","pnl_pct":1,"volatility":11}"#,
                "volatility",
            ),
            (
                EventKind::TradeExecuted,
                r#"{"symbol":"A","portfolio_exposure":1e9}"#,
                "portfolio_exposure",
            ),
            (
                EventKind::TradeExecuted,
                r#"{"symbol":"A","position_size_usd":1e6,"account_balance":1e-300}"#,
                "position_size_usd ÷ account_balance",
            ),
        ];
        for (kind, raw, field) in cases {
            let err = check(kind, raw).unwrap_err();
            assert_eq!(err.code(), "implausible", "{raw}");
            assert!(err.to_string().contains(field), "{raw}: {err}");
        }
    }

    #[test]
    fn rewards_are_bounded_and_the_clamp_is_reported() {
        let p = Plausibility::default();
        assert_eq!(p.bound_reward(12.5), (12.5, false));
        assert_eq!(p.bound_reward(1e300), (1_000.0, true));
        assert_eq!(p.bound_reward(-1e300), (-1_000.0, true));
        let (nan, clamped) = p.bound_reward(f64::NAN);
        assert!(nan.is_nan() && !clamped);
    }

    #[test]
    fn timestamps_are_trusted_within_the_skew_only() {
        let p = Plausibility::default();
        let now = 1_800_000_000.0;
        assert_eq!(
            p.trusted_time(now - 299.0, now),
            TrustedTime {
                time: now - 299.0,
                clamped: false
            }
        );
        assert_eq!(
            p.trusted_time(now + 8.0 * 86_400.0, now),
            TrustedTime {
                time: now + 300.0,
                clamped: true
            }
        );
        assert_eq!(p.trusted_time(0.0, now).time, now - 300.0);
    }

    #[test]
    fn bounds_must_be_positive_numbers() {
        let mut p = Plausibility::default();
        assert_eq!(p.validate(), Ok(()));
        p.max_clock_skew_secs = f64::INFINITY;
        assert_eq!(
            p.validate().unwrap_err().field,
            "plausibility.max_clock_skew_secs"
        );
        p = Plausibility {
            max_abs_pnl_pct: 0.0,
            ..Plausibility::default()
        };
        assert!(p.validate().is_err());
    }
}
