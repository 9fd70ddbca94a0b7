//! What one message did to the engine: the record that the service, `replay`, `simulate` and
//! the tests read, instead of diffing counters or recomputing rewards.

use serde::{Deserialize, Serialize};

use crate::control::{Refusal, TradingStateChange};
use crate::decision::Decision;
use crate::domain::agent::AgentKind;
use crate::domain::reward::{
    regime_alignment, risk_penalty, volatility_adjustment, MetaOutcome, SizingOutcome,
};
use crate::engine::Counters;
use crate::event::DecodeError;

/// What one raw message did to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The event was applied.
    Applied {
        /// Upper-cased symbol of the event.
        symbol: String,
        /// Decisions it made.
        decisions: Vec<Decision>,
        /// Q-updates it caused (a close: one per rewarded decision), applied or refused.
        updates: Vec<Update>,
        /// What else it did to the engine's books.
        tally: Tally,
        /// Decisions the risk gate refused (published instead of them, never rewarded).
        refusals: Vec<Refusal>,
        /// Changes of the trading state it caused (a command, a breaker, a cooldown).
        state_changes: Vec<TradingStateChange>,
    },
    /// The payload did not decode, or claimed implausible values; the reject is counted under
    /// its reason code.
    Rejected(DecodeError),
    /// The sequence number was applied already; nothing changed.
    AlreadyApplied,
}

impl Outcome {
    /// Q-updates applied (refused ones not counted).
    pub fn updates_applied(&self) -> u64 {
        match self {
            Outcome::Applied { updates, .. } => updates.iter().filter(|u| u.applied).count() as u64,
            _ => 0,
        }
    }
}

/// How a decision was drawn: what an off-policy evaluation needs to reweight it. Kept with the
/// pending decision until its reward arrives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Logged {
    /// Probability that the policy picked the chosen action in that state.
    pub propensity: f64,
    /// ε at the time of the choice.
    pub epsilon: f64,
    /// Size of the action set it was chosen from.
    pub allowed_actions: usize,
}

impl Logged {
    /// The record of an ε-greedy selection.
    pub fn of(s: &crate::domain::qlearning::Selection) -> Self {
        Self {
            propensity: s.propensity,
            epsilon: s.epsilon,
            allowed_actions: s.allowed,
        }
    }
}

/// One Q-update, as the close that caused it computed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Update {
    /// The agent updated.
    pub agent: AgentKind,
    /// The decision rewarded.
    pub decision_id: String,
    /// Symbol of the position closed.
    pub symbol: String,
    /// The state the decision was made in.
    pub state_key: String,
    /// The action it took.
    pub action: usize,
    /// How the action was drawn; `None` for a decision pending in a checkpoint written before
    /// propensities were kept.
    pub logged: Option<Logged>,
    /// The reward the formula gave.
    pub raw_reward: f64,
    /// The reward that reached the update (bounded by `plausibility.max_abs_reward`).
    pub reward: f64,
    /// What the reward weighed.
    pub parts: RewardParts,
    /// The state built at close, bootstrapped from; `None` when the close ended the episode.
    pub next_state_key: Option<String>,
    /// The state built at close, whether or not it was bootstrapped from.
    pub state_at_close: String,
    /// False when the update was refused (a non-finite value): the table is unchanged.
    pub applied: bool,
    /// Sequence number of the close.
    pub seq: u64,
    /// The close's time (its own timestamp within the allowed skew), epoch seconds.
    pub time: f64,
}

/// The terms of a reward, each before its weight; the ones an agent's formula does not use are
/// `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardParts {
    /// Realised P&L in percent.
    pub pnl_pct: f64,
    /// Largest drawdown during the trade, in percent (meta).
    pub max_drawdown_pct: Option<f64>,
    /// Sharpe signal of the account's P&L window (meta).
    pub sharpe: Option<f64>,
    /// Regime alignment × confidence (meta).
    pub regime_alignment: Option<f64>,
    /// Risk penalty of leverage and exposure (sizing).
    pub risk_penalty: Option<f64>,
    /// Volatility adjustment (sizing).
    pub volatility_adjustment: Option<f64>,
}

impl RewardParts {
    /// The terms of a meta-strategy reward.
    pub fn meta(o: &MetaOutcome) -> Self {
        Self {
            pnl_pct: o.pnl_pct,
            max_drawdown_pct: Some(o.max_drawdown_pct),
            sharpe: Some(o.sharpe),
            regime_alignment: Some(regime_alignment(
                o.regime_at_decision,
                o.regime_at_close,
                o.confidence,
            )),
            ..Self::default()
        }
    }

    /// The terms of a position-sizing reward.
    pub fn sizing(o: &SizingOutcome) -> Self {
        Self {
            pnl_pct: o.pnl_pct,
            risk_penalty: Some(risk_penalty(o.leverage, o.exposure)),
            volatility_adjustment: Some(volatility_adjustment(o.volatility)),
            ..Self::default()
        }
    }
}

/// What an event did to the engine's books besides decisions and updates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Pending meta decisions replaced by this signal.
    pub superseded_pending: u64,
    /// Sizing decisions replaced by this trade on an open position.
    pub replaced_sizing: u64,
    /// Pending meta decisions that expired unrewarded.
    pub expired_pending: u64,
    /// Open positions that expired unrewarded.
    pub expired_positions: u64,
    /// A close that found no decision to reward.
    pub closes_without_decision: u64,
    /// Timestamps clamped into the allowed skew.
    pub timestamps_clamped: u64,
    /// Rewards clamped to the plausible range.
    pub rewards_clamped: u64,
    /// Symbols, pending decisions and positions evicted to stay within capacity.
    pub evicted: u64,
}

impl Tally {
    /// The running totals in the engine's counters, as a tally (cheap to copy).
    pub(crate) fn reading(c: &Counters) -> Self {
        Self {
            superseded_pending: c.superseded_pending,
            replaced_sizing: c.replaced_sizing,
            expired_pending: c.expired_pending,
            expired_positions: c.expired_positions,
            closes_without_decision: c.closes_without_decision,
            timestamps_clamped: c.timestamps_clamped,
            rewards_clamped: c.rewards_clamped,
            evicted: c.evicted_symbols + c.evicted_pending + c.evicted_positions,
        }
    }

    /// What happened between an earlier reading and this one.
    pub(crate) fn since(self, before: Self) -> Self {
        Self {
            superseded_pending: self.superseded_pending - before.superseded_pending,
            replaced_sizing: self.replaced_sizing - before.replaced_sizing,
            expired_pending: self.expired_pending - before.expired_pending,
            expired_positions: self.expired_positions - before.expired_positions,
            closes_without_decision: self.closes_without_decision - before.closes_without_decision,
            timestamps_clamped: self.timestamps_clamped - before.timestamps_clamped,
            rewards_clamped: self.rewards_clamped - before.rewards_clamped,
            evicted: self.evicted - before.evicted,
        }
    }
}
