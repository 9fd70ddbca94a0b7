//! The engine: a deterministic state machine that applies events and holds all learned state.
//!
//! [`Engine::apply`] takes an event with its sequence number and returns the decisions it made.
//! It does no I/O and reads no clock: time is the transport's, passed in with the event
//! ([`Event::received_at`]), and exploration randomness comes from `(seed, seq)`. So the same
//! checkpoint and the same ordered events always give the same decisions and byte-identical
//! checkpoints, whether the events come from NATS, JetStream, a replay file or the simulator.
//!
//! No producer can drag the clock or the learning: an event's own timestamp is only trusted
//! within a skew of the transport's time, reward inputs beyond [`Plausibility`] bounds are
//! rejected, the reward reaching a Q-update is bounded, and every per-symbol map is capped
//! ([`Capacity`]), the oldest entry making room.
//!
//! Decisions are linked to outcomes by symbol (the stack holds at most one open position per
//! symbol): a prediction makes the symbol's *pending* meta decision, a trade opens the symbol's
//! *position* binding that pending decision and holding a new sizing decision, and a close
//! rewards the position's decisions (or, with no position, the pending meta decision).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::audit::Outcome;
use crate::audit::{Logged, RewardParts, Tally, Update};
use crate::capacity::{Capacity, Recency};
use crate::control::{
    ControlBook, ControlConfig, ControlStats, Refusal, RefusalReason, TradingState,
    TradingStateChange,
};
use crate::decision::Decision;
use crate::domain::actions::{SizingAction, LEVERAGES, META_ACTIONS};
use crate::domain::agent::{Agent, AgentKind, AgentStats};
use crate::domain::market::{
    detect_regime, market_pressure, volatility, EquityCurve, PnlWindow, Regime, WinRateTracker,
    DEFAULT_VOLATILITY,
};
use crate::domain::profile::LearningProfile;
use crate::domain::python_compat;
use crate::domain::qlearning::{decision_rng, ActionSet, Hyperparameters, Semantics};
use crate::domain::reward::{sharpe_signal, MetaOutcome, RewardWeights, SizingOutcome};
use crate::domain::state::{Discretizer, MetaState, SizingState};
use crate::event::{decode, Close, Event, EventBody, EventKind, Prediction, Trade};
use crate::invalid::Invalid;
use crate::plausibility::Plausibility;

mod control_hooks;

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
    /// Bounds on reward inputs, on rewards and on event-time skew.
    pub plausibility: Plausibility,
    /// Caps on symbols tracked, pending decisions and open positions.
    pub capacity: Capacity,
    /// Inference only: decisions are made and rewarded (outcomes, trackers, episodes) but the
    /// Q-tables and ε never change.
    #[serde(default)]
    pub frozen: bool,
    /// Start state, `REDUCING`'s rule, the risk gate and the circuit breakers.
    pub control: ControlConfig,
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
            plausibility: Plausibility::default(),
            capacity: Capacity::default(),
            frozen: false,
            control: ControlConfig::default(),
        }
    }
}

