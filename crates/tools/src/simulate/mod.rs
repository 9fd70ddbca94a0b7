//! `simulate`: the quick start that needs no broker. A seeded synthetic market trains the engine
//! in-process, then an evaluation shows what it learned.
//!
//! How the pieces fit:
//!
//! * [`market`] draws the market: symbols whose regimes change over time, the price window each
//!   signal carries (recognised by the engine's own regime detector), and a P&L model in which
//!   the best strategy per regime and the best leverage per volatility level are known.
//! * [`events`] writes the JSON payloads a trading stack would publish for each trade.
//! * This module plays the stack: per round, every symbol sends a PREDICTION_GENERATED, a
//!   TRADE_EXECUTED and a POSITION_CLOSED, interleaved across symbols, each passed to
//!   [`Engine::ingest`] with an increasing sequence number, exactly as the service does. The
//!   decisions the engine returns choose the trade's strategy and sizing, and so its P&L. Event
//!   time comes from a simulated clock, so a run is a pure function of its options.
//! * After training, [`Evaluation`] replays one fixed stretch of the same market four times:
//!   with the learned greedy policy (a frozen copy of the engine: ε = 0 and a constant step
//!   α = 0), with an untrained engine, with a uniformly random policy, and with the [`oracle`],
//!   the best policy for what the engine sees; it reports the learned policy's P&L as a share of
//!   the oracle's, and checks, state by state, which strategy the learned Q-table prefers where
//!   the agent had real experience.
//! * [`chart`] draws the learning curve as an SVG; [`learning_curve_table`] and [`summary`] write
//!   it as text.
//!
//! The rewards the report shows are the engine's own formulas ([`RewardWeights`]) applied to the
//! same inputs the engine sees; a unit test checks they equal what the engine learned from.

pub mod chart;
pub mod events;
pub mod market;
pub mod oracle;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use rl_v2_core::audit::Update;
use rl_v2_core::decision::Decision;
use rl_v2_core::domain::actions::SizingAction;
use rl_v2_core::domain::agent::AgentKind;
use rl_v2_core::domain::market::{detect_regime, PnlWindow, Regime};
use rl_v2_core::domain::qlearning::StepSize;
use rl_v2_core::domain::reward::{sharpe_signal, MetaOutcome, RewardWeights, SizingOutcome};
use rl_v2_core::engine::{Engine, EngineConfig, Outcome};
use rl_v2_core::event::{EventKind, DEFAULT_MAX_PAYLOAD_BYTES};

pub use chart::write_chart;
use market::{is_best_meta, is_best_sizing, Market, Round, Scenario, TradeResult, VolatilityLevel};
use oracle::Oracle;

/// Symbols of the default market.
pub const DEFAULT_SYMBOLS: [&str; 8] = [
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "AVAXUSDT",
];
/// Trades of the default training run.
pub const DEFAULT_CYCLES: usize = 100_000;
/// Trades of the default evaluation, per policy.
pub const DEFAULT_EVALUATION_CYCLES: usize = 4_000;
/// Points of the default learning curve.
pub const DEFAULT_CURVE_POINTS: usize = 40;
/// Q-updates from which a state counts as often visited in the evaluation.
pub const OFTEN_VISITED_UPDATES: u64 = 20;
/// Share of the initial balance each trade puts up as its base margin.
pub const BASE_MARGIN_SHARE: f64 = 0.002;
/// Longest symbol accepted, as the event decoder's limit.
const MAX_SYMBOL_LEN: usize = 64;
/// Market stream of the training run.
const TRAINING_STREAM: u64 = 1;
/// Market stream of the evaluation, the same for every policy.
const EVALUATION_STREAM: u64 = 2;
/// Mixed into the seed for the random policy's draws.
const RANDOM_POLICY_SALT: u64 = 0x5eed_0f7a_4d0b;
/// Most rows [`learning_curve_table`] prints.
const TABLE_ROWS: usize = 12;

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulateOptions {
    /// Seed of the market (regimes, prices, noise). Exploration uses `engine.seed`.
    pub seed: u64,
    /// Trades to train on (one trade = one signal, one execution and one close).
    pub cycles: usize,
    /// Trades each policy plays in the evaluation.
    pub evaluation_cycles: usize,
    /// Points of the learning curve (each averages `cycles / curve_points` trades).
    pub curve_points: usize,
    /// Symbols of the market, one trade per symbol per round.
    pub symbols: Vec<String>,
    /// Settings of the engine under training.
    pub engine: EngineConfig,
    /// Where to write the learning-curve chart (SVG), if anywhere.
    pub chart: Option<PathBuf>,
    /// Whether to draw a progress bar on stderr.
    pub progress: bool,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        Self {
            seed: 7,
            cycles: DEFAULT_CYCLES,
            evaluation_cycles: DEFAULT_EVALUATION_CYCLES,
            curve_points: DEFAULT_CURVE_POINTS,
            symbols: DEFAULT_SYMBOLS.iter().map(|s| s.to_string()).collect(),
            engine: EngineConfig::default(),
            chart: None,
            progress: false,
        }
    }
}

