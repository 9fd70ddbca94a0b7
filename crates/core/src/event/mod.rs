//! Events in: decoding NATS payloads into typed events.
//!
//! The trading stack publishes JSON in three shapes, all accepted: the event at the top level,
//! wrapped as `{"data": {...}}`, or inside an envelope
//! `{"event_type", "payload": "<JSON string>", "trace_id", "timestamp", ...}`. Unknown fields
//! are ignored, a `null` optional field counts as absent, symbols are upper-cased, and the
//! Python stack's older field names are aliases (`pnl_percentage`, `drawdown`, `close_reason`,
//! `price`, `model`). Everything else is rejected with a [`DecodeError`] whose
//! [`code`](DecodeError::code) is stable and whose message says what was wrong: that is what the
//! dead-letter message carries.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

use crate::domain::market::Regime;

mod envelope;
mod fields;

use envelope::unwrap;
use fields::{close, prediction, symbol, trade, type_name, Fields};

/// Default largest payload accepted, in bytes.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Longest symbol accepted, in bytes.
const MAX_SYMBOL_LEN: usize = 64;
/// Largest leverage accepted in an event.
const MAX_EVENT_LEVERAGE: f64 = 1_000.0;
/// Default leverage of a trade that does not say (the Python version's).
pub const DEFAULT_TRADE_LEVERAGE: f64 = 20.0;
/// Default confidence of a trade that does not say.
pub const DEFAULT_TRADE_CONFIDENCE: f64 = 0.5;

/// The three event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    /// A model produced a signal: the meta-strategy agent decides.
    PredictionGenerated,
    /// A trade was opened: the position-sizing agent decides.
    TradeExecuted,
    /// A position was closed: both agents learn.
    PositionClosed,
}

impl EventKind {
    /// All kinds, in a fixed order.
    pub const ALL: [EventKind; 3] = [
        Self::PredictionGenerated,
        Self::TradeExecuted,
        Self::PositionClosed,
    ];

    /// The default subject and wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::PredictionGenerated => "PREDICTION_GENERATED",
            Self::TradeExecuted => "TRADE_EXECUTED",
            Self::PositionClosed => "POSITION_CLOSED",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signal from a prediction model.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Confidence of the signal, in [0, 1].
    pub confidence: f64,
    /// `BUY` / `SELL` as sent.
    pub side: Option<String>,
    /// Timeframe of the signal.
    pub timeframe: Option<String>,
    /// Model that produced it (`model_version` or `model`).
    pub model_version: Option<String>,
    /// Strategy that produced it.
    pub strategy: Option<String>,
    /// Recent prices, each > 0 (`price_history` or `market_features.price_history`).
    pub price_history: Option<Vec<f64>>,
}

/// A trade that was opened.
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    /// `BUY` / `SELL` as sent.
    pub side: Option<String>,
    /// Entry price (`entry_price` or `price`).
    pub entry_price: Option<f64>,
    /// Notional size in USD.
    pub position_size_usd: Option<f64>,
    /// Leverage the stack used (default 20).
    pub leverage: f64,
    /// Exchange order id.
    pub order_id: Option<String>,
    /// Confidence of the signal behind the trade (default 0.5).
    pub confidence: f64,
    /// Share of the account exposed, as the stack computed it.
    pub portfolio_exposure: Option<f64>,
    /// Account balance in USD.
    pub account_balance: Option<f64>,
}

impl Trade {
    /// Exposure for the state: `position_size_usd ÷ account_balance` when both are known, else
    /// `portfolio_exposure`, else 0 (the Python version's default).
    pub fn state_exposure(&self) -> f64 {
        self.size_over_balance()
            .or(self.portfolio_exposure)
            .unwrap_or(0.0)
    }

    /// Exposure for the risk penalty: as [`Self::state_exposure`], but 0.1 when unknown.
    pub fn reward_exposure(&self) -> f64 {
        self.size_over_balance()
            .or(self.portfolio_exposure)
            .unwrap_or(0.1)
    }

    fn size_over_balance(&self) -> Option<f64> {
        match (self.position_size_usd, self.account_balance) {
            (Some(size), Some(balance)) if balance > 0.0 => {
                Some(size / balance).filter(|e| e.is_finite())
            }
            _ => None,
        }
    }
}