impl EngineConfig {
    /// Checks every value; the error names the offending key.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.learning.validate()?;
        if let Discretizer::Buckets(edges) = &self.discretizer {
            edges.validate()?;
        }
        if self.max_leverage < LEVERAGES[0] {
            return Err(Invalid::new(
                None,
                "max_leverage",
                format!(
                    "must be at least {}, got {}",
                    LEVERAGES[0], self.max_leverage
                ),
            ));
        }
        if !(self.reward_window_secs.is_finite() && self.reward_window_secs > 0.0) {
            return Err(Invalid::new(
                None,
                "reward_window_secs",
                "must be a positive number",
            ));
        }
        if !(self.initial_balance.is_finite() && self.initial_balance > 0.0) {
            return Err(Invalid::new(
                None,
                "initial_balance",
                "must be a positive number",
            ));
        }
        if self.price_history_len < 10 {
            return Err(Invalid::new(
                None,
                "price_history_len",
                "must be at least 10 (the regime needs 10 prices)",
            ));
        }
        self.plausibility.validate()?;
        self.capacity.validate()?;
        self.control.validate()
    }

    /// Whether states, rewards and learning follow the Python version (the `python_compat`
    /// discretizer) rather than the design's rules.
    pub fn python_compat(&self) -> bool {
        matches!(self.discretizer, Discretizer::PythonCompat)
    }

    /// The update semantics that go with the discretizer: the Python version's with
    /// `python_compat`, so that an imported table keeps the meaning it had there.
    pub fn semantics(&self) -> Semantics {
        if self.python_compat() {
            Semantics::Python
        } else {
            Semantics::Design
        }
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
    /// How it was drawn (absent in checkpoints written before propensities were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logged: Option<Logged>,
    /// Confidence of the signal.
    pub confidence: f64,
    /// Regime when it was made.
    pub regime: Regime,
    /// Transport time it was made at.
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
    /// How it was drawn (absent in checkpoints written before propensities were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logged: Option<Logged>,
    /// Leverage of the chosen action.
    pub leverage: u32,
    /// Confidence of the trade's signal.
    pub confidence: f64,
    /// Exposure used in the state.
    pub state_exposure: f64,
    /// Exposure used in the risk penalty.
    pub reward_exposure: f64,
    /// Transport time it was made at.
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
    /// Transport time of the latest update (0 in checkpoints from before it was kept).
    #[serde(default)]
    time: f64,
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
    fn view(&self, python_compat: bool) -> MarketView {
        if python_compat {
            return MarketView {
                regime: python_compat::detect_regime(&self.prices),
                volatility: python_compat::volatility(&self.prices),
                pressure: python_compat::market_pressure(&self.prices),
            };
        }
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
    /// Event timestamps further than the allowed skew from the transport's time, clamped.
    #[serde(default)]
    pub timestamps_clamped: u64,
    /// Rewards beyond the plausible bound, clamped before the Q-update.
    #[serde(default)]
    pub rewards_clamped: u64,
    /// Market contexts dropped to stay within `max_symbols`.
    #[serde(default)]
    pub evicted_symbols: u64,
    /// Pending meta decisions dropped unrewarded to stay within `max_pending_decisions`.
    #[serde(default)]
    pub evicted_pending: u64,
    /// Open positions dropped unrewarded to stay within `max_open_positions`.
    #[serde(default)]
    pub evicted_positions: u64,
    /// Decisions the risk gate refused, by reason.
    #[serde(default)]
    pub refusals: BTreeMap<RefusalReason, u64>,
    /// Control commands applied.
    #[serde(default)]
    pub control_commands: u64,
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
    /// Decision-id epoch: starts at 0 and grows whenever the sequence numbers start over (a
    /// stream reset accepted at start-up), so no decision id is ever used for two events.
    #[serde(default)]
    pub epoch: u64,
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
    /// Trading state, breakers and rate-limit figures (`ACTIVE` and nothing recorded in a
    /// checkpoint from before they existed).
    #[serde(default)]
    pub control: ControlBook,
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
    /// Symbols whose market context is kept.
    pub tracked_symbols: usize,
    /// Sequence number of the last event applied or rejected.
    pub last_applied_seq: u64,
    /// Decision-id epoch.
    pub epoch: u64,
    /// The trading state.
    pub trading_state: TradingState,
    /// The latest change of the trading state and the latest command.
    pub control: ControlStats,
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

/// The engine.
#[derive(Debug, Clone)]
pub struct Engine {
    config: EngineConfig,
    state: EngineState,
    ages: Ages,
    /// The Q-updates of the event being applied, handed out in its [`Outcome`].
    journal: Vec<Update>,
    /// The refusals of the event being applied.
    refusals: Vec<Refusal>,
    /// The trading-state changes of the message being applied.
    changes: Vec<TradingStateChange>,
}

/// Which entry of each per-symbol map is oldest: derived from the state, rebuilt on load.
#[derive(Debug, Clone, Default)]
struct Ages {
    pending: Recency,
    positions: Recency,
    market: Recency,
}

impl Ages {
    fn of(state: &EngineState) -> Self {
        Self {
            pending: Recency::of(&state.pending, |p| p.time),
            positions: Recency::of(&state.positions, |p| p.sizing.time),
            market: Recency::of(&state.market, |m| m.time),
        }
    }
}

/// The two clocks of an event being applied.
#[derive(Debug, Clone, Copy)]
struct At {
    /// The transport's time: runs windows and expiry.
    now: f64,
    /// The event's own time, trusted within the skew: what its decisions carry.
    event_time: f64,
}

/// Whether the `n`-th occurrence of something counted gets a log line: the 1st, 2nd, 4th, 8th…,
/// so a flood is visible without flooding the log.
/// The three caps on what the engine keeps per symbol.
#[derive(Debug, Clone, Copy)]
enum Cap {
    Symbols,
    Pending,
    Positions,
}

/// What a close brings to the rewards of its decisions.
#[derive(Clone, Copy)]
struct Closed<'a> {
    seq: u64,
    symbol: &'a str,
    at: At,
    close: &'a Close,
    market: MarketView,
}

/// A decision a close rewards: which agent chose what, where, and how.
struct Decided {
    agent: AgentKind,
    decision_id: String,
    state_key: String,
    action: usize,
    logged: Option<Logged>,
}

fn worth_logging(n: u64) -> bool {
    n.is_power_of_two()
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
        let mut state = EngineState {
            format_version: FORMAT_VERSION,
            last_applied_seq: 0,
            epoch: 0,
            meta,
            sizing,
            pending: BySymbol::new(),
            positions: BySymbol::new(),
            market: BySymbol::new(),
            winrate: WinRateTracker::default(),
            pnl_window: PnlWindow::default(),
            equity: EquityCurve::new(config.initial_balance),
            counters: Counters::default(),
            control: ControlBook::starting(config.control.initial_state),
        };
        for agent in [&mut state.meta, &mut state.sizing] {
            agent.q_mut().set_semantics(config.semantics());
        }
        Self {
            config,
            state,
            ages: Ages::default(),
            journal: Vec::new(),
            refusals: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// An engine continuing from a checkpoint's state.
    pub fn from_state(config: EngineConfig, mut state: EngineState) -> Result<Self, StateError> {
        if state.format_version != FORMAT_VERSION {
            return Err(StateError::Version {
                found: state.format_version,
            });
        }
        if state.last_applied_seq == u64::MAX {
            return Err(StateError::Inconsistent(format!(
                "last_applied_seq = {} leaves no sequence number for the next event",
                state.last_applied_seq
            )));
        }
        for (field, agent) in [("meta", &state.meta), ("sizing", &state.sizing)] {
            let q = agent.q();
            let epsilon = q.epsilon();
            if !(0.0..=1.0).contains(&epsilon) {
                return Err(StateError::Inconsistent(format!(
                    "{field}.q.epsilon = {epsilon} is outside [0, 1]"
                )));
            }
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
                    "{field}.q.table ({}) has a malformed row or a non-finite value",
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
        for agent in [&mut state.meta, &mut state.sizing] {
            agent.q_mut().set_semantics(config.semantics());
        }
        let ages = Ages::of(&state);
        Ok(Self {
            config,
            state,
            ages,
            journal: Vec::new(),
            refusals: Vec::new(),
            changes: Vec::new(),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The state, as a checkpoint stores it.
    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// Sequence number of the last event applied or rejected.
    pub fn last_applied_seq(&self) -> u64 {
        self.state.last_applied_seq
    }

    /// Moves `last_applied_seq` back to `seq`, keeping everything learned: for a stream that was
    /// recreated or lost its tail, whose sequence numbers start over below the checkpoint's.
    /// Sequence numbers will be used a second time, so a new decision-id epoch begins.
    pub fn rebase(&mut self, seq: u64) {
        if seq < self.state.last_applied_seq {
            self.state.last_applied_seq = seq;
            self.state.epoch += 1;
            tracing::info!(
                epoch = self.state.epoch,
                last_applied_seq = seq,
                "sequence numbers start over: new decision-id epoch"
            );
        }
    }

    /// Continues at `seq` in a new decision-id epoch, keeping everything learned: for a switch
    /// to another source of sequence numbers (core mode's own counter to a stream's), whose
    /// numbers may repeat ones already used in decision ids.
    pub fn renumber(&mut self, seq: u64) {
        self.state.last_applied_seq = seq;
        self.begin_epoch("sequence numbers come from a new source");
    }

    /// Starts a new decision-id epoch: decisions from here on carry ids that no earlier
    /// decision had, even at a sequence number used before (core mode after a crash numbers
    /// again from its checkpoint).
    pub fn begin_epoch(&mut self, why: &str) {
        self.state.epoch += 1;
        tracing::info!(epoch = self.state.epoch, why, "new decision-id epoch");
    }

    /// The decision-id epoch.
    pub fn epoch(&self) -> u64 {
        self.state.epoch
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
            tracked_symbols: self.state.market.len(),
            last_applied_seq: self.state.last_applied_seq,
            epoch: self.state.epoch,
            trading_state: self.state.control.state,
            control: ControlStats::from(&self.state.control),
        }
    }

    /// Decodes and applies one raw message at `seq`: the one path from bytes to learned state,
    /// shared by the service, `replay` and `simulate`. `received_at` is the transport's time
    /// (the JetStream message time, or the arrival time in core mode): the engine's clock.
    /// A payload that does not decode, or claims implausible values, is rejected.
    pub fn ingest(
        &mut self,
        seq: u64,
        kind: EventKind,
        payload: &[u8],
        received_at: f64,
        max_payload_bytes: usize,
    ) -> Outcome {
        self.ingest_with(seq, kind, payload, received_at, false, max_payload_bytes)
    }

    /// As [`Self::ingest`], for a message whose transport time is unknown (a recorded log that
    /// did not keep it): the event's own timestamp stands in for it, `fallback` when it has
    /// none. Only for offline use: the event's producer sets the clock.
    pub fn ingest_untimed(
        &mut self,
        seq: u64,
        kind: EventKind,
        payload: &[u8],
        fallback: f64,
        max_payload_bytes: usize,
    ) -> Outcome {
        self.ingest_with(seq, kind, payload, fallback, true, max_payload_bytes)
    }

    fn ingest_with(
        &mut self,
        seq: u64,
        kind: EventKind,
        payload: &[u8],
        received_at: f64,
        event_sets_clock: bool,
        max_payload_bytes: usize,
    ) -> Outcome {
        if seq <= self.state.last_applied_seq {
            return Outcome::AlreadyApplied;
        }
        let admitted = decode(kind, payload, max_payload_bytes, received_at).and_then(|mut e| {
            if event_sets_clock {
                e.received_at = e.time;
            }
            self.config.plausibility.check(&e).map(|()| e)
        });
        match admitted {
            Ok(event) => {
                let before = Tally::reading(&self.state.counters);
                let decisions = self.apply_admitted(seq, &event);
                Outcome::Applied {
                    symbol: event.symbol,
                    decisions,
                    updates: std::mem::take(&mut self.journal),
                    tally: Tally::reading(&self.state.counters).since(before),
                    refusals: std::mem::take(&mut self.refusals),
                    state_changes: std::mem::take(&mut self.changes),
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

    /// The sequence number of the next message from a source that numbers nothing itself
    /// (core NATS, a log without `seq`, the simulator): one past the last applied.
    pub fn next_seq(&self) -> u64 {
        self.state.last_applied_seq.saturating_add(1)
    }

    /// Applies the event at `seq` (counted from 1) and returns the decisions it made. An event
    /// whose `seq` is not past [`Self::last_applied_seq`] was applied already and changes
    /// nothing; one that claims implausible values is rejected (counted under `implausible`)
    /// and changes nothing else.
    pub fn apply(&mut self, seq: u64, event: &Event) -> Vec<Decision> {
        if seq <= self.state.last_applied_seq {
            return Vec::new();
        }
        if let Err(e) = self.config.plausibility.check(event) {
            self.reject(seq, e.code());
            return Vec::new();
        }
        self.apply_admitted(seq, event)
    }

    fn apply_admitted(&mut self, seq: u64, event: &Event) -> Vec<Decision> {
        if seq <= self.state.last_applied_seq {
            return Vec::new();
        }
        self.state.last_applied_seq = seq;
        self.journal.clear();
        self.refusals.clear();
        self.changes.clear();
        let applied = {
            let n = self.state.counters.events.entry(event.kind()).or_default();
            *n += 1;
            self.state.counters.events.values().sum::<u64>()
        };
        let at = self.clock(seq, event);
        if applied % EXPIRY_SWEEP_EVERY == 0 {
            self.sweep_expired(at.now);
        }
        self.cool_down(seq, at.now);
        let decisions: Vec<Decision> = match &event.body {
            EventBody::Prediction(p) => self.on_prediction(seq, event, at, p).into_iter().collect(),
            EventBody::Trade(t) => self.on_trade(seq, event, at, t).into_iter().collect(),
            EventBody::Close(c) => {
                self.on_close(seq, event, at, c);
                Vec::new()
            }
        };
        for d in &decisions {
            *self.state.counters.decisions.entry(d.agent).or_default() += 1;
            if self.config.control.gate.max_decisions_per_symbol_per_minute > 0 {
                let max_symbols = self.config.capacity.max_symbols;
                self.state
                    .control
                    .rates
                    .record(&event.symbol, at.now, max_symbols);
            }
        }
        decisions
    }

    fn market_view(&self, symbol: &str) -> MarketView {
        self.state
            .market
            .get(symbol)
            .map_or(MarketView::EMPTY, |m| m.view(self.config.python_compat()))
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
            equity_curve_slope: if self.config.python_compat() {
                let points: Vec<f64> = self.state.equity.points().collect();
                python_compat::equity_slope(&points)
            } else {
                self.state.equity.slope()
            },
        }
    }

    fn expired(&self, decided_at: f64, now: f64) -> bool {
        now - decided_at > self.config.reward_window_secs
    }

    /// The event's clocks: the transport's time, and its own timestamp within the skew.
    fn clock(&mut self, seq: u64, event: &Event) -> At {
        let now = event.received_at;
        let trusted = self.config.plausibility.trusted_time(event.time, now);
        if trusted.clamped {
            let n = &mut self.state.counters.timestamps_clamped;
            *n += 1;
            if worth_logging(*n) {
                tracing::warn!(
                    seq,
                    symbol = %event.symbol,
                    timestamp = event.time,
                    transport_time = now,
                    max_skew_secs = self.config.plausibility.max_clock_skew_secs,
                    clamped_so_far = *n,
                    "event timestamp too far from the transport's time; clamped"
                );
            }
        }
        At {
            now,
            event_time: trusted.time,
        }
    }
    fn on_prediction(
        &mut self,
        seq: u64,
        event: &Event,
        at: At,
        p: &Prediction,
    ) -> Option<Decision> {
        if let Some(prices) = &p.price_history {
            let keep = self.config.price_history_len;
            let tail = &prices[prices.len().saturating_sub(keep)..];
            let context = Arc::new(MarketContext {
                prices: tail.to_vec(),
                time: at.now,
            });
            match self.state.market.get_mut(&event.symbol) {
                Some(slot) => {
                    self.ages
                        .market
                        .touched(&event.symbol, Some(slot.time), at.now);
                    *slot = context;
                }
                None => {
                    self.make_room_for_symbol(seq);
                    self.ages.market.touched(&event.symbol, None, at.now);
                    self.state.market.insert(event.symbol.clone(), context);
                }
            }
        }
        if let Err(refused) = self.gate_common(&event.symbol, at.now) {
            self.refuse(seq, event, at, AgentKind::MetaStrategy, refused);
            return None;
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
            self.state.epoch,
            seq,
            &event.symbol,
            event.trace_id.as_deref(),
            key.clone(),
            &selection,
            at.event_time,
        );
        let pending = PendingMeta {
            decision_id: decision.decision_id.clone(),
            state_key: key,
            action: selection.action,
            logged: Some(Logged::of(&selection)),
            confidence: p.confidence,
            regime: market.regime,
            time: at.now,
        };
        match self.state.pending.get_mut(&event.symbol) {
            Some(slot) => {
                self.ages
                    .pending
                    .touched(&event.symbol, Some(slot.time), at.now);
                *slot = Arc::new(pending);
                self.state.counters.superseded_pending += 1;
            }
            None => {
                self.make_room_for_pending(seq);
                self.ages.pending.touched(&event.symbol, None, at.now);
                self.state
                    .pending
                    .insert(event.symbol.clone(), Arc::new(pending));
            }
        }
        Some(decision)
    }

    fn on_trade(&mut self, seq: u64, event: &Event, at: At, t: &Trade) -> Option<Decision> {
        let allowed = match self.gate_trade(&event.symbol, at.now, t) {
            Ok(allowed) => allowed,
            Err(refused) => {
                self.refuse(seq, event, at, AgentKind::PositionSizing, refused);
                return None;
            }
        };
        let vol = self.market_view(&event.symbol).volatility;
        let python = self.config.python_compat();
        // The Python version's state reads `portfolio_exposure` only.
        let exposure = if python {
            t.portfolio_exposure.unwrap_or(0.0)
        } else {
            t.state_exposure()
        };
        let key =
            self.config
                .discretizer
                .sizing_key(&self.sizing_state(t.confidence, exposure, vol));
        let mut rng = decision_rng(self.config.seed, 1, seq);
        let selection = self.state.sizing.select_among(&key, &allowed, &mut rng);
        let decision = Decision::new(
            AgentKind::PositionSizing,
            self.state.epoch,
            seq,
            &event.symbol,
            event.trace_id.as_deref(),
            key.clone(),
            &selection,
            at.event_time,
        );
        let sizing = PendingSizing {
            decision_id: decision.decision_id.clone(),
            state_key: key,
            action: selection.action,
            logged: Some(Logged::of(&selection)),
            leverage: SizingAction::from_index(selection.action).map_or(0, |a| a.leverage),
            confidence: t.confidence,
            state_exposure: exposure,
            reward_exposure: if python {
                python_compat::risk_exposure(t.position_size_usd, t.account_balance)
            } else {
                t.reward_exposure()
            },
            time: at.now,
        };
        let window = self.config.reward_window_secs;
        if let Some(position) = self.state.positions.get_mut(&event.symbol) {
            let opened = position.sizing.time;
            self.ages
                .positions
                .touched(&event.symbol, Some(opened), at.now);
            if at.now - opened <= window {
                // A second trade on an open position: new sizing, same meta decision.
                Arc::make_mut(position).sizing = sizing;
                self.state.counters.replaced_sizing += 1;
                return Some(decision);
            }
            self.state.counters.expired_positions += 1;
            let meta = self.take_pending(&event.symbol, at.now);
            if let Some(position) = self.state.positions.get_mut(&event.symbol) {
                *position = Arc::new(Position { meta, sizing });
            }
            return Some(decision);
        }
        let meta = self.take_pending(&event.symbol, at.now);
        self.make_room_for_position(seq);
        self.ages.positions.touched(&event.symbol, None, at.now);
        self.state
            .positions
            .insert(event.symbol.clone(), Arc::new(Position { meta, sizing }));
        Some(decision)
    }

    /// Evicts the least recently updated market context while `max_symbols` are kept.
    fn make_room_for_symbol(&mut self, seq: u64) {
        let cap = self.config.capacity.max_symbols;
        let evicted = self
            .ages
            .market
            .make_room(&mut self.state.market, cap, |m| m.time);
        for (symbol, _) in evicted {
            self.evicted(Cap::Symbols, seq, &symbol, None);
        }
    }

    /// Evicts the oldest pending meta decision while `max_pending_decisions` are pending.
    fn make_room_for_pending(&mut self, seq: u64) {
        let cap = self.config.capacity.max_pending_decisions;
        let evicted = self
            .ages
            .pending
            .make_room(&mut self.state.pending, cap, |p| p.time);
        for (symbol, pending) in evicted {
            self.evicted(Cap::Pending, seq, &symbol, Some(&pending.decision_id));
        }
    }

    /// Evicts the oldest open position while `max_open_positions` are open.
    fn make_room_for_position(&mut self, seq: u64) {
        let cap = self.config.capacity.max_open_positions;
        let evicted = self
            .ages
            .positions
            .make_room(&mut self.state.positions, cap, |p| p.sizing.time);
        for (symbol, position) in evicted {
            let id = &position.sizing.decision_id;
            self.evicted(Cap::Positions, seq, &symbol, Some(id));
        }
    }

    /// Counts an entry dropped at `cap`, and logs it at powers of two.
    fn evicted(&mut self, cap: Cap, seq: u64, symbol: &str, decision_id: Option<&str>) {
        let c = &mut self.state.counters;
        let (n, limit, key, what) = match cap {
            Cap::Symbols => (
                &mut c.evicted_symbols,
                self.config.capacity.max_symbols,
                "limits.max_symbols",
                "symbol cap reached: the least recently updated market context was dropped",
            ),
            Cap::Pending => (
                &mut c.evicted_pending,
                self.config.capacity.max_pending_decisions,
                "limits.max_pending_decisions",
                "pending-decision cap reached: the oldest pending decision was dropped unrewarded",
            ),
            Cap::Positions => (
                &mut c.evicted_positions,
                self.config.capacity.max_open_positions,
                "limits.max_open_positions",
                "open-position cap reached: the oldest open position was dropped unrewarded",
            ),
        };
        *n += 1;
        if worth_logging(*n) {
            tracing::warn!(
                seq,
                symbol,
                decision_id,
                cap = key,
                limit,
                evicted_so_far = *n,
                "{what}"
            );
        }
    }

    /// Removes and returns the symbol's pending meta decision unless it has expired.
    fn take_pending(&mut self, symbol: &str, now: f64) -> Option<PendingMeta> {
        let pending = self.state.pending.remove(symbol)?;
        self.ages.pending.removed(symbol, pending.time);
        if self.expired(pending.time, now) {
            self.state.counters.expired_pending += 1;
            None
        } else {
            Some(Arc::unwrap_or_clone(pending))
        }
    }

    fn on_close(&mut self, seq: u64, event: &Event, at: At, c: &Close) {
        let s = &mut self.state;
        s.winrate.record(c.pnl_pct);
        s.pnl_window.record(c.pnl_pct);
        let before = s.equity.equity();
        let after = s.equity.record(c.account_balance, c.pnl_usd);
        self.check_breakers(seq, at.now, c.pnl_pct, before, after);

        let computed = self.market_view(&event.symbol);
        let market = MarketView {
            regime: c.regime.unwrap_or(computed.regime),
            volatility: c.volatility.unwrap_or(computed.volatility),
            pressure: computed.pressure,
        };
        let (meta, sizing) = self.take_decisions(&event.symbol, at.now);
        if meta.is_none() && sizing.is_none() {
            self.state.counters.closes_without_decision += 1;
            return;
        }
        let close = Closed {
            seq,
            symbol: &event.symbol,
            at,
            close: c,
            market,
        };
        if let Some(m) = meta {
            self.reward_meta(&close, m);
        }
        if let Some(z) = sizing {
            self.reward_sizing(&close, z);
        }
    }

    /// The decisions a close of `symbol` rewards: the open position's meta and sizing decisions,
    /// or, without a live position, the pending meta decision alone. Expired ones are counted.
    fn take_decisions(
        &mut self,
        symbol: &str,
        now: f64,
    ) -> (Option<PendingMeta>, Option<PendingSizing>) {
        let position = self.state.positions.remove(symbol);
        if let Some(p) = &position {
            self.ages.positions.removed(symbol, p.sizing.time);
        }
        match position {
            Some(p) if !self.expired(p.sizing.time, now) => {
                let p = Arc::unwrap_or_clone(p);
                (p.meta, Some(p.sizing))
            }
            expired => {
                if expired.is_some() {
                    self.state.counters.expired_positions += 1;
                }
                (self.take_pending(symbol, now), None)
            }
        }
    }

    /// Rewards the meta decision `m` with the close's outcome.
    fn reward_meta(&mut self, closed: &Closed, m: PendingMeta) {
        let (c, market) = (closed.close, closed.market);
        let outcome = MetaOutcome {
            pnl_pct: c.pnl_pct,
            max_drawdown_pct: c.max_drawdown_pct,
            sharpe: sharpe_signal(self.state.pnl_window.values()),
            regime_at_decision: m.regime,
            regime_at_close: market.regime,
            confidence: m.confidence,
        };
        let raw_reward = if self.config.python_compat() {
            let window: Vec<f64> = self.state.pnl_window.values().collect();
            python_compat::meta_reward(
                &self.config.rewards,
                &python_compat::MetaOutcome {
                    pnl_pct: c.pnl_pct,
                    drawdown_pct: c.max_drawdown_pct,
                    pnl_window: &window,
                    regime_at_close: Some(market.regime),
                    regime_at_decision: Some(m.regime),
                    confidence: m.confidence,
                },
            )
        } else {
            self.config.rewards.meta_reward(&outcome)
        };
        let next = self
            .config
            .discretizer
            .meta_key(&self.meta_state(market, m.confidence));
        let decided = Decided {
            agent: AgentKind::MetaStrategy,
            decision_id: m.decision_id,
            state_key: m.state_key,
            action: m.action,
            logged: m.logged,
        };
        self.settle(
            closed,
            decided,
            raw_reward,
            RewardParts::meta(&outcome),
            next,
        );
    }

    /// Rewards the sizing decision `z` with the close's outcome.
    fn reward_sizing(&mut self, closed: &Closed, z: PendingSizing) {
        let (c, market) = (closed.close, closed.market);
        let outcome = SizingOutcome {
            pnl_pct: c.pnl_pct,
            leverage: f64::from(z.leverage),
            exposure: z.reward_exposure,
            volatility: market.volatility,
        };
        let raw_reward = if self.config.python_compat() {
            python_compat::sizing_reward(
                &self.config.rewards,
                c.pnl_pct,
                f64::from(z.leverage),
                z.reward_exposure,
                market.volatility,
            )
        } else {
            self.config.rewards.sizing_reward(&outcome)
        };
        let exposure = c.portfolio_exposure.unwrap_or(z.state_exposure);
        let next = self.config.discretizer.sizing_key(&self.sizing_state(
            z.confidence,
            exposure,
            market.volatility,
        ));
        let decided = Decided {
            agent: AgentKind::PositionSizing,
            decision_id: z.decision_id,
            state_key: z.state_key,
            action: z.action,
            logged: z.logged,
        };
        self.settle(
            closed,
            decided,
            raw_reward,
            RewardParts::sizing(&outcome),
            next,
        );
    }

    /// Bounds the reward, learns from it (bootstrapping from `next` unless a close ends the
    /// episode) and records the update in the audit.
    fn settle(
        &mut self,
        closed: &Closed,
        decided: Decided,
        raw_reward: f64,
        parts: RewardParts,
        next: String,
    ) {
        let reward = self.bounded(raw_reward, &decided.decision_id);
        let bootstrap = !self.config.close_ends_episode;
        let applied = self.learn(
            decided.agent,
            (&decided.state_key, decided.action),
            reward,
            bootstrap.then_some(&next),
        );
        self.record_update(Update {
            agent: decided.agent,
            decision_id: decided.decision_id,
            symbol: closed.symbol.to_string(),
            state_key: decided.state_key,
            action: decided.action,
            logged: decided.logged,
            raw_reward,
            reward,
            parts,
            next_state_key: bootstrap.then(|| next.clone()),
            state_at_close: next,
            applied,
            seq: closed.seq,
            time: closed.at.event_time,
        });
    }

    /// One Q-update of `agent` (none when the engine is frozen: the table and ε stay as they
    /// are); whether it was applied (a non-finite result is refused).
    fn learn(
        &mut self,
        agent: AgentKind,
        (state_key, action): (&String, usize),
        reward: f64,
        next: Option<&String>,
    ) -> bool {
        let agent = match agent {
            AgentKind::MetaStrategy => &mut self.state.meta,
            AgentKind::PositionSizing => &mut self.state.sizing,
        };
        if self.config.frozen {
            return true;
        }
        agent.learn(state_key, action, reward, next).is_ok()
    }

    /// The reward bounded to the plausible range (counted when it had to be clamped).
    fn bounded(&mut self, reward: f64, decision_id: &str) -> f64 {
        let (bounded, clamped) = self.config.plausibility.bound_reward(reward);
        if clamped {
            let n = &mut self.state.counters.rewards_clamped;
            *n += 1;
            if worth_logging(*n) {
                tracing::warn!(
                    decision_id,
                    reward,
                    bounded,
                    clamped_so_far = *n,
                    "reward beyond plausibility.max_abs_reward; clamped"
                );
            }
        }
        bounded
    }

    /// Counts an update and keeps its record for the event's [`Outcome`].
    fn record_update(&mut self, update: Update) {
        if update.applied {
            self.state.counters.updates += 1;
        } else {
            self.state.counters.refused_updates += 1;
            tracing::warn!(
                decision_id = update.decision_id,
                "Q-update refused: non-finite reward or Q-value"
            );
        }
        self.journal.push(update);
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
            if let Some(p) = self.state.pending.remove(&symbol) {
                self.ages.pending.removed(&symbol, p.time);
            }
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
            if let Some(p) = self.state.positions.remove(&symbol) {
                self.ages.positions.removed(&symbol, p.sizing.time);
            }
        }
        self.state.control.rates.sweep(now);
    }
}
