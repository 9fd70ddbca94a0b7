//! What each agent sees: the continuous state features and the discretizers that turn them into
//! Q-table keys.
//!
//! Two discretizers exist. [`Discretizer::Buckets`] maps each continuous feature to a bucket
//! index with configurable edges and writes a short readable key such as
//! `TREND|vol=2|press=3|conf=4|wr=2|health=4`. [`Discretizer::PythonCompat`] writes the key the
//! Python version wrote (every value rounded to two decimals, JSON with sorted keys), so Q-tables
//! imported from it keep matching states.

use serde::{Deserialize, Serialize};

use super::market::Regime;
use crate::invalid::Invalid;

/// Features of the meta-strategy agent's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetaState {
    /// Regime of the symbol's latest price history.
    pub regime: Regime,
    /// Volatility of the symbol's latest price history.
    pub volatility: f64,
    /// Market pressure in [-1, 1].
    pub market_pressure: f64,
    /// The signal's confidence in [0, 1].
    pub confidence: f64,
    /// Trailing win rate of the account.
    pub previous_winrate: f64,
    /// Account health in [0, 1].
    pub account_health: f64,
}

/// Features of the position-sizing agent's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizingState {
    /// The trade's signal confidence in [0, 1].
    pub signal_confidence: f64,
    /// Share of the account the trade puts at risk.
    pub portfolio_exposure: f64,
    /// Trailing win rate of the account.
    pub recent_winrate: f64,
    /// Volatility of the symbol's latest price history.
    pub volatility: f64,
    /// Slope of the account's equity curve, relative to mean equity.
    pub equity_curve_slope: f64,
}

/// Bucket edges per continuous feature. A value falls in bucket `i` when exactly `i` edges are
/// less than or equal to it, so `n` edges make `n + 1` buckets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BucketEdges {
    /// Edges for volatility.
    pub volatility: Vec<f64>,
    /// Edges for market pressure.
    pub market_pressure: Vec<f64>,
    /// Edges for confidence (both agents).
    pub confidence: Vec<f64>,
    /// Edges for win rate (both agents).
    pub winrate: Vec<f64>,
    /// Edges for account health.
    pub account_health: Vec<f64>,
    /// Edges for portfolio exposure.
    pub exposure: Vec<f64>,
    /// Edges for equity-curve slope.
    pub equity_slope: Vec<f64>,
}

impl Default for BucketEdges {
    fn default() -> Self {
        Self {
            volatility: vec![0.01, 0.015, 0.02, 0.03, 0.05],
            market_pressure: vec![-0.6, -0.2, 0.2, 0.6],
            confidence: vec![0.2, 0.4, 0.6, 0.8],
            winrate: vec![0.3, 0.45, 0.55, 0.7],
            account_health: vec![0.5, 0.65, 0.75, 0.9],
            exposure: vec![0.1, 0.25, 0.5, 0.75],
            equity_slope: vec![-0.01, -0.001, 0.001, 0.01],
        }
    }
}

