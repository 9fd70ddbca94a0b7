//! The synthetic market: symbols whose regimes change over time, price windows that the engine's
//! regime detector recognises, and a P&L model whose best actions are known.
//!
//! Every trade is drawn first as a [`Scenario`] (symbol, regime, price window, signal confidence,
//! and the noise of the price path while the position is open) from a seeded stream that never
//! looks at what the agents choose. [`Scenario::outcome`] then turns the agents' choices into the
//! trade's result. So two policies can be compared on exactly the same market.
//!
//! The P&L model, per trade (`σ` is the regime's per-step volatility, `T` = [`HOLD_STEPS`], `m`
//! the size multiplier and `L` the leverage the sizing agent chose):
//!
//! * The strategy has an edge that depends on the regime: a per-trade Sharpe ratio `K` from
//!   [`trade_sharpe`]. The position's return is a random walk of `T` steps with drift `K·σ/√T`
//!   and step size `σ`. Momentum (`dual_momentum`) pays in TREND and BREAKOUT, mean reversion
//!   (`mean_reversion`) in RANGE and MEAN_REVERSION, and `momentum_flip` loses a little
//!   everywhere. The model and the weight have no effect: the agent must learn to ignore them.
//! * `pnl_pct` is the P&L in percent of the trade's base margin: `m` scales the margin put up
//!   and `L` the notional per unit of margin, so a trade held to the end earns
//!   `100·m·L·(return − fees)`, less a fixed overhead of [`TRADE_OVERHEAD_PCT`].
//! * The stack takes profit once the position has gained [`TAKE_PROFIT_ROE`] of its margin, and
//!   the exchange liquidates it once an adverse move reaches [`LIQUIDATION_MOVE`]`/L`, taking the
//!   whole margin plus a clearance fee on the notional ([`LIQUIDATION_FEE`]). Both distances
//!   shrink as `L` grows, while adverse moves grow with volatility: so high leverage loses in
//!   volatile regimes, the lowest leverage cannot pay the overhead in calm ones, and the best
//!   leverage falls as volatility rises. [`best_leverages`] names the best band per volatility
//!   level; unit tests check it against the engine's sizing reward.
//! * `max_drawdown_pct` is the largest move against the position while it was open, in percent
//!   of the entry price.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use rl_v2_core::domain::actions::{MetaAction, SizingAction};
use rl_v2_core::domain::market::Regime;

/// The four regimes the market moves through.
pub const REGIMES: [Regime; 4] = [
    Regime::Trend,
    Regime::Breakout,
    Regime::Range,
    Regime::MeanReversion,
];
/// Prices in the window a signal carries (the engine needs at least 10 for a regime).
pub const PRICE_WINDOW: usize = 24;
/// Steps of the price path while a position is open.
pub const HOLD_STEPS: usize = 16;
/// Share of the margin an adverse move may eat before the exchange liquidates (the rest is the
/// maintenance margin): a position at leverage `L` is liquidated by a move of this over `L`.
pub const LIQUIDATION_MOVE: f64 = 0.9;
/// Take-profit, as a share of the margin (return on equity): the stack closes a position that
/// has gained this much, so the price move it takes shrinks as leverage grows, just as the move
/// that liquidates it does.
pub const TAKE_PROFIT_ROE: f64 = 0.5;
/// Clearance fee the exchange charges on a liquidated position, as a share of the notional: a
/// liquidation at high leverage costs more than the margin.
pub const LIQUIDATION_FEE: f64 = 0.015;
/// Round-trip exchange fees, as a share of the notional.
pub const FEE_RATE: f64 = 0.0006;
/// Fixed cost of a trade whatever its size or leverage (minimum order fees, the stack's
/// per-trade overhead), in percent of the base margin.
pub const TRADE_OVERHEAD_PCT: f64 = 3.2;
/// Fewest and most signals a symbol stays in one regime.
pub const REGIME_SPELL: (u32, u32) = (10, 50);
/// Range of signal confidences.
pub const CONFIDENCE_RANGE: (f64, f64) = (0.6, 0.95);
/// Lowest and highest price around which a symbol trades.
const ANCHOR_PRICE_RANGE: (f64, f64) = (0.5, 50_000.0);
/// How far a window's first price strays from the symbol's anchor, as a share.
const WINDOW_START_SPREAD: f64 = 0.05;
/// Per-trade Sharpe ratio of the strategy that fits the regime.
const BEST_EDGE: f64 = 0.6;
/// Per-trade Sharpe ratio of `momentum_flip`, which is never the best.
const FLIP_EDGE: f64 = -0.2;
/// Per-trade Sharpe ratio of the strategy that fights the regime.
const WORST_EDGE: f64 = -0.6;

