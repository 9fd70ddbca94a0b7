//! Shadow policies: engines that see every event the live engine sees and decide, but whose
//! decisions go only to their own subjects (`<subjects.shadow>.<name>.meta_strategy` and
//! `.position_sizing`), never to the live ones, so a candidate Q-table or setting can be watched
//! on real traffic before it chooses real leverage.
//!
//! A shadow is inference-only ([`EngineConfig::frozen`]): its closes move its account trackers
//! (win rate, equity: facts of the account, the same as the live engine's) but never its
//! Q-tables. A shadow that learned from positions it did not choose would credit its own action
//! with the P&L of the live one. For the same reason it publishes no outcome events: the P&L of
//! a close is the live action's. To compare a shadow with the live policy, evaluate its
//! checkpoint off-policy on the live outcomes (`rl-v2 evaluate --checkpoint`).
//!
//! A shadow starts from a checkpoint directory, or from a copy of the live engine's state at
//! start-up; it continues at the live engine's sequence and decision-id epoch, so its decision
//! for an event carries the live decision's id. Shadows are not checkpointed: each start begins
//! again from their checkpoint (or the live state).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::source::Topic;
use rl_v2_core::decision::Decision;
use rl_v2_core::domain::agent::AgentKind;
use rl_v2_core::engine::{Engine, EngineConfig, Outcome};

use crate::checkpoint::CheckpointStore;
use crate::settings::{Settings, Subjects};
use crate::ServiceError;

/// One `[[shadows]]` entry of the settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSettings {
    /// Name, used in its subjects and stats: letters, digits, `_` and `-`.
    pub name: String,
    /// Checkpoint directory to start from; absent: a copy of the live engine's state.
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// Exploration of its decisions (default 0: greedy).
    #[serde(default)]
    pub epsilon: f64,
    /// Highest leverage its sizing agent may choose (default: `sizing.max_leverage`).
    #[serde(default)]
    pub max_leverage: Option<u32>,
}

