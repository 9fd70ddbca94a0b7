//! Field decoding: typed access to an event object's fields, with aliases, `null` as absent,
//! range checks and times.

use serde_json::{Map, Value};

use super::{
    Close, DecodeError, Prediction, Trade, DEFAULT_TRADE_CONFIDENCE, DEFAULT_TRADE_LEVERAGE,
    MAX_EVENT_LEVERAGE, MAX_SYMBOL_LEN,
};
use crate::domain::market::Regime;
pub(super) fn prediction(f: &Fields) -> Result<Prediction, DecodeError> {
    let confidence = f
        .number(&["confidence"], unit_interval)?
        .ok_or(DecodeError::MissingField("confidence"))?;
    let price_history = match f.get(&["price_history"]) {
        Some(_) => f.prices(f.get(&["price_history"]), "price_history")?,
        None => match f.get(&["market_features"]) {
            Some((_, Value::Object(features))) => {
                let nested = Fields(features);
                nested.prices(
                    nested.get(&["price_history"]),
                    "market_features.price_history",
                )?
            }
            Some((_, other)) => return Err(wrong_type("market_features", "an object", other)),
            None => None,
        },
    };
    Ok(Prediction {
        confidence,
        side: f.text(&["side"])?,
        timeframe: f.text(&["timeframe"])?,
        model_version: f.text(&["model_version", "model"])?,
        strategy: f.text(&["strategy"])?,
        price_history,
    })
}

pub(super) fn trade(f: &Fields) -> Result<Trade, DecodeError> {
    Ok(Trade {
        side: f.text(&["side"])?,
        entry_price: f.number(&["entry_price", "price"], positive)?,
        position_size_usd: f.number(&["position_size_usd"], non_negative)?,
        leverage: f
            .number(&["leverage"], leverage)?
            .unwrap_or(DEFAULT_TRADE_LEVERAGE),
        order_id: f.text(&["order_id"])?,
        confidence: f
            .number(&["confidence"], unit_interval)?
            .unwrap_or(DEFAULT_TRADE_CONFIDENCE),
        portfolio_exposure: f.number(&["portfolio_exposure"], non_negative)?,
        account_balance: f.number(&["account_balance"], non_negative)?,
    })
}

pub(super) fn close(f: &Fields) -> Result<Close, DecodeError> {
    let regime = f
        .text(&["regime", "market_condition"])?
        .and_then(|r| Regime::parse_known(&r));
    Ok(Close {
        pnl_pct: f
            .number(&["pnl_pct", "pnl_percentage"], any_finite)?
            .ok_or(DecodeError::MissingField("pnl_pct"))?,
        pnl_usd: f.number(&["pnl_usd"], any_finite)?,
        entry_price: f.number(&["entry_price"], positive)?,
        exit_price: f.number(&["exit_price"], positive)?,
        size_usd: f.number(&["size_usd"], non_negative)?,
        leverage: f.number(&["leverage"], leverage)?,
        is_long: f.boolean(&["is_long"])?,
        duration_seconds: f.number(&["duration_seconds"], non_negative)?,
        max_drawdown_pct: f
            .number(&["max_drawdown_pct", "drawdown"], non_negative)?
            .unwrap_or(0.0),
        exit_reason: f.text(&["exit_reason", "close_reason"])?,
        account_balance: f.number(&["account_balance"], non_negative)?,
        portfolio_exposure: f.number(&["portfolio_exposure"], non_negative)?,
        volatility: f.number(&["volatility"], non_negative)?,
        regime,
    })
}

pub(super) fn symbol(f: &Fields) -> Result<String, DecodeError> {
    let raw = f
        .text(&["symbol"])?
        .ok_or(DecodeError::MissingField("symbol"))?;
    let symbol = raw.trim().to_uppercase();
    let problem = if symbol.is_empty() {
        Some("must not be empty".to_string())
    } else if symbol.len() > MAX_SYMBOL_LEN {
        Some(format!("must be at most {MAX_SYMBOL_LEN} bytes"))
    } else if symbol.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain whitespace or control characters".to_string())
    } else {
        None
    };
    match problem {
        Some(problem) => Err(DecodeError::OutOfRange {
            field: "symbol",
            problem,
        }),
        None => Ok(symbol),
    }
}

/// A range check: `None` when the value is acceptable, else what is wrong with it.
type Check = fn(f64) -> Option<String>;

fn any_finite(_: f64) -> Option<String> {
    None
}

fn unit_interval(v: f64) -> Option<String> {
    (!(0.0..=1.0).contains(&v)).then(|| format!("must be in [0, 1], got {v}"))
}

