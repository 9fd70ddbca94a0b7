//! The engine: a deterministic state machine that applies events and holds all learned state.
//!
//! [`Engine::apply`] takes an event with its sequence number and returns the decisions it made.
//! It does no I/O and reads no clock: time is the event's own, and exploration randomness comes
//! from `(seed, seq)`. So the same checkpoint and the same ordered events always give the same
//! decisions and byte-identical checkpoints, whether the events come from NATS, JetStream, a
//! replay file or the simulator.
//!
//! Decisions are linked to outcomes by symbol (the stack holds at most one open position per
//! symbol): a prediction makes the symbol's *pending* meta decision, a trade opens the symbol's
//! *position* binding that pending decision and holding a new sizing decision, and a close
//! rewards the position's decisions (or, with no position, the pending meta decision).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::decision::Decision;
use crate::domain::actions::{SizingAction, LEVERAGES, META_ACTIONS};
use crate::domain::agent::{Agent, AgentKind, AgentStats};
use crate::domain::market::{
    detect_regime, market_pressure, volatility, EquityCurve, PnlWindow, Regime, WinRateTracker,
    DEFAULT_VOLATILITY,
};
use crate::domain::profile::LearningProfile;
use crate::domain::qlearning::{decision_rng, ActionSet, Hyperparameters};
use crate::domain::reward::{sharpe_signal, MetaOutcome, RewardWeights, SizingOutcome};
use crate::domain::state::{Discretizer, MetaState, SizingState};
use crate::event::{decode, Close, DecodeError, Event, EventBody, EventKind, Prediction, Trade};

/// Version of the checkpoint format written by this build.
pub const FORMAT_VERSION: u32 = 1;
/// Applied events between two sweeps for expired pending decisions and positions.
const EXPIRY_SWEEP_EVERY: u64 = 1024;

/// Settings of the engine: everything that shapes learning but is not learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Learning rate, discount, ε schedule, step sizes and initial values (both agents).
    pub learning: Hyperparameters,
    /// Whether a close ends its decision's episode: the update targets the reward alone rather
    /// than bootstrapping from the state at close (each trade is an independent one-step
    /// decision).
    pub close_ends_episode: bool,
    /// Seed of the exploration randomness.
    pub seed: u64,
    /// Weights of the reward formulas.
    pub rewards: RewardWeights,
    /// How states become Q-table keys.
    pub discretizer: Discretizer,
    /// Highest leverage the sizing agent may choose.
    pub max_leverage: u32,
    /// Seconds after which a pending decision or open position expires without an update.
    pub reward_window_secs: f64,
    /// Starting equity of the equity curve when closes carry no `account_balance`.
    pub initial_balance: f64,
    /// Prices kept per symbol.
    pub price_history_len: usize,
}

impl Default for EngineConfig {
    /// The product's defaults: the [`LearningProfile::default`] learning profile.
    fn default() -> Self {
        Self::with_profile(LearningProfile::default())
    }
}

impl EngineConfig {
    /// The defaults with the learning settings of `profile`.
    pub fn with_profile(profile: LearningProfile) -> Self {
        let learning = profile.learning();
        Self {
            learning: learning.hyperparameters,
            close_ends_episode: learning.close_ends_episode,
            seed: 42,
            rewards: RewardWeights::default(),
            discretizer: Discretizer::Buckets(learning.edges),
            max_leverage: 50,
            reward_window_secs: 7.0 * 24.0 * 3600.0,
            initial_balance: 10_000.0,
            price_history_len: 100,
        }
    }
}

