//! Offline training from a recorded event log.
//!
//! The log is JSON Lines, one message per line: `{"subject": "...", "payload": ...}` where the
//! payload is the message exactly as published (a JSON string holding the raw bytes, or a JSON
//! object). Two optional fields reproduce what the transport added: `seq` (the sequence number;
//! by default the next one after the engine's) and `received_at` (epoch seconds; the time used
//! for events without a `timestamp`, by default the previous line's). Each line goes through
//! [`Engine::ingest`], the same path the service takes, so a log of what the service consumed
//! replays into the same checkpoint it wrote.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;

use crate::settings::Subjects;
use rl_v2_core::engine::{Engine, Outcome};

/// One line of a replay log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    subject: String,
    payload: serde_json::Value,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    received_at: Option<f64>,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The log could not be read.
    #[error("reading line {line}: {source}")]
    Io {
        /// 1-based line number.
        line: usize,
        /// The error.
        source: std::io::Error,
    },
    /// A line is not a replay record (the payload inside it may be anything).
    #[error("line {line} is not a {{\"subject\", \"payload\"}} record: {reason}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplaySummary {
    /// Lines read (blank lines excluded).
    pub lines: u64,
    /// Events applied.
    pub applied: u64,
    /// Events rejected, by reason code.
    pub rejected: BTreeMap<String, u64>,
    /// Lines whose sequence was applied already.
    pub already_applied: u64,
    /// Lines on a subject that is not an event subject.
    pub foreign_subjects: u64,
    /// Decisions made.
    pub decisions: u64,
    /// Q-updates applied.
    pub updates: u64,
}

/// Replays a log into `engine`. `on_line` is called after each line (for progress).
pub fn replay(
    engine: &mut Engine,
    log: impl BufRead,
    subjects: &Subjects,
    max_payload_bytes: usize,
    mut on_line: impl FnMut(&ReplaySummary),
) -> Result<ReplaySummary, ReplayError> {
    let mut summary = ReplaySummary::default();
    let mut received_at = 0.0;
    for (i, text) in log.lines().enumerate() {
        let number = i + 1;
        let text = text.map_err(|source| ReplayError::Io {
            line: number,
            source,
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(&text).map_err(|e| ReplayError::BadLine {
            line: number,
            reason: e.to_string(),
        })?;
        summary.lines += 1;
        let Some(kind) = subjects.kind_of(&line.subject) else {
            summary.foreign_subjects += 1;
            on_line(&summary);
            continue;
        };
        let payload = match line.payload {
            serde_json::Value::String(raw) => raw.into_bytes(),
            other => other.to_string().into_bytes(),
        };
        if let Some(t) = line.received_at.filter(|t| t.is_finite()) {
            received_at = t;
        }
        let seq = line.seq.unwrap_or(engine.last_applied_seq() + 1);
        match engine.ingest(seq, kind, &payload, received_at, max_payload_bytes) {
            Outcome::Applied {
                decisions, updates, ..
            } => {
                summary.applied += 1;
                summary.decisions += decisions.len() as u64;
                summary.updates += updates;
            }
            Outcome::Rejected(e) => {
                *summary.rejected.entry(e.code().to_string()).or_default() += 1;
            }
            Outcome::AlreadyApplied => summary.already_applied += 1,
        }
        on_line(&summary);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use rl_v2_core::engine::EngineConfig;

    #[test]
    fn replays_raw_and_object_payloads_and_counts_everything() {
        let log = [
            r#"{"subject":"PREDICTION_GENERATED","payload":"{\"symbol\":\"btc\",\"confidence\":0.5}","received_at":100}"#,
            r#"{"subject":"TRADE_EXECUTED","payload":{"symbol":"BTC","leverage":10}}"#,
            "",
            r#"{"subject":"POSITION_CLOSED","payload":{"symbol":"BTC","pnl_pct":1.5}}"#,
            r#"{"subject":"POSITION_CLOSED","payload":"not json"}"#,
            r#"{"subject":"SOMETHING_ELSE","payload":{}}"#,
            r#"{"subject":"POSITION_CLOSED","payload":{"symbol":"BTC","pnl_pct":1.5},"seq":2}"#,
        ]
        .join("\n");
        let mut engine = Engine::new(EngineConfig::default());
        let subjects = Settings::defaults().subjects;
        let mut calls = 0;
        let s = replay(&mut engine, log.as_bytes(), &subjects, 65536, |_| {
            calls += 1
        })
        .unwrap();
        assert_eq!(s.lines, 6);
        assert_eq!(calls, 6);
        assert_eq!(s.applied, 3);
        assert_eq!(s.rejected.get("invalid_json"), Some(&1));
        assert_eq!(s.foreign_subjects, 1);
        assert_eq!(s.already_applied, 1);
        assert_eq!(s.decisions, 2);
        assert_eq!(s.updates, 2);
        assert_eq!(engine.last_applied_seq(), 4);
    }

    #[test]
    fn a_line_that_is_not_a_record_names_its_number() {
        let mut engine = Engine::new(EngineConfig::default());
        let subjects = Settings::defaults().subjects;
        let err = replay(
            &mut engine,
            "\n[1,2]\n".as_bytes(),
            &subjects,
            65536,
            |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("line 2 "), "{err}");
    }
}
