//! Market regime detection from trend strength and volatility, with the seed's thresholds.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::volatility::{simple_returns, volatility};

/// Fewest prices from which a regime is computed; below it the regime is unknown.
pub const MIN_PRICES_FOR_REGIME: usize = 10;

/// The market regime a symbol is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Regime {
    /// Strong directional move with rising volatility.
    Breakout,
    /// Sustained directional move.
    Trend,
    /// Quiet, directionless market.
    Range,
    /// Directionless market with moderate volatility.
    MeanReversion,
    /// Not enough data, or no rule matched.
    Unknown,
}

impl Regime {
    /// The four regimes a close event may name, in their wire spelling.
    pub fn parse_known(name: &str) -> Option<Self> {
        match name.trim().to_ascii_uppercase().as_str() {
            "BREAKOUT" => Some(Self::Breakout),
            "TREND" => Some(Self::Trend),
            "RANGE" => Some(Self::Range),
            "MEAN_REVERSION" => Some(Self::MeanReversion),
            _ => None,
        }
    }

    /// The wire spelling, as used in state keys.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Breakout => "BREAKOUT",
            Self::Trend => "TREND",
            Self::Range => "RANGE",
            Self::MeanReversion => "MEAN_REVERSION",
            Self::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for Regime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies trend strength `ts` (|mean simple return|) and volatility `vol`. The rules are
/// tested in the seed's precedence: BREAKOUT, TREND, RANGE, MEAN_REVERSION, else UNKNOWN.
pub fn classify(ts: f64, vol: f64) -> Regime {
    if ts > 0.03 && vol > 0.02 {
        Regime::Breakout
    } else if ts > 0.02 && vol > 0.015 {
        Regime::Trend
    } else if ts < 0.01 && vol < 0.01 {
        Regime::Range
    } else if ts < 0.015 && (0.01..=0.015).contains(&vol) {
        Regime::MeanReversion
    } else {
        Regime::Unknown
    }
}

/// The regime of a price history; UNKNOWN with fewer than [`MIN_PRICES_FOR_REGIME`] prices.
pub fn detect_regime(prices: &[f64]) -> Regime {
    if prices.len() < MIN_PRICES_FOR_REGIME {
        return Regime::Unknown;
    }
    let returns = simple_returns(prices);
    let n = returns.clone().count() as f64;
    let trend_strength = (returns.sum::<f64>() / n).abs();
    classify(trend_strength, volatility(prices))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_puts_breakout_before_trend() {
        // Both BREAKOUT and TREND hold: BREAKOUT wins.
        assert_eq!(classify(0.031, 0.021), Regime::Breakout);
        assert_eq!(classify(0.031, 0.02), Regime::Trend);
        assert_eq!(classify(0.03, 0.021), Regime::Trend);
    }

    #[test]
    fn boundaries_are_strict_where_the_seed_is_strict() {
        assert_eq!(classify(0.02, 0.016), Regime::Unknown);
        assert_eq!(classify(0.021, 0.015), Regime::Unknown);
        assert_eq!(classify(0.021, 0.0151), Regime::Trend);
        assert_eq!(classify(0.0099, 0.0099), Regime::Range);
        assert_eq!(classify(0.01, 0.005), Regime::Unknown);
        // RANGE is tested before MEAN_REVERSION; vol 0.01 is not < 0.01, so MEAN_REVERSION.
        assert_eq!(classify(0.005, 0.01), Regime::MeanReversion);
        assert_eq!(classify(0.0149, 0.015), Regime::MeanReversion);
        assert_eq!(classify(0.015, 0.012), Regime::Unknown);
        assert_eq!(classify(0.005, 0.0151), Regime::Unknown);
    }

    #[test]
    fn short_histories_are_unknown() {
        let prices: Vec<f64> = (0..9).map(|i| 100.0 * 1.05f64.powi(i)).collect();
        assert_eq!(detect_regime(&prices), Regime::Unknown);
    }

    #[test]
    fn detects_each_regime_from_prices() {
        let flat: Vec<f64> = (0..12).map(|i| 100.0 + (i % 2) as f64 * 0.1).collect();
        assert_eq!(detect_regime(&flat), Regime::Range);
        // alternating +4.5 % / +0.5 %: trend strength 2.5 %, volatility 2 %.
        let mut p = vec![100.0];
        for i in 0..12 {
            let r = if i % 2 == 0 { 1.045 } else { 1.005 };
            p.push(p[p.len() - 1] * r);
        }
        assert_eq!(detect_regime(&p), Regime::Trend);
        let mut b = vec![100.0];
        for i in 0..12 {
            let r = if i % 2 == 0 { 1.08 } else { 1.0 };
            b.push(b[b.len() - 1] * r);
        }
        assert_eq!(detect_regime(&b), Regime::Breakout);
        let mut m = vec![100.0];
        for i in 0..12 {
            let r = if i % 2 == 0 { 1.012 } else { 0.988 };
            m.push(m[m.len() - 1] * r);
        }
        assert_eq!(detect_regime(&m), Regime::MeanReversion);
    }

    #[test]
    fn parses_the_four_named_regimes_only() {
        assert_eq!(Regime::parse_known("trend"), Some(Regime::Trend));
        assert_eq!(
            Regime::parse_known("MEAN_REVERSION"),
            Some(Regime::MeanReversion)
        );
        assert_eq!(Regime::parse_known("UNKNOWN"), None);
        assert_eq!(Regime::parse_known("sideways"), None);
    }
}