impl EngineConfig {
    /// Checks every value; the error names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        self.learning.validate()?;
        if let Discretizer::Buckets(edges) = &self.discretizer {
            edges.validate()?;
        }
        if self.max_leverage < LEVERAGES[0] {
            return Err(format!(
                "max_leverage must be at least {}, got {}",
                LEVERAGES[0], self.max_leverage
            ));
        }
        if !(self.reward_window_secs.is_finite() && self.reward_window_secs > 0.0) {
            return Err("reward_window_secs must be a positive number".into());
        }
        if !(self.initial_balance.is_finite() && self.initial_balance > 0.0) {
            return Err("initial_balance must be a positive number".into());
        }
        if self.price_history_len < 10 {
            return Err(
                "price_history_len must be at least 10 (the regime needs 10 prices)".into(),
            );
        }
        Ok(())
    }

    fn sizing_actions(&self) -> ActionSet {
        ActionSet::from_indices(SizingAction::allowed_up_to(self.max_leverage))
            .unwrap_or_else(|| ActionSet::all(1))
    }
}

/// A meta decision waiting for its reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingMeta {
    /// Id of the decision.
    pub decision_id: String,
    /// State key it was made in.
    pub state_key: String,
    /// Action chosen.
    pub action: usize,
    /// Confidence of the signal.
    pub confidence: f64,
    /// Regime when it was made.
    pub regime: Regime,
    /// Event time it was made at.
    pub time: f64,
}

/// A sizing decision waiting for its reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingSizing {
    /// Id of the decision.
    pub decision_id: String,
    /// State key it was made in.
    pub state_key: String,
    /// Action chosen.
    pub action: usize,
    /// Leverage of the chosen action.
    pub leverage: u32,
    /// Confidence of the trade's signal.
    pub confidence: f64,
    /// Exposure used in the state.
    pub state_exposure: f64,
    /// Exposure used in the risk penalty.
    pub reward_exposure: f64,
    /// Event time it was made at.
    pub time: f64,
}

/// An open position: the meta decision it was opened on (if any) and its sizing decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The pending meta decision the trade bound.
    pub meta: Option<PendingMeta>,
    /// The latest sizing decision for the position.
    pub sizing: PendingSizing,
}

/// The latest prices seen for a symbol, bounded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MarketContext {
    prices: Vec<f64>,
}

/// What the state builders read off a symbol's market.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MarketView {
    /// Regime.
    pub regime: Regime,
    /// Volatility.
    pub volatility: f64,
    /// Market pressure.
    pub pressure: f64,
}

impl MarketContext {
    fn view(&self) -> MarketView {
        MarketView {
            regime: detect_regime(&self.prices),
            volatility: volatility(&self.prices),
            pressure: market_pressure(&self.prices),
        }
    }
}

impl MarketView {
    const EMPTY: MarketView = MarketView {
        regime: Regime::Unknown,
        volatility: DEFAULT_VOLATILITY,
        pressure: 0.0,
    };
}

/// What the engine counted. Part of the checkpoint, so a replay reproduces it exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Applied events by kind.
    pub events: BTreeMap<EventKind, u64>,
    /// Rejected events by reason code.
    pub rejects: BTreeMap<String, u64>,
    /// Decisions by agent.
    pub decisions: BTreeMap<AgentKind, u64>,
    /// Q-updates applied (both agents).
    pub updates: u64,
    /// Q-updates refused because a value was not finite.
    pub refused_updates: u64,
    /// Pending meta decisions replaced by a newer signal before any trade used them.
    pub superseded_pending: u64,
    /// Sizing decisions replaced by a second trade on an open position.
    pub replaced_sizing: u64,
    /// Pending meta decisions that expired unrewarded.
    pub expired_pending: u64,
    /// Open positions that expired unrewarded.
    pub expired_positions: u64,
    /// Closes that found no decision to reward.
    pub closes_without_decision: u64,
}

/// Per-symbol state: a persistent ordered map of shared values, so a checkpoint snapshot is O(1)
/// and the first change to a value after a snapshot copies only that value.
pub type BySymbol<T> = imbl::OrdMap<String, Arc<T>>;

