//! The checkpoint schema: a checkpoint written by an earlier version loads with today's code and
//! keeps learning from where it stopped.

use rl_v2_core::control::TradingState;
use rl_v2_core::engine::{Engine, EngineConfig, EngineState};
use rl_v2_core::event::{decode, EventKind, DEFAULT_MAX_PAYLOAD_BYTES};

const V1: &[u8] = include_bytes!("fixtures/checkpoint-v1.json");

fn load_v1() -> Engine {
    let state: EngineState = serde_json::from_slice(V1).expect("a version-1 checkpoint parses");
    Engine::from_state(EngineConfig::default(), state).expect("a version-1 checkpoint loads")
}

#[test]
fn a_version_1_checkpoint_loads_with_what_it_held() {
    let engine = load_v1();
    let stats = engine.stats();
    assert_eq!(engine.last_applied_seq(), 61);
    assert_eq!(stats.counters.updates, 36);
    assert_eq!(stats.counters.rejects.get("out_of_range"), Some(&1));
    assert_eq!(stats.meta_agent_stats.q_learning_stats.update_count, 18);
    assert_eq!(stats.sizing_agent_stats.q_learning_stats.update_count, 18);
    assert!(stats.meta_agent_stats.q_learning_stats.states_visited > 0);
    // Written before trading states existed: it loads ACTIVE, with nothing refused.
    assert_eq!(stats.trading_state, TradingState::Active);
    assert!(stats.control.last_change.is_none());
    assert!(stats.counters.refusals.is_empty());
}

#[test]
fn a_version_1_checkpoint_keeps_learning_after_its_last_sequence() {
    let mut engine = load_v1();
    let at = 1_764_633_700.0;
    let mut seq = engine.last_applied_seq();
    let mut next = |kind, raw: &str| {
        seq += 1;
        let event = decode(kind, raw.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES, at).unwrap();
        (seq, event)
    };
    let (s, e) = next(
        EventKind::PredictionGenerated,
        r#"{"symbol":"BTCUSDT","confidence":0.8,"timestamp":1764633700.0}"#,
    );
    let decisions = engine.apply(s, &e);
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].event_seq, 62);
    let (s, e) = next(
        EventKind::TradeExecuted,
        r#"{"symbol":"BTCUSDT","leverage":10,"timestamp":1764633700.0}"#,
    );
    assert_eq!(engine.apply(s, &e).len(), 1);
    let before = engine.stats().counters.updates;
    let (s, e) = next(
        EventKind::PositionClosed,
        r#"{"symbol":"BTCUSDT","pnl_pct":2.0,"timestamp":1764633700.0}"#,
    );
    engine.apply(s, &e);
    assert_eq!(engine.stats().counters.updates, before + 2);
}
