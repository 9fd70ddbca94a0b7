//! Operator control: the trading state, the commands that change it, the risk gate between the
//! agents and publishing, and the circuit breakers that move the state by themselves.
//!
//! Everything here is part of the deterministic engine: commands arrive as messages with a
//! sequence number (in JetStream mode through the same stream as events), breakers read only
//! event data, and the whole [`ControlBook`] is part of the checkpoint. So a replay, a standby
//! or a restart reaches the same state at the same sequence.
//!
//! * [`TradingState`]: `ACTIVE` (decide normally), `REDUCING` (the sizing agent may choose only
//!   actions that add no risk, see [`gate`]), `HALTED` (no decision is published; every
//!   prediction and trade gets a [`Refusal`] instead; closes still teach both agents).
//! * [`ControlCommand`]: `{"command": "halt"|"reduce"|"resume", "reason", "who", "id"}`.
//! * [`TradingStateChange`]: what is published on every change, by an operator or a breaker.
//! * [`gate`]: masks and refusals; [`breaker`]: drawdown, losing streak and window loss.

pub mod breaker;
pub mod gate;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

use crate::domain::agent::AgentKind;
use crate::event::DecodeError;
use crate::invalid::Invalid;

pub use breaker::{BreakerBook, BreakerConfig, BreakerKind, BreakerTrip};
pub use gate::{GateConfig, RateBook, RefusalReason};

/// Longest `reason` of a command, in bytes.
pub const MAX_REASON_LEN: usize = 512;
/// Longest `who` or `id` of a command, in bytes.
pub const MAX_WHO_LEN: usize = 128;
/// Who a breaker's change names.
pub const BREAKER_WHO: &str = "breaker";

/// Whether rl-v2 may decide, and how.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradingState {
    /// Both agents decide over every allowed action.
    #[default]
    #[serde(alias = "active")]
    Active,
    /// Meta decisions continue; the sizing agent chooses only actions that add no risk.
    #[serde(alias = "reducing")]
    Reducing,
    /// No decision is published: predictions and trades are refused; closes still teach.
    #[serde(alias = "halted")]
    Halted,
}

impl TradingState {
    /// All states, in a fixed order.
    pub const ALL: [TradingState; 3] = [Self::Active, Self::Reducing, Self::Halted];

    /// The wire name (`ACTIVE`, `REDUCING`, `HALTED`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Reducing => "REDUCING",
            Self::Halted => "HALTED",
        }
    }
}

impl fmt::Display for TradingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TradingState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("`{s}` is not a trading state (ACTIVE, REDUCING or HALTED)"))
    }
}

/// What an operator asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Go to `HALTED`.
    Halt,
    /// Go to `REDUCING`.
    Reduce,
    /// Go to `ACTIVE`.
    Resume,
}

impl CommandKind {
    /// The state the command leads to.
    pub fn target(&self) -> TradingState {
        match self {
            Self::Halt => TradingState::Halted,
            Self::Reduce => TradingState::Reducing,
            Self::Resume => TradingState::Active,
        }
    }

    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Halt => "halt",
            Self::Reduce => "reduce",
            Self::Resume => "resume",
        }
    }
}

/// A command on the control subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlCommand {
    /// What is asked.
    pub command: CommandKind,
    /// Why, as the operator wrote it.
    pub reason: String,
    /// Who asked.
    pub who: String,
    /// An id the sender chose, echoed in the stats once the command is applied (so a client can
    /// tell that its command, not another, was applied).
    pub id: Option<String>,
}

fn text_field(
    object: &serde_json::Map<String, Value>,
    field: &'static str,
    max: usize,
) -> Result<Option<String>, DecodeError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
        Some(Value::String(s)) => Err(DecodeError::OutOfRange {
            field,
            problem: format!("is {} bytes long; at most {max} are accepted", s.len()),
        }),
        Some(other) => Err(DecodeError::WrongType {
            field,
            expected: "a string",
            found: json_type(other),
        }),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes a control command; the error has the same stable codes as an event's.