/// Everything the engine has learned and is waiting on: the body of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    /// Checkpoint format version.
    pub format_version: u32,
    /// Sequence number of the last event applied or rejected.
    pub last_applied_seq: u64,
    /// The meta-strategy agent.
    pub meta: Agent,
    /// The position-sizing agent.
    pub sizing: Agent,
    /// Pending meta decisions by symbol.
    pub pending: BySymbol<PendingMeta>,
    /// Open positions by symbol.
    pub positions: BySymbol<Position>,
    /// Latest prices by symbol.
    pub market: BySymbol<MarketContext>,
    /// Account win rate.
    pub winrate: WinRateTracker,
    /// Account P&L window, for the Sharpe signal.
    pub pnl_window: PnlWindow,
    /// Account equity curve.
    pub equity: EquityCurve,
    /// Counters.
    pub counters: Counters,
}

/// Statistics of the engine: the seed's `get_stats()` shape plus counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Meta-strategy agent.
    pub meta_agent_stats: AgentStats,
    /// Position-sizing agent.
    pub sizing_agent_stats: AgentStats,
    /// What the engine counted.
    pub counters: Counters,
    /// Pending meta decisions.
    pub pending_decisions: usize,
    /// Open positions.
    pub open_positions: usize,
    /// Sequence number of the last event applied or rejected.
    pub last_applied_seq: u64,
}

/// Why a checkpoint could not become an engine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    /// The checkpoint was written by an incompatible format.
    #[error(
        "checkpoint format version {found} is not supported (this build reads {FORMAT_VERSION})"
    )]
    Version {
        /// Version found.
        found: u32,
    },
    /// The checkpoint holds a value the engine never stores.
    #[error("checkpoint is inconsistent: {0}")]
    Inconsistent(String),
}

/// What one raw message did to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The event was applied.
    Applied {
        /// Upper-cased symbol of the event.
        symbol: String,
        /// Decisions it made.
        decisions: Vec<Decision>,
        /// Q-updates it caused.
        updates: u64,
    },
    /// The payload did not decode; the reject is counted under its reason code.
    Rejected(DecodeError),
    /// The sequence number was applied already; nothing changed.
    AlreadyApplied,
}

/// The engine.
#[derive(Debug, Clone)]
pub struct Engine {
    config: EngineConfig,
    state: EngineState,
}

impl Engine {
    /// A fresh engine.
    pub fn new(config: EngineConfig) -> Self {
        let meta = Agent::new(
            AgentKind::MetaStrategy,
            config.learning,
            ActionSet::all(META_ACTIONS),
        );
        let sizing = Agent::new(
            AgentKind::PositionSizing,
            config.learning,
            config.sizing_actions(),
        );
        let state = EngineState {
            format_version: FORMAT_VERSION,
            last_applied_seq: 0,
            meta,
            sizing,
            pending: BySymbol::new(),
            positions: BySymbol::new(),
            market: BySymbol::new(),
            winrate: WinRateTracker::default(),
            pnl_window: PnlWindow::default(),
            equity: EquityCurve::new(config.initial_balance),
            counters: Counters::default(),
        };
        Self { config, state }
    }

    /// An engine continuing from a checkpoint's state.
    pub fn from_state(config: EngineConfig, mut state: EngineState) -> Result<Self, StateError> {
        if state.format_version != FORMAT_VERSION {
            return Err(StateError::Version {
                found: state.format_version,
            });
        }
        for agent in [&state.meta, &state.sizing] {
            let q = agent.q();
            if q.n_actions() != agent.kind().action_space_size() {
                return Err(StateError::Inconsistent(format!(
                    "{} table has {} actions, expected {}",
                    agent.kind().as_str(),
                    q.n_actions(),
                    agent.kind().action_space_size()
                )));
            }
            if q.table().values().any(|row| row.len() != q.n_actions()) || !q.all_finite() {
                return Err(StateError::Inconsistent(format!(
                    "{} table has a malformed row or a non-finite value",
                    agent.kind().as_str()
                )));
            }
        }
        state
            .meta
            .configure(config.learning, ActionSet::all(META_ACTIONS));
        state
            .sizing
            .configure(config.learning, config.sizing_actions());
        Ok(Self { config, state })
    }