/// A position that was closed.
#[derive(Debug, Clone, PartialEq)]
pub struct Close {
    /// Realised P&L in percent (`pnl_pct` or `pnl_percentage`).
    pub pnl_pct: f64,
    /// Realised P&L in USD.
    pub pnl_usd: Option<f64>,
    /// Entry price.
    pub entry_price: Option<f64>,
    /// Exit price.
    pub exit_price: Option<f64>,
    /// Notional size in USD.
    pub size_usd: Option<f64>,
    /// Leverage of the position.
    pub leverage: Option<f64>,
    /// Whether the position was long.
    pub is_long: Option<bool>,
    /// How long the position was open.
    pub duration_seconds: Option<f64>,
    /// Largest drawdown in percent (`max_drawdown_pct` or `drawdown`; default 0).
    pub max_drawdown_pct: f64,
    /// Why it closed (`exit_reason` or `close_reason`).
    pub exit_reason: Option<String>,
    /// Account balance after the close.
    pub account_balance: Option<f64>,
    /// Portfolio exposure after the close.
    pub portfolio_exposure: Option<f64>,
    /// Volatility at close.
    pub volatility: Option<f64>,
    /// Regime at close when the event names one of the four (`regime` or `market_condition`).
    pub regime: Option<Regime>,
}

/// What the event says.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    /// PREDICTION_GENERATED.
    Prediction(Prediction),
    /// TRADE_EXECUTED.
    Trade(Trade),
    /// POSITION_CLOSED.
    Close(Close),
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Upper-cased symbol.
    pub symbol: String,
    /// Trace id of the event or of its envelope.
    pub trace_id: Option<String>,
    /// The time the event claims, in epoch seconds: its own timestamp, else its envelope's, else
    /// [`Self::received_at`]. Information only: the engine trusts it within a skew of
    /// `received_at` (see [`crate::plausibility`]).
    pub time: f64,
    /// The transport's time, epoch seconds: the JetStream message time, or the arrival time in
    /// core mode. The engine's clock: reward windows and expiry run on it.
    pub received_at: f64,
    /// The event itself.
    pub body: EventBody,
}

impl Event {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self.body {
            EventBody::Prediction(_) => EventKind::PredictionGenerated,
            EventBody::Trade(_) => EventKind::TradeExecuted,
            EventBody::Close(_) => EventKind::PositionClosed,
        }
    }
}

/// Why a payload was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The payload is larger than the configured limit.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The payload is empty.
    #[error("empty payload")]
    Empty,
    /// The payload is not valid JSON (this includes numbers too large for f64).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The payload is JSON but not an object.
    #[error("payload must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// An envelope's `payload` is not a JSON object or a string holding one.
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(String),
    /// A required field is absent or null.
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}, got {found}")]
    WrongType {
        /// The field, as named in the payload.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it was.
        found: &'static str,
    },
    /// A field's value is outside its domain.
    #[error("field `{field}` {problem}")]
    OutOfRange {
        /// The field, as named in the payload.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A reward input is a valid number but beyond what a real trading stack sends (see
    /// [`crate::plausibility`]).
    #[error("field `{field}` {problem}")]
    Implausible {
        /// The field, as named in the payload.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl DecodeError {
    /// A stable, machine-readable code: the key of the reject counters.
    pub fn code(&self) -> &'static str {
        match self {
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Empty => "empty_payload",
            Self::InvalidJson(_) => "invalid_json",
            Self::NotAnObject(_) => "not_an_object",
            Self::InvalidEnvelope(_) => "invalid_envelope",
            Self::MissingField(_) => "missing_field",
            Self::WrongType { .. } => "wrong_type",
            Self::OutOfRange { .. } => "out_of_range",
            Self::Implausible { .. } => "implausible",
        }
    }
}