impl SimulateOptions {
    /// Checks every value; the error names the offending option.
    pub fn validate(&self) -> Result<(), SimulateError> {
        let bad = |msg: String| Err(SimulateError::InvalidOptions(msg));
        if self.cycles == 0 {
            return bad("cycles must be at least 1".into());
        }
        if self.evaluation_cycles == 0 {
            return bad("evaluation_cycles must be at least 1".into());
        }
        if self.curve_points == 0 {
            return bad("curve_points must be at least 1".into());
        }
        if self.symbols.is_empty() {
            return bad("symbols must name at least one symbol".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for raw in &self.symbols {
            let symbol = raw.trim().to_uppercase();
            if symbol.is_empty()
                || symbol.len() > MAX_SYMBOL_LEN
                || symbol.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return bad(format!(
                    "symbols: {raw:?} is not a symbol (1 to {MAX_SYMBOL_LEN} bytes, no spaces)"
                ));
            }
            if !seen.insert(symbol) {
                return bad(format!("symbols: {raw:?} appears twice"));
            }
        }
        self.engine
            .validate()
            .map_err(|e| SimulateError::InvalidOptions(format!("engine: {e}")))
    }
}

/// Why a simulation could not run or report.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// An option is out of range.
    #[error("invalid simulation options: {0}")]
    InvalidOptions(String),
    /// The chart could not be written.
    #[error("cannot write the chart to {path}: {reason}")]
    Chart {
        /// Where it was to go.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// One point of the learning curve: averages over a window of training trades.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Trades played by the end of the window.
    pub cycles: usize,
    /// Trades in the window.
    pub trades: usize,
    /// Mean meta-strategy reward.
    pub mean_meta_reward: f64,
    /// Mean position-sizing reward.
    pub mean_sizing_reward: f64,
    /// Mean P&L, in percent of the base margin.
    pub mean_pnl_pct: f64,
    /// Share of greedy (not exploring) meta decisions that chose the regime's best strategy.
    pub meta_greedy_best_share: f64,
    /// Share of greedy sizing decisions that chose a best leverage for the volatility level.
    pub sizing_greedy_best_share: f64,
    /// Meta agent's ε at the end of the window.
    pub meta_epsilon: f64,
    /// Sizing agent's ε at the end of the window.
    pub sizing_epsilon: f64,
}

/// Figures at the end of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalFigures {
    /// Trades completed (signal, trade and close all applied).
    pub trades: usize,
    /// Events the engine rejected (none are expected).
    pub rejected_events: u64,
    /// Q-updates applied (both agents).
    pub updates: u64,
    /// Meta agent's ε.
    pub meta_epsilon: f64,
    /// Sizing agent's ε.
    pub sizing_epsilon: f64,
    /// States in the meta Q-table.
    pub meta_states: usize,
    /// States in the sizing Q-table.
    pub sizing_states: usize,
    /// Mean P&L over all training trades, in percent of the base margin.
    pub mean_pnl_pct: f64,
    /// Account equity at the end, in USD.
    pub final_equity: f64,
}

/// How one policy did over the evaluation trades.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyScore {
    /// Trades played.
    pub trades: usize,
    /// Mean P&L, in percent of the base margin.
    pub mean_pnl_pct: f64,
    /// Mean meta-strategy reward.
    pub mean_meta_reward: f64,
    /// Mean position-sizing reward.
    pub mean_sizing_reward: f64,
    /// Share of trades liquidated.
    pub liquidation_rate: f64,
    /// Share of trades that used the regime's best strategy.
    pub best_strategy_share: f64,
    /// Share of trades that used a best leverage for the volatility level.
    pub best_leverage_share: f64,
    /// Mean P&L per regime.
    pub by_regime: BTreeMap<Regime, RegimeScore>,
}

/// How one policy did in one regime.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegimeScore {
    /// Trades played in the regime.
    pub trades: usize,
    /// Mean P&L, in percent of the base margin.
    pub mean_pnl_pct: f64,
}

/// The learned policy's mean P&L as a share of the oracle's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OracleShare {
    /// Over every evaluation trade.
    pub overall: f64,
    /// Per regime.
    pub by_regime: BTreeMap<Regime, f64>,
}

/// How many often-visited states prefer a best action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateShare {
    /// States with at least [`OFTEN_VISITED_UPDATES`] updates.
    pub states: usize,
    /// Of those, states whose greedy action is a best one.
    pub best: usize,
    /// `best / states` (0 when there are none).
    pub share: f64,
}

impl StateShare {
    fn count(&mut self, best: bool) {
        self.states += 1;
        self.best += usize::from(best);
        self.share = self.best as f64 / self.states as f64;
    }
}

/// What training achieved, measured on a fresh stretch of the same market.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Trades each policy played.
    pub cycles: usize,
    /// The learned greedy policy (ε = 0, no learning during the evaluation).
    pub learned: PolicyScore,
    /// The greedy policy of an untrained engine (every tie goes to the first action).
    pub untrained: PolicyScore,
    /// A uniformly random policy.
    pub random: PolicyScore,
    /// The best policy for what the engine sees (see [`oracle`]): the action with the highest
    /// expected P&L given the regime and the window's volatility.
    pub oracle: PolicyScore,
    /// The learned policy's mean P&L as a share of the oracle's (1 = as good as the oracle).
    pub learned_share_of_oracle: OracleShare,
    /// Updates from which a state counts as often visited.
    pub often_visited_updates: u64,
    /// Often-visited meta states whose greedy strategy is the regime's best.
    pub meta_states: StateShare,
    /// The same, per regime.
    pub meta_states_by_regime: BTreeMap<Regime, StateShare>,
    /// Often-visited sizing states whose greedy leverage is a best one for the volatility level.
    pub sizing_states: StateShare,
    /// The same, per volatility level.
    pub sizing_states_by_level: BTreeMap<VolatilityLevel, StateShare>,
}

/// The result of a simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimulationReport {
    /// Seed of the market.
    pub seed: u64,
    /// Seed of the engine's exploration.
    pub engine_seed: u64,
    /// Training trades asked for.
    pub cycles: usize,
    /// Symbols traded.
    pub symbols: Vec<String>,
    /// The learning curve, oldest window first.
    pub learning_curve: Vec<CurvePoint>,
    /// Figures at the end of training.
    pub final_figures: FinalFigures,
    /// The evaluation after training.
    pub evaluation: Evaluation,
}

