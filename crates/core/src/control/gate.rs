//! The risk gate: between the agents and publishing.
//!
//! A rule that another action can meet *masks* the action set before the agent chooses, so the
//! propensity logged with the decision is over the actions really allowed; a rule that no action
//! can meet *refuses* the decision with a stable [`RefusalReason`]. The rules, in the order they
//! are checked:
//!
//! | rule | applies to | effect |
//! |---|---|---|
//! | `HALTED` | predictions, trades | refuse `trading_halted` |
//! | decisions per symbol per minute | predictions, trades | refuse `rate_limit` |
//! | open positions at most | a trade on a symbol with no open position | refuse `max_open_positions` |
//! | leverage cap (`sizing.max_leverage`) | trades | mask (leverage 5 always remains) |
//! | `REDUCING`: multiplier ≤ 1.0 and leverage ≤ `control.reducing_max_leverage` | trades | mask (1.0×/5× always remains) |
//! | exposure cap: `position_size_usd × size_multiplier ÷ account_balance ≤ risk.max_exposure` | trades carrying both figures | mask; refuse `exposure_cap` when even 0.5× exceeds it |
//!
//! The rate limit counts the decisions published for the symbol (both agents) in the 60 seconds
//! of the engine's clock (the transport's time of the events, not the wall clock) before the
//! event; refused decisions do not count.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::TradingState;
use crate::domain::actions::SizingAction;
use crate::domain::qlearning::ActionSet;
use crate::invalid::Invalid;

/// Largest size multiplier the sizing agent may choose while `REDUCING`.
pub const REDUCING_MAX_MULTIPLIER: f64 = 1.0;
/// Default highest leverage while `REDUCING`.
pub const DEFAULT_REDUCING_MAX_LEVERAGE: u32 = 5;
/// Length of the rate limit's window, seconds of the engine's clock.
pub const RATE_WINDOW_SECS: f64 = 60.0;

/// Why a decision was refused: a closed set of stable codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// The trading state is `HALTED`.
    TradingHalted,
    /// Every allowed action would expose more of the account than `risk.max_exposure`.
    ExposureCap,
    /// The symbol had `risk.max_decisions_per_symbol_per_minute` decisions in the last minute.
    RateLimit,
    /// The trade would open a position beyond `risk.max_open_positions`.
    MaxOpenPositions,
}

impl RefusalReason {
    /// Every reason, in a fixed order.
    pub const ALL: [RefusalReason; 4] = [
        Self::TradingHalted,
        Self::ExposureCap,
        Self::RateLimit,
        Self::MaxOpenPositions,
    ];

    /// The stable code.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TradingHalted => "trading_halted",
            Self::ExposureCap => "exposure_cap",
            Self::RateLimit => "rate_limit",
            Self::MaxOpenPositions => "max_open_positions",
        }
    }
}

/// Rules of the gate; 0 turns a rule off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// Largest `position_size_usd × size_multiplier ÷ account_balance` of a trade; 0 = off.
    pub max_exposure: f64,
    /// Decisions per symbol in 60 seconds of the engine's clock; 0 = off.
    pub max_decisions_per_symbol_per_minute: u32,
    /// Open positions at most: a trade that would open one more is refused; 0 = off.
    pub max_open_positions: usize,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            max_exposure: 0.0,
            max_decisions_per_symbol_per_minute: 0,
            max_open_positions: 0,
        }
    }
}

impl GateConfig {
    /// Checks every value; the error names the field (`control.gate.…`).
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(self.max_exposure.is_finite() && self.max_exposure >= 0.0) {
            return Err(Invalid::new(
                Some("control.gate"),
                "max_exposure",
                format!("must be a number ≥ 0 (0 = off), got {}", self.max_exposure),
            ));
        }
        Ok(())
    }
}

/// A refusal before it is dressed with the event's details: the reason and its figures.
pub type Refused = (RefusalReason, String);

/// What the gate reads off a trade.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TradeFacts {
    /// The trade's notional size in USD.
    pub position_size_usd: Option<f64>,
    /// The account balance in USD.
    pub account_balance: Option<f64>,
    /// Whether the trade opens a position (none is open for its symbol).
    pub opens_position: bool,
    /// Positions open now.
    pub open_positions: usize,
}

/// The checks every decision goes through: the state and the rate limit.
pub fn check_common(
    state: TradingState,
    gate: &GateConfig,
    rates: &mut RateBook,
    symbol: &str,
    now: f64,
) -> Result<(), Refused> {
    if state == TradingState::Halted {
        return Err((
            RefusalReason::TradingHalted,
            "trading is halted: no decision is published until an operator resumes".into(),
        ));
    }
    let limit = gate.max_decisions_per_symbol_per_minute;
    if limit > 0 {
        let recent = rates.recent(symbol, now);
        if recent >= limit as usize {
            return Err((
                RefusalReason::RateLimit,
                format!("{recent} decisions for {symbol} in the last {RATE_WINDOW_SECS} s; at most {limit} allowed"),
            ));
        }
    }
    Ok(())
}