/// Decodes a payload of `kind`. `received_at` (epoch seconds) is the transport's time: the
/// event's clock, and its claimed time when neither the event nor its envelope carries a
/// timestamp.
pub fn decode(
    kind: EventKind,
    payload: &[u8],
    max_payload_bytes: usize,
    received_at: f64,
) -> Result<Event, DecodeError> {
    if payload.len() > max_payload_bytes {
        return Err(DecodeError::PayloadTooLarge {
            size: payload.len(),
            limit: max_payload_bytes,
        });
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    let Value::Object(outer) = value else {
        return Err(DecodeError::NotAnObject(type_name(&value)));
    };
    let (inner, envelope) = unwrap(outer)?;
    let fields = Fields(&inner);
    let envelope_fields = envelope.as_ref().map(Fields);

    let symbol = symbol(&fields)?;
    let trace_id = match fields.text(&["trace_id"])? {
        Some(t) => Some(t),
        None => match &envelope_fields {
            Some(e) => e.text(&["trace_id"])?,
            None => None,
        },
    };
    let time = match fields.timestamp()? {
        Some(t) => t,
        None => match &envelope_fields {
            Some(e) => e.timestamp()?.unwrap_or(received_at),
            None => received_at,
        },
    };
    let body = match kind {
        EventKind::PredictionGenerated => EventBody::Prediction(prediction(&fields)?),
        EventKind::TradeExecuted => EventBody::Trade(trade(&fields)?),
        EventKind::PositionClosed => EventBody::Close(close(&fields)?),
    };
    Ok(Event {
        symbol,
        trace_id,
        time,
        received_at,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(kind: EventKind, raw: &str) -> Event {
        decode(kind, raw.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES, 5.0).unwrap()
    }

    fn err(kind: EventKind, raw: &str) -> DecodeError {
        decode(kind, raw.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES, 5.0).unwrap_err()
    }

    #[test]
    fn top_level_prediction_with_defaults() {
        let e = ok(
            EventKind::PredictionGenerated,
            r#"{"symbol":" btcusdt ","confidence":0.7,"model":"lstm","side":null}"#,
        );
        assert_eq!(e.symbol, "BTCUSDT");
        assert_eq!(e.time, 5.0);
        let EventBody::Prediction(p) = e.body else {
            panic!()
        };
        assert_eq!(p.confidence, 0.7);
        assert_eq!(p.model_version.as_deref(), Some("lstm"));
        assert_eq!(p.side, None);
        assert_eq!(p.price_history, None);
    }

    #[test]
    fn envelope_supplies_trace_id_and_iso_timestamp() {
        let raw = r#"{"event_type":"X","payload":"{\"symbol\":\"bnb\",\"confidence\":0.8}","trace_id":"t-1","timestamp":"2025-12-02T10:00:00"}"#;
        let e = ok(EventKind::PredictionGenerated, raw);
        assert_eq!(e.trace_id.as_deref(), Some("t-1"));
        assert_eq!(e.time, 1_764_669_600.0);
        let rfc = r#"{"payload":{"symbol":"bnb","confidence":0.8},"timestamp":"2025-12-02T11:00:00+01:00"}"#;
        assert_eq!(
            ok(EventKind::PredictionGenerated, rfc).time,
            1_764_669_600.0
        );
    }

    #[test]
    fn aliases_and_defaults_of_close_and_trade() {
        let c = ok(
            EventKind::PositionClosed,
            r#"{"symbol":"eth","pnl_percentage":-2.4,"drawdown":2.9,"close_reason":"SL","market_condition":"trend"}"#,
        );
        let EventBody::Close(c) = c.body else {
            panic!()
        };
        assert_eq!(c.pnl_pct, -2.4);
        assert_eq!(c.max_drawdown_pct, 2.9);
        assert_eq!(c.exit_reason.as_deref(), Some("SL"));
        assert_eq!(c.regime, Some(Regime::Trend));
        let t = ok(
            EventKind::TradeExecuted,
            r#"{"data":{"symbol":"eth","price":3120}}"#,
        );
        let EventBody::Trade(t) = t.body else {
            panic!()
        };
        assert_eq!(t.entry_price, Some(3120.0));
        assert_eq!(t.leverage, 20.0);
        assert_eq!(t.confidence, 0.5);
        assert_eq!(t.state_exposure(), 0.0);
        assert_eq!(t.reward_exposure(), 0.1);
    }

    #[test]
    fn rejections_carry_codes_and_field_names() {
        let k = EventKind::PredictionGenerated;
        assert_eq!(err(k, "").code(), "empty_payload");
        assert_eq!(err(k, "nope").code(), "invalid_json");
        assert_eq!(
            err(k, "3").to_string(),
            "payload must be a JSON object, got a number"
        );
        assert_eq!(
            err(k, r#"{"confidence":1}"#),
            DecodeError::MissingField("symbol")
        );
        assert_eq!(
            err(k, r#"{"symbol":"A","confidence":true}"#).to_string(),
            "field `confidence` must be a number, got a boolean"
        );
        assert_eq!(
            err(
                k,
                r#"{"symbol":"A","confidence":0.5,"market_features":{"price_history":[1,0]}}"#
            )
            .to_string(),
            "field `market_features.price_history` must hold prices > 0, item 1 is 0"
        );
        assert_eq!(err(k, r#"{"payload":"[1]"}"#).code(), "invalid_envelope");
        let big = format!(
            r#"{{"symbol":"A","confidence":0.5,"pad":"{}"}}"#,
            "x".repeat(100)
        );
        assert_eq!(
            decode(k, big.as_bytes(), 50, 0.0).unwrap_err().code(),
            "payload_too_large"
        );
        assert_eq!(
            err(
                EventKind::PositionClosed,
                r#"{"symbol":"A","pnl_pct":1,"timestamp":"soon"}"#
            )
            .code(),
            "out_of_range"
        );
    }
}