/// How a regime's price windows look: the mean simple return (signed by the trend's direction
/// when directional) and the volatility, each drawn uniformly from a range chosen well inside
/// the detector's thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegimeShape {
    /// Range of |mean simple return| (trend strength).
    pub trend_strength: (f64, f64),
    /// Range of the population standard deviation of simple returns.
    pub volatility: (f64, f64),
    /// Whether the window moves in one direction (up or down).
    pub directional: bool,
}

/// The shape of `regime`'s windows; UNKNOWN never occurs and borrows RANGE's.
pub fn shape(regime: Regime) -> RegimeShape {
    match regime {
        // BREAKOUT: strength > 0.03 and volatility > 0.02.
        Regime::Breakout => RegimeShape {
            trend_strength: (0.035, 0.045),
            volatility: (0.032, 0.038),
            directional: true,
        },
        // TREND: strength in (0.02, 0.03], volatility > 0.015 (not BREAKOUT).
        Regime::Trend => RegimeShape {
            trend_strength: (0.022, 0.028),
            volatility: (0.016, 0.019),
            directional: true,
        },
        // MEAN_REVERSION: strength < 0.015 and volatility in [0.01, 0.015].
        Regime::MeanReversion => RegimeShape {
            trend_strength: (0.0, 0.004),
            volatility: (0.011, 0.014),
            directional: false,
        },
        // RANGE: strength < 0.01 and volatility < 0.01.
        Regime::Range | Regime::Unknown => RegimeShape {
            trend_strength: (0.0, 0.003),
            volatility: (0.004, 0.006),
            directional: false,
        },
    }
}

/// The strategy that pays best in `regime`.
pub fn best_strategy(regime: Regime) -> &'static str {
    match regime {
        Regime::Trend | Regime::Breakout => "dual_momentum",
        Regime::Range | Regime::MeanReversion | Regime::Unknown => "mean_reversion",
    }
}

/// Per-trade Sharpe ratio of `strategy` in `regime`.
pub fn trade_sharpe(strategy: &str, regime: Regime) -> f64 {
    if strategy == best_strategy(regime) {
        BEST_EDGE
    } else if strategy == "momentum_flip" {
        FLIP_EDGE
    } else {
        WORST_EDGE
    }
}

/// Volatility levels, one per regime: each regime's windows fall in one band of the engine's
/// default volatility buckets, so the sizing agent, which sees volatility but not the regime,
/// can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolatilityLevel {
    /// Below 1 % (RANGE).
    Calm,
    /// 1 % to 1.5 % (MEAN_REVERSION).
    Moderate,
    /// 1.5 % to 2 % (TREND).
    Elevated,
    /// 2 % and above (BREAKOUT).
    High,
}

impl VolatilityLevel {
    /// All levels, calmest first.
    pub const ALL: [VolatilityLevel; 4] = [Self::Calm, Self::Moderate, Self::Elevated, Self::High];

    /// The level of a volatility.
    pub fn of(volatility: f64) -> Self {
        if volatility < 0.01 {
            Self::Calm
        } else if volatility < 0.015 {
            Self::Moderate
        } else if volatility < 0.02 {
            Self::Elevated
        } else {
            Self::High
        }
    }

    /// Lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Calm => "calm",
            Self::Moderate => "moderate",
            Self::Elevated => "elevated",
            Self::High => "high",
        }
    }
}