impl BucketEdges {
    /// Checks that every edge list is finite and strictly increasing; names the first bad list.
    pub fn validate(&self) -> Result<(), Invalid> {
        let lists = [
            ("volatility", &self.volatility),
            ("market_pressure", &self.market_pressure),
            ("confidence", &self.confidence),
            ("winrate", &self.winrate),
            ("account_health", &self.account_health),
            ("exposure", &self.exposure),
            ("equity_slope", &self.equity_slope),
        ];
        for (name, edges) in lists {
            if edges.iter().any(|e| !e.is_finite()) || edges.windows(2).any(|w| w[0] >= w[1]) {
                return Err(Invalid::new(
                    Some("discretizer"),
                    name,
                    format!("edges must be finite and strictly increasing, got {edges:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// The bucket of `value` among `edges`.
pub fn bucket(value: f64, edges: &[f64]) -> usize {
    edges.partition_point(|edge| *edge <= value)
}

/// How continuous features become a state key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Discretizer {
    /// Bucket indices with configurable edges: short keys, a small table.
    Buckets(BucketEdges),
    /// The Python version's keys: values rounded to 2 decimals, JSON with sorted keys.
    PythonCompat,
}

impl Default for Discretizer {
    fn default() -> Self {
        Self::Buckets(BucketEdges::default())
    }
}

impl Discretizer {
    /// The Q-table key of a meta-strategy state.
    pub fn meta_key(&self, s: &MetaState) -> String {
        match self {
            Self::Buckets(e) => format!(
                "{}|vol={}|press={}|conf={}|wr={}|health={}",
                s.regime,
                bucket(s.volatility, &e.volatility),
                bucket(s.market_pressure, &e.market_pressure),
                bucket(s.confidence, &e.confidence),
                bucket(s.previous_winrate, &e.winrate),
                bucket(s.account_health, &e.account_health),
            ),
            Self::PythonCompat => format!(
                "{{\"account_health\": {}, \"confidence\": {}, \"market_pressure\": {}, \
                 \"previous_winrate\": {}, \"regime\": \"{}\", \"volatility\": {}}}",
                py_round2(s.account_health),
                py_round2(s.confidence),
                py_round2(s.market_pressure),
                py_round2(s.previous_winrate),
                s.regime,
                py_round2(s.volatility),
            ),
        }
    }

    /// The Q-table key of a position-sizing state.
    pub fn sizing_key(&self, s: &SizingState) -> String {
        match self {
            Self::Buckets(e) => format!(
                "conf={}|exp={}|wr={}|vol={}|slope={}",
                bucket(s.signal_confidence, &e.confidence),
                bucket(s.portfolio_exposure, &e.exposure),
                bucket(s.recent_winrate, &e.winrate),
                bucket(s.volatility, &e.volatility),
                bucket(s.equity_curve_slope, &e.equity_slope),
            ),
            Self::PythonCompat => format!(
                "{{\"equity_curve_slope\": {}, \"portfolio_exposure\": {}, \
                 \"recent_winrate\": {}, \"signal_confidence\": {}, \"volatility\": {}}}",
                py_round2(s.equity_curve_slope),
                py_round2(s.portfolio_exposure),
                py_round2(s.recent_winrate),
                py_round2(s.signal_confidence),
                py_round2(s.volatility),
            ),
        }
    }
}

/// `repr(round(value, 2))` as Python writes it: round half to even on the exact binary value,
/// shortest round-trip digits, at least one decimal, `-0.0` kept.
fn py_round2(value: f64) -> String {
    // `{:.2}` rounds the exact binary value, as CPython's round() does.
    let rounded: f64 = format!("{value:.2}").parse().unwrap_or(0.0);
    py_float_repr(rounded)
}

/// Python's `repr(float)`: shortest round-trip digits, `.0` on integral values, and
/// scientific notation from 1e16 up.
pub fn py_float_repr(value: f64) -> String {
    if !value.is_finite() {
        return if value.is_nan() {
            "NaN".into()
        } else if value > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if value != 0.0 && value.abs() >= 1e16 {
        // Rust writes `1e16`, Python `1e+16`.
        let s = format!("{value:e}");
        return match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e:0>2}"),
            _ => s,
        };
    }
    format!("{value:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> MetaState {
        MetaState {
            regime: Regime::Trend,
            volatility: 0.018,
            market_pressure: 0.35,
            confidence: 0.82,
            previous_winrate: 0.5,
            account_health: 1.0,
        }
    }

    #[test]
    fn bucket_counts_edges_at_or_below_the_value() {
        let edges = [0.2, 0.4, 0.6];
        assert_eq!(bucket(0.0, &edges), 0);
        assert_eq!(bucket(0.2, &edges), 1);
        assert_eq!(bucket(0.39, &edges), 1);
        assert_eq!(bucket(0.6, &edges), 3);
        assert_eq!(bucket(9.0, &edges), 3);
        assert_eq!(bucket(1.0, &[]), 0);
    }

    #[test]
    fn bucket_keys_are_readable() {
        let d = Discretizer::default();
        assert_eq!(
            d.meta_key(&meta()),
            "TREND|vol=2|press=3|conf=4|wr=2|health=4"
        );
        let s = SizingState {
            signal_confidence: 0.5,
            portfolio_exposure: 0.3,
            recent_winrate: 0.6,
            volatility: 0.02,
            equity_curve_slope: -0.002,
        };
        assert_eq!(d.sizing_key(&s), "conf=2|exp=2|wr=3|vol=3|slope=1");
    }

    #[test]
    fn python_compat_reproduces_json_dumps_sort_keys() {
        let d = Discretizer::PythonCompat;
        assert_eq!(
            d.meta_key(&meta()),
            "{\"account_health\": 1.0, \"confidence\": 0.82, \"market_pressure\": 0.35, \
             \"previous_winrate\": 0.5, \"regime\": \"TREND\", \"volatility\": 0.02}"
        );
        let s = SizingState {
            signal_confidence: 0.666,
            portfolio_exposure: 0.0,
            recent_winrate: 0.125,
            volatility: 0.0149,
            equity_curve_slope: -0.0004,
        };
        assert_eq!(
            d.sizing_key(&s),
            "{\"equity_curve_slope\": -0.0, \"portfolio_exposure\": 0.0, \
             \"recent_winrate\": 0.12, \"signal_confidence\": 0.67, \"volatility\": 0.01}"
        );
    }

    #[test]
    fn python_float_repr_matches_cpython() {
        // Values checked against CPython 3.11: repr(round(x, 2)).
        assert_eq!(py_round2(2.675), "2.67");
        assert_eq!(py_round2(0.375), "0.38");
        assert_eq!(py_round2(1.005), "1.0");
        assert_eq!(py_round2(12.0), "12.0");
        assert_eq!(py_round2(1e17), "1e+17");
        assert_eq!(py_round2(-2.71428), "-2.71");
    }

    #[test]
    fn edges_must_increase() {
        assert!(BucketEdges::default().validate().is_ok());
        let bad = BucketEdges {
            winrate: vec![0.5, 0.5],
            ..BucketEdges::default()
        };
        assert!(bad.validate().unwrap_err().field == "discretizer.winrate");
    }
}