/// Checks the shadows' settings; the error names the key and the problem.
pub(crate) fn validate(
    shadows: &[ShadowSettings],
    subjects: &Subjects,
) -> Result<(), (String, String)> {
    let prefix = &subjects.shadow;
    if prefix.is_empty() || prefix.contains([' ', '*', '>']) {
        return Err((
            "subjects.shadow".into(),
            "must be a subject without whitespace or wildcards".into(),
        ));
    }
    let live = [
        &subjects.prediction_generated,
        &subjects.trade_executed,
        &subjects.position_closed,
        &subjects.meta_decision,
        &subjects.sizing_decision,
        &subjects.dead_letter,
        &subjects.outcome,
    ];
    if live
        .iter()
        .any(|s| *s == prefix || s.starts_with(&format!("{prefix}.")))
    {
        return Err((
            "subjects.shadow".into(),
            "must differ from every live subject and not be a prefix of one".into(),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in shadows.iter().enumerate() {
        let key = |field: &str| format!("shadows[{i}].{field}");
        let valid_name = !s.name.is_empty()
            && s.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            return Err((key("name"), "must be letters, digits, '_' or '-'".into()));
        }
        if !names.insert(&s.name) {
            return Err((key("name"), format!("`{}` is used twice", s.name)));
        }
        if !(0.0..=1.0).contains(&s.epsilon) {
            return Err((
                key("epsilon"),
                format!("must be in [0, 1], got {}", s.epsilon),
            ));
        }
        if let Some(dir) = &s.checkpoint {
            if !CheckpointStore::new(dir).checkpoint_path().is_file() {
                return Err((
                    key("checkpoint"),
                    format!("no checkpoint.json in {}", dir.display()),
                ));
            }
        }
    }
    Ok(())
}

/// What `rl_v2.stats` reports of a shadow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowStats {
    /// Its name.
    pub name: String,
    /// The checkpoint it started from; `None`: a copy of the live state.
    pub checkpoint: Option<PathBuf>,
    /// Its decisions published on its own subjects.
    pub decisions_published: u64,
    /// Events it applied.
    pub events_applied: u64,
    /// Sequence number of the last event it applied.
    pub last_applied_seq: u64,
    /// ε of its meta and sizing agents.
    pub epsilon: f64,
    /// States in its meta and sizing Q-tables (they never change).
    pub states: [usize; 2],
}

/// A shadow engine and where its decisions go.
#[derive(Debug)]
pub struct Shadow {
    settings: ShadowSettings,
    engine: Engine,
    meta_subject: String,
    sizing_subject: String,
    decisions_published: u64,
    events_applied: u64,
}

impl Shadow {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Applies a message the live engine applied at `seq` (an event, or an operator's command);
    /// returns its decisions.
    pub fn apply(
        &mut self,
        seq: u64,
        topic: Topic,
        payload: &[u8],
        received_at: f64,
        max_payload_bytes: usize,
    ) -> Vec<Decision> {
        let outcome = match topic {
            Topic::Event(kind) => {
                self.engine
                    .ingest(seq, kind, payload, received_at, max_payload_bytes)
            }
            // An operator's command holds for the shadows too: a halted stack's shadows refuse
            // as the live engine does.
            Topic::Control => {
                self.engine
                    .ingest_control(seq, payload, received_at, max_payload_bytes)
            }
        };
        match outcome {
            Outcome::Applied { decisions, .. } => {
                self.events_applied += 1;
                decisions
            }
            Outcome::Rejected(_) | Outcome::AlreadyApplied => Vec::new(),
        }
    }

    /// The subject of its decisions of `agent`.
    pub fn subject(&self, agent: AgentKind) -> &str {
        match agent {
            AgentKind::MetaStrategy => &self.meta_subject,
            AgentKind::PositionSizing => &self.sizing_subject,
        }
    }

    /// Counts a decision published.
    pub fn published(&mut self) {
        self.decisions_published += 1;
    }

    /// Its statistics.
    pub fn stats(&self) -> ShadowStats {
        let state = self.engine.state();
        ShadowStats {
            name: self.settings.name.clone(),
            checkpoint: self.settings.checkpoint.clone(),
            decisions_published: self.decisions_published,
            events_applied: self.events_applied,
            last_applied_seq: self.engine.last_applied_seq(),
            epsilon: self.settings.epsilon,
            states: [
                state.meta.q().states_visited(),
                state.sizing.q().states_visited(),
            ],
        }
    }
}

/// The shadows of the settings, each continuing at `live`'s sequence and epoch.
pub fn build(settings: &Settings, live: &Engine) -> Result<Vec<Shadow>, ServiceError> {
    settings
        .shadows
        .iter()
        .map(|s| one(settings, s, live))
        .collect()
}

fn one(settings: &Settings, s: &ShadowSettings, live: &Engine) -> Result<Shadow, ServiceError> {
    let mut config: EngineConfig = settings.engine_config();
    config.frozen = true;
    config.learning.epsilon = s.epsilon;
    config.learning.epsilon_min = s.epsilon;
    if let Some(max) = s.max_leverage {
        config.max_leverage = max;
    }
    config
        .validate()
        .map_err(|e| ServiceError::Settings(format!("shadows `{}`: {e}", s.name)))?;
    let mut state = match &s.checkpoint {
        Some(dir) => CheckpointStore::new(dir)
            .read()?
            .ok_or_else(|| ServiceError::Settings(format!("no checkpoint in {}", dir.display())))?,
        None => live.state().clone(),
    };
    state.last_applied_seq = live.last_applied_seq();
    state.epoch = live.epoch();
    for agent in [&mut state.meta, &mut state.sizing] {
        let count = agent.q().update_count();
        agent.q_mut().restore_schedule(s.epsilon, count);
    }
    let engine = Engine::from_state(config, state)
        .map_err(|e| ServiceError::Settings(format!("shadows `{}`: {e}", s.name)))?;
    let prefix = format!("{}.{}", settings.subjects.shadow, s.name);
    tracing::info!(
        shadow = %s.name,
        checkpoint = ?s.checkpoint,
        epsilon = s.epsilon,
        subjects = %format!("{prefix}.>"),
        "shadow policy started"
    );
    Ok(Shadow {
        settings: s.clone(),
        engine,
        meta_subject: format!("{prefix}.{}", AgentKind::MetaStrategy.as_str()),
        sizing_subject: format!("{prefix}.{}", AgentKind::PositionSizing.as_str()),
        decisions_published: 0,
        events_applied: 0,
    })
}
