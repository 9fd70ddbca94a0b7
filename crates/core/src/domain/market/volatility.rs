//! Volatility and market pressure of a price history.

use super::mean_std;

/// Volatility assumed when a symbol has no usable price history.
pub const DEFAULT_VOLATILITY: f64 = 0.02;
/// Look-back, in prices, of the market-pressure measure.
const PRESSURE_LOOKBACK: usize = 5;
/// Gain applied to the relative price change before the `tanh` squashing.
const PRESSURE_GAIN: f64 = 20.0;

/// Simple returns `p[i] / p[i-1] - 1` of a price series.
pub fn simple_returns(prices: &[f64]) -> impl Iterator<Item = f64> + Clone + '_ {
    prices.windows(2).map(|w| w[1] / w[0] - 1.0)
}

/// Population standard deviation of simple returns; [`DEFAULT_VOLATILITY`] with fewer than two
/// prices.
pub fn volatility(prices: &[f64]) -> f64 {
    match mean_std(simple_returns(prices)) {
        Some((_, std)) if std.is_finite() => std,
        _ => DEFAULT_VOLATILITY,
    }
}

/// `tanh((p[-1] - p[-5]) / p[-5] × 20)`, in [-1, 1]; 0 with fewer than five prices.
pub fn market_pressure(prices: &[f64]) -> f64 {
    if prices.len() < PRESSURE_LOOKBACK {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volatility_is_population_std_of_simple_returns() {
        // returns: +10 %, -10 % → mean 0, population std 0.1
        let v = volatility(&[100.0, 110.0, 99.0]);
        assert!((v - 0.1).abs() < 1e-12, "{v}");
        assert_eq!(volatility(&[100.0, 101.0]), 0.0);
    }

    #[test]
    fn volatility_defaults_without_returns() {
        assert_eq!(volatility(&[]), DEFAULT_VOLATILITY);
        assert_eq!(volatility(&[100.0]), DEFAULT_VOLATILITY);
    }

    #[test]
    fn pressure_needs_five_prices_and_uses_the_fifth_from_last() {
        assert_eq!(market_pressure(&[1.0, 2.0, 3.0, 4.0]), 0.0);
        let p = market_pressure(&[50.0, 100.0, 0.5, 0.5, 0.5, 101.0]);
        assert!((p - (0.01f64 * 20.0).tanh()).abs() < 1e-12, "{p}");
        let down = market_pressure(&[100.0, 1.0, 1.0, 1.0, 50.0]);
        assert!((down - (-10.0f64).tanh()).abs() < 1e-12);
        assert!(down >= -1.0);
    }
}
