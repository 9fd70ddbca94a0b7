//! Settings: typed, loaded once, layered.
//!
//! Layers, later ones winning: the defaults compiled into the binary (`config/default.toml`),
//! `config/default.toml` in the working directory when present, the file named with `--config`,
//! then environment variables `RL_V2__SECTION__KEY`. Unknown keys and bad values stop start-up
//! with a message naming the key.

use serde::Deserialize;
use std::path::{Path, PathBuf};

use rl_v2_core::capacity::Capacity;
use rl_v2_core::control::{BreakerConfig, ControlConfig, GateConfig, TradingState};
use rl_v2_core::domain::profile::{LearningProfile, ProfileLearning};
use rl_v2_core::domain::qlearning::{Hyperparameters, StepSize};
use rl_v2_core::domain::reward::RewardWeights;
use rl_v2_core::domain::state::{BucketEdges, Discretizer};
use rl_v2_core::engine::EngineConfig;
use rl_v2_core::event::EventKind;
use rl_v2_core::plausibility::Plausibility;

/// The defaults, as shipped in `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: [&str; 7] = [
    "state.volatility_edges",
    "state.market_pressure_edges",
    "state.confidence_edges",
    "state.winrate_edges",
    "state.account_health_edges",
    "state.exposure_edges",
    "state.equity_slope_edges",
];

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A source could not be read or a value has the wrong type.
    #[error("settings: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is outside its domain.
    #[error("settings: `{key}` {problem}")]
    Invalid {
        /// The offending key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

/// Longest pause between start-up connection attempts: an hour.
const MAX_RETRY_SECS: f64 = 3600.0;
/// Longest JetStream ack wait: a day.
const MAX_ACK_WAIT_SECS: f64 = 86_400.0;
/// Longest wait of a decide request: ten minutes.
const MAX_DECIDE_TIMEOUT_SECS: f64 = 600.0;
/// Longest pacing between periodic checkpoints: a day.
const MAX_CHECKPOINT_INTERVAL_SECS: f64 = 86_400.0;
/// Longest reward window or stream age: ten years.
const MAX_WINDOW_SECS: f64 = 10.0 * 365.0 * 86_400.0;
/// Most messages buffered per subscription.
const MAX_SUBSCRIPTION_CAPACITY: usize = 16 * 1024 * 1024;
/// The level names a log filter accepts.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The sane range of a duration setting, in seconds.
pub(crate) struct DurationRange {
    min: f64,
    min_inclusive: bool,
    max: f64,
}

impl DurationRange {
    /// Above zero, at most `max`.
    fn positive(max: f64) -> Self {
        Self {
            min: 0.0,
            min_inclusive: false,
            max,
        }
    }

    /// From `min` to `max`, both included.
    pub(crate) fn from(min: f64, max: f64) -> Self {
        Self {
            min,
            min_inclusive: true,
            max,
        }
    }

    pub(crate) fn check(&self, key: &str, value: f64) -> Result<(), SettingsError> {
        let above_min = if self.min_inclusive {
            value >= self.min
        } else {
            value > self.min
        };
        if value.is_finite() && above_min && value <= self.max {
            return Ok(());
        }
        let low = if self.min_inclusive { "[" } else { "(" };
        Err(invalid(
            key,
            format!(
                "must be a number of seconds in {low}{}, {}], got {value}",
                self.min, self.max
            ),
        ))
    }
}

/// Checks a log filter: comma-separated directives, each a level (`info`) or `target=level`.
/// `tracing`'s own parser takes a bare word such as `verbose` for a target name and silences
/// every other log, so a bare word must be a level here.
fn check_level_filter(filter: &str) -> Result<(), String> {
    let is_level = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = match directive.rsplit_once('=') {
            Some((_, level)) => level,
            None => directive,
        };
        if !is_level(level) {
            return Err(format!(
                "`{directive}` is not a level: use one of {} (or target=level)",
                LEVELS.join(", ")
            ));
        }
    }
    if filter.trim().is_empty() {
        return Err("must not be empty".into());
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| format!("`{filter}` is not a level filter: {e}"))
}

