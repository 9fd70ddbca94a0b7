//! The Python version's feature and reward arithmetic, for the `python_compat` discretizer.
//!
//! A Q-table imported from the Python version is keyed by states its own code computed: every
//! value rounded to two decimals, so a feature that differs in the second decimal, or a regime
//! tested in another order, lands in another row. This module reproduces those computations
//! exactly, numpy's summation order included, so that the same prices, trackers and signal give
//! the same key byte for byte. It differs from the design's rules (used by the default `buckets`
//! discretizer) in:
//!
//! * regime: needs 10 prices and tests TREND (trend strength > 0.02 and volatility > 0.015),
//!   RANGE (volatility < 0.01), BREAKOUT (trend strength > 0.03), else MEAN_REVERSION, so it is
//!   never UNKNOWN with 10 prices or more;
//! * volatility: needs more than 3 prices (else 0.02); returns are `(p[i+1] − p[i]) / p[i]`;
//! * market pressure: needs more than 5 prices (else 0);
//! * equity-curve slope: `(nΣxy − ΣxΣy) / (nΣx² − (Σx)²) / max(mean equity, 1)`;
//! * rewards: regime alignment compares the two regimes as they are, UNKNOWN included (0 only
//!   when one is missing); the risk penalty's exposure is `position_size_usd ÷ max(balance, 1)`
//!   with 1000 and 10 000 for what the trade does not say.
//!
//! Inputs the Python version never fed (its signal handler nests the price history where its
//! state builder does not look; nothing records closes into its trackers) are fed here: see the
//! README's migration section.

use super::market::Regime;
use super::reward::{risk_penalty, volatility_adjustment, RewardWeights, RISK_FREE_PER_TRADE};

/// Fewest prices from which the Python version detects a regime.
pub const MIN_PRICES_FOR_REGIME: usize = 10;
/// The Python state builder computes volatility only from more than this many prices.
const MIN_PRICES_FOR_VOLATILITY: usize = 3;
/// The Python state builder computes market pressure only from more than this many prices.
const MIN_PRICES_FOR_PRESSURE: usize = 5;
/// Volatility the Python version assumes without enough prices.
pub const DEFAULT_VOLATILITY: f64 = 0.02;
/// Look-back, in prices, of market pressure.
const PRESSURE_LOOKBACK: usize = 5;
/// Gain applied to the relative price change before `tanh`.
const PRESSURE_GAIN: f64 = 20.0;
/// Fewest equity points from which the slope is computed.
const MIN_POINTS_FOR_SLOPE: usize = 5;
/// Fewest P&L values from which the Sharpe signal is computed.
const MIN_VALUES_FOR_SHARPE: usize = 3;
/// Standard deviation below which the Sharpe signal is 0.
const MIN_SHARPE_STD: f64 = 1e-6;
/// Position size the Python reward assumes when the trade does not say.
pub const DEFAULT_POSITION_SIZE_USD: f64 = 1000.0;
/// Account balance the Python reward assumes when the trade does not say.
pub const DEFAULT_ACCOUNT_BALANCE: f64 = 10_000.0;
/// Smallest balance the exposure ratio divides by.
const MIN_BALANCE: f64 = 1.0;
/// Leverage the Python reward assumes when none is known.
pub const DEFAULT_LEVERAGE: f64 = 20.0;

/// Block size below which numpy sums with eight interleaved accumulators.
const PAIRWISE_BLOCK: usize = 128;

/// numpy's pairwise summation (`np.sum` of a float64 array): eight interleaved partial sums
/// per block of up to 128 values, halves above that. The reduction starts from 0.
pub fn np_sum(values: &[f64]) -> f64 {
    0.0 + pairwise(values)
}

fn pairwise(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = -0.0;
        for x in a {
            res += x;
        }
        res
    } else if n <= PAIRWISE_BLOCK {
        let mut r = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]];
        let whole = n - n % 8;
        let mut i = 8;
        while i < whole {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for x in &a[whole..] {
            res += x;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        pairwise(&a[..half]) + pairwise(&a[half..])
    }
}

/// `np.mean`; `None` when empty.
fn np_mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| np_sum(values) / values.len() as f64)
}

/// `np.std` (population); `None` when empty.
fn np_std(values: &[f64]) -> Option<f64> {
    let mean = np_mean(values)?;
    let squares: Vec<f64> = values.iter().map(|v| (v - mean) * (v - mean)).collect();
    np_mean(&squares).map(f64::sqrt)
}

/// `np.diff(prices) / prices[:-1]`.
fn returns(prices: &[f64]) -> Vec<f64> {
    prices.windows(2).map(|w| (w[1] - w[0]) / w[0]).collect()
}