pub fn decode_command(payload: &[u8], limit: usize) -> Result<ControlCommand, DecodeError> {
    if payload.len() > limit {
        return Err(DecodeError::PayloadTooLarge {
            size: payload.len(),
            limit,
        });
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(DecodeError::NotAnObject(json_type(&value)));
    };
    let command = match text_field(&object, "command", MAX_WHO_LEN)? {
        None => return Err(DecodeError::MissingField("command")),
        Some(c) => match c.to_ascii_lowercase().as_str() {
            "halt" => CommandKind::Halt,
            "reduce" => CommandKind::Reduce,
            "resume" => CommandKind::Resume,
            _ => {
                return Err(DecodeError::OutOfRange {
                    field: "command",
                    problem: format!("`{c}` is not a command (halt, reduce or resume)"),
                })
            }
        },
    };
    Ok(ControlCommand {
        command,
        reason: text_field(&object, "reason", MAX_REASON_LEN)?.unwrap_or_default(),
        who: text_field(&object, "who", MAX_WHO_LEN)?.unwrap_or_else(|| "unknown".into()),
        id: text_field(&object, "id", MAX_WHO_LEN)?,
    })
}

/// A change of the trading state, as published on the trading-state subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TradingStateChange {
    /// State before.
    pub previous: TradingState,
    /// State after.
    pub new: TradingState,
    /// Why: the operator's reason, or the breaker's figures in words.
    pub reason: String,
    /// Who: the operator's `who`, or `breaker`.
    pub who: String,
    /// The breaker that tripped, when a breaker made the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerTrip>,
    /// Sequence number of the message that caused the change.
    pub sequence: u64,
    /// Transport time of that message, epoch seconds.
    pub time: f64,
}

/// The last command applied, for a client waiting for its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// What was asked.
    pub command: CommandKind,
    /// The sender's id, if it gave one.
    pub id: Option<String>,
    /// Who asked.
    pub who: String,
    /// Sequence number of the command.
    pub sequence: u64,
}

/// A decision the gate refused: published on the refusal subject instead of a decision, and
/// never linked to a reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// Stable reason code.
    pub reason: RefusalReason,
    /// The agent that would have decided.
    pub agent: AgentKind,
    /// Upper-cased symbol of the event.
    pub symbol: String,
    /// Trace id of the event.
    pub trace_id: Option<String>,
    /// Sequence number of the event.
    pub event_seq: u64,
    /// The trading state when it was refused.
    pub trading_state: TradingState,
    /// The figures behind the refusal, in words.
    pub detail: String,
    /// Event time, epoch seconds.
    pub timestamp: f64,
}

/// Operator control settings: the start state, the rule of `REDUCING`, the gate and the breakers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// State of a fresh engine (a checkpoint keeps its own).
    pub initial_state: TradingState,
    /// Highest leverage the sizing agent may choose while `REDUCING` (its multiplier is at most
    /// [`gate::REDUCING_MAX_MULTIPLIER`] too).
    pub reducing_max_leverage: u32,
    /// Risk gate rules.
    pub gate: GateConfig,
    /// Circuit breakers.
    pub breakers: BreakerConfig,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            initial_state: TradingState::Active,
            reducing_max_leverage: gate::DEFAULT_REDUCING_MAX_LEVERAGE,
            gate: GateConfig::default(),
            breakers: BreakerConfig::default(),
        }
    }
}

impl ControlConfig {
    /// Checks every value; the error names the field (`control.…`).
    pub fn validate(&self) -> Result<(), Invalid> {
        let lowest = crate::domain::actions::LEVERAGES[0];
        if self.reducing_max_leverage < lowest {
            return Err(Invalid::new(
                Some("control"),
                "reducing_max_leverage",
                format!(
                    "must be at least {lowest} (the lowest leverage), got {}",
                    self.reducing_max_leverage
                ),
            ));
        }
        self.gate.validate()?;
        self.breakers.validate()
    }
}

/// The control part of the engine's state (and of its checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlBook {
    /// The trading state.
    pub state: TradingState,
    /// The latest change, if the state ever changed.
    #[serde(default)]
    pub last_change: Option<TradingStateChange>,
    /// The latest command applied.
    #[serde(default)]
    pub last_command: Option<CommandRecord>,
    /// Changes of state so far.
    #[serde(default)]
    pub changes: u64,
    /// Circuit-breaker figures.
    #[serde(default)]
    pub breakers: BreakerBook,
    /// Recent decisions per symbol, for the rate limit.
    #[serde(default)]
    pub rates: RateBook,
}

impl Default for ControlBook {
    /// `ACTIVE`: what a checkpoint from before trading states loads as.
    fn default() -> Self {
        Self::starting(TradingState::Active)
    }
}

impl ControlBook {
    /// A book in `state`, with nothing recorded.
    pub fn starting(state: TradingState) -> Self {
        Self {
            state,
            last_change: None,
            last_command: None,
            changes: 0,
            breakers: BreakerBook::default(),
            rates: RateBook::default(),
        }
    }

