//! The oracle: the best policy the simulated market allows, as a reference for what learning
//! could reach.
//!
//! It sees what the engine sees when it decides — the regime and the volatility of the signal's
//! price window — but not the shocks of the price path that follow, and takes the action with
//! the highest *expected* P&L under the market's own model ([`Scenario::outcome`](super::market::Scenario::outcome)). No policy
//! that sees only that can do better on average, so the learned policy's mean P&L as a share of
//! the oracle's says how much of what is there to learn was learned.
//!
//! The expectation is a Monte Carlo mean over [`ORACLE_PATHS`] shock paths drawn once from a
//! seeded stream of their own (the same paths for every action, so the comparison between
//! actions is not blurred by sampling noise). A trade's P&L is `m·g − overhead`, where `m` is the
//! size multiplier and `g` the P&L per unit of margin, which depends on the strategy's edge, the
//! leverage and the volatility; so the oracle tabulates `g` per regime, strategy and leverage on
//! a grid of volatilities across the regime's range ([`VOLATILITY_GRID_POINTS`]) and
//! interpolates between grid points. Building the tables takes a few tens of milliseconds; a
//! choice is then a lookup.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[cfg(test)]
use super::market::Scenario;
use rl_v2_core::domain::actions::{MetaAction, SizingAction, LEVERAGES, STRATEGIES};
use rl_v2_core::domain::market::Regime;

use super::market::{
    shape, standard_normal, trade_sharpe, FEE_RATE, HOLD_STEPS, LIQUIDATION_FEE, LIQUIDATION_MOVE,
    TAKE_PROFIT_ROE, TRADE_OVERHEAD_PCT,
};

/// Shock paths the expectations average over.
pub const ORACLE_PATHS: usize = 4_000;
/// Volatilities per regime at which the expectations are tabulated.
pub const VOLATILITY_GRID_POINTS: usize = 17;
/// Seed of the oracle's own shock paths (independent of the market's).
const ORACLE_SEED: u64 = 0x0_7ac1e;
/// Every regime, so a scenario of any regime has a table.
const ALL_REGIMES: [Regime; 5] = [
    Regime::Trend,
    Regime::Breakout,
    Regime::Range,
    Regime::MeanReversion,
    Regime::Unknown,
];

/// Expected P&L per unit of margin, per strategy and leverage, at one volatility.
type UnitTable = [[f64; LEVERAGES.len()]; STRATEGIES.len()];

/// One regime's tables across its volatility range.
#[derive(Debug, Clone)]
struct RegimeTables {
    low: f64,
    high: f64,
    points: Vec<UnitTable>,
}

/// The oracle's expected-P&L tables; [`Oracle::choose`] picks the best allowed actions.
#[derive(Debug, Clone)]
pub struct Oracle {
    tables: Vec<(Regime, RegimeTables)>,
}

impl Default for Oracle {
    fn default() -> Self {
        Self::new()
    }
}

impl Oracle {
    /// Tabulates the expectations (deterministic: the paths come from a fixed seed).
    pub fn new() -> Self {
        let paths = shock_paths();
        let tables = ALL_REGIMES
            .iter()
            .map(|&regime| {
                let (low, high) = shape(regime).volatility;
                let points = (0..VOLATILITY_GRID_POINTS)
                    .map(|i| {
                        let t = i as f64 / (VOLATILITY_GRID_POINTS - 1) as f64;
                        unit_table(regime, low + t * (high - low), &paths)
                    })
                    .collect();
                (regime, RegimeTables { low, high, points })
            })
            .collect();
        Self { tables }
    }