/// The leverages that pay best at a volatility level, whatever the size multiplier: low in
/// volatile markets, moderate in calm ones.
pub fn best_leverages(level: VolatilityLevel) -> &'static [u32] {
    match level {
        VolatilityLevel::Calm => &[10, 15, 20, 25, 30],
        VolatilityLevel::Moderate => &[5, 10, 15],
        VolatilityLevel::Elevated => &[5, 10],
        VolatilityLevel::High => &[5],
    }
}

/// Whether a meta action uses the regime's best strategy.
pub fn is_best_meta(action: usize, regime: Regime) -> bool {
    MetaAction::from_index(action).is_some_and(|a| a.strategy == best_strategy(regime))
}

/// Whether a sizing action uses one of the best leverages for the volatility level.
pub fn is_best_sizing(action: usize, level: VolatilityLevel) -> bool {
    SizingAction::from_index(action).is_some_and(|a| best_leverages(level).contains(&a.leverage))
}

/// One trade's market, drawn before any agent decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Index of the symbol in the market's list.
    pub symbol: usize,
    /// Regime the symbol is in.
    pub regime: Regime,
    /// The prices the signal carries, oldest first; their regime is `regime`.
    pub prices: Vec<f64>,
    /// Volatility of the window (population std of its simple returns).
    pub volatility: f64,
    /// Confidence of the signal.
    pub confidence: f64,
    /// Standard-normal shocks of the price path while the position is open.
    pub shocks: [f64; HOLD_STEPS],
}

/// What a trade earned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TradeResult {
    /// P&L in percent of the base margin.
    pub pnl_pct: f64,
    /// Largest move against the position, in percent of the entry price.
    pub max_drawdown_pct: f64,
    /// Whether the position was liquidated.
    pub liquidated: bool,
}

impl Scenario {
    /// The result of trading this scenario with `meta` and `sizing` (action indices; an index
    /// outside its space falls back to action 0).
    pub fn outcome(&self, meta: usize, sizing: usize) -> TradeResult {
        let strategy = MetaAction::from_index(meta).map_or("dual_momentum", |a| a.strategy);
        let sizing = SizingAction::from_index(sizing).unwrap_or(SizingAction {
            size_multiplier: 1.0,
            leverage: 5,
        });
        let steps = HOLD_STEPS as f64;
        let drift = trade_sharpe(strategy, self.regime) * self.volatility / steps.sqrt();
        let leverage = f64::from(sizing.leverage);
        let liquidation = LIQUIDATION_MOVE / leverage;
        let take_profit = TAKE_PROFIT_ROE / leverage;
        let mut position_return = 0.0;
        let mut worst = 0.0_f64;
        let mut liquidated = false;
        for z in self.shocks {
            position_return += drift + self.volatility * z;
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
        let margin = sizing.size_multiplier;
        let pnl_pct = if liquidated {
            -100.0 * margin * (1.0 + leverage * LIQUIDATION_FEE) - TRADE_OVERHEAD_PCT
        } else {
            100.0 * margin * leverage * (position_return - FEE_RATE) - TRADE_OVERHEAD_PCT
        };
        TradeResult {
            pnl_pct,
            max_drawdown_pct: 100.0 * (-worst).min(liquidation),
            liquidated,
        }
    }
}

/// A symbol of the market.
#[derive(Debug, Clone, PartialEq)]
pub struct Symbol {
    /// Upper-case name.
    pub name: String,
    /// Price around which its windows start.
    pub anchor: f64,
}

/// Where a symbol is in its regime schedule.
#[derive(Debug, Clone, PartialEq)]
struct Spell {
    regime: Regime,
    direction: f64,
    remaining: u32,
}

/// The market: its symbols, fixed by the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Market {
    seed: u64,
    symbols: Vec<Symbol>,
}

impl Market {
    /// A market over `names` (upper-cased), with anchor prices drawn from `seed`.
    pub fn new(seed: u64, names: &[String]) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (lo, hi) = ANCHOR_PRICE_RANGE;
        let symbols = names
            .iter()
            .map(|name| Symbol {
                name: name.trim().to_uppercase(),
                anchor: (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp(),
            })
            .collect();
        Self { seed, symbols }
    }

    /// The symbols.
    pub fn symbols(&self) -> &[Symbol] {
        &self.symbols
    }

