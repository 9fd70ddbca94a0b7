//! The reward engine: what a closed position is worth to each agent.
//!
//! Meta-strategy: `pnl_pct − 0.5·drawdown + 0.2·sharpe + 0.15·regime_alignment`.
//! Position sizing: `pnl_pct − 0.4·risk_penalty + 0.1·volatility_adjustment`.
//! `pnl_pct` and drawdown are in percent, as the trading stack sends them. Every weight is a
//! setting; the defaults are the seed's.

use serde::{Deserialize, Serialize};

use super::market::{mean_std, Regime};

/// Daily risk-free return subtracted in the Sharpe signal (2 % a year over 252 trading days).
pub const RISK_FREE_PER_TRADE: f64 = 0.02 / 252.0;
/// Fewest P&L values from which a Sharpe signal is computed.
const MIN_VALUES_FOR_SHARPE: usize = 3;
/// Standard deviation below which the Sharpe signal is taken as 0.
const MIN_SHARPE_STD: f64 = 1e-6;
/// Leverage above which the risk penalty grows.
const FREE_LEVERAGE: f64 = 5.0;
/// Penalty per unit of leverage above [`FREE_LEVERAGE`].
const LEVERAGE_PENALTY: f64 = 0.3;
/// Exposure above which the risk penalty grows.
const FREE_EXPOSURE: f64 = 0.5;
/// Penalty per unit of exposure above [`FREE_EXPOSURE`].
const EXPOSURE_PENALTY: f64 = 2.0;
/// Largest risk penalty.
const MAX_RISK_PENALTY: f64 = 5.0;
/// Volatility band in which sizing is rewarded.
const CALM_VOLATILITY: (f64, f64) = (0.01, 0.03);

/// Weights of the two reward formulas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardWeights {
    /// Weight of the drawdown penalty in the meta reward.
    pub drawdown_penalty: f64,
    /// Weight of the Sharpe signal in the meta reward.
    pub sharpe_weight: f64,
    /// Weight of regime alignment in the meta reward.
    pub regime_weight: f64,
    /// Weight of the risk penalty in the sizing reward.
    pub risk_penalty_weight: f64,
    /// Weight of the volatility adjustment in the sizing reward.
    pub volatility_weight: f64,
}

impl Default for RewardWeights {
    fn default() -> Self {
        Self {
            drawdown_penalty: 0.5,
            sharpe_weight: 0.2,
            regime_weight: 0.15,
            risk_penalty_weight: 0.4,
            volatility_weight: 0.1,
        }
    }
}

/// `tanh((mean − rf) / std)` of the P&L window (population std); 0 with fewer than three values,
/// a std below 1e-6, or values so large that the statistic overflows.
pub fn sharpe_signal(pnl_pcts: impl Iterator<Item = f64> + Clone) -> f64 {
    if pnl_pcts.clone().count() < MIN_VALUES_FOR_SHARPE {
        return 0.0;
    }
    match mean_std(pnl_pcts) {
        Some((mean, std)) if std >= MIN_SHARPE_STD => {
            let sharpe = ((mean - RISK_FREE_PER_TRADE) / std).tanh();
            if sharpe.is_finite() {
                sharpe
            } else {
                0.0
            }
        }
        _ => 0.0,
    }
}

/// `(1.0 if the regimes match else −0.5) × confidence`; 0 when either regime is UNKNOWN.
pub fn regime_alignment(at_decision: Regime, at_close: Regime, confidence: f64) -> f64 {
    if at_decision == Regime::Unknown || at_close == Regime::Unknown {
        0.0
    } else if at_decision == at_close {
        confidence
    } else {
        -0.5 * confidence
    }
}

/// `min(5, 0.3·(leverage − 5 if > 5) + 2·(exposure − 0.5 if > 0.5))`.
pub fn risk_penalty(leverage: f64, exposure: f64) -> f64 {
    let lev = LEVERAGE_PENALTY * (leverage - FREE_LEVERAGE).max(0.0);
    let exp = EXPOSURE_PENALTY * (exposure - FREE_EXPOSURE).max(0.0);
    (lev + exp).min(MAX_RISK_PENALTY)
}

/// 0.5 inside [0.01, 0.03], −0.2 below, `−0.5·min((vol − 0.03)/0.03, 2)` above.
pub fn volatility_adjustment(vol: f64) -> f64 {
    let (low, high) = CALM_VOLATILITY;
    if vol < low {
        -0.2
    } else if vol <= high {
        0.5
    } else {
        -0.5 * ((vol - high) / high).min(2.0)
    }
}

