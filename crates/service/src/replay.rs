//! Offline training from a recorded event log.
//!
//! The log is JSON Lines, one message per line: `{"subject": "...", "payload": ...}` where the
//! payload is the message exactly as published (a JSON string holding the raw bytes, or a JSON
//! object). Two optional fields reproduce what the transport added:
//!
//! * `seq`, the sequence number. A line without one takes the previous line's plus one, the first
//!   line 1 (or, with [`Numbering::AfterCheckpoint`], the engine's `last_applied_seq + 1`). So a
//!   log is numbered by its own lines, like a stream: replaying it again into the checkpoint it
//!   produced finds every line applied already, and replaying a longer copy applies only the
//!   new lines.
//! * `received_at`, the transport's time (epoch seconds): the engine's clock, as the JetStream
//!   message time or the arrival time is in the service. A line without one takes the previous
//!   line's. Before the first line that has one, the transport time is unknown and the event's
//!   own timestamp stands in for it ([`Engine::ingest_untimed`]).
//!
//! Each line goes through the same path the service takes, so a log of what the service
//! consumed, with its sequence numbers and transport times, replays into the same checkpoint it
//! wrote. Lines on the control subject (`subjects.control`) are operator commands and move the
//! trading state as they did in the service.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;

use crate::settings::Subjects;
use crate::source::Topic;
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

/// How lines without a `seq` are numbered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Numbering {
    /// From the log's first line: line n (without `seq` anywhere) is sequence n, so the same log
    /// replayed twice is applied once.
    #[default]
    FromLog,
    /// After the engine's `last_applied_seq`: for a different log that continues the one the
    /// checkpoint came from.
    AfterCheckpoint,
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