pub(crate) fn invalid(key: &str, problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// All settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Broker connection.
    pub nats: NatsSettings,
    /// Subjects.
    pub subjects: Subjects,
    /// Delivery mode and stream.
    pub delivery: DeliverySettings,
    /// Hyperparameters and seed.
    pub learning: LearningSettings,
    /// Reward weights.
    pub rewards: RewardWeights,
    /// State discretization.
    pub state: StateSettings,
    /// Position-sizing limits.
    pub sizing: SizingSettings,
    /// Market context and reward window.
    pub market: MarketSettings,
    /// Checkpoints.
    pub checkpoint: CheckpointSettings,
    /// Payload limits and caps on what the engine keeps.
    pub limits: Limits,
    /// Bounds on what an event may claim.
    pub plausibility: Plausibility,
    /// The NATS micro service and metrics.
    pub service: ServiceSettings,
    /// Hot standby: leader election among instances on one stream.
    pub ha: HaSettings,
    /// Logging.
    pub log: LogSettings,
    /// Shadow policies run beside the live engine (`[[shadows]]`; none by default).
    #[serde(default)]
    pub shadows: Vec<crate::shadow::ShadowSettings>,
    /// Trading state at start and the rule of `REDUCING`.
    pub control: ControlSettings,
    /// Risk gate rules.
    pub risk: GateConfig,
    /// Circuit breakers.
    pub breakers: BreakerConfig,
}

/// Operator control settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSettings {
    /// Trading state of a fresh engine (a checkpoint keeps its own).
    pub initial_state: TradingState,
    /// Highest leverage the sizing agent may choose while `REDUCING`.
    pub reducing_max_leverage: u32,
}

/// Broker connection settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// Client name.
    pub client_name: String,
    /// User for user/password authentication.
    pub user: String,
    /// Password for user/password authentication.
    pub password: String,
    /// Token authentication.
    pub token: String,
    /// Path of a `.creds` file.
    pub creds_file: String,
    /// Path of a CA bundle to trust.
    pub tls_ca: String,
    /// Path of a client certificate.
    pub tls_cert: String,
    /// Path of the client certificate's key.
    pub tls_key: String,
    /// Seconds between connection attempts at start-up.
    pub connect_retry_secs: f64,
    /// Messages the client buffers per subscription before it drops (a slow consumer).
    pub subscription_capacity: usize,
}

/// Subjects consumed and published.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subjects {
    /// Signals.
    pub prediction_generated: String,
    /// Trades opened.
    pub trade_executed: String,
    /// Positions closed.
    pub position_closed: String,
    /// Meta-strategy decisions.
    pub meta_decision: String,
    /// Position-sizing decisions.
    pub sizing_decision: String,
    /// Rejected events.
    pub dead_letter: String,
    /// Outcome events: one per Q-update, the decision with its reward.
    pub outcome: String,
    /// Prefix of the shadow policies' decision subjects (`<shadow>.<name>.<agent>`).
    pub shadow: String,
    /// Operator commands (halt, reduce, resume).
    pub control: String,
    /// Changes of the trading state.
    pub trading_state: String,
    /// Decisions the risk gate refused.
    pub risk_refused: String,
}

impl NatsSettings {
    /// `url` with its secrets replaced by `***`: the form every log line and message shows.
    pub fn redacted_url(&self) -> String {
        crate::credentials::redact(&self.url)
    }