    /// Expected P&L per unit of margin of `strategy` (index into [`STRATEGIES`]) at `leverage`
    /// (index into [`LEVERAGES`]), in `regime` at `volatility` (clamped to the regime's range).
    fn unit(&self, regime: Regime, volatility: f64, strategy: usize, leverage: usize) -> f64 {
        let Some((_, t)) = self.tables.iter().find(|(r, _)| *r == regime) else {
            return 0.0;
        };
        let last = t.points.len() - 1;
        let span = (t.high - t.low).max(f64::MIN_POSITIVE);
        let x = ((volatility - t.low) / span).clamp(0.0, 1.0) * last as f64;
        let i = (x.floor() as usize).min(last.saturating_sub(1));
        let frac = x - i as f64;
        let (a, b) = (
            t.points[i][strategy][leverage],
            t.points[(i + 1).min(last)][strategy][leverage],
        );
        a + frac * (b - a)
    }

    /// Expected P&L (percent of the base margin) of trading in `regime` at `volatility` with
    /// the meta action `meta` and the sizing action `sizing`.
    pub fn expected_pnl(&self, regime: Regime, volatility: f64, meta: usize, sizing: usize) -> f64 {
        let strategy = MetaAction::from_index(meta)
            .and_then(|a| STRATEGIES.iter().position(|s| *s == a.strategy))
            .unwrap_or(0);
        let action = SizingAction::from_index(sizing).unwrap_or(SizingAction {
            size_multiplier: 1.0,
            leverage: LEVERAGES[0],
        });
        let leverage = LEVERAGES
            .iter()
            .position(|l| *l == action.leverage)
            .unwrap_or(0);
        action.size_multiplier * self.unit(regime, volatility, strategy, leverage)
            - TRADE_OVERHEAD_PCT
    }

    /// The allowed (meta, sizing) pair with the highest expected P&L for a trade in `regime` at
    /// `volatility`; ties go to the lowest indices. Both lists must be non-empty.
    pub fn choose(
        &self,
        regime: Regime,
        volatility: f64,
        meta_allowed: &[usize],
        sizing_allowed: &[usize],
    ) -> (usize, usize) {
        let mut best = (
            meta_allowed.first().copied().unwrap_or(0),
            sizing_allowed.first().copied().unwrap_or(0),
        );
        let mut best_value = f64::NEG_INFINITY;
        // Only the strategy of a meta action changes a trade: judge one action per strategy.
        let mut judged = [false; STRATEGIES.len()];
        for &meta in meta_allowed {
            let Some(strategy) = MetaAction::from_index(meta)
                .and_then(|a| STRATEGIES.iter().position(|s| *s == a.strategy))
            else {
                continue;
            };
            if std::mem::replace(&mut judged[strategy], true) {
                continue;
            }
            for &sizing in sizing_allowed {
                let value = self.expected_pnl(regime, volatility, meta, sizing);
                if value > best_value {
                    best_value = value;
                    best = (meta, sizing);
                }
            }
        }
        best
    }
}

/// The oracle's shock paths, as cumulative sums of standard-normal shocks.
fn shock_paths() -> Vec<[f64; HOLD_STEPS]> {
    let mut rng = ChaCha8Rng::seed_from_u64(ORACLE_SEED);
    (0..ORACLE_PATHS)
        .map(|_| {
            let mut shocks = [0.0; HOLD_STEPS];
            for z in &mut shocks {
                *z = standard_normal(&mut rng);
            }
            shocks
        })
        .collect()
}

/// Expected P&L per unit of margin for every strategy and leverage in `regime` at `volatility`:
/// the same path rules as [`Scenario::outcome`](super::market::Scenario::outcome) (liquidation, take-profit, fees), averaged over
/// `paths`, without the fixed overhead.
fn unit_table(regime: Regime, volatility: f64, paths: &[[f64; HOLD_STEPS]]) -> UnitTable {
    let steps = HOLD_STEPS as f64;
    let mut table = [[0.0; LEVERAGES.len()]; STRATEGIES.len()];
    for (s, strategy) in STRATEGIES.iter().enumerate() {
        let drift = trade_sharpe(strategy, regime) * volatility / steps.sqrt();
        for (l, &leverage) in LEVERAGES.iter().enumerate() {
            let leverage = f64::from(leverage);
            let liquidation = LIQUIDATION_MOVE / leverage;
            let take_profit = TAKE_PROFIT_ROE / leverage;
            let mut sum = 0.0;
            for shocks in paths {
                let mut position_return = 0.0;
                let mut worst = 0.0_f64;
                let mut liquidated = false;
                for z in shocks {
                    position_return += drift + volatility * z;
                    worst = worst.min(position_return);
                    if -worst >= liquidation {
                        liquidated = true;
                        break;
                    }
                    if position_return >= take_profit {
                        position_return = take_profit;
                        break;
                    }
                }
                sum += if liquidated {
                    -100.0 * (1.0 + leverage * LIQUIDATION_FEE)
                } else {
                    100.0 * leverage * (position_return - FEE_RATE)
                };
            }
            table[s][l] = sum / paths.len() as f64;
        }
    }
    table
}