/// The sizing actions the agent may choose for a trade: `base` (the leverage cap) narrowed by
/// the state and the exposure cap, or the refusal when no action is left.
pub fn sizing_mask(
    state: TradingState,
    reducing_max_leverage: u32,
    gate: &GateConfig,
    base: &ActionSet,
    trade: &TradeFacts,
) -> Result<ActionSet, Refused> {
    if gate.max_open_positions > 0
        && trade.opens_position
        && trade.open_positions >= gate.max_open_positions
    {
        return Err((
            RefusalReason::MaxOpenPositions,
            format!(
                "{} positions are open; at most {} allowed",
                trade.open_positions, gate.max_open_positions
            ),
        ));
    }
    let exposure_per_unit = match (trade.position_size_usd, trade.account_balance) {
        (Some(size), Some(balance)) if gate.max_exposure > 0.0 && balance > 0.0 => {
            Some(size / balance).filter(|e| e.is_finite())
        }
        _ => None,
    };
    let allowed: Vec<usize> = base
        .indices()
        .iter()
        .copied()
        .filter(|&i| {
            let Some(a) = SizingAction::from_index(i) else {
                return false;
            };
            let reduced = state != TradingState::Reducing
                || (a.size_multiplier <= REDUCING_MAX_MULTIPLIER
                    && a.leverage <= reducing_max_leverage);
            let exposed =
                exposure_per_unit.is_none_or(|e| e * a.size_multiplier <= gate.max_exposure);
            reduced && exposed
        })
        .collect();
    ActionSet::from_indices(allowed).ok_or_else(|| {
        (
            RefusalReason::ExposureCap,
            format!(
                "even the smallest multiplier exposes {:.4} of the account; at most {} allowed",
                exposure_per_unit.unwrap_or(f64::NAN) * crate::domain::actions::SIZE_MULTIPLIERS[0],
                gate.max_exposure
            ),
        )
    })
}

/// Times of the decisions published per symbol in the last [`RATE_WINDOW_SECS`]: what the rate
/// limit counts. Kept only while the rule is on, bounded per symbol by the limit and in symbols
/// by `limits.max_symbols`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RateBook {
    recent: imbl::OrdMap<String, Arc<Vec<f64>>>,
}

impl RateBook {
    /// Decisions for `symbol` within the window before `now` (older ones are forgotten).
    fn recent(&mut self, symbol: &str, now: f64) -> usize {
        let Some(times) = self.recent.get_mut(symbol) else {
            return 0;
        };
        if times.iter().any(|&t| now - t >= RATE_WINDOW_SECS) {
            Arc::make_mut(times).retain(|&t| now - t < RATE_WINDOW_SECS);
        }
        let n = times.len();
        if n == 0 {
            self.recent.remove(symbol);
        }
        n
    }

    /// Records a decision for `symbol` at `now`, keeping at most `max_symbols` symbols.
    pub(crate) fn record(&mut self, symbol: &str, now: f64, max_symbols: usize) {
        if let Some(times) = self.recent.get_mut(symbol) {
            Arc::make_mut(times).push(now);
            return;
        }
        if self.recent.len() >= max_symbols {
            self.sweep(now);
        }
        while self.recent.len() >= max_symbols.max(1) {
            let oldest = self
                .recent
                .iter()
                .min_by(|a, b| {
                    let last = |v: &Arc<Vec<f64>>| v.last().copied().unwrap_or(f64::MIN);
                    last(a.1).total_cmp(&last(b.1)).then_with(|| a.0.cmp(b.0))
                })
                .map(|(k, _)| k.clone());
            match oldest {
                Some(symbol) => {
                    self.recent.remove(&symbol);
                }
                None => break,
            }
        }
        self.recent.insert(symbol.to_string(), Arc::new(vec![now]));
    }

    /// Forgets every symbol with no decision in the window before `now`.
    pub(crate) fn sweep(&mut self, now: f64) {
        let stale: Vec<String> = self
            .recent
            .iter()
            .filter(|(_, v)| v.iter().all(|&t| now - t >= RATE_WINDOW_SECS))
            .map(|(k, _)| k.clone())
            .collect();
        for symbol in stale {
            self.recent.remove(&symbol);
        }
    }

    /// Symbols with recent decisions.
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    /// Whether no symbol has a recent decision.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::actions::SIZING_ACTIONS;

    fn facts(size: Option<f64>, balance: Option<f64>) -> TradeFacts {
        TradeFacts {
            position_size_usd: size,
            account_balance: balance,
            opens_position: true,
            open_positions: 0,
        }
    }

    fn actions(set: &ActionSet) -> Vec<SizingAction> {
        set.indices()
            .iter()
            .filter_map(|&i| SizingAction::from_index(i))
            .collect()
    }