/// Trend strength (|mean return|) and volatility (population std of returns) as the Python
/// regime detector computes them; `None` with fewer than two prices.
pub fn trend_and_volatility(prices: &[f64]) -> Option<(f64, f64)> {
    let r = returns(prices);
    Some((np_mean(&r)?.abs(), np_std(&r)?))
}

/// The Python regime rules, in its order.
pub fn classify(trend_strength: f64, volatility: f64) -> Regime {
    if trend_strength > 0.02 && volatility > 0.015 {
        Regime::Trend
    } else if volatility < 0.01 {
        Regime::Range
    } else if trend_strength > 0.03 {
        Regime::Breakout
    } else {
        Regime::MeanReversion
    }
}

/// The regime of a price history; UNKNOWN with fewer than [`MIN_PRICES_FOR_REGIME`] prices or
/// when the statistics are not finite.
pub fn detect_regime(prices: &[f64]) -> Regime {
    if prices.len() < MIN_PRICES_FOR_REGIME {
        return Regime::Unknown;
    }
    match trend_and_volatility(prices) {
        Some((ts, vol)) if ts.is_finite() && vol.is_finite() => classify(ts, vol),
        _ => Regime::Unknown,
    }
}

/// Volatility of a price history; [`DEFAULT_VOLATILITY`] with 3 prices or fewer.
pub fn volatility(prices: &[f64]) -> f64 {
    if prices.len() <= MIN_PRICES_FOR_VOLATILITY {
        return DEFAULT_VOLATILITY;
    }
    match trend_and_volatility(prices) {
        Some((_, vol)) if vol.is_finite() => vol,
        _ => DEFAULT_VOLATILITY,
    }
}

/// `tanh((p[-1] − p[-5]) / p[-5] × 20)`; 0 with 5 prices or fewer.
pub fn market_pressure(prices: &[f64]) -> f64 {
    if prices.len() <= MIN_PRICES_FOR_PRESSURE {
        return 0.0;
    }
    let last = prices[prices.len() - 1];
    let base = prices[prices.len() - PRESSURE_LOOKBACK];
    let pressure = ((last - base) / base * PRESSURE_GAIN).tanh();
    if pressure.is_finite() {
        pressure
    } else {
        0.0
    }
}

/// The Python equity-curve slope of `points` (oldest first): the least-squares slope by its
/// closed form, over `max(mean equity, 1)`; 0 with fewer than five points.
pub fn equity_slope(points: &[f64]) -> f64 {
    let n = points.len();
    if n < MIN_POINTS_FOR_SLOPE {
        return 0.0;
    }
    let nf = n as f64;
    let xy: Vec<f64> = points
        .iter()
        .enumerate()
        .map(|(i, y)| i as f64 * y)
        .collect();
    // Σx and Σx² are integer sums in numpy: exact.
    let sum_x = (n * (n - 1) / 2) as f64;
    let sum_xx = ((n - 1) * n * (2 * n - 1) / 6) as f64;
    let sum_y = np_sum(points);
    let slope = (nf * np_sum(&xy) - sum_x * sum_y) / (nf * sum_xx - sum_x * sum_x);
    let normalized = slope / (sum_y / nf).max(1.0);
    if normalized.is_finite() {
        normalized
    } else {
        0.0
    }
}

/// `tanh((mean − 0.02/252) / std)` of the P&L window (numpy's mean and population std); 0 with
/// fewer than three values or a std below 1e-6.
pub fn sharpe_signal(pnl_pcts: &[f64]) -> f64 {
    if pnl_pcts.len() < MIN_VALUES_FOR_SHARPE {
        return 0.0;
    }
    match (np_mean(pnl_pcts), np_std(pnl_pcts)) {
        (Some(mean), Some(std)) if std >= MIN_SHARPE_STD => {
            let s = ((mean - RISK_FREE_PER_TRADE) / std).tanh();
            if s.is_finite() {
                s
            } else {
                0.0
            }
        }
        _ => 0.0,
    }
}

/// The Python regime alignment: `(1 if the regimes are equal else −0.5) × confidence`, UNKNOWN
/// equal to UNKNOWN; 0 when either regime is missing.
pub fn regime_alignment(
    at_close: Option<Regime>,
    at_decision: Option<Regime>,
    confidence: f64,
) -> f64 {
    match (at_close, at_decision) {
        (Some(a), Some(b)) if a == b => confidence,
        (Some(_), Some(_)) => -0.5 * confidence,
        _ => 0.0,
    }
}