    /// The server URLs of `url`, split on commas, as written (credentials included: never log
    /// them; see [`Self::redacted_url`]).
    pub fn servers(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Subjects {
    /// The subject of an event kind.
    pub fn event(&self, kind: EventKind) -> &str {
        match kind {
            EventKind::PredictionGenerated => &self.prediction_generated,
            EventKind::TradeExecuted => &self.trade_executed,
            EventKind::PositionClosed => &self.position_closed,
        }
    }

    /// The event kind of a subject, if it is one of the three event subjects.
    pub fn kind_of(&self, subject: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|k| self.event(*k) == subject)
    }

    /// What a message on `subject` is for the event loop: an event, a control command, or
    /// neither.
    pub fn topic_of(&self, subject: &str) -> Option<crate::source::Topic> {
        if subject == self.control {
            return Some(crate::source::Topic::Control);
        }
        self.kind_of(subject).map(crate::source::Topic::Event)
    }

    /// The subjects the event loop consumes: the three event subjects and the control subject.
    pub fn consumed(&self) -> Vec<String> {
        let mut all: Vec<String> = EventKind::ALL
            .iter()
            .map(|k| self.event(*k).to_string())
            .collect();
        all.push(self.control.clone());
        all
    }
}

/// How events are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Durable consumption from a JetStream stream.
    Jetstream,
    /// Plain core-NATS subscriptions, at-most-once.
    Core,
}

/// Delivery settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// `jetstream` or `core`.
    pub mode: DeliveryMode,
    /// Stream name.
    pub stream: String,
    /// Oldest message kept, seconds; 0 for no limit.
    pub stream_max_age_secs: u64,
    /// Largest stream size, bytes; -1 for no limit.
    pub stream_max_bytes: i64,
    /// Replicas of the stream when rl-v2 creates it (1, or 3/5 on a JetStream cluster).
    pub stream_replicas: usize,
    /// Ack wait, seconds.
    pub ack_wait_secs: f64,
    /// Start even when the checkpoint is ahead of the stream.
    pub accept_stream_reset: bool,
    /// Longest wait, in seconds, of a `<service>.decide.<subject>` request for its decision.
    pub decide_timeout_secs: f64,
}

/// Learning profile, the settings that override it, and the exploration seed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearningSettings {
    /// The named set of learning settings the keys below override.
    pub profile: LearningProfile,
    /// Learning rate α (the smallest step with `step_size = "visit_count"`).
    pub alpha: Option<f64>,
    /// Discount γ.
    pub gamma: Option<f64>,
    /// Initial ε.
    pub epsilon: Option<f64>,
    /// ε decay per update.
    pub epsilon_decay: Option<f64>,
    /// ε floor.
    pub epsilon_min: Option<f64>,
    /// `constant` (α) or `visit_count` (max(α, 1/n) per state and action).
    pub step_size: Option<StepSize>,
    /// Q-value of an untried state and action.
    pub initial_q: Option<f64>,
    /// Whether a close ends its decision's episode (no bootstrap from the state at close).
    pub close_ends_episode: Option<bool>,
    /// Exploration seed.
    pub seed: u64,
    /// Inference only: the Q-tables and ε never change.
    #[serde(default)]
    pub frozen: bool,
}

impl LearningSettings {
    /// The profile's values with every key that is set in place of the profile's.
    pub fn resolve(&self) -> ProfileLearning {
        let base = self.profile.learning();
        let p = base.hyperparameters;
        ProfileLearning {
            hyperparameters: Hyperparameters {
                alpha: self.alpha.unwrap_or(p.alpha),
                gamma: self.gamma.unwrap_or(p.gamma),
                epsilon: self.epsilon.unwrap_or(p.epsilon),
                epsilon_decay: self.epsilon_decay.unwrap_or(p.epsilon_decay),
                epsilon_min: self.epsilon_min.unwrap_or(p.epsilon_min),
                step_size: self.step_size.unwrap_or(p.step_size),
                initial_q: self.initial_q.unwrap_or(p.initial_q),
            },
            close_ends_episode: self.close_ends_episode.unwrap_or(base.close_ends_episode),
            edges: base.edges,
        }
    }
}