fn positive(v: f64) -> Option<String> {
    (v <= 0.0).then(|| format!("must be > 0, got {v}"))
}

fn non_negative(v: f64) -> Option<String> {
    (v < 0.0).then(|| format!("must be >= 0, got {v}"))
}

fn leverage(v: f64) -> Option<String> {
    (!(v > 0.0 && v <= MAX_EVENT_LEVERAGE))
        .then(|| format!("must be in (0, {MAX_EVENT_LEVERAGE}], got {v}"))
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(field: &'static str, expected: &'static str, found: &Value) -> DecodeError {
    DecodeError::WrongType {
        field,
        expected,
        found: type_name(found),
    }
}

/// Typed access to an event object's fields, with aliases and `null` as absent.
pub(super) struct Fields<'a>(pub(super) &'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// The first of `names` present with a non-null value.
    fn get(&self, names: &[&'static str]) -> Option<(&'static str, &'a Value)> {
        names
            .iter()
            .find_map(|n| self.0.get(*n).filter(|v| !v.is_null()).map(|v| (*n, v)))
    }

    fn number(&self, names: &[&'static str], check: Check) -> Result<Option<f64>, DecodeError> {
        let Some((field, value)) = self.get(names) else {
            return Ok(None);
        };
        let v = value
            .as_f64()
            .ok_or_else(|| wrong_type(field, "a number", value))?;
        if !v.is_finite() {
            return Err(DecodeError::OutOfRange {
                field,
                problem: "must be finite".into(),
            });
        }
        match check(v) {
            Some(problem) => Err(DecodeError::OutOfRange { field, problem }),
            None => Ok(Some(v)),
        }
    }

    /// A string field; numbers are accepted and written as text (order ids, trace ids).
    pub(super) fn text(&self, names: &[&'static str]) -> Result<Option<String>, DecodeError> {
        match self.get(names) {
            None => Ok(None),
            Some((_, Value::String(s))) => Ok(Some(s.clone())),
            Some((_, Value::Number(n))) => Ok(Some(n.to_string())),
            Some((field, other)) => Err(wrong_type(field, "a string", other)),
        }
    }

    fn boolean(&self, names: &[&'static str]) -> Result<Option<bool>, DecodeError> {
        match self.get(names) {
            None => Ok(None),
            Some((_, Value::Bool(b))) => Ok(Some(*b)),
            Some((field, other)) => Err(wrong_type(field, "a boolean", other)),
        }
    }

    fn prices(
        &self,
        found: Option<(&'static str, &Value)>,
        field: &'static str,
    ) -> Result<Option<Vec<f64>>, DecodeError> {
        let Some((_, value)) = found else {
            return Ok(None);
        };
        let Value::Array(items) = value else {
            return Err(wrong_type(field, "an array of prices", value));
        };
        let mut prices = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = item
                .as_f64()
                .ok_or_else(|| wrong_type(field, "an array of numbers", item))?;
            if !(p.is_finite() && p > 0.0) {
                return Err(DecodeError::OutOfRange {
                    field,
                    problem: format!("must hold prices > 0, item {i} is {p}"),
                });
            }
            prices.push(p);
        }
        Ok(Some(prices))
    }

    /// `timestamp` as epoch seconds: a number, a numeric string, or RFC 3339 / ISO 8601 (UTC
    /// when it has no offset).
    pub(super) fn timestamp(&self) -> Result<Option<f64>, DecodeError> {
        let Some((field, value)) = self.get(&["timestamp"]) else {
            return Ok(None);
        };
        let seconds = match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => parse_time(s),
            other => {
                return Err(wrong_type(
                    field,
                    "epoch seconds or an ISO 8601 time",
                    other,
                ))
            }
        };
        match seconds {
            Some(t) if t.is_finite() && t >= 0.0 => Ok(Some(t)),
            _ => Err(DecodeError::OutOfRange {
                field,
                problem: format!("must be epoch seconds >= 0 or an ISO 8601 time, got {value}"),
            }),
        }
    }
}

/// Parses epoch seconds written as text, RFC 3339, or ISO 8601 without an offset (taken as UTC).
pub(super) fn parse_time(s: &str) -> Option<f64> {
    use time::format_description::well_known::{Iso8601, Rfc3339};
    use time::{OffsetDateTime, PrimitiveDateTime};
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return Some(v);
    }
    let to_secs = |t: OffsetDateTime| t.unix_timestamp_nanos() as f64 / 1e9;
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(to_secs(t));
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Iso8601::DEFAULT) {
        return Some(to_secs(t));
    }
    PrimitiveDateTime::parse(s, &Iso8601::DEFAULT)
        .ok()
        .map(|t| to_secs(t.assume_utc()))
}
