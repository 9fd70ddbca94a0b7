//! The simulated trading stack's messages: the JSON payloads it publishes for one trade, in the
//! shapes the service decodes.

use serde_json::{json, Value};

use super::market::{Scenario, TradeResult, HOLD_STEPS};

/// Event time of the first round: 2026-01-01T00:00:00Z, in epoch seconds.
pub const CLOCK_START: f64 = 1_767_225_600.0;
/// Event-time seconds between two rounds.
pub const ROUND_SECS: f64 = 3_600.0;
/// Seconds from a signal to the trade it leads to.
const TRADE_DELAY_SECS: f64 = 60.0;
/// Seconds one step of the price path lasts while a position is open.
const STEP_SECS: f64 = 120.0;

/// Event times of one trade: its signal, its execution and its close. `slot` (the trade's place
/// in the round) keeps times of one round distinct and increasing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Times {
    /// Time of PREDICTION_GENERATED.
    pub signal: f64,
    /// Time of TRADE_EXECUTED.
    pub trade: f64,
    /// Time of POSITION_CLOSED.
    pub close: f64,
}

impl Times {
    /// The times of the trade in `slot` of round `round`.
    pub fn of(round: u64, slot: usize) -> Self {
        let start = CLOCK_START + round as f64 * ROUND_SECS + slot as f64;
        let trade = start + TRADE_DELAY_SECS;
        Self {
            signal: start,
            trade,
            close: trade + HOLD_STEPS as f64 * STEP_SECS,
        }
    }

    /// Seconds the position was open.
    pub fn held(&self) -> f64 {
        self.close - self.trade
    }
}

fn side(s: &Scenario) -> &'static str {
    match (s.prices.first(), s.prices.last()) {
        (Some(first), Some(last)) if last < first => "SELL",
        _ => "BUY",
    }
}

/// PREDICTION_GENERATED: the signal with its confidence and price window.
pub fn prediction(symbol: &str, s: &Scenario, t: &Times, trace_id: &str) -> Vec<u8> {
    payload(json!({
        "symbol": symbol,
        "confidence": s.confidence,
        "side": side(s),
        "timeframe": "1h",
        "price_history": s.prices,
        "timestamp": t.signal,
        "trace_id": trace_id,
    }))
}

/// TRADE_EXECUTED: the trade opened on the signal. `exposure` is the share of the account held
/// as margin by the positions already open.
pub fn trade(symbol: &str, s: &Scenario, t: &Times, exposure: f64, trace_id: &str) -> Vec<u8> {
    payload(json!({
        "symbol": symbol,
        "side": side(s),
        "entry_price": s.prices.last().copied().unwrap_or(1.0),
        "confidence": s.confidence,
        "portfolio_exposure": exposure,
        "timestamp": t.trade,
        "trace_id": trace_id,
    }))
}

/// POSITION_CLOSED: the trade's result, with the regime and volatility the stack saw at close.
pub fn close(
    symbol: &str,
    s: &Scenario,
    t: &Times,
    result: &TradeResult,
    pnl_usd: f64,
    leverage: u32,
    trace_id: &str,
) -> Vec<u8> {
    payload(json!({
        "symbol": symbol,
        "pnl_pct": result.pnl_pct,
        "pnl_usd": pnl_usd,
        "max_drawdown_pct": result.max_drawdown_pct,
        "leverage": leverage,
        "is_long": side(s) == "BUY",
        "duration_seconds": t.held(),
        "exit_reason": if result.liquidated { "liquidation" } else { "signal" },
        "market_condition": s.regime.as_str(),
        "volatility": s.volatility,
        "timestamp": t.close,
        "trace_id": trace_id,
    }))
}

fn payload(value: Value) -> Vec<u8> {
    // Serialising a `Value` built from finite numbers and strings cannot fail; an empty payload
    // would be rejected by the engine and counted, never panic.
    serde_json::to_vec(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::market::Market;
    use rl_v2_core::event::{decode, EventBody, EventKind, DEFAULT_MAX_PAYLOAD_BYTES};

    #[test]
    fn payloads_decode_with_their_fields_and_event_time() {
        let market = Market::new(3, &["ethusdt".to_string()]);
        let round = market.stream(0).next_round();
        let s = &round.scenarios[0];
        let t = Times::of(5, 0);
        let decode = |kind, bytes: Vec<u8>| {
            decode(kind, &bytes, DEFAULT_MAX_PAYLOAD_BYTES, 0.0).expect("decodes")
        };
        let p = decode(
            EventKind::PredictionGenerated,
            prediction("ETHUSDT", s, &t, "p"),
        );
        assert_eq!(p.symbol, "ETHUSDT");
        assert_eq!(p.time, CLOCK_START + 5.0 * ROUND_SECS);
        match p.body {
            EventBody::Prediction(p) => {
                assert_eq!(p.confidence, s.confidence);
                assert_eq!(p.price_history.as_deref(), Some(&s.prices[..]));
            }
            other => panic!("{other:?}"),
        }
        let tr = decode(EventKind::TradeExecuted, trade("ETHUSDT", s, &t, 0.03, "t"));
        assert_eq!(tr.time, t.trade);
        match tr.body {
            EventBody::Trade(tr) => assert_eq!(tr.portfolio_exposure, Some(0.03)),
            other => panic!("{other:?}"),
        }
        let result = s.outcome(0, 0);
        let c = decode(
            EventKind::PositionClosed,
            close("ETHUSDT", s, &t, &result, 1.5, 5, "c"),
        );
        assert_eq!(c.time, t.close);
        match c.body {
            EventBody::Close(c) => {
                assert_eq!(c.pnl_pct, result.pnl_pct);
                assert_eq!(c.max_drawdown_pct, result.max_drawdown_pct);
                assert_eq!(c.pnl_usd, Some(1.5));
                assert_eq!(c.regime, Some(s.regime));
                assert_eq!(c.volatility, Some(s.volatility));
            }
            other => panic!("{other:?}"),
        }
    }
}