/// Trains an engine on the simulated market, evaluates it, writes the chart if asked, and
/// returns the report. Deterministic: the same options give the same report.
pub fn run(options: &SimulateOptions) -> Result<SimulationReport, SimulateError> {
    options.validate()?;
    let market = Market::new(options.seed, &options.symbols);
    let progress = progress_bar(options);

    progress.set_message("training");
    let mut engine = Engine::new(options.engine.clone());
    let training = train(&market, &mut engine, options, &progress);

    progress.set_message("evaluating");
    let evaluation = evaluate(&market, &engine, &training, options, &progress);
    progress.finish_and_clear();

    let state = engine.state();
    let final_figures = FinalFigures {
        trades: training.trades,
        rejected_events: training.rejected,
        updates: engine.updates(),
        meta_epsilon: state.meta.q().epsilon(),
        sizing_epsilon: state.sizing.q().epsilon(),
        meta_states: state.meta.q().states_visited(),
        sizing_states: state.sizing.q().states_visited(),
        mean_pnl_pct: training.pnl_sum / training.trades.max(1) as f64,
        final_equity: training.final_equity,
    };
    let report = SimulationReport {
        seed: options.seed,
        engine_seed: options.engine.seed,
        cycles: options.cycles,
        symbols: market.symbols().iter().map(|s| s.name.clone()).collect(),
        learning_curve: training.curve,
        final_figures,
        evaluation,
    };
    if let Some(path) = &options.chart {
        write_chart(&report, path)?;
    }
    Ok(report)
}