/// Replays a log into `engine`, numbering lines without `seq` as `numbering` says. `on_line` is
/// called after each line (for progress).
pub fn replay(
    engine: &mut Engine,
    log: impl BufRead,
    subjects: &Subjects,
    max_payload_bytes: usize,
    numbering: Numbering,
    mut on_line: impl FnMut(&ReplaySummary),
) -> Result<ReplaySummary, ReplayError> {
    let mut summary = ReplaySummary::default();
    let mut received_at: Option<f64> = None;
    let mut previous_seq = match numbering {
        Numbering::FromLog => 0,
        Numbering::AfterCheckpoint => engine.last_applied_seq(),
    };
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
        let seq = line.seq.unwrap_or(previous_seq.saturating_add(1));
        previous_seq = seq;
        let Some(topic) = subjects.topic_of(&line.subject) else {
            summary.foreign_subjects += 1;
            on_line(&summary);
            continue;
        };
        let payload = match line.payload {
            serde_json::Value::String(raw) => raw.into_bytes(),
            other => other.to_string().into_bytes(),
        };
        if let Some(t) = line.received_at.filter(|t| t.is_finite()) {
            received_at = Some(t);
        }
        let outcome = match (topic, received_at) {
            (Topic::Control, t) => {
                engine.ingest_control(seq, &payload, t.unwrap_or(0.0), max_payload_bytes)
            }
            (Topic::Event(kind), Some(t)) => {
                engine.ingest(seq, kind, &payload, t, max_payload_bytes)
            }
            (Topic::Event(kind), None) => {
                engine.ingest_untimed(seq, kind, &payload, 0.0, max_payload_bytes)
            }
        };
        match outcome {
            Outcome::Applied {
                decisions, updates, ..
            } => {
                summary.applied += 1;
                summary.decisions += decisions.len() as u64;
                summary.updates += updates.iter().filter(|u| u.applied).count() as u64;
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
        let s = replay(
            &mut engine,
            log.as_bytes(),
            &subjects,
            65536,
            Numbering::FromLog,
            |_| calls += 1,
        )
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

    fn log_without_seq() -> String {
        [
            r#"{"subject":"PREDICTION_GENERATED","payload":{"symbol":"A","confidence":0.5}}"#,
            r#"{"subject":"TRADE_EXECUTED","payload":{"symbol":"A"}}"#,
            r#"{"subject":"POSITION_CLOSED","payload":{"symbol":"A","pnl_pct":2}}"#,
        ]
        .join("\n")
    }

    fn run(engine: &mut Engine, log: &str, numbering: Numbering) -> ReplaySummary {
        let subjects = Settings::defaults().subjects;
        replay(engine, log.as_bytes(), &subjects, 65536, numbering, |_| {}).unwrap()
    }

    #[test]
    fn a_log_without_seq_replayed_twice_is_applied_once() {
        let mut engine = Engine::new(EngineConfig::default());
        let first = run(&mut engine, &log_without_seq(), Numbering::FromLog);
        assert_eq!((first.applied, first.updates), (3, 2));
        let state = crate::checkpoint::encode(engine.state()).unwrap();
        let again = run(&mut engine, &log_without_seq(), Numbering::FromLog);
        assert_eq!((again.applied, again.already_applied), (0, 3));
        assert_eq!(crate::checkpoint::encode(engine.state()).unwrap(), state);
        // A longer copy of the log: only its new lines are applied.
        let longer = format!(
            "{}\n{}",
            log_without_seq(),
            r#"{"subject":"PREDICTION_GENERATED","payload":{"symbol":"B","confidence":0.5}}"#
        );
        let grown = run(&mut engine, &longer, Numbering::FromLog);
        assert_eq!((grown.applied, grown.already_applied), (1, 3));
        // A different log, numbered after the checkpoint on purpose.
        let next = run(&mut engine, &log_without_seq(), Numbering::AfterCheckpoint);
        assert_eq!((next.applied, next.updates), (3, 2));
        assert_eq!(engine.last_applied_seq(), 7);
    }

    #[test]
    fn received_at_is_the_clock_and_without_it_the_event_time_stands_in() {
        // The prediction claims a time 30 days before the trade's transport time: the log says
        // when each line was received, so the claim does not expire the decision.
        let day = 86_400.0;
        let t = 1_800_000_000.0;
        let timed = format!(
            "{}\n{}\n{}",
            format_args!(
                r#"{{"subject":"PREDICTION_GENERATED","payload":{{"symbol":"A","confidence":0.5,"timestamp":{}}},"received_at":{t}}}"#,
                t - 30.0 * day
            ),
            format_args!(
                r#"{{"subject":"TRADE_EXECUTED","payload":{{"symbol":"A"}},"received_at":{}}}"#,
                t + 1.0
            ),
            format_args!(
                r#"{{"subject":"POSITION_CLOSED","payload":{{"symbol":"A","pnl_pct":1}}}}"#
            ),
        );
        let mut engine = Engine::new(EngineConfig::default());
        assert_eq!(run(&mut engine, &timed, Numbering::FromLog).updates, 2);
        assert_eq!(engine.stats().counters.timestamps_clamped, 1);
        // Without received_at the events' own timestamps are the clock: 30 days apart, the
        // meta decision expired before the trade.
        let untimed = format!(
            "{}\n{}\n{}",
            format_args!(
                r#"{{"subject":"PREDICTION_GENERATED","payload":{{"symbol":"A","confidence":0.5,"timestamp":{}}}}}"#,
                t - 30.0 * day
            ),
            format_args!(
                r#"{{"subject":"TRADE_EXECUTED","payload":{{"symbol":"A","timestamp":{t}}}}}"#
            ),
            format_args!(
                r#"{{"subject":"POSITION_CLOSED","payload":{{"symbol":"A","pnl_pct":1,"timestamp":{t}}}}}"#
            ),
        );
        let mut engine = Engine::new(EngineConfig::default());
        assert_eq!(run(&mut engine, &untimed, Numbering::FromLog).updates, 1);
        let counters = engine.stats().counters;
        assert_eq!(
            (counters.expired_pending, counters.timestamps_clamped),
            (1, 0)
        );
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
            Numbering::FromLog,
            |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("line 2 "), "{err}");
    }

    #[test]
    fn control_lines_move_the_trading_state_in_order_with_the_events() {
        let mut engine = Engine::new(EngineConfig::default());
        let log = concat!(
            r#"{"subject":"RL_V2_CONTROL","payload":{"command":"halt","reason":"r","who":"w"},"received_at":1764633600}"#,
            "\n",
            r#"{"subject":"PREDICTION_GENERATED","payload":{"symbol":"A","confidence":0.5}}"#,
            "\n",
        );
        let summary = run(&mut engine, log, Numbering::FromLog);
        assert_eq!((summary.applied, summary.decisions), (2, 0));
        let stats = engine.stats();
        assert_eq!(
            stats.trading_state,
            rl_v2_core::control::TradingState::Halted
        );
        assert_eq!(stats.counters.refusals.values().sum::<u64>(), 1);
    }
}