/// Which discretizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscretizerKind {
    /// Bucket indices.
    Buckets,
    /// The Python version's keys.
    PythonCompat,
}

/// State discretization.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    /// `buckets` or `python_compat`.
    pub discretizer: DiscretizerKind,
    /// Volatility edges; the learning profile's when unset.
    pub volatility_edges: Option<Vec<f64>>,
    /// Market-pressure edges; the learning profile's when unset.
    pub market_pressure_edges: Option<Vec<f64>>,
    /// Confidence edges; the learning profile's when unset.
    pub confidence_edges: Option<Vec<f64>>,
    /// Win-rate edges; the learning profile's when unset.
    pub winrate_edges: Option<Vec<f64>>,
    /// Account-health edges; the learning profile's when unset.
    pub account_health_edges: Option<Vec<f64>>,
    /// Exposure edges; the learning profile's when unset.
    pub exposure_edges: Option<Vec<f64>>,
    /// Equity-slope edges; the learning profile's when unset.
    pub equity_slope_edges: Option<Vec<f64>>,
}

/// Position-sizing limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizingSettings {
    /// Highest leverage the agent may choose.
    pub max_leverage: u32,
}

/// Market context and reward window.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketSettings {
    /// Prices kept per symbol.
    pub price_history_len: usize,
    /// Starting equity.
    pub initial_balance: f64,
    /// Seconds before an unrewarded decision expires.
    pub reward_window_secs: f64,
}

/// Checkpoint settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSettings {
    /// Directory.
    pub dir: PathBuf,
    /// Q-updates between checkpoints.
    pub every_updates: u64,
    /// Shortest time between two periodic checkpoints, seconds.
    pub min_interval_secs: f64,
}

/// Payload limits and caps on what the engine keeps.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest payload accepted.
    pub max_payload_bytes: usize,
    /// Bytes of a rejected payload copied into its dead letter.
    pub dead_letter_payload_bytes: usize,
    /// Symbols whose market context is kept.
    pub max_symbols: usize,
    /// Pending meta decisions kept.
    pub max_pending_decisions: usize,
    /// Open positions kept.
    pub max_open_positions: usize,
}

/// The NATS micro service and metrics.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// Service name.
    pub name: String,
    /// Prometheus endpoint address; empty for none.
    pub metrics_addr: String,
}

/// Hot standby: several instances on one stream elect a leader through a lease in a JetStream
/// key-value bucket; the others follow (see [`crate::ha`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaSettings {
    /// Whether this instance takes part in leader election.
    pub enabled: bool,
    /// The key-value bucket of the lease (`<bucket>_progress` holds what the leader published).
    pub bucket: String,
    /// Seconds the lease lives without renewal.
    pub lease_ttl_secs: f64,
    /// This instance's name in the lease and stats; empty: `<hostname>-<pid>`.
    pub instance_id: String,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// Default level filter, used when `RUST_LOG` is not set.
    pub level: String,
}

