//! Envelopes: the event at the top level, wrapped as `{"data": {...}}`, or inside
//! `{"event_type", "payload": "<JSON string>", "trace_id", "timestamp", ...}`.

use serde_json::{Map, Value};

use super::fields::type_name;
use super::DecodeError;

pub(super) type JsonObject = Map<String, Value>;

/// Takes the event out of a `{"data": {...}}` wrapper or an envelope; returns the event object
/// and, for an envelope, the envelope itself.
pub(super) fn unwrap(outer: JsonObject) -> Result<(JsonObject, Option<JsonObject>), DecodeError> {
    if outer.contains_key("symbol") {
        return Ok((outer, None));
    }
    if let Some(Value::Object(data)) = outer.get("data") {
        return Ok((data.clone(), None));
    }
    let inner = match outer.get("payload") {
        None | Some(Value::Null) => return Ok((outer, None)),
        Some(Value::Object(obj)) => obj.clone(),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(obj)) => obj,
            Ok(other) => {
                return Err(DecodeError::InvalidEnvelope(format!(
                    "payload string holds {}, not an object",
                    type_name(&other)
                )))
            }
            Err(e) => {
                return Err(DecodeError::InvalidEnvelope(format!(
                    "payload string is not JSON: {e}"
                )))
            }
        },
        Some(other) => {
            return Err(DecodeError::InvalidEnvelope(format!(
                "payload must be an object or a JSON string, got {}",
                type_name(other)
            )))
        }
    };
    let inner = match inner.get("data") {
        Some(Value::Object(data)) if !inner.contains_key("symbol") => data.clone(),
        _ => inner,
    };
    Ok((inner, Some(outer)))
}