    /// A stream of rounds over this market; `stream` tells independent streams (training,
    /// evaluation) apart.
    pub fn stream(&self, stream: u64) -> ScenarioStream {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        let spells = self
            .symbols
            .iter()
            .map(|_| new_spell(&mut rng, None))
            .collect();
        ScenarioStream {
            anchors: self.symbols.iter().map(|s| s.anchor).collect(),
            spells,
            rng,
        }
    }
}

/// One round of the market: a trade per symbol. Signals arrive in the order of `scenarios`,
/// trades and closes in their own shuffled orders, so the symbols' events interleave.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// One scenario per symbol, in the order their signals arrive.
    pub scenarios: Vec<Scenario>,
    /// Indices into `scenarios`, in the order the trades are executed.
    pub trade_order: Vec<usize>,
    /// Indices into `scenarios`, in the order the positions close.
    pub close_order: Vec<usize>,
}

/// Rounds of scenarios: one per symbol per round, symbols in a shuffled order.
#[derive(Debug, Clone)]
pub struct ScenarioStream {
    anchors: Vec<f64>,
    spells: Vec<Spell>,
    rng: ChaCha8Rng,
}

impl ScenarioStream {
    /// The next round: one scenario per symbol, in a random order.
    pub fn next_round(&mut self) -> Round {
        let n = self.anchors.len();
        let mut order: Vec<usize> = (0..n).collect();
        shuffle(&mut order, &mut self.rng);
        let scenarios = order.into_iter().map(|i| self.scenario(i)).collect();
        let mut trade_order: Vec<usize> = (0..n).collect();
        shuffle(&mut trade_order, &mut self.rng);
        let mut close_order: Vec<usize> = (0..n).collect();
        shuffle(&mut close_order, &mut self.rng);
        Round {
            scenarios,
            trade_order,
            close_order,
        }
    }

    fn scenario(&mut self, symbol: usize) -> Scenario {
        let rng = &mut self.rng;
        let spell = &mut self.spells[symbol];
        if spell.remaining == 0 {
            *spell = new_spell(rng, Some(spell.regime));
        }
        spell.remaining -= 1;
        let (regime, direction) = (spell.regime, spell.direction);
        let s = shape(regime);
        let strength = uniform(rng, s.trend_strength);
        let volatility = uniform(rng, s.volatility);
        let mean = if s.directional {
            direction * strength
        } else {
            // Directionless windows still lean a little one way or the other.
            if rng.random::<bool>() {
                strength
            } else {
                -strength
            }
        };
        let start =
            self.anchors[symbol] * (1.0 + WINDOW_START_SPREAD * (2.0 * rng.random::<f64>() - 1.0));
        let prices = window(rng, start, mean, volatility);
        let confidence = uniform(rng, CONFIDENCE_RANGE);
        let mut shocks = [0.0; HOLD_STEPS];
        for z in &mut shocks {
            *z = standard_normal(rng);
        }
        Scenario {
            symbol,
            regime,
            prices,
            volatility,
            confidence,
            shocks,
        }
    }
}

fn new_spell(rng: &mut ChaCha8Rng, previous: Option<Regime>) -> Spell {
    let choices: Vec<Regime> = REGIMES
        .iter()
        .copied()
        .filter(|r| Some(*r) != previous)
        .collect();
    let regime = choices[rng.random_range(0..choices.len())];
    Spell {
        regime,
        direction: if rng.random::<bool>() { 1.0 } else { -1.0 },
        remaining: rng.random_range(REGIME_SPELL.0..=REGIME_SPELL.1),
    }
}

/// [`PRICE_WINDOW`] prices from `start` whose simple returns have exactly mean `mean` and
/// population standard deviation `volatility`: standard-normal draws are standardised before
/// scaling, so the detector sees precisely the regime's trend strength and volatility.
fn window(rng: &mut ChaCha8Rng, start: f64, mean: f64, volatility: f64) -> Vec<f64> {
    let n = PRICE_WINDOW - 1;
    let mut z: Vec<f64> = (0..n).map(|_| standard_normal(rng)).collect();
    let m = z.iter().sum::<f64>() / n as f64;
    let sd = (z.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n as f64).sqrt();
    if sd > 1e-9 {
        z.iter_mut().for_each(|v| *v = (*v - m) / sd);
    } else {
        // Degenerate draw: alternate ±1, which has mean 0 and std 1 for an even count.
        z.iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = if i % 2 == 0 { 1.0 } else { -1.0 });
    }
    let mut prices = Vec::with_capacity(PRICE_WINDOW);
    prices.push(start);
    for v in z {
        let last = prices[prices.len() - 1];
        prices.push(last * (1.0 + mean + volatility * v));
    }
    prices
}