/// The exposure of the Python risk penalty: `position_size_usd ÷ max(account_balance, 1)`, with
/// [`DEFAULT_POSITION_SIZE_USD`] and [`DEFAULT_ACCOUNT_BALANCE`] for what is not known.
pub fn risk_exposure(position_size_usd: Option<f64>, account_balance: Option<f64>) -> f64 {
    let size = position_size_usd.unwrap_or(DEFAULT_POSITION_SIZE_USD);
    let balance = account_balance.unwrap_or(DEFAULT_ACCOUNT_BALANCE);
    let exposure = size / balance.max(MIN_BALANCE);
    if exposure.is_finite() {
        exposure
    } else {
        0.0
    }
}

/// What a close tells the meta-strategy agent, as the Python reward reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetaOutcome<'a> {
    /// Realised P&L in percent.
    pub pnl_pct: f64,
    /// Largest drawdown during the trade, in percent.
    pub drawdown_pct: f64,
    /// The P&L window the Sharpe signal reads (the last 20 values, this close's included).
    pub pnl_window: &'a [f64],
    /// Regime at close; `None` when unknown to the caller.
    pub regime_at_close: Option<Regime>,
    /// Regime at decision; `None` when unknown to the caller.
    pub regime_at_decision: Option<Regime>,
    /// Confidence the alignment is weighted by.
    pub confidence: f64,
}

/// The Python meta-strategy reward:
/// `pnl − 0.5·drawdown + 0.2·sharpe + 0.15·alignment` with the configured weights.
pub fn meta_reward(w: &RewardWeights, o: &MetaOutcome<'_>) -> f64 {
    o.pnl_pct - w.drawdown_penalty * o.drawdown_pct
        + w.sharpe_weight * sharpe_signal(o.pnl_window)
        + w.regime_weight * regime_alignment(o.regime_at_close, o.regime_at_decision, o.confidence)
}

/// The Python position-sizing reward: `pnl − 0.4·risk_penalty + 0.1·volatility_adjustment`
/// with the configured weights; `exposure` from [`risk_exposure`].
pub fn sizing_reward(
    w: &RewardWeights,
    pnl_pct: f64,
    leverage: f64,
    exposure: f64,
    volatility: f64,
) -> f64 {
    pnl_pct - w.risk_penalty_weight * risk_penalty(leverage, exposure)
        + w.volatility_weight * volatility_adjustment(volatility)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_sum_uses_eight_accumulators() {
        let v: Vec<f64> = (0..11).map(|i| 0.1 * i as f64).collect();
        let expected =
            ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])) + v[8] + v[9] + v[10];
        assert_eq!(np_sum(&v), expected);
        assert_eq!(np_sum(&[]), 0.0);
        assert_eq!(np_sum(&[1.0, 2.0]), 3.0);
    }

    #[test]
    fn regime_order_is_trend_range_breakout_else_mean_reversion() {
        assert_eq!(classify(0.04, 0.04), Regime::Trend);
        assert_eq!(classify(0.035, 0.005), Regime::Range);
        assert_eq!(classify(0.034, 0.011), Regime::Breakout);
        assert_eq!(classify(0.025, 0.0125), Regime::MeanReversion);
        assert_eq!(classify(0.0, 0.09), Regime::MeanReversion);
        let steady: Vec<f64> = (0..12).map(|i| 100.0 * 1.035f64.powi(i)).collect();
        assert_eq!(detect_regime(&steady), Regime::Range);
        assert_eq!(detect_regime(&steady[..9]), Regime::Unknown);
    }

    #[test]
    fn volatility_and_pressure_need_more_prices_than_the_design() {
        assert_eq!(volatility(&[100.0, 101.0, 103.0]), DEFAULT_VOLATILITY);
        assert!(volatility(&[100.0, 101.0, 103.0, 102.0]) < 0.013);
        assert_eq!(market_pressure(&[100.0, 100.5, 101.0, 101.6, 102.0]), 0.0);
        assert!(market_pressure(&[100.0, 100.5, 101.0, 101.6, 102.0, 102.4]) > 0.36);
    }

    #[test]
    fn alignment_counts_unknown_as_a_regime() {
        assert_eq!(
            regime_alignment(Some(Regime::Unknown), Some(Regime::Unknown), 0.5),
            0.5
        );
        assert_eq!(
            regime_alignment(Some(Regime::Range), Some(Regime::Trend), 0.9),
            -0.45
        );
        assert_eq!(regime_alignment(None, Some(Regime::Trend), 0.9), 0.0);
    }

    #[test]
    fn exposure_defaults_and_floors_the_balance() {
        assert_eq!(risk_exposure(None, None), 0.1);
        assert_eq!(risk_exposure(Some(0.4), Some(0.0)), 0.4);
        assert_eq!(risk_exposure(None, Some(0.0)), 1000.0);
    }
}