    /// The settings in use.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The state, as a checkpoint stores it.
    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// The state, mutably (for importing Python-format tables).
    pub fn state_mut(&mut self) -> &mut EngineState {
        &mut self.state
    }

    /// Sequence number of the last event applied or rejected.
    pub fn last_applied_seq(&self) -> u64 {
        self.state.last_applied_seq
    }

    /// Moves `last_applied_seq` back to `seq`, keeping everything learned: for a stream that was
    /// recreated or lost its tail, whose sequence numbers start over below the checkpoint's.
    pub fn rebase(&mut self, seq: u64) {
        self.state.last_applied_seq = self.state.last_applied_seq.min(seq);
    }

    /// Q-updates applied so far (both agents).
    pub fn updates(&self) -> u64 {
        self.state.counters.updates
    }

    /// Statistics in the seed's shape, plus counters.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            meta_agent_stats: self.state.meta.stats(),
            sizing_agent_stats: self.state.sizing.stats(),
            counters: self.state.counters.clone(),
            pending_decisions: self.state.pending.len(),
            open_positions: self.state.positions.len(),
            last_applied_seq: self.state.last_applied_seq,
        }
    }

    /// Decodes and applies one raw message at `seq`: the one path from bytes to learned state,
    /// shared by the service, `replay` and `simulate`. `received_at` is the transport's time,
    /// used when the event carries no timestamp.
    pub fn ingest(
        &mut self,
        seq: u64,
        kind: EventKind,
        payload: &[u8],
        received_at: f64,
        max_payload_bytes: usize,
    ) -> Outcome {
        if seq <= self.state.last_applied_seq {
            return Outcome::AlreadyApplied;
        }
        match decode(kind, payload, max_payload_bytes, received_at) {
            Ok(event) => {
                let before = self.updates();
                let decisions = self.apply(seq, &event);
                Outcome::Applied {
                    symbol: event.symbol,
                    decisions,
                    updates: self.updates() - before,
                }
            }
            Err(error) => {
                self.reject(seq, error.code());
                Outcome::Rejected(error)
            }
        }
    }

    /// Records that the message at `seq` was rejected with reason `code`. Advances
    /// `last_applied_seq` so a durable consumer does not see it again.
    pub fn reject(&mut self, seq: u64, code: &str) {
        if seq <= self.state.last_applied_seq {
            return;
        }
        *self
            .state
            .counters
            .rejects
            .entry(code.to_string())
            .or_default() += 1;
        self.state.last_applied_seq = seq;
    }

    /// Applies the event at `seq` (counted from 1) and returns the decisions it made. An event
    /// whose `seq` is not past [`Self::last_applied_seq`] was applied already and changes
    /// nothing.
    pub fn apply(&mut self, seq: u64, event: &Event) -> Vec<Decision> {
        if seq <= self.state.last_applied_seq {
            return Vec::new();
        }
        self.state.last_applied_seq = seq;
        let applied = {
            let n = self.state.counters.events.entry(event.kind()).or_default();
            *n += 1;
            self.state.counters.events.values().sum::<u64>()
        };
        if applied % EXPIRY_SWEEP_EVERY == 0 {
            self.sweep_expired(event.time);
        }
        let decisions = match &event.body {
            EventBody::Prediction(p) => vec![self.on_prediction(seq, event, p)],
            EventBody::Trade(t) => vec![self.on_trade(seq, event, t)],
            EventBody::Close(c) => {
                self.on_close(event, c);
                Vec::new()
            }
        };
        for d in &decisions {
            *self.state.counters.decisions.entry(d.agent).or_default() += 1;
        }
        decisions
    }

    fn market_view(&self, symbol: &str) -> MarketView {
        self.state
            .market
            .get(symbol)
            .map_or(MarketView::EMPTY, |m| m.view())
    }

    fn meta_state(&self, market: MarketView, confidence: f64) -> MetaState {
        MetaState {
            regime: market.regime,
            volatility: market.volatility,
            market_pressure: market.pressure,
            confidence,
            previous_winrate: self.state.winrate.win_rate(),
            account_health: self.state.equity.account_health(),
        }
    }

    fn sizing_state(&self, confidence: f64, exposure: f64, vol: f64) -> SizingState {
        SizingState {
            signal_confidence: confidence,
            portfolio_exposure: exposure,
            recent_winrate: self.state.winrate.win_rate(),
            volatility: vol,
            equity_curve_slope: self.state.equity.slope(),
        }
    }

    fn expired(&self, decided_at: f64, now: f64) -> bool {
        now - decided_at > self.config.reward_window_secs
    }

    fn on_prediction(&mut self, seq: u64, event: &Event, p: &Prediction) -> Decision {
        if let Some(prices) = &p.price_history {
            let keep = self.config.price_history_len;
            let tail = &prices[prices.len().saturating_sub(keep)..];
            let context = Arc::new(MarketContext {
                prices: tail.to_vec(),
            });
            match self.state.market.get_mut(&event.symbol) {
                Some(slot) => *slot = context,
                None => {
                    self.state.market.insert(event.symbol.clone(), context);
                }
            }
        }
        let market = self.market_view(&event.symbol);
        let key = self
            .config
            .discretizer
            .meta_key(&self.meta_state(market, p.confidence));
        let mut rng = decision_rng(self.config.seed, 0, seq);
        let selection = self.state.meta.select(&key, &mut rng);
        let decision = Decision::new(
            AgentKind::MetaStrategy,
            seq,
            &event.symbol,
            event.trace_id.as_deref(),
            key.clone(),
            &selection,
            event.time,
        );
        let pending = PendingMeta {
            decision_id: decision.decision_id.clone(),
            state_key: key,
            action: selection.action,
            confidence: p.confidence,
            regime: market.regime,
            time: event.time,
        };
        match self.state.pending.get_mut(&event.symbol) {
            Some(slot) => {
                *slot = Arc::new(pending);
                self.state.counters.superseded_pending += 1;
            }
            None => {
                self.state
                    .pending
                    .insert(event.symbol.clone(), Arc::new(pending));
            }
        }
        decision
    }

    fn on_trade(&mut self, seq: u64, event: &Event, t: &Trade) -> Decision {
        let vol = self.market_view(&event.symbol).volatility;
        let exposure = t.state_exposure();
        let key =
            self.config
                .discretizer
                .sizing_key(&self.sizing_state(t.confidence, exposure, vol));
        let mut rng = decision_rng(self.config.seed, 1, seq);
        let selection = self.state.sizing.select(&key, &mut rng);
        let decision = Decision::new(
            AgentKind::PositionSizing,
            seq,
            &event.symbol,
            event.trace_id.as_deref(),
            key.clone(),
            &selection,
            event.time,
        );
        let sizing = PendingSizing {
            decision_id: decision.decision_id.clone(),
            state_key: key,
            action: selection.action,
            leverage: SizingAction::from_index(selection.action).map_or(0, |a| a.leverage),
            confidence: t.confidence,
            state_exposure: exposure,
            reward_exposure: t.reward_exposure(),
            time: event.time,
        };
        let window = self.config.reward_window_secs;
        if let Some(position) = self.state.positions.get_mut(&event.symbol) {
            if event.time - position.sizing.time <= window {
                // A second trade on an open position: new sizing, same meta decision.
                Arc::make_mut(position).sizing = sizing;
                self.state.counters.replaced_sizing += 1;
                return decision;
            }
            self.state.counters.expired_positions += 1;
            let meta = self.take_pending(&event.symbol, event.time);
            if let Some(position) = self.state.positions.get_mut(&event.symbol) {
                *position = Arc::new(Position { meta, sizing });
            }
            return decision;
        }
        let meta = self.take_pending(&event.symbol, event.time);
        self.state
            .positions
            .insert(event.symbol.clone(), Arc::new(Position { meta, sizing }));
        decision
    }

    /// Removes and returns the symbol's pending meta decision unless it has expired.
    fn take_pending(&mut self, symbol: &str, now: f64) -> Option<PendingMeta> {
        let pending = self.state.pending.remove(symbol)?;
        if self.expired(pending.time, now) {
            self.state.counters.expired_pending += 1;
            None
        } else {
            Some(Arc::unwrap_or_clone(pending))
        }
    }

    fn on_close(&mut self, event: &Event, c: &Close) {
        let s = &mut self.state;
        s.winrate.record(c.pnl_pct);
        s.pnl_window.record(c.pnl_pct);
        s.equity.record(c.account_balance, c.pnl_usd);

        let computed = self.market_view(&event.symbol);
        let market = MarketView {
            regime: c.regime.unwrap_or(computed.regime),
            volatility: c.volatility.unwrap_or(computed.volatility),
            pressure: computed.pressure,
        };
        let (meta, sizing) = match self.state.positions.remove(&event.symbol) {
            Some(p) if !self.expired(p.sizing.time, event.time) => {
                let p = Arc::unwrap_or_clone(p);
                (p.meta, Some(p.sizing))
            }
            expired => {
                if expired.is_some() {
                    self.state.counters.expired_positions += 1;
                }
                (self.take_pending(&event.symbol, event.time), None)
            }
        };
        if meta.is_none() && sizing.is_none() {
            self.state.counters.closes_without_decision += 1;
            return;
        }
        if let Some(m) = meta {
            let outcome = MetaOutcome {
                pnl_pct: c.pnl_pct,
                max_drawdown_pct: c.max_drawdown_pct,
                sharpe: sharpe_signal(self.state.pnl_window.values()),
                regime_at_decision: m.regime,
                regime_at_close: market.regime,
                confidence: m.confidence,
            };
            let reward = self.config.rewards.meta_reward(&outcome);
            let next = self
                .config
                .discretizer
                .meta_key(&self.meta_state(market, m.confidence));
            let next = (!self.config.close_ends_episode).then_some(&next);
            let result = self.state.meta.learn(&m.state_key, m.action, reward, next);
            self.count_update(&m.decision_id, result.is_ok());
        }
        if let Some(z) = sizing {
            let outcome = SizingOutcome {
                pnl_pct: c.pnl_pct,
                leverage: f64::from(z.leverage),
                exposure: z.reward_exposure,
                volatility: market.volatility,
            };
            let reward = self.config.rewards.sizing_reward(&outcome);
            let exposure = c.portfolio_exposure.unwrap_or(z.state_exposure);
            let next = self.config.discretizer.sizing_key(&self.sizing_state(
                z.confidence,
                exposure,
                market.volatility,
            ));
            let next = (!self.config.close_ends_episode).then_some(&next);
            let result = self
                .state
                .sizing
                .learn(&z.state_key, z.action, reward, next);
            self.count_update(&z.decision_id, result.is_ok());
        }
    }

    fn count_update(&mut self, decision_id: &str, applied: bool) {
        if applied {
            self.state.counters.updates += 1;
        } else {
            self.state.counters.refused_updates += 1;
            tracing::warn!(
                decision_id,
                "Q-update refused: non-finite reward or Q-value"
            );
        }
    }

    /// Drops pending decisions and positions older than the reward window.
    fn sweep_expired(&mut self, now: f64) {
        let window = self.config.reward_window_secs;
        let stale: Vec<String> = self
            .state
            .pending
            .iter()
            .filter(|(_, p)| now - p.time > window)
            .map(|(k, _)| k.clone())
            .collect();
        self.state.counters.expired_pending += stale.len() as u64;
        for symbol in stale {
            self.state.pending.remove(&symbol);
        }
        let stale: Vec<String> = self
            .state
            .positions
            .iter()
            .filter(|(_, p)| now - p.sizing.time > window)
            .map(|(k, _)| k.clone())
            .collect();
        self.state.counters.expired_positions += stale.len() as u64;
        for symbol in stale {
            self.state.positions.remove(&symbol);
        }
    }
}