/// What a close tells the meta-strategy agent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetaOutcome {
    /// Realised P&L in percent.
    pub pnl_pct: f64,
    /// Largest drawdown during the trade, in percent.
    pub max_drawdown_pct: f64,
    /// Sharpe signal of the P&L window, from [`sharpe_signal`].
    pub sharpe: f64,
    /// Regime when the decision was made.
    pub regime_at_decision: Regime,
    /// Regime when the position closed.
    pub regime_at_close: Regime,
    /// Confidence of the signal the decision was made on.
    pub confidence: f64,
}

/// What a close tells the position-sizing agent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizingOutcome {
    /// Realised P&L in percent.
    pub pnl_pct: f64,
    /// Leverage the sizing decision chose.
    pub leverage: f64,
    /// Exposure of the trade.
    pub exposure: f64,
    /// Volatility at close.
    pub volatility: f64,
}

impl RewardWeights {
    /// The meta-strategy reward of an outcome.
    pub fn meta_reward(&self, o: &MetaOutcome) -> f64 {
        o.pnl_pct - self.drawdown_penalty * o.max_drawdown_pct
            + self.sharpe_weight * o.sharpe
            + self.regime_weight
                * regime_alignment(o.regime_at_decision, o.regime_at_close, o.confidence)
    }

    /// The position-sizing reward of an outcome.
    pub fn sizing_reward(&self, o: &SizingOutcome) -> f64 {
        o.pnl_pct - self.risk_penalty_weight * risk_penalty(o.leverage, o.exposure)
            + self.volatility_weight * volatility_adjustment(o.volatility)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn sharpe_needs_three_values_and_spread() {
        assert_eq!(sharpe_signal([1.0, 2.0].into_iter()), 0.0);
        assert_eq!(sharpe_signal([1.0, 1.0, 1.0].into_iter()), 0.0);
        assert_eq!(sharpe_signal([1.0, 1.0 + 1e-7, 1.0].into_iter()), 0.0);
        // mean 2, population std sqrt(2/3)
        let s = sharpe_signal([1.0, 2.0, 3.0].into_iter());
        assert!(close(
            s,
            ((2.0 - RISK_FREE_PER_TRADE) / (2.0f64 / 3.0).sqrt()).tanh()
        ));
        assert!(sharpe_signal([-1.0, -2.0, -3.0].into_iter()) < -0.9);
    }

    #[test]
    fn regime_alignment_rewards_matches_and_ignores_unknown() {
        assert_eq!(regime_alignment(Regime::Trend, Regime::Trend, 0.8), 0.8);
        assert_eq!(regime_alignment(Regime::Trend, Regime::Range, 0.8), -0.4);
        assert_eq!(regime_alignment(Regime::Unknown, Regime::Unknown, 0.8), 0.0);
        assert_eq!(regime_alignment(Regime::Trend, Regime::Unknown, 0.8), 0.0);
        assert_eq!(regime_alignment(Regime::Unknown, Regime::Range, 0.8), 0.0);
    }

    #[test]
    fn risk_penalty_grows_past_five_and_half_and_caps_at_five() {
        assert_eq!(risk_penalty(5.0, 0.5), 0.0);
        assert_eq!(risk_penalty(3.0, 0.1), 0.0);
        assert!(close(risk_penalty(10.0, 0.5), 1.5));
        assert!(close(risk_penalty(5.0, 0.75), 0.5));
        assert!(close(risk_penalty(15.0, 1.0), 4.0));
        assert_eq!(risk_penalty(50.0, 0.0), 5.0);
    }

    #[test]
    fn volatility_adjustment_at_its_edges() {
        assert_eq!(volatility_adjustment(0.0099), -0.2);
        assert_eq!(volatility_adjustment(0.01), 0.5);
        assert_eq!(volatility_adjustment(0.03), 0.5);
        assert!(close(volatility_adjustment(0.045), -0.25));
        assert!(close(volatility_adjustment(0.09), -1.0));
        assert!(close(volatility_adjustment(0.5), -1.0));
    }

    #[test]
    fn formulas_combine_the_terms_with_the_seed_weights() {
        let w = RewardWeights::default();
        let meta = MetaOutcome {
            pnl_pct: 2.0,
            max_drawdown_pct: 1.0,
            sharpe: 0.5,
            regime_at_decision: Regime::Trend,
            regime_at_close: Regime::Trend,
            confidence: 0.8,
        };
        assert!(close(w.meta_reward(&meta), 2.0 - 0.5 + 0.1 + 0.12));
        let sizing = SizingOutcome {
            pnl_pct: 2.0,
            leverage: 10.0,
            exposure: 0.2,
            volatility: 0.02,
        };
        assert!(close(w.sizing_reward(&sizing), 2.0 - 0.6 + 0.05));
    }
}