impl Settings {
    /// Loads the layers: built-in defaults, `config/default.toml` in the working directory,
    /// `file`, then `RL_V2__SECTION__KEY` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Self::load`], with the environment given explicitly (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        use config::{Config, Environment, File, FileFormat};
        let mut builder = Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(File::new("config/default.toml", FileFormat::Toml).required(false));
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        let vars: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("RL_V2__"))
            .collect();
        let mut environment = Environment::with_prefix("RL_V2")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .source(Some(vars));
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        let settings: Settings = builder.add_source(environment).build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Built-in defaults only.
    pub fn defaults() -> Self {
        Self::load_from(None::<&Path>, std::iter::empty())
            .unwrap_or_else(|e| panic!("the built-in defaults are valid: {e}"))
    }

    /// Checks every value that has a domain; the error names the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.validate_nats()?;
        self.validate_subjects()?;
        self.validate_durations()?;
        self.validate_service()?;
        crate::ha::validate(self)?;
        if let Err(problem) = check_level_filter(&self.log.level) {
            return Err(invalid("log.level", problem));
        }
        if let Err((key, problem)) = crate::shadow::validate(&self.shadows, &self.subjects) {
            return Err(invalid(&key, problem));
        }
        self.engine_config()
            .validate()
            .map_err(|e| invalid(&engine_key(&e.field), e.problem))
    }

    /// `[nats]`: servers, credentials, buffers and TLS.
    fn validate_nats(&self) -> Result<(), SettingsError> {
        let servers = self.nats.servers();
        if servers.is_empty() {
            return Err(invalid("nats.url", "must not be empty"));
        }
        if let Some(bad) = servers
            .iter()
            .find(|u| u.parse::<async_nats::ServerAddr>().is_err())
        {
            return Err(invalid(
                "nats.url",
                format!(
                    "`{}` is not a NATS server URL",
                    crate::credentials::redact(bad)
                ),
            ));
        }
        if let Err(e) = crate::credentials::resolve(&self.nats) {
            return Err(invalid(e.key, e.problem));
        }
        if !(1..=MAX_SUBSCRIPTION_CAPACITY).contains(&self.nats.subscription_capacity) {
            return Err(invalid(
                "nats.subscription_capacity",
                format!("must be between 1 and {MAX_SUBSCRIPTION_CAPACITY}"),
            ));
        }
        if self.nats.tls_cert.is_empty() != self.nats.tls_key.is_empty() {
            return Err(invalid("nats.tls_key", "tls_cert and tls_key go together"));
        }
        Ok(())
    }

    /// `[subjects]`: each a subject, the three event subjects and the control subject apart.
    fn validate_subjects(&self) -> Result<(), SettingsError> {
        let s = &self.subjects;
        for (key, subject) in [
            ("subjects.prediction_generated", &s.prediction_generated),
            ("subjects.trade_executed", &s.trade_executed),
            ("subjects.position_closed", &s.position_closed),
            ("subjects.meta_decision", &s.meta_decision),
            ("subjects.sizing_decision", &s.sizing_decision),
            ("subjects.dead_letter", &s.dead_letter),
            ("subjects.outcome", &s.outcome),
            ("subjects.control", &s.control),
            ("subjects.trading_state", &s.trading_state),
            ("subjects.risk_refused", &s.risk_refused),
        ] {
            if subject.is_empty() || subject.contains(char::is_whitespace) {
                return Err(invalid(key, "must be a subject without whitespace"));
            }
        }
        let events = [
            &s.prediction_generated,
            &s.trade_executed,
            &s.position_closed,
        ];
        if events[0] == events[1] || events[1] == events[2] || events[0] == events[2] {
            return Err(invalid("subjects", "the three event subjects must differ"));
        }
        if events.contains(&&s.control) {
            return Err(invalid(
                "subjects.control",
                "must differ from the event subjects",
            ));
        }
        Ok(())
    }

    /// `[delivery]`'s stream, and every duration in its range.
    fn validate_durations(&self) -> Result<(), SettingsError> {
        if self.delivery.stream.is_empty() || self.delivery.stream.contains(['.', '*', '>', ' ']) {
            return Err(invalid(
                "delivery.stream",
                "must be a name without . * > or spaces",
            ));
        }
        if !(1..=5).contains(&self.delivery.stream_replicas) {
            return Err(invalid(
                "delivery.stream_replicas",
                "must be 1 to 5 (JetStream's limit)",
            ));
        }
        for (key, value, range) in [
            (
                "nats.connect_retry_secs",
                self.nats.connect_retry_secs,
                DurationRange::positive(MAX_RETRY_SECS),
            ),
            (
                "delivery.ack_wait_secs",
                self.delivery.ack_wait_secs,
                DurationRange::from(1.0, MAX_ACK_WAIT_SECS),
            ),
            (
                "delivery.decide_timeout_secs",
                self.delivery.decide_timeout_secs,
                DurationRange::positive(MAX_DECIDE_TIMEOUT_SECS),
            ),
            (
                "checkpoint.min_interval_secs",
                self.checkpoint.min_interval_secs,
                DurationRange::from(0.0, MAX_CHECKPOINT_INTERVAL_SECS),
            ),
            (
                "market.reward_window_secs",
                self.market.reward_window_secs,
                DurationRange::positive(MAX_WINDOW_SECS),
            ),
        ] {
            range.check(key, value)?;
        }
        if self.delivery.stream_max_age_secs as f64 > MAX_WINDOW_SECS {
            return Err(invalid(
                "delivery.stream_max_age_secs",
                format!("must be at most {MAX_WINDOW_SECS} (0 for no limit)"),
            ));
        }
        Ok(())
    }

    /// Checkpoint cadence, payload limit, and `[service]`'s name and metrics address.
    fn validate_service(&self) -> Result<(), SettingsError> {
        if self.checkpoint.every_updates == 0 {
            return Err(invalid("checkpoint.every_updates", "must be at least 1"));
        }
        if self.limits.max_payload_bytes == 0 {
            return Err(invalid("limits.max_payload_bytes", "must be at least 1"));
        }
        if self.service.name.is_empty()
            || !self
                .service
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid("service.name", "must be letters, digits, - or _"));
        }
        if !self.service.metrics_addr.is_empty()
            && self
                .service
                .metrics_addr
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(invalid(
                "service.metrics_addr",
                "must be host:port, like 0.0.0.0:9464",
            ));
        }
        Ok(())
    }

    /// The engine's settings.
    pub fn engine_config(&self) -> EngineConfig {
        let l = &self.learning;
        let learning = l.resolve();
        let edges = learning.edges;
        let st = &self.state;
        EngineConfig {
            learning: learning.hyperparameters,
            close_ends_episode: learning.close_ends_episode,
            seed: l.seed,
            rewards: self.rewards.clone(),
            discretizer: match st.discretizer {
                DiscretizerKind::PythonCompat => Discretizer::PythonCompat,
                DiscretizerKind::Buckets => Discretizer::Buckets(BucketEdges {
                    volatility: st.volatility_edges.clone().unwrap_or(edges.volatility),
                    market_pressure: st
                        .market_pressure_edges
                        .clone()
                        .unwrap_or(edges.market_pressure),
                    confidence: st.confidence_edges.clone().unwrap_or(edges.confidence),
                    winrate: st.winrate_edges.clone().unwrap_or(edges.winrate),
                    account_health: st
                        .account_health_edges
                        .clone()
                        .unwrap_or(edges.account_health),
                    exposure: st.exposure_edges.clone().unwrap_or(edges.exposure),
                    equity_slope: st.equity_slope_edges.clone().unwrap_or(edges.equity_slope),
                }),
            },
            max_leverage: self.sizing.max_leverage,
            reward_window_secs: self.market.reward_window_secs,
            initial_balance: self.market.initial_balance,
            price_history_len: self.market.price_history_len,
            plausibility: self.plausibility.clone(),
            capacity: Capacity {
                max_symbols: self.limits.max_symbols,
                max_pending_decisions: self.limits.max_pending_decisions,
                max_open_positions: self.limits.max_open_positions,
            },
            frozen: self.learning.frozen,
            control: ControlConfig {
                initial_state: self.control.initial_state,
                reducing_max_leverage: self.control.reducing_max_leverage,
                gate: self.risk.clone(),
                breakers: self.breakers.clone(),
            },
        }
    }
}