/// The mean P&L of `scenario`'s regime and volatility traded with `meta` and `sizing` over the
/// oracle's paths, computed with [`Scenario::outcome`](super::market::Scenario::outcome) itself (for tests).
#[cfg(test)]
fn mean_outcome(scenario: &Scenario, meta: usize, sizing: usize) -> f64 {
    let paths = shock_paths();
    let total: f64 = paths
        .iter()
        .map(|shocks| {
            let s = Scenario {
                shocks: *shocks,
                ..scenario.clone()
            };
            s.outcome(meta, sizing).pnl_pct
        })
        .sum();
    total / paths.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::market::{best_strategy, Market};
    use rl_v2_core::domain::actions::{META_ACTIONS, SIZING_ACTIONS};

    fn scenarios() -> Vec<Scenario> {
        let market = Market::new(3, &["BTCUSDT".to_string(), "ETHUSDT".to_string()]);
        let mut stream = market.stream(5);
        let mut out = Vec::new();
        for _ in 0..300 {
            out.extend(stream.next_round().scenarios);
        }
        out
    }

    #[test]
    fn expectations_match_the_outcome_model_at_grid_points() {
        let oracle = Oracle::new();
        let mut scenario = scenarios().remove(0);
        let (low, high) = shape(scenario.regime).volatility;
        for volatility in [low, high, low + (high - low) / 16.0] {
            scenario.volatility = volatility;
            for (meta, sizing) in [(0, 0), (20, 39), (45, 17), (5, 12)] {
                let direct = mean_outcome(&scenario, meta, sizing);
                let tabled = oracle.expected_pnl(scenario.regime, volatility, meta, sizing);
                assert!(
                    (direct - tabled).abs() < 1e-9,
                    "{meta} {sizing} {volatility}: {direct} vs {tabled}"
                );
            }
        }
    }

    #[test]
    fn the_choice_is_the_best_expected_pnl_and_uses_the_best_strategy() {
        let oracle = Oracle::new();
        let metas: Vec<usize> = (0..META_ACTIONS).collect();
        let sizings: Vec<usize> = (0..SIZING_ACTIONS).collect();
        for s in scenarios().iter().take(200) {
            let (meta, sizing) = oracle.choose(s.regime, s.volatility, &metas, &sizings);
            let chosen = oracle.expected_pnl(s.regime, s.volatility, meta, sizing);
            for m in (0..META_ACTIONS).step_by(7) {
                for z in 0..SIZING_ACTIONS {
                    assert!(oracle.expected_pnl(s.regime, s.volatility, m, z) <= chosen);
                }
            }
            let strategy = MetaAction::from_index(meta).unwrap().strategy;
            assert_eq!(strategy, best_strategy(s.regime));
            assert!(chosen > 0.0, "{} {}", s.regime, chosen);
        }
    }

    #[test]
    fn the_choice_respects_the_allowed_actions() {
        let oracle = Oracle::new();
        let sizings = SizingAction::allowed_up_to(10);
        for s in scenarios().iter().take(50) {
            let (meta, sizing) = oracle.choose(s.regime, s.volatility, &[3, 40], &sizings);
            assert!([3, 40].contains(&meta));
            assert!(sizings.contains(&sizing));
        }
    }
}
