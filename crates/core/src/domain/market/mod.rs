//! Market tools: the numbers the state builders and the reward engine read off prices and
//! closed trades. All of them are pure functions or small bounded trackers.

pub mod equity;
pub mod regime;
pub mod volatility;
pub mod winrate;

pub use equity::EquityCurve;
pub use regime::{detect_regime, Regime};
pub use volatility::{market_pressure, simple_returns, volatility, DEFAULT_VOLATILITY};
pub use winrate::{PnlWindow, WinRateTracker};

/// Population mean and standard deviation of `values`; `None` when empty.
pub(crate) fn mean_std(values: impl Iterator<Item = f64> + Clone) -> Option<(f64, f64)> {
    let n = values.clone().count();
    if n == 0 {
        return None;
    }
    let mean = values.clone().sum::<f64>() / n as f64;
    let var = values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
    Some((mean, var.sqrt()))
}