fn uniform(rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// A standard-normal draw (Box–Muller).
pub(crate) fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // in (0, 1]
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Fisher–Yates.
fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rl_v2_core::domain::actions::{LEVERAGES, SIZE_MULTIPLIERS};
    use rl_v2_core::domain::market::{detect_regime, volatility};
    use rl_v2_core::domain::reward::{MetaOutcome, RewardWeights, SizingOutcome};

    fn market() -> Market {
        let names: Vec<String> = ["btcusdt", "ETHUSDT", "SOLUSDT"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Market::new(7, &names)
    }

    #[test]
    fn the_detector_recognises_every_generated_window() {
        let mut stream = market().stream(1);
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..2_000 {
            for s in stream.next_round().scenarios {
                assert_eq!(s.prices.len(), PRICE_WINDOW);
                assert!(s.prices.iter().all(|p| p.is_finite() && *p > 0.0));
                assert_eq!(detect_regime(&s.prices), s.regime, "{:?}", s.prices);
                assert!((volatility(&s.prices) - s.volatility).abs() < 1e-12);
                *seen.entry(s.regime).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len(), 4, "every regime occurs: {seen:?}");
    }

    #[test]
    fn regimes_change_over_time_per_symbol() {
        let mut stream = market().stream(1);
        let mut changes = 0;
        let mut last = [None; 3];
        for _ in 0..500 {
            for s in stream.next_round().scenarios {
                if last[s.symbol].is_some_and(|r| r != s.regime) {
                    changes += 1;
                }
                last[s.symbol] = Some(s.regime);
            }
        }
        // 1 500 signals in spells of 10 to 50 signals.
        assert!((30..=150).contains(&changes), "{changes}");
    }

    #[test]
    fn each_regime_has_its_own_volatility_level() {
        let level = |r| {
            let s = shape(r);
            (
                VolatilityLevel::of(s.volatility.0),
                VolatilityLevel::of(s.volatility.1),
            )
        };
        assert_eq!(
            level(Regime::Range),
            (VolatilityLevel::Calm, VolatilityLevel::Calm)
        );
        assert_eq!(
            level(Regime::MeanReversion),
            (VolatilityLevel::Moderate, VolatilityLevel::Moderate)
        );
        assert_eq!(
            level(Regime::Trend),
            (VolatilityLevel::Elevated, VolatilityLevel::Elevated)
        );
        assert_eq!(
            level(Regime::Breakout),
            (VolatilityLevel::High, VolatilityLevel::High)
        );
    }

    #[test]
    fn streams_are_reproducible_and_independent() {
        let m = market();
        assert_eq!(m.stream(1).next_round(), m.stream(1).next_round());
        assert_ne!(m.stream(1).next_round(), m.stream(2).next_round());
        assert_eq!(m.symbols()[0].name, "BTCUSDT");
    }

    /// Scenarios of one regime, all from one stream, so that every action is judged on the same
    /// draws.
    fn scenarios_of(regime: Regime, count: usize) -> Vec<Scenario> {
        let mut stream = market().stream(99);
        let mut scenarios = Vec::new();
        while scenarios.len() < count {
            let round = stream.next_round();
            scenarios.extend(round.scenarios.into_iter().filter(|s| s.regime == regime));
        }
        scenarios
    }

    /// Mean of the engine's meta reward for `strategy` sized with `sizing`, on `scenarios` (no
    /// Sharpe signal; the regime does not change during a trade).
    fn mean_meta_reward(scenarios: &[Scenario], strategy: &str, sizing: usize) -> f64 {
        let weights = RewardWeights::default();
        let meta = MetaAction::all().find(|a| a.strategy == strategy).unwrap();
        let total: f64 = scenarios
            .iter()
            .map(|s| {
                let r = s.outcome(meta.index(), sizing);
                weights.meta_reward(&MetaOutcome {
                    pnl_pct: r.pnl_pct,
                    max_drawdown_pct: r.max_drawdown_pct,
                    sharpe: 0.0,
                    regime_at_decision: s.regime,
                    regime_at_close: s.regime,
                    confidence: s.confidence,
                })
            })
            .sum();
        total / scenarios.len() as f64
    }

    /// Mean of the engine's sizing reward for `sizing` with the regime's best strategy.
    fn mean_sizing_reward(scenarios: &[Scenario], sizing: SizingAction) -> f64 {
        let weights = RewardWeights::default();
        let meta = MetaAction::all()
            .find(|a| a.strategy == best_strategy(scenarios[0].regime))
            .unwrap();
        let total: f64 = scenarios
            .iter()
            .map(|s| {
                let r = s.outcome(meta.index(), sizing.index());
                weights.sizing_reward(&SizingOutcome {
                    pnl_pct: r.pnl_pct,
                    leverage: f64::from(sizing.leverage),
                    exposure: 0.0,
                    volatility: s.volatility,
                })
            })
            .sum();
        total / scenarios.len() as f64
    }

    const STRATEGY_NAMES: [&str; 3] = ["dual_momentum", "mean_reversion", "momentum_flip"];

    #[test]
    fn model_and_weight_do_not_change_a_trade() {
        for s in scenarios_of(Regime::Trend, 50) {
            for a in MetaAction::all() {
                let first = MetaAction::all()
                    .find(|b| b.strategy == a.strategy)
                    .unwrap();
                assert_eq!(s.outcome(a.index(), 9), s.outcome(first.index(), 9));
            }
        }
    }

    #[test]
    fn the_best_strategy_earns_the_highest_meta_reward_and_is_the_only_one_that_pays() {
        for regime in REGIMES {
            let scenarios = scenarios_of(regime, 4_000);
            let level = VolatilityLevel::of(scenarios[0].volatility);
            for &leverage in best_leverages(level) {
                for size_multiplier in [0.5, 1.0] {
                    let sizing = SizingAction {
                        size_multiplier,
                        leverage,
                    };
                    let rewards =
                        STRATEGY_NAMES.map(|n| mean_meta_reward(&scenarios, n, sizing.index()));
                    println!("{regime} {sizing}: {rewards:.2?}");
                    for (name, reward) in STRATEGY_NAMES.iter().zip(rewards) {
                        if *name == best_strategy(regime) {
                            assert!(reward > 0.0, "{regime} {sizing} {name}: {reward}");
                        } else {
                            assert!(reward < 0.0, "{regime} {sizing} {name}: {reward}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn at_every_size_the_best_leverage_is_in_the_band_of_the_volatility_level() {
        for regime in REGIMES {
            let scenarios = scenarios_of(regime, 8_000);
            let level = VolatilityLevel::of(scenarios[0].volatility);
            for size_multiplier in SIZE_MULTIPLIERS {
                let row = LEVERAGES.map(|leverage| {
                    mean_sizing_reward(
                        &scenarios,
                        SizingAction {
                            size_multiplier,
                            leverage,
                        },
                    )
                });
                println!(
                    "{regime} ({}) {size_multiplier}x: {row:.2?}",
                    level.as_str()
                );
                let best = (0..row.len())
                    .max_by(|a, b| row[*a].total_cmp(&row[*b]))
                    .unwrap();
                assert!(
                    best_leverages(level).contains(&LEVERAGES[best]),
                    "{regime} {size_multiplier}x: best leverage {}",
                    LEVERAGES[best]
                );
                if level == VolatilityLevel::High {
                    // High leverage loses in volatile markets.
                    for (leverage, reward) in LEVERAGES.iter().zip(row) {
                        if *leverage >= 20 {
                            assert!(reward < 0.0, "{regime} {size_multiplier}x {leverage}x");
                        }
                    }
                }
            }
        }
    }
}
