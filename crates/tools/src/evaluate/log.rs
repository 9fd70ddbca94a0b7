//! The logged-bandit data: outcome events read from a JSON Lines file or a JetStream stream,
//! checked, and grouped into trades.
//!
//! A close rewards up to two decisions (the position's meta and sizing decisions); their
//! outcomes share the close's `seq`. Both actions shaped the trade's P&L, so a target policy is
//! evaluated on the trade: its importance weight is the product of both agents' weights.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use futures::StreamExt;
use serde::Serialize;

use rl_v2_core::domain::agent::AgentKind;
use rl_v2_core::outcome::OutcomeEvent;

use super::EvaluateError;

/// Most unreadable lines reported one by one; the rest are only counted.
const REPORTED_BAD_LINES: u64 = 5;

/// One logged decision with its reward.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// Q-table key of the state.
    pub state_key: String,
    /// Action taken.
    pub action: usize,
    /// Probability the logging policy gave that action.
    pub propensity: f64,
    /// Reward it earned.
    pub reward: f64,
    /// Id of the decision.
    pub decision_id: String,
}

/// The outcomes of one close: the meta and/or the sizing decision it rewarded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trade {
    /// The meta-strategy decision, when the close rewarded one.
    pub meta: Option<Logged>,
    /// The position-sizing decision, when the close rewarded one.
    pub sizing: Option<Logged>,
}

impl Trade {
    /// The decision of `agent`, if any.
    pub fn of(&self, agent: AgentKind) -> Option<&Logged> {
        match agent {
            AgentKind::MetaStrategy => self.meta.as_ref(),
            AgentKind::PositionSizing => self.sizing.as_ref(),
        }
    }
}

/// Outcomes not used, by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Skipped {
    /// Lines or messages that are not outcome events.
    pub unreadable: u64,
    /// Outcomes without a propensity (decided before propensities were kept).
    pub no_propensity: u64,
    /// Propensities outside (0, 1] or rewards that are not finite.
    pub invalid: u64,
    /// Refused updates (`applied: false`).
    pub not_applied: u64,
    /// A second outcome for a decision id already read (a replay's copy).
    pub duplicate: u64,
}

/// The log, grouped into trades in order of their close.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutcomeLog {
    /// Trades, by close sequence.
    pub trades: Vec<Trade>,
    /// What was left out.
    pub skipped: Skipped,
}

impl OutcomeLog {
    /// Groups outcome events into trades; unusable ones are counted in [`Skipped`].
    pub fn from_events(events: impl IntoIterator<Item = OutcomeEvent>) -> Self {
        let mut skipped = Skipped::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut by_close: BTreeMap<(u64, String), Trade> = BTreeMap::new();
        for e in events {
            if !e.applied {
                skipped.not_applied += 1;
                continue;
            }
            let Some(propensity) = e.propensity else {
                skipped.no_propensity += 1;
                continue;
            };
            let usable = propensity > 0.0 && propensity <= 1.0 && e.reward.is_finite();
            if !usable {
                skipped.invalid += 1;
                continue;
            }
            if !seen.insert(e.decision_id.clone()) {
                skipped.duplicate += 1;
                continue;
            }
            let logged = Logged {
                state_key: e.state_key,
                action: e.action_index,
                propensity,
                reward: e.reward,
                decision_id: e.decision_id,
            };
            let trade = by_close.entry((e.seq, e.symbol)).or_default();
            let slot = match e.agent {
                AgentKind::MetaStrategy => &mut trade.meta,
                AgentKind::PositionSizing => &mut trade.sizing,
            };
            if slot.is_some() {
                skipped.duplicate += 1;
            } else {
                *slot = Some(logged);
            }
        }
        Self {
            trades: by_close.into_values().collect(),
            skipped,
        }
    }

    /// Decisions of `agent` in the log.
    pub fn decisions(&self, agent: AgentKind) -> usize {
        self.trades.iter().filter(|t| t.of(agent).is_some()).count()
    }
}

/// Reads outcome events from a JSON Lines file; unreadable lines are counted and the first few
/// reported on stderr, never fatal.
pub fn read_jsonl(path: &Path) -> Result<OutcomeLog, EvaluateError> {
    let failed = |e: std::io::Error| EvaluateError::Read {
        from: path.display().to_string(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(failed)?;
    let mut events = Vec::new();
    let mut unreadable = 0u64;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(failed)?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<OutcomeEvent>(&line) {
            Ok(e) => events.push(e),
            Err(e) => {
                unreadable += 1;
                if unreadable <= REPORTED_BAD_LINES {
                    eprintln!("{}:{}: not an outcome event: {e}", path.display(), n + 1);
                }
            }
        }
    }
    let mut log = OutcomeLog::from_events(events);
    log.skipped.unreadable = unreadable;
    Ok(log)
}

/// Reads every outcome event a JetStream stream holds now, through an ordered consumer;
/// messages that are not outcome events are counted, never fatal.
pub async fn read_stream(
    client: &async_nats::Client,
    stream: &str,
) -> Result<OutcomeLog, EvaluateError> {
    let failed = |e: String| EvaluateError::Read {
        from: format!("stream {stream}"),
        reason: e,
    };
    let js = async_nats::jetstream::new(client.clone());
    let mut handle = js
        .get_stream(stream)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let last = handle
        .info()
        .await
        .map_err(|e| failed(e.to_string()))?
        .state
        .last_sequence;
    let mut events = Vec::new();
    let mut unreadable = 0u64;
    if last > 0 {
        let consumer = handle
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| failed(e.to_string()))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| failed(e.to_string()))?;
            match serde_json::from_slice::<OutcomeEvent>(&message.payload) {
                Ok(e) => events.push(e),
                Err(_) => unreadable += 1,
            }
            let seq = message.info().map(|i| i.stream_sequence).unwrap_or(last);
            if seq >= last {
                break;
            }
        }
    }
    let mut log = OutcomeLog::from_events(events);
    log.skipped.unreadable = unreadable;
    Ok(log)
}