    /// Moves to `new`; the change when the state differs.
    pub(crate) fn change(
        &mut self,
        new: TradingState,
        reason: String,
        who: String,
        breaker: Option<BreakerTrip>,
        sequence: u64,
        time: f64,
    ) -> Option<TradingStateChange> {
        if new == self.state {
            return None;
        }
        let change = TradingStateChange {
            previous: self.state,
            new,
            reason,
            who,
            breaker,
            sequence,
            time,
        };
        tracing::warn!(
            previous = %change.previous,
            new = %change.new,
            who = %change.who,
            reason = %change.reason,
            sequence,
            "trading state changed"
        );
        self.state = new;
        self.changes += 1;
        self.last_change = Some(change.clone());
        Some(change)
    }

    /// Applies an operator's command at `sequence`; the change when the state moved. A
    /// `resume` re-arms the breakers from the current figures.
    pub(crate) fn command(
        &mut self,
        cmd: ControlCommand,
        sequence: u64,
        time: f64,
        equity: f64,
    ) -> Option<TradingStateChange> {
        self.last_command = Some(CommandRecord {
            command: cmd.command,
            id: cmd.id.clone(),
            who: cmd.who.clone(),
            sequence,
        });
        if cmd.command == CommandKind::Resume {
            self.breakers.rearm(equity);
        }
        self.change(
            cmd.command.target(),
            cmd.reason,
            cmd.who,
            None,
            sequence,
            time,
        )
    }
}

/// What `rl_v2.stats` shows of the control state besides the state itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlStats {
    /// The latest change.
    pub last_change: Option<TradingStateChange>,
    /// The latest command applied.
    pub last_command: Option<CommandRecord>,
    /// Changes so far.
    pub changes: u64,
}

impl From<&ControlBook> for ControlStats {
    fn from(b: &ControlBook) -> Self {
        Self {
            last_change: b.last_change.clone(),
            last_command: b.last_command.clone(),
            changes: b.changes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_decode_with_their_fields_and_bad_ones_have_stable_codes() {
        let c = decode_command(
            br#"{"command":"HALT","reason":"exchange down","who":"ops","id":"c1","extra":1}"#,
            1024,
        )
        .unwrap();
        assert_eq!(c.command, CommandKind::Halt);
        assert_eq!(
            (c.reason.as_str(), c.who.as_str()),
            ("exchange down", "ops")
        );
        assert_eq!(c.id.as_deref(), Some("c1"));
        let c = decode_command(br#"{"command":"resume"}"#, 1024).unwrap();
        assert_eq!(
            (c.command, c.who.as_str()),
            (CommandKind::Resume, "unknown")
        );
        for (raw, code) in [
            (&br#"{"command":"status"}"#[..], "out_of_range"),
            (br#"{"reason":"x"}"#, "missing_field"),
            (br#"{"command":7}"#, "wrong_type"),
            (br#"[1]"#, "not_an_object"),
            (b"", "empty_payload"),
            (b"{", "invalid_json"),
        ] {
            assert_eq!(
                decode_command(raw, 1024).unwrap_err().code(),
                code,
                "{raw:?}"
            );
        }
        let long = format!(r#"{{"command":"halt","reason":"{}"}}"#, "x".repeat(600));
        assert_eq!(
            decode_command(long.as_bytes(), 4096).unwrap_err().code(),
            "out_of_range"
        );
        assert_eq!(
            decode_command(long.as_bytes(), 10).unwrap_err().code(),
            "payload_too_large"
        );
    }

    #[test]
    fn trading_states_have_wire_names() {
        assert_eq!(
            serde_json::to_string(&TradingState::Halted).unwrap(),
            "\"HALTED\""
        );
        assert_eq!(
            "reducing".parse::<TradingState>(),
            Ok(TradingState::Reducing)
        );
        assert!("paused".parse::<TradingState>().is_err());
    }

    #[test]
    fn a_change_is_recorded_only_when_the_state_moves() {
        let mut book = ControlBook::default();
        let cmd = |command| ControlCommand {
            command,
            reason: "r".into(),
            who: "w".into(),
            id: Some("i".into()),
        };
        let change = book.command(cmd(CommandKind::Halt), 5, 1.0, 100.0).unwrap();
        assert_eq!(
            (change.previous, change.new),
            (TradingState::Active, TradingState::Halted)
        );
        assert_eq!((change.sequence, change.time), (5, 1.0));
        assert!(book
            .command(cmd(CommandKind::Halt), 6, 2.0, 100.0)
            .is_none());
        assert_eq!(book.last_command.as_ref().unwrap().sequence, 6);
        assert_eq!(book.changes, 1);
        assert_eq!(book.state, TradingState::Halted);
    }
}