fn progress_bar(options: &SimulateOptions) -> ProgressBar {
    let total = options.cycles + 4 * options.evaluation_cycles;
    let target = if options.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total as u64), target);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} trades ({eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// One decision of an agent, as the stack saw it.
#[derive(Debug, Clone, PartialEq)]
struct Pick {
    action: usize,
    explored: bool,
    state_key: String,
}

impl From<&Decision> for Pick {
    fn from(d: &Decision) -> Self {
        Self {
            action: d.action_index,
            explored: d.explored,
            state_key: d.state_key.clone(),
        }
    }
}

/// Who chooses the actions.
enum Policy<'e> {
    /// The engine, through [`Engine::ingest`].
    Engine(&'e mut Engine),
    /// Uniform draws; no engine is involved.
    Random(Box<ChaCha8Rng>),
    /// The best expected P&L for the regime and volatility; no engine is involved.
    Oracle(&'e Oracle),
}

/// One completed trade.
#[derive(Debug, Clone, PartialEq)]
struct Cycle {
    regime: Regime,
    level: VolatilityLevel,
    meta: Pick,
    sizing: Pick,
    result: TradeResult,
    meta_reward: f64,
    sizing_reward: f64,
    /// Q-updates the close caused (0 for the random policy).
    updates: u64,
}

/// The simulated trading stack around one policy: sequence numbers, the clock, the account,
/// and the mirror of the engine's P&L window that the reward formulas read.
struct Desk<'m> {
    market: &'m Market,
    weights: RewardWeights,
    price_history_len: usize,
    /// Actions each agent may choose: the random policy draws from the same sets.
    meta_actions: Vec<usize>,
    sizing_actions: Vec<usize>,
    round: u64,
    base_margin: f64,
    equity: f64,
    pnl_window: PnlWindow,
    rejected: u64,
}

impl<'m> Desk<'m> {
    /// A desk for `engine` whose clock starts at round `first_round`.
    fn new(market: &'m Market, engine: &Engine, first_round: u64) -> Self {
        let config = engine.config();
        Self {
            market,
            weights: config.rewards.clone(),
            price_history_len: config.price_history_len,
            meta_actions: engine.state().meta.allowed().indices().to_vec(),
            sizing_actions: engine.state().sizing.allowed().indices().to_vec(),
            round: first_round,
            base_margin: BASE_MARGIN_SHARE * config.initial_balance,
            equity: config.initial_balance,
            pnl_window: engine.state().pnl_window.clone(),
            rejected: 0,
        }
    }

    /// Sends one event to the engine; `None` (counted) when it was not applied.
    fn send(
        &mut self,
        engine: &mut Engine,
        kind: EventKind,
        payload: &[u8],
        time: f64,
    ) -> Option<(Vec<Decision>, Vec<Update>)> {
        let seq = engine.next_seq();
        match engine.ingest(seq, kind, payload, time, DEFAULT_MAX_PAYLOAD_BYTES) {
            Outcome::Applied {
                decisions, updates, ..
            } => Some((decisions, updates)),
            Outcome::Rejected(_) | Outcome::AlreadyApplied => {
                self.rejected += 1;
                None
            }
        }
    }

    /// Plays the first `limit` trades of `round` and returns those completed.
    fn play(&mut self, policy: &mut Policy<'_>, round: &Round, limit: usize) -> Vec<Cycle> {
        let n = limit.min(round.scenarios.len());
        let scenarios = &round.scenarios[..n];
        let round_no = self.round;
        self.round += 1;
        let times: Vec<events::Times> = (0..n).map(|i| events::Times::of(round_no, i)).collect();
        let names: Vec<&str> = scenarios
            .iter()
            .map(|s| self.market.symbols()[s.symbol].name.as_str())
            .collect();

        let mut metas: Vec<Option<Pick>> = vec![None; n];
        for (i, s) in scenarios.iter().enumerate() {
            let trace = format!("sim-{round_no}-{i}-signal");
            metas[i] = match policy {
                Policy::Engine(engine) => {
                    let payload = events::prediction(names[i], s, &times[i], &trace);
                    let kind = EventKind::PredictionGenerated;
                    self.send(engine, kind, &payload, times[i].signal)
                        .and_then(|(d, _)| d.first().map(Pick::from))
                }
                Policy::Random(rng) => Some(random_pick(rng, &self.meta_actions)),
                Policy::Oracle(oracle) => Some(self.oracle_pick(oracle, s).0),
            };
        }

        let mut sizings: Vec<Option<(Pick, f64)>> = vec![None; n];
        let mut open = 0usize;
        for &i in round.trade_order.iter().filter(|i| **i < n) {
            if metas[i].is_none() {
                continue;
            }
            let exposure = open as f64 * BASE_MARGIN_SHARE;
            let trace = format!("sim-{round_no}-{i}-trade");
            let pick = match policy {
                Policy::Engine(engine) => {
                    let payload =
                        events::trade(names[i], &scenarios[i], &times[i], exposure, &trace);
                    let kind = EventKind::TradeExecuted;
                    self.send(engine, kind, &payload, times[i].trade)
                        .and_then(|(d, _)| d.first().map(Pick::from))
                }
                Policy::Random(rng) => Some(random_pick(rng, &self.sizing_actions)),
                Policy::Oracle(oracle) => Some(self.oracle_pick(oracle, &scenarios[i]).1),
            };
            if let Some(pick) = pick {
                open += 1;
                sizings[i] = Some((pick, exposure));
            }
        }

        let mut cycles = Vec::with_capacity(n);
        for &i in round.close_order.iter().filter(|i| **i < n) {
            let (Some(meta), Some((sizing, exposure))) = (metas[i].take(), sizings[i].take())
            else {
                continue;
            };
            let s = &scenarios[i];
            let result = s.outcome(meta.action, sizing.action);
            let leverage = SizingAction::from_index(sizing.action).map_or(0, |a| a.leverage);
            let pnl_usd = self.base_margin * result.pnl_pct / 100.0;
            // The engine reports the rewards it learned from; for the policies without an engine
            // the desk computes what the engine's formulas would give.
            let (updates, meta_reward, sizing_reward) = match policy {
                Policy::Engine(engine) => {
                    let trace = format!("sim-{round_no}-{i}-close");
                    let payload =
                        events::close(names[i], s, &times[i], &result, pnl_usd, leverage, &trace);
                    let kind = EventKind::PositionClosed;
                    let Some((_, updates)) = self.send(engine, kind, &payload, times[i].close)
                    else {
                        continue;
                    };
                    let reward_of = |agent| {
                        updates
                            .iter()
                            .find(|u| u.agent == agent)
                            .map_or(0.0, |u| u.reward)
                    };
                    (
                        updates.iter().filter(|u| u.applied).count() as u64,
                        reward_of(AgentKind::MetaStrategy),
                        reward_of(AgentKind::PositionSizing),
                    )
                }
                Policy::Random(_) | Policy::Oracle(_) => {
                    let (meta, sizing) = self.rewards(s, &result, leverage, exposure);
                    (0, meta, sizing)
                }
            };
            self.equity += pnl_usd;
            cycles.push(Cycle {
                regime: s.regime,
                level: VolatilityLevel::of(s.volatility),
                meta,
                sizing,
                result,
                meta_reward,
                sizing_reward,
                updates,
            });
        }
        cycles
    }

    /// The oracle's meta and sizing picks for a scenario, among the actions the engine may
    /// choose.
    fn oracle_pick(&self, oracle: &Oracle, s: &Scenario) -> (Pick, Pick) {
        let (meta, sizing) = oracle.choose(
            s.regime,
            s.volatility,
            &self.meta_actions,
            &self.sizing_actions,
        );
        let pick = |action| Pick {
            action,
            explored: false,
            state_key: String::new(),
        };
        (pick(meta), pick(sizing))
    }

    /// The rewards the engine's formulas give for this close, for a policy played without an
    /// engine (random, oracle): the formulas on the inputs the engine would see.
    fn rewards(
        &mut self,
        s: &Scenario,
        result: &TradeResult,
        leverage: u32,
        exposure: f64,
    ) -> (f64, f64) {
        self.pnl_window.record(result.pnl_pct);
        let kept = &s.prices[s.prices.len().saturating_sub(self.price_history_len)..];
        let meta = self.weights.meta_reward(&MetaOutcome {
            pnl_pct: result.pnl_pct,
            max_drawdown_pct: result.max_drawdown_pct,
            sharpe: sharpe_signal(self.pnl_window.values()),
            regime_at_decision: detect_regime(kept),
            regime_at_close: s.regime,
            confidence: s.confidence,
        });
        let sizing = self.weights.sizing_reward(&SizingOutcome {
            pnl_pct: result.pnl_pct,
            leverage: f64::from(leverage),
            exposure,
            volatility: s.volatility,
        });
        (meta, sizing)
    }
}

/// A uniform draw from `actions` (never empty: action sets are not).
fn random_pick(rng: &mut ChaCha8Rng, actions: &[usize]) -> Pick {
    let drawn = rng.random_range(0..actions.len().max(1));
    Pick {
        action: actions.get(drawn).copied().unwrap_or(0),
        explored: true,
        state_key: String::new(),
    }
}

/// Sums over a window of trades.
#[derive(Debug, Default)]
struct Window {
    trades: usize,
    meta_reward: f64,
    sizing_reward: f64,
    pnl: f64,
    meta_greedy: usize,
    meta_greedy_best: usize,
    sizing_greedy: usize,
    sizing_greedy_best: usize,
}

impl Window {
    fn add(&mut self, c: &Cycle) {
        self.trades += 1;
        self.meta_reward += c.meta_reward;
        self.sizing_reward += c.sizing_reward;
        self.pnl += c.result.pnl_pct;
        if !c.meta.explored {
            self.meta_greedy += 1;
            self.meta_greedy_best += usize::from(is_best_meta(c.meta.action, c.regime));
        }
        if !c.sizing.explored {
            self.sizing_greedy += 1;
            self.sizing_greedy_best += usize::from(is_best_sizing(c.sizing.action, c.level));
        }
    }

    fn point(&self, cycles: usize, engine: &Engine) -> CurvePoint {
        let n = self.trades.max(1) as f64;
        CurvePoint {
            cycles,
            trades: self.trades,
            mean_meta_reward: self.meta_reward / n,
            mean_sizing_reward: self.sizing_reward / n,
            mean_pnl_pct: self.pnl / n,
            meta_greedy_best_share: share(self.meta_greedy_best, self.meta_greedy),
            sizing_greedy_best_share: share(self.sizing_greedy_best, self.sizing_greedy),
            meta_epsilon: engine.state().meta.q().epsilon(),
            sizing_epsilon: engine.state().sizing.q().epsilon(),
        }
    }
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// What training leaves besides the engine.
struct Training {
    curve: Vec<CurvePoint>,
    trades: usize,
    rejected: u64,
    pnl_sum: f64,
    final_equity: f64,
    /// Rounds played; the evaluation's clock starts after them.
    rounds: u64,
    /// Meta state key → (regime, updates).
    meta_visits: BTreeMap<String, (Regime, u64)>,
    /// Sizing state key → (volatility level, updates).
    sizing_visits: BTreeMap<String, (VolatilityLevel, u64)>,
}

fn train(
    market: &Market,
    engine: &mut Engine,
    options: &SimulateOptions,
    progress: &ProgressBar,
) -> Training {
    let mut desk = Desk::new(market, engine, 0);
    let mut stream = market.stream(TRAINING_STREAM);
    let window_len = options.cycles.div_ceil(options.curve_points).max(1);
    let mut training = Training {
        curve: Vec::with_capacity(options.curve_points),
        trades: 0,
        rejected: 0,
        pnl_sum: 0.0,
        final_equity: 0.0,
        rounds: 0,
        meta_visits: BTreeMap::new(),
        sizing_visits: BTreeMap::new(),
    };
    let mut window = Window::default();
    let mut window_played = 0;
    let mut played = 0;
    while played < options.cycles {
        let round = stream.next_round();
        let limit = (options.cycles - played).min(round.scenarios.len());
        let cycles = desk.play(&mut Policy::Engine(engine), &round, limit);
        played += limit;
        window_played += limit;
        progress.inc(limit as u64);
        for c in &cycles {
            window.add(c);
            training.trades += 1;
            training.pnl_sum += c.result.pnl_pct;
            if c.updates >= 1 {
                let entry = training
                    .meta_visits
                    .entry(c.meta.state_key.clone())
                    .or_insert((c.regime, 0));
                entry.1 += 1;
            }
            if c.updates >= 2 {
                let entry = training
                    .sizing_visits
                    .entry(c.sizing.state_key.clone())
                    .or_insert((c.level, 0));
                entry.1 += 1;
            }
        }
        if window_played >= window_len || played == options.cycles {
            training.curve.push(window.point(played, engine));
            window = Window::default();
            window_played = 0;
        }
    }
    training.rejected = desk.rejected;
    training.final_equity = desk.equity;
    training.rounds = desk.round;
    training
}

/// A copy of `engine` that acts greedily and learns nothing: ε = 0 and a constant step α = 0, so its closes
/// still move the trackers its states read (win rate, equity) but leave the Q-tables as they are.
fn frozen(engine: &Engine) -> Engine {
    let mut config = engine.config().clone();
    config.learning.alpha = 0.0;
    config.learning.step_size = StepSize::Constant;
    config.learning.epsilon = 0.0;
    config.learning.epsilon_min = 0.0;
    let mut state = engine.state().clone();
    for agent in [&mut state.meta, &mut state.sizing] {
        let count = agent.q().update_count();
        agent.q_mut().restore_schedule(0.0, count);
    }
    // The state comes from a live engine, so it is consistent; fall back to a fresh engine
    // rather than panic if that ever changes.
    Engine::from_state(config.clone(), state).unwrap_or_else(|_| Engine::new(config))
}

/// Plays `cycles` trades of the evaluation stream with `policy`.
fn play_evaluation(
    market: &Market,
    desk: &mut Desk<'_>,
    mut policy: Policy<'_>,
    cycles: usize,
    progress: &ProgressBar,
) -> PolicyScore {
    let mut stream = market.stream(EVALUATION_STREAM);
    let mut played = 0;
    let mut all = Vec::with_capacity(cycles);
    while played < cycles {
        let round = stream.next_round();
        let limit = (cycles - played).min(round.scenarios.len());
        all.extend(desk.play(&mut policy, &round, limit));
        played += limit;
        progress.inc(limit as u64);
    }
    let n = all.len().max(1) as f64;
    let mean = |f: &dyn Fn(&Cycle) -> f64| all.iter().map(f).sum::<f64>() / n;
    let mut by_regime: BTreeMap<Regime, RegimeScore> = BTreeMap::new();
    for c in &all {
        let r = by_regime.entry(c.regime).or_default();
        r.trades += 1;
        r.mean_pnl_pct += c.result.pnl_pct;
    }
    for r in by_regime.values_mut() {
        r.mean_pnl_pct /= r.trades.max(1) as f64;
    }
    PolicyScore {
        trades: all.len(),
        mean_pnl_pct: mean(&|c| c.result.pnl_pct),
        mean_meta_reward: mean(&|c| c.meta_reward),
        mean_sizing_reward: mean(&|c| c.sizing_reward),
        liquidation_rate: mean(&|c| f64::from(u8::from(c.result.liquidated))),
        best_strategy_share: mean(&|c| f64::from(u8::from(is_best_meta(c.meta.action, c.regime)))),
        best_leverage_share: mean(&|c| {
            f64::from(u8::from(is_best_sizing(c.sizing.action, c.level)))
        }),
        by_regime,
    }
}

/// `learned`'s mean P&L as a share of `oracle`'s, overall and per regime (0 where the oracle's
/// mean is not positive).
fn share_of_oracle(learned: &PolicyScore, oracle: &PolicyScore) -> OracleShare {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    OracleShare {
        overall: ratio(learned.mean_pnl_pct, oracle.mean_pnl_pct),
        by_regime: oracle
            .by_regime
            .iter()
            .map(|(regime, o)| {
                let l = learned
                    .by_regime
                    .get(regime)
                    .map_or(0.0, |l| l.mean_pnl_pct);
                (*regime, ratio(l, o.mean_pnl_pct))
            })
            .collect(),
    }
}

fn evaluate(
    market: &Market,
    engine: &Engine,
    training: &Training,
    options: &SimulateOptions,
    progress: &ProgressBar,
) -> Evaluation {
    let cycles = options.evaluation_cycles;
    let start = training.rounds;
    let mut learned_engine = frozen(engine);
    let mut desk = Desk::new(market, &learned_engine, start);
    let learned = play_evaluation(
        market,
        &mut desk,
        Policy::Engine(&mut learned_engine),
        cycles,
        progress,
    );

    let mut untrained_engine = frozen(&Engine::new(options.engine.clone()));
    let mut desk = Desk::new(market, &untrained_engine, start);
    let untrained = play_evaluation(
        market,
        &mut desk,
        Policy::Engine(&mut untrained_engine),
        cycles,
        progress,
    );

    let rng = ChaCha8Rng::seed_from_u64(options.seed ^ RANDOM_POLICY_SALT);
    let mut desk = Desk::new(market, engine, start);
    let random = play_evaluation(
        market,
        &mut desk,
        Policy::Random(Box::new(rng)),
        cycles,
        progress,
    );

    let oracle_tables = Oracle::new();
    let mut desk = Desk::new(market, engine, start);
    let oracle = play_evaluation(
        market,
        &mut desk,
        Policy::Oracle(&oracle_tables),
        cycles,
        progress,
    );
    let learned_share_of_oracle = share_of_oracle(&learned, &oracle);

    let mut meta_states = StateShare::default();
    let mut meta_states_by_regime: BTreeMap<Regime, StateShare> = BTreeMap::new();
    let meta = &engine.state().meta;
    for (key, (regime, updates)) in &training.meta_visits {
        if *updates >= OFTEN_VISITED_UPDATES {
            let best = is_best_meta(meta.q().greedy(key, meta.allowed()), *regime);
            meta_states.count(best);
            meta_states_by_regime
                .entry(*regime)
                .or_default()
                .count(best);
        }
    }
    let mut sizing_states = StateShare::default();
    let mut sizing_states_by_level: BTreeMap<VolatilityLevel, StateShare> = BTreeMap::new();
    let sizing = &engine.state().sizing;
    for (key, (level, updates)) in &training.sizing_visits {
        if *updates >= OFTEN_VISITED_UPDATES {
            let best = is_best_sizing(sizing.q().greedy(key, sizing.allowed()), *level);
            sizing_states.count(best);
            sizing_states_by_level
                .entry(*level)
                .or_default()
                .count(best);
        }
    }
    Evaluation {
        cycles,
        learned,
        untrained,
        random,
        oracle,
        learned_share_of_oracle,
        often_visited_updates: OFTEN_VISITED_UPDATES,
        meta_states,
        meta_states_by_regime,
        sizing_states,
        sizing_states_by_level,
    }
}

/// The learning curve as a small text table (at most a dozen evenly spaced rows, always the
/// last one). "best strategy" and "best leverage" are the shares of greedy decisions that chose
/// a best action.
pub fn learning_curve_table(report: &SimulationReport) -> String {
    let curve = &report.learning_curve;
    let mut rows: Vec<usize> = if curve.len() <= TABLE_ROWS {
        (0..curve.len()).collect()
    } else {
        let step = curve.len() as f64 / (TABLE_ROWS - 1) as f64;
        (0..TABLE_ROWS - 1)
            .map(|i| (i as f64 * step) as usize)
            .collect()
    };
    if let Some(last) = curve.len().checked_sub(1) {
        if rows.last() != Some(&last) {
            rows.push(last);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>8}  {:>11}  {:>13}  {:>8}  {:>13}  {:>15}  {:>7}",
        "trades",
        "meta reward",
        "sizing reward",
        "pnl %",
        "best strategy",
        "best leverage",
        "epsilon"
    );
    for p in rows.into_iter().filter_map(|i| curve.get(i)) {
        let _ = writeln!(
            out,
            "{:>8}  {:>11.2}  {:>13.2}  {:>8.2}  {:>12.0}%  {:>14.0}%  {:>7.3}",
            p.cycles,
            p.mean_meta_reward,
            p.mean_sizing_reward,
            p.mean_pnl_pct,
            100.0 * p.meta_greedy_best_share,
            100.0 * p.sizing_greedy_best_share,
            p.meta_epsilon,
        );
    }
    out
}

/// The evaluation in a few lines of text.
pub fn summary(report: &SimulationReport) -> String {
    let e = &report.evaluation;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "evaluation: {} trades per policy on the same market (seed {})",
        e.cycles, report.seed
    );
    let _ = writeln!(
        out,
        "{:>10}  {:>8}  {:>11}  {:>13}  {:>13}  {:>13}  {:>11}",
        "policy",
        "pnl %",
        "meta reward",
        "sizing reward",
        "best strategy",
        "best leverage",
        "liquidated"
    );
    for (name, s) in [
        ("oracle", &e.oracle),
        ("learned", &e.learned),
        ("untrained", &e.untrained),
        ("random", &e.random),
    ] {
        let _ = writeln!(
            out,
            "{:>10}  {:>8.2}  {:>11.2}  {:>13.2}  {:>12.0}%  {:>12.0}%  {:>10.1}%",
            name,
            s.mean_pnl_pct,
            s.mean_meta_reward,
            s.mean_sizing_reward,
            100.0 * s.best_strategy_share,
            100.0 * s.best_leverage_share,
            100.0 * s.liquidation_rate,
        );
    }
    let _ = writeln!(
        out,
        "learned pnl as a share of the oracle's: {:.1}% overall",
        100.0 * e.learned_share_of_oracle.overall
    );
    let _ = writeln!(
        out,
        "  {:<15} {:>7}  {:>12}  {:>12}  {:>10}  {:>8}",
        "regime", "trades", "oracle pnl %", "learned pnl %", "random pnl %", "share"
    );
    for (regime, o) in &e.oracle.by_regime {
        let pnl = |s: &PolicyScore| s.by_regime.get(regime).map_or(0.0, |r| r.mean_pnl_pct);
        let share = e.learned_share_of_oracle.by_regime.get(regime).copied();
        let _ = writeln!(
            out,
            "  {:<15} {:>7}  {:>12.2}  {:>13.2}  {:>12.2}  {:>7.1}%",
            regime.as_str(),
            o.trades,
            o.mean_pnl_pct,
            pnl(&e.learned),
            pnl(&e.random),
            100.0 * share.unwrap_or(0.0),
        );
    }
    let _ = writeln!(
        out,
        "meta states with >= {} updates whose greedy strategy is the regime's best: {}/{} ({:.0}%)",
        e.often_visited_updates,
        e.meta_states.best,
        e.meta_states.states,
        100.0 * e.meta_states.share
    );
    for (regime, s) in &e.meta_states_by_regime {
        let _ = writeln!(out, "  {:<15} {}/{}", regime.as_str(), s.best, s.states);
    }
    let _ = writeln!(
        out,
        "sizing states with >= {} updates whose greedy leverage is a best one: {}/{} ({:.0}%)",
        e.often_visited_updates,
        e.sizing_states.best,
        e.sizing_states.states,
        100.0 * e.sizing_states.share
    );
    for (level, s) in &e.sizing_states_by_level {
        let _ = writeln!(out, "  {:<15} {}/{}", level.as_str(), s.best, s.states);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rl_v2_core::domain::profile::LearningProfile;

    fn small(seed: u64) -> SimulateOptions {
        SimulateOptions {
            seed,
            cycles: 1_600,
            evaluation_cycles: 200,
            curve_points: 8,
            ..SimulateOptions::default()
        }
    }

    #[test]
    fn same_seed_gives_an_identical_report() {
        let a = run(&small(11)).unwrap();
        let b = run(&small(11)).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        let c = run(&small(12)).unwrap();
        assert_ne!(a.learning_curve, c.learning_curve);
    }

    #[test]
    fn report_covers_every_trade_and_window() {
        let options = small(3);
        let r = run(&options).unwrap();
        assert_eq!(r.final_figures.trades, options.cycles);
        assert_eq!(r.final_figures.rejected_events, 0);
        assert_eq!(r.learning_curve.len(), options.curve_points);
        assert_eq!(r.learning_curve.last().unwrap().cycles, options.cycles);
        let windowed: usize = r.learning_curve.iter().map(|p| p.trades).sum();
        assert_eq!(windowed, options.cycles);
        // Each trade updates both agents once.
        assert_eq!(r.final_figures.updates, 2 * options.cycles as u64);
        for score in [
            &r.evaluation.learned,
            &r.evaluation.untrained,
            &r.evaluation.random,
        ] {
            assert_eq!(score.trades, options.evaluation_cycles);
        }
        assert_eq!(r.symbols.len(), DEFAULT_SYMBOLS.len());
    }

    /// With one symbol and a fresh engine, the first close updates two empty rows, so each
    /// learned Q-value is exactly α × the reward the simulator computed under the seed profile,
    /// and the reward itself under the tuned one (a first step of 1/1, no bootstrap).
    #[test]
    fn the_simulator_reports_the_rewards_the_engine_learns_from() {
        for (seed, profile) in (0..12).zip(LearningProfile::ALL.iter().cycle()) {
            let options = SimulateOptions {
                seed,
                symbols: vec!["BTCUSDT".into()],
                engine: EngineConfig::with_profile(*profile),
                ..SimulateOptions::default()
            };
            let market = Market::new(seed, &options.symbols);
            let mut engine = Engine::new(options.engine.clone());
            let mut desk = Desk::new(&market, &engine, 0);
            let round = market.stream(TRAINING_STREAM).next_round();
            let cycles = desk.play(&mut Policy::Engine(&mut engine), &round, 1);
            assert_eq!(cycles.len(), 1);
            let c = &cycles[0];
            assert_eq!(c.updates, 2);
            let alpha = match profile {
                LearningProfile::Seed => options.engine.learning.alpha,
                LearningProfile::Tuned => 1.0,
            };
            let meta_q = engine.state().meta.q().q(&c.meta.state_key, c.meta.action);
            let sizing_q = engine
                .state()
                .sizing
                .q()
                .q(&c.sizing.state_key, c.sizing.action);
            assert_eq!(meta_q, alpha * c.meta_reward, "seed {seed}");
            assert_eq!(sizing_q, alpha * c.sizing_reward, "seed {seed}");
            assert!(c.meta.state_key.starts_with(c.regime.as_str()));
        }
    }

    #[test]
    fn the_evaluated_copy_acts_greedily_and_learns_nothing() {
        let options = small(5);
        let market = Market::new(options.seed, &options.symbols);
        let mut engine = Engine::new(options.engine.clone());
        let progress = ProgressBar::hidden();
        let training = train(&market, &mut engine, &options, &progress);
        let mut copy = frozen(&engine);
        let mut desk = Desk::new(&market, &copy, training.rounds);
        let score = play_evaluation(
            &market,
            &mut desk,
            Policy::Engine(&mut copy),
            400,
            &progress,
        );
        assert_eq!(score.trades, 400);
        // States first seen during the evaluation get a row of zeros, the value of an unseen
        // state; every value is what the trained table says.
        for (copied, trained) in [
            (copy.state().meta.q(), engine.state().meta.q()),
            (copy.state().sizing.q(), engine.state().sizing.q()),
        ] {
            for (key, row) in trained.table() {
                assert_eq!(copied.table().get(key), Some(row));
            }
            for (key, row) in copied.table() {
                for (a, q) in row.iter().enumerate() {
                    assert_eq!(*q, trained.q(key, a), "{key} {a}");
                }
            }
        }
        assert_eq!(copy.state().meta.q().epsilon(), 0.0);
        assert!(copy.last_applied_seq() > engine.last_applied_seq());
    }

    #[test]
    fn the_random_policy_draws_only_actions_the_engine_may_choose() {
        let config = EngineConfig {
            max_leverage: 10,
            ..EngineConfig::default()
        };
        let market = Market::new(1, &[String::from("BTCUSDT"), String::from("ETHUSDT")]);
        let engine = Engine::new(config);
        let mut desk = Desk::new(&market, &engine, 0);
        let mut policy = Policy::Random(Box::new(ChaCha8Rng::seed_from_u64(1)));
        let mut stream = market.stream(EVALUATION_STREAM);
        let mut leverages = std::collections::BTreeSet::new();
        for _ in 0..200 {
            for c in desk.play(&mut policy, &stream.next_round(), 2) {
                leverages.insert(SizingAction::from_index(c.sizing.action).unwrap().leverage);
                assert_eq!(c.updates, 0);
            }
        }
        assert_eq!(leverages.into_iter().collect::<Vec<_>>(), vec![5, 10]);
    }

    #[test]
    fn bad_options_are_refused_with_the_option_named() {
        let refused = |o: SimulateOptions| match run(&o) {
            Err(SimulateError::InvalidOptions(msg)) => msg,
            other => panic!("{other:?}"),
        };
        let base = small(1);
        assert!(refused(SimulateOptions {
            cycles: 0,
            ..base.clone()
        })
        .contains("cycles"));
        assert!(refused(SimulateOptions {
            evaluation_cycles: 0,
            ..base.clone()
        })
        .contains("evaluation_cycles"));
        assert!(refused(SimulateOptions {
            curve_points: 0,
            ..base.clone()
        })
        .contains("curve_points"));
        assert!(refused(SimulateOptions {
            symbols: vec![],
            ..base.clone()
        })
        .contains("symbols"));
        assert!(refused(SimulateOptions {
            symbols: vec!["BTCUSDT".into(), "btcusdt".into()],
            ..base.clone()
        })
        .contains("twice"));
        assert!(refused(SimulateOptions {
            symbols: vec!["BTC USDT".into()],
            ..base.clone()
        })
        .contains("not a symbol"));
        let mut engine = EngineConfig::default();
        engine.learning.alpha = f64::NAN;
        assert!(refused(SimulateOptions { engine, ..base }).contains("engine: learning.alpha"));
    }

    #[test]
    fn options_deserialise_with_defaults_and_refuse_unknown_keys() {
        let o: SimulateOptions = serde_json::from_str(r#"{"seed": 3, "cycles": 10}"#).unwrap();
        assert_eq!((o.seed, o.cycles), (3, 10));
        assert_eq!(o.symbols.len(), DEFAULT_SYMBOLS.len());
        assert!(serde_json::from_str::<SimulateOptions>(r#"{"cycels": 10}"#).is_err());
    }

    #[test]
    fn text_table_and_summary_show_the_curve_and_the_evaluation() {
        let r = run(&SimulateOptions {
            curve_points: 30,
            ..small(2)
        })
        .unwrap();
        let table = learning_curve_table(&r);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("meta reward"));
        assert_eq!(lines.len(), 1 + TABLE_ROWS);
        assert!(lines.last().unwrap().trim_start().starts_with("1600"));
        let text = summary(&r);
        for word in [
            "learned",
            "untrained",
            "random",
            "meta states",
            "sizing states",
        ] {
            assert!(text.contains(word), "{word}");
        }
    }

    #[test]
    fn the_chart_is_an_svg_and_a_bad_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curve.svg");
        let r = run(&SimulateOptions {
            chart: Some(path.clone()),
            ..small(4)
        })
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Rolling mean reward"));
        assert!(svg.contains("polyline"));
        let missing = dir.path().join("no-such-dir").join("curve.svg");
        match write_chart(&r, &missing) {
            Err(SimulateError::Chart { path, .. }) => assert_eq!(path, missing),
            other => panic!("{other:?}"),
        }
    }
}