/// The settings key of a field of the engine's settings ([`EngineConfig`]).
fn engine_key(field: &str) -> String {
    let (part, member) = field.split_once('.').unwrap_or(("", field));
    match part {
        "learning" | "plausibility" => field.to_string(),
        "discretizer" => format!("state.{member}_edges"),
        "capacity" => format!("limits.{member}"),
        // The operator-control parts: `[control]`, `[risk]` (the gate) and `[breakers]`.
        "control" => match member.split_once('.') {
            Some(("gate", m)) => format!("risk.{m}"),
            Some(("breakers", m)) => format!("breakers.{m}"),
            _ => format!("control.{member}"),
        },
        _ => match member {
            "max_leverage" => "sizing.max_leverage".to_string(),
            "reward_window_secs" | "initial_balance" | "price_history_len" => {
                format!("market.{member}")
            }
            other => other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_design() {
        let s = Settings::defaults();
        assert_eq!(s.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(s.delivery.mode, DeliveryMode::Jetstream);
        assert_eq!(s.delivery.stream, "RL_V2_EVENTS");
        assert_eq!(s.checkpoint.dir, PathBuf::from("data/rl_v2"));
        assert_eq!(s.checkpoint.every_updates, 100);
        assert_eq!(s.limits.max_payload_bytes, 65536);
        assert_eq!(s.sizing.max_leverage, 50);
        assert_eq!(s.log.format, LogFormat::Text);
        assert_eq!(s.engine_config(), EngineConfig::default());
    }

    #[test]
    fn environment_overrides_with_double_underscores() {
        let s = Settings::load_from(
            None,
            env(&[
                ("RL_V2__NATS__URL", "nats://nats:4222"),
                ("RL_V2__DELIVERY__MODE", "core"),
                ("RL_V2__LEARNING__SEED", "7"),
                ("RL_V2__LEARNING__ALPHA", "0.05"),
                ("RL_V2__STATE__CONFIDENCE_EDGES", "0.25,0.5,0.75"),
                ("OTHER__NATS__URL", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(s.nats.url, "nats://nats:4222");
        assert_eq!(s.nats.servers(), vec!["nats://nats:4222"]);
        assert_eq!(s.delivery.mode, DeliveryMode::Core);
        assert_eq!(s.learning.seed, 7);
        assert_eq!(s.engine_config().learning.alpha, 0.05);
        assert_eq!(s.state.confidence_edges, Some(vec![0.25, 0.5, 0.75]));
    }

    #[test]
    fn the_learning_profile_sets_every_learning_value_and_keys_override_it() {
        let seed = Settings::load_from(None, env(&[("RL_V2__LEARNING__PROFILE", "seed")])).unwrap();
        assert_eq!(
            seed.engine_config(),
            EngineConfig::with_profile(LearningProfile::Seed)
        );
        let mixed = Settings::load_from(
            None,
            env(&[
                ("RL_V2__LEARNING__PROFILE", "seed"),
                ("RL_V2__LEARNING__STEP_SIZE", "visit_count"),
                ("RL_V2__LEARNING__CLOSE_ENDS_EPISODE", "true"),
                ("RL_V2__LEARNING__INITIAL_Q", "2.5"),
                ("RL_V2__STATE__WINRATE_EDGES", "0.4,0.6"),
            ]),
        )
        .unwrap()
        .engine_config();
        assert_eq!(mixed.learning.step_size, StepSize::VisitCount);
        assert_eq!(mixed.learning.initial_q, 2.5);
        assert_eq!(mixed.learning.alpha, 0.01);
        assert!(mixed.close_ends_episode);
        let Discretizer::Buckets(edges) = mixed.discretizer else {
            panic!("buckets expected");
        };
        assert_eq!(edges.winrate, vec![0.4, 0.6]);
        assert_eq!(edges.equity_slope, BucketEdges::default().equity_slope);
        let err = Settings::load_from(None, env(&[("RL_V2__LEARNING__PROFILE", "fast")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("profile"), "{err}");
        let err = Settings::load_from(None, env(&[("RL_V2__LEARNING__INITIAL_Q", "inf")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`learning.initial_q`"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |pairs: &[(&str, &str)]| {
            Settings::load_from(None, env(pairs))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("RL_V2__LEARNING__ALPHA", "2")]).contains("`learning.alpha`"));
        assert!(err(&[("RL_V2__SIZING__MAX_LEVERAGE", "3")]).contains("`sizing.max_leverage`"));
        assert!(
            err(&[("RL_V2__STATE__WINRATE_EDGES", "0.5,0.4")]).contains("`state.winrate_edges`")
        );
        assert!(err(&[("RL_V2__DELIVERY__MODE", "carrier_pigeon")]).contains("delivery.mode"));
        assert!(err(&[("RL_V2__LEARNING__SEED", "many")]).contains("learning.seed"));
        assert!(err(&[("RL_V2__CHECKPOINT__EVERY_UPDATES", "0")])
            .contains("`checkpoint.every_updates`"));
        assert!(err(&[("RL_V2__NATS__URLS", "x")]).contains("urls"));
        assert!(err(&[("RL_V2__PLAUSIBILITY__MAX_ABS_PNL_PCT", "-1")])
            .contains("`plausibility.max_abs_pnl_pct`"));
        assert!(err(&[("RL_V2__PLAUSIBILITY__MAX_CLOCK_SKEW_SECS", "inf")])
            .contains("`plausibility.max_clock_skew_secs`"));
        assert!(err(&[("RL_V2__LIMITS__MAX_PENDING_DECISIONS", "0")])
            .contains("`limits.max_pending_decisions`"));
        assert!(err(&[("RL_V2__NATS__URL", "nats://a:4222,::bad::")]).contains("`nats.url`"));
        assert!(err(&[("RL_V2__CONTROL__INITIAL_STATE", "PAUSED")]).contains("initial_state"));
        assert!(err(&[("RL_V2__CONTROL__REDUCING_MAX_LEVERAGE", "2")])
            .contains("`control.reducing_max_leverage`"));
        assert!(err(&[("RL_V2__RISK__MAX_EXPOSURE", "-1")]).contains("`risk.max_exposure`"));
        assert!(
            err(&[("RL_V2__BREAKERS__CONFIRMATIONS", "0")]).contains("`breakers.confirmations`")
        );
        assert!(err(&[("RL_V2__BREAKERS__MAX_DRAWDOWN_PCT", "150")])
            .contains("`breakers.max_drawdown_pct`"));
        assert!(
            err(&[("RL_V2__SUBJECTS__CONTROL", "TRADE_EXECUTED")]).contains("`subjects.control`")
        );
        let halted =
            Settings::load_from(None, env(&[("RL_V2__CONTROL__INITIAL_STATE", "halted")])).unwrap();
        assert_eq!(
            halted.engine_config().control.initial_state,
            TradingState::Halted
        );
        assert!(err(&[("RL_V2__MARKET__PRICE_HISTORY_LEN", "3")])
            .contains("`market.price_history_len`"));
        assert!(err(&[("RL_V2__LIMITS__MAX_SYMBOLS", "0")]).contains("`limits.max_symbols`"));
        let two = Settings::load_from(
            None,
            env(&[("RL_V2__NATS__URL", "nats://a:4222, nats://b:4222")]),
        )
        .unwrap();
        assert_eq!(two.nats.servers(), vec!["nats://a:4222", "nats://b:4222"]);
    }

    #[test]
    fn a_config_file_overrides_defaults_and_env_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rl.toml");
        std::fs::write(
            &path,
            "[checkpoint]\nevery_updates = 5\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        let s = Settings::load_from(
            Some(&path),
            env(&[("RL_V2__CHECKPOINT__EVERY_UPDATES", "9")]),
        )
        .unwrap();
        assert_eq!(s.checkpoint.every_updates, 9);
        assert_eq!(s.log.format, LogFormat::Json);
        assert!(Settings::load_from(Some(&dir.path().join("missing.toml")), env(&[])).is_err());
    }
}