    #[test]
    fn halted_refuses_and_active_admits() {
        let mut rates = RateBook::default();
        let gate = GateConfig::default();
        let (reason, _) =
            check_common(TradingState::Halted, &gate, &mut rates, "A", 0.0).unwrap_err();
        assert_eq!(reason, RefusalReason::TradingHalted);
        assert!(check_common(TradingState::Active, &gate, &mut rates, "A", 0.0).is_ok());
        assert!(check_common(TradingState::Reducing, &gate, &mut rates, "A", 0.0).is_ok());
    }

    #[test]
    fn reducing_masks_to_actions_that_add_no_risk() {
        let base = ActionSet::all(SIZING_ACTIONS);
        let gate = GateConfig::default();
        let set =
            sizing_mask(TradingState::Reducing, 10, &gate, &base, &facts(None, None)).unwrap();
        let kept = actions(&set);
        // Multipliers 0.5, 0.75, 1.0 × leverages 5, 10.
        assert_eq!(kept.len(), 6);
        assert!(kept
            .iter()
            .all(|a| a.size_multiplier <= 1.0 && a.leverage <= 10));
        let all = sizing_mask(TradingState::Active, 10, &gate, &base, &facts(None, None)).unwrap();
        assert_eq!(all, base);
    }

    #[test]
    fn the_exposure_cap_masks_and_refuses_when_nothing_fits() {
        let base = ActionSet::all(SIZING_ACTIONS);
        let gate = GateConfig {
            max_exposure: 0.2,
            ..GateConfig::default()
        };
        // 1,500 of 10,000: 0.15 per unit; 0.5× and 0.75× and 1.0× fit (≤ 0.2), 1.5× does not.
        let set = sizing_mask(
            TradingState::Active,
            5,
            &gate,
            &base,
            &facts(Some(1500.0), Some(1e4)),
        )
        .unwrap();
        let kept = actions(&set);
        assert_eq!(kept.len(), 3 * 8);
        assert!(kept.iter().all(|a| a.size_multiplier <= 1.0));
        // 5,000 of 10,000: even 0.5× is 0.25 > 0.2.
        let (reason, detail) = sizing_mask(
            TradingState::Active,
            5,
            &gate,
            &base,
            &facts(Some(5000.0), Some(1e4)),
        )
        .unwrap_err();
        assert_eq!(reason, RefusalReason::ExposureCap);
        assert!(detail.contains("0.25"), "{detail}");
        // Without both figures the rule does not apply.
        let set = sizing_mask(
            TradingState::Active,
            5,
            &gate,
            &base,
            &facts(Some(5000.0), None),
        )
        .unwrap();
        assert_eq!(set, base);
    }

    #[test]
    fn open_positions_at_most_refuses_only_a_new_position() {
        let base = ActionSet::all(SIZING_ACTIONS);
        let gate = GateConfig {
            max_open_positions: 2,
            ..GateConfig::default()
        };
        let mut trade = facts(None, None);
        trade.open_positions = 2;
        let (reason, _) = sizing_mask(TradingState::Active, 5, &gate, &base, &trade).unwrap_err();
        assert_eq!(reason, RefusalReason::MaxOpenPositions);
        trade.opens_position = false;
        assert!(sizing_mask(TradingState::Active, 5, &gate, &base, &trade).is_ok());
        trade.opens_position = true;
        trade.open_positions = 1;
        assert!(sizing_mask(TradingState::Active, 5, &gate, &base, &trade).is_ok());
    }

    #[test]
    fn the_rate_limit_counts_the_last_minute_per_symbol() {
        let gate = GateConfig {
            max_decisions_per_symbol_per_minute: 2,
            ..GateConfig::default()
        };
        let mut rates = RateBook::default();
        let check = |rates: &mut RateBook, symbol, now| {
            check_common(TradingState::Active, &gate, rates, symbol, now)
        };
        assert!(check(&mut rates, "A", 0.0).is_ok());
        rates.record("A", 0.0, 10);
        assert!(check(&mut rates, "A", 10.0).is_ok());
        rates.record("A", 10.0, 10);
        let (reason, _) = check(&mut rates, "A", 59.9).unwrap_err();
        assert_eq!(reason, RefusalReason::RateLimit);
        assert!(check(&mut rates, "B", 59.9).is_ok());
        // At 60 s the first decision has left the window.
        assert!(check(&mut rates, "A", 60.0).is_ok());
    }

    #[test]
    fn the_rate_book_keeps_at_most_max_symbols() {
        let mut rates = RateBook::default();
        for (i, s) in ["A", "B", "C", "D"].into_iter().enumerate() {
            rates.record(s, i as f64, 3);
        }
        assert_eq!(rates.len(), 3);
        assert!(!rates.recent.contains_key("A"));
        rates.sweep(1000.0);
        assert!(rates.is_empty());
    }
}
