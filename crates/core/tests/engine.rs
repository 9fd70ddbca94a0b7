//! The engine end to end, without NATS: the original Python suite re-expressed with values,
//! determinism across checkpoints, the shared fixtures, interleaved symbols, and properties.

use proptest::prelude::*;
use rl_v2_core::decision::{Choice, Decision};
use rl_v2_core::domain::agent::AgentKind;
use rl_v2_core::domain::profile::LearningProfile;
use rl_v2_core::domain::reward::{risk_penalty, sharpe_signal, volatility_adjustment};
use rl_v2_core::engine::{Engine, EngineConfig, EngineState};
use rl_v2_core::event::{decode, Event, EventKind, DEFAULT_MAX_PAYLOAD_BYTES};

/// The checkpoint bytes of a state (what the service writes).
fn encode(state: &EngineState) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(state)
}

const T0: f64 = 1_764_633_600.0;

fn ev(kind: EventKind, raw: &str) -> Event {
    decode(kind, raw.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES, T0).unwrap()
}

fn prediction(symbol: &str, confidence: f64) -> Event {
    ev(
        EventKind::PredictionGenerated,
        &format!(r#"{{"symbol":"{symbol}","confidence":{confidence},"trace_id":"p-{symbol}"}}"#),
    )
}

fn trade(symbol: &str, extra: &str) -> Event {
    ev(
        EventKind::TradeExecuted,
        &format!(r#"{{"symbol":"{symbol}","trace_id":"t-{symbol}"{extra}}}"#),
    )
}

fn close(symbol: &str, pnl_pct: f64) -> Event {
    ev(
        EventKind::PositionClosed,
        &format!(r#"{{"symbol":"{symbol}","pnl_pct":{pnl_pct}}}"#),
    )
}

fn q_of(engine: &Engine, d: &Decision) -> f64 {
    let agent = match d.agent {
        AgentKind::MetaStrategy => &engine.state().meta,
        AgentKind::PositionSizing => &engine.state().sizing,
    };
    agent.q().q(&d.state_key, d.action_index)
}

/// The original design's learning numbers, which the Python suite's expected values assume.
fn seed_profile() -> EngineConfig {
    EngineConfig::with_profile(LearningProfile::Seed)
}

fn one(decisions: Vec<Decision>) -> Decision {
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    decisions.into_iter().next().unwrap()
}

/// Seed test 1: the meta-strategy agent selects an action and learns from the close.
#[test]
fn meta_strategy_agent_select_and_update() {
    let mut engine = Engine::new(seed_profile());
    let d = one(engine.apply(1, &prediction("btcusdt", 0.72)));
    assert_eq!(d.agent, AgentKind::MetaStrategy);
    assert_eq!(d.symbol, "BTCUSDT");
    assert_eq!(d.decision_id, "meta_strategy-1");
    assert_eq!(d.trace_id.as_deref(), Some("p-btcusdt"));
    assert_eq!(d.state_key, "UNKNOWN|vol=3|press=2|conf=3|wr=2|health=2");
    assert_eq!(d.epsilon, 0.1);
    assert_eq!(d.q_value, 0.0);
    assert!(matches!(d.choice, Choice::Meta { .. }));
    if !d.explored {
        // An empty table's greedy choice is the lowest index.
        assert_eq!(d.action_index, 0);
        assert!((d.propensity - (0.9 + 0.1 / 60.0)).abs() < 1e-12);
    }
    assert!(engine.apply(2, &close("BTCUSDT", 2.0)).is_empty());
    // reward = pnl 2.0 − 0.5·0 drawdown + 0.2·0 sharpe (one value) + 0.15·0 (UNKNOWN regime)
    assert!((q_of(&engine, &d) - 0.02).abs() < 1e-15);
    let stats = engine.stats().meta_agent_stats;
    assert_eq!(stats.q_learning_stats.update_count, 1);
    assert!((stats.q_learning_stats.epsilon - 0.0999).abs() < 1e-15);
    assert_eq!(stats.episode_stats.total_episodes, 1);
    assert_eq!(stats.episode_stats.avg_return, 2.0);
    assert_eq!(
        engine
            .stats()
            .sizing_agent_stats
            .q_learning_stats
            .update_count,
        0
    );
}

/// The default profile: a close ends the episode and a first try takes its whole reward, so
/// the first close sets Q to the reward itself, with no bootstrap from the state at close.
#[test]
fn default_profile_learns_the_reward_of_a_one_step_episode() {
    let mut engine = Engine::new(EngineConfig::default());
    let d = one(engine.apply(1, &prediction("BTCUSDT", 0.72)));
    let updates = engine.apply(2, &close("BTCUSDT", 2.0));
    assert!(updates.is_empty());
    let reward = engine.stats().meta_agent_stats.episode_stats.avg_return;
    assert_eq!(q_of(&engine, &d), reward);
    // The next decision's Q is its own reward, or the mean of both when it repeats the first
    // decision's state and action (step 1/2).
    let e = one(engine.apply(3, &prediction("BTCUSDT", 0.72)));
    engine.apply(4, &close("BTCUSDT", -1.0));
    let second = 2.0 * engine.stats().meta_agent_stats.episode_stats.avg_return - reward;
    let expected = if (&e.state_key, e.action_index) == (&d.state_key, d.action_index) {
        (reward + second) / 2.0
    } else {
        second
    };
    assert!((q_of(&engine, &e) - expected).abs() < 1e-12);
}

/// Seed test 2: the position-sizing agent selects an action and learns from the close.
#[test]
fn position_sizing_agent_select_and_update() {
    let mut engine = Engine::new(seed_profile());
    let d = one(engine.apply(
        1,
        &trade(
            "ETHUSDT",
            r#","confidence":0.66,"position_size_usd":3000,"account_balance":10000"#,
        ),
    ));
    assert_eq!(d.agent, AgentKind::PositionSizing);
    assert_eq!(d.decision_id, "position_sizing-1");
    assert_eq!(d.state_key, "conf=3|exp=2|wr=2|vol=3|slope=2");
    let Choice::Sizing {
        leverage,
        size_multiplier,
    } = d.choice
    else {
        panic!("{d:?}")
    };
    assert!(leverage >= 5 && size_multiplier >= 0.5);
    engine.apply(2, &close("ETHUSDT", -1.5));
    // reward = −1.5 − 0.4·risk_penalty(leverage, 0.3) + 0.1·0.5 (volatility 0.02 is calm)
    let reward = -1.5 - 0.4 * risk_penalty(f64::from(leverage), 0.3) + 0.1 * 0.5;
    assert!((q_of(&engine, &d) - 0.01 * reward).abs() < 1e-15);
    assert_eq!(
        engine
            .stats()
            .sizing_agent_stats
            .q_learning_stats
            .update_count,
        1
    );
    assert_eq!(
        engine
            .stats()
            .meta_agent_stats
            .q_learning_stats
            .update_count,
        0
    );
    assert_eq!(engine.stats().counters.updates, 1);
}

/// Seed test 3: prediction → trade → close updates both agents and the stats.
#[test]
fn complete_pipeline_updates_both_agents() {
    let mut engine = Engine::new(seed_profile());
    let prices =
        "[100.0, 100.4, 100.9, 101.3, 101.0, 101.8, 102.5, 102.2, 103.0, 103.6, 104.1, 104.0]";
    let p = ev(
        EventKind::PredictionGenerated,
        &format!(
            r#"{{"symbol":"SOLUSDT","confidence":0.9,"market_features":{{"price_history":{prices}}}}}"#
        ),
    );
    let meta = one(engine.apply(1, &p));
    let sizing = one(engine.apply(
        2,
        &trade("SOLUSDT", r#","leverage":10,"portfolio_exposure":0.6"#),
    ));
    engine.apply(
        3,
        &ev(
            EventKind::PositionClosed,
            r#"{"symbol":"SOLUSDT","pnl_pct":3.0,"max_drawdown_pct":1.0,"market_condition":"RANGE","volatility":0.05}"#,
        ),
    );
    // The price history is a quiet drift (trend strength and volatility below 1 %): RANGE, as
    // the close says, so the alignment term is +confidence.
    assert!(
        meta.state_key.starts_with("RANGE|vol=0|"),
        "{}",
        meta.state_key
    );
    let meta_reward = 3.0 - 0.5 * 1.0 + 0.15 * 0.9;
    assert!((q_of(&engine, &meta) - 0.01 * meta_reward).abs() < 1e-15);
    let Choice::Sizing { leverage, .. } = sizing.choice else {
        panic!()
    };
    let sizing_reward =
        3.0 - 0.4 * risk_penalty(f64::from(leverage), 0.6) + 0.1 * volatility_adjustment(0.05);
    assert!((q_of(&engine, &sizing) - 0.01 * sizing_reward).abs() < 1e-15);
    let stats = engine.stats();
    assert_eq!(stats.counters.updates, 2);
    assert_eq!(stats.pending_decisions, 0);
    assert_eq!(stats.open_positions, 0);
    assert_eq!(stats.meta_agent_stats.action_space_size, 60);
    assert_eq!(stats.sizing_agent_stats.action_space_size, 40);
    let json = serde_json::to_value(&stats).unwrap();
    for agent in ["meta_agent_stats", "sizing_agent_stats"] {
        for key in [
            "agent_type",
            "q_learning_stats",
            "episode_stats",
            "action_space_size",
        ] {
            assert!(json[agent].get(key).is_some(), "{agent}.{key}");
        }
    }
}

/// Each of several in-flight symbols is rewarded by its own close, in any order.
#[test]
fn interleaved_symbols_are_rewarded_by_their_own_close() {
    let mut engine = Engine::new(seed_profile());
    let symbols = [("AAA", 0.1, 3.0), ("BBB", 0.5, -1.0), ("CCC", 0.9, 2.0)];
    let mut metas = Vec::new();
    let mut seq = 0;
    for (s, conf, _) in symbols {
        seq += 1;
        metas.push(one(engine.apply(seq, &prediction(s, conf))));
    }
    let keys: std::collections::BTreeSet<_> = metas.iter().map(|d| d.state_key.clone()).collect();
    assert_eq!(
        keys.len(),
        3,
        "distinct states make each update attributable"
    );
    let mut sizings = Vec::new();
    for (s, _, _) in symbols.iter().rev() {
        seq += 1;
        sizings.push(one(engine.apply(seq, &trade(s, ""))));
    }
    sizings.reverse();
    // A new signal for AAA while its position is open does not touch the position.
    seq += 1;
    let late = one(engine.apply(seq, &prediction("AAA", 0.3)));
    let order = [2, 0, 1];
    let mut pnls = Vec::new();
    for i in order {
        seq += 1;
        let (s, _, pnl) = symbols[i];
        engine.apply(seq, &close(s, pnl));
        pnls.push(pnl);
        let sharpe = sharpe_signal(pnls.iter().copied());
        let meta_reward = pnl + 0.2 * sharpe;
        assert!(
            (q_of(&engine, &metas[i]) - 0.01 * meta_reward).abs() < 1e-12,
            "{s}: meta Q {} vs reward {meta_reward}",
            q_of(&engine, &metas[i])
        );
        let Choice::Sizing { leverage, .. } = sizings[i].choice else {
            panic!()
        };
        let sizing_reward = pnl - 0.4 * risk_penalty(f64::from(leverage), 0.1) + 0.05;
        let sizing_keys_shared = sizings
            .iter()
            .filter(|d| {
                d.state_key == sizings[i].state_key && d.action_index == sizings[i].action_index
            })
            .count();
        if sizing_keys_shared == 1 {
            assert!((q_of(&engine, &sizings[i]) - 0.01 * sizing_reward).abs() < 1e-12);
        }
    }
    assert_eq!(
        q_of(&engine, &late),
        0.0,
        "the late signal is still pending"
    );
    let stats = engine.stats();
    assert_eq!(stats.counters.updates, 6);
    assert_eq!(stats.pending_decisions, 1);
    assert_eq!(stats.counters.closes_without_decision, 0);
    assert_eq!(stats.counters.superseded_pending, 0);
}

/// A random but reproducible stream of events over a few symbols.
fn event_stream(seed: u64, n: usize) -> Vec<Event> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let symbol = ["BTC", "ETH", "SOL", "ADA", "XRP"][rng.random_range(0..5)];
            let t = T0 + i as f64 * 60.0;
            match rng.random_range(0..3) {
                0 => {
                    let mut p = 100.0;
                    let prices: Vec<String> = (0..12)
                        .map(|_| {
                            p *= 1.0 + rng.random_range(-0.03..0.03);
                            format!("{p}")
                        })
                        .collect();
                    ev(
                        EventKind::PredictionGenerated,
                        &format!(
                            r#"{{"symbol":"{symbol}","confidence":{},"timestamp":{t},"price_history":[{}]}}"#,
                            rng.random_range(0.0..1.0),
                            prices.join(",")
                        ),
                    )
                }
                1 => ev(
                    EventKind::TradeExecuted,
                    &format!(
                        r#"{{"symbol":"{symbol}","timestamp":{t},"leverage":{},"portfolio_exposure":{}}}"#,
                        rng.random_range(1..50),
                        rng.random_range(0.0..1.0)
                    ),
                ),
                _ => ev(
                    EventKind::PositionClosed,
                    &format!(
                        r#"{{"symbol":"{symbol}","timestamp":{t},"pnl_pct":{},"pnl_usd":{}}}"#,
                        rng.random_range(-5.0..5.0),
                        rng.random_range(-100.0..100.0)
                    ),
                ),
            }
        })
        .collect()
}

fn run(engine: &mut Engine, events: &[Event], first_seq: u64) -> Vec<Decision> {
    events
        .iter()
        .enumerate()
        .flat_map(|(i, e)| engine.apply(first_seq + i as u64, e))
        .collect()
}

#[test]
fn same_events_give_identical_decisions_and_checkpoints() {
    let events = event_stream(7, 2_000);
    let mut a = Engine::new(EngineConfig::default());
    let mut b = Engine::new(EngineConfig::default());
    assert_eq!(run(&mut a, &events, 1), run(&mut b, &events, 1));
    assert_eq!(encode(a.state()).unwrap(), encode(b.state()).unwrap());
    assert!(a.updates() > 300, "the stream trains: {}", a.updates());
}

#[test]
fn checkpoint_load_continue_equals_never_stopping() {
    let events = event_stream(11, 2_000);
    let config = EngineConfig::default();
    let mut straight = Engine::new(config.clone());
    let all = run(&mut straight, &events, 1);

    let mut first = Engine::new(config.clone());
    let mut resumed_decisions = run(&mut first, &events[..777], 1);
    let bytes = encode(first.state()).unwrap();
    let state: EngineState = serde_json::from_slice(&bytes).unwrap();
    let mut resumed = Engine::from_state(config, state).unwrap();
    resumed_decisions.extend(run(&mut resumed, &events[777..], 778));

    assert_eq!(all, resumed_decisions);
    assert_eq!(
        encode(straight.state()).unwrap(),
        encode(resumed.state()).unwrap()
    );
}

#[test]
fn replayed_sequence_numbers_change_nothing() {
    let events = event_stream(3, 300);
    let mut engine = Engine::new(EngineConfig::default());
    run(&mut engine, &events, 1);
    let before = encode(engine.state()).unwrap();
    assert!(run(&mut engine, &events[100..200], 101).is_empty());
    assert_eq!(encode(engine.state()).unwrap(), before);
}

/// The reason code each rejected fixture must carry, by its note.
fn expected_code(note: &str) -> &'static str {
    match note {
        "not JSON" => "invalid_json",
        "JSON but not an object" => "not_an_object",
        "missing symbol" | "missing confidence" | "close without pnl_pct or pnl_percentage" => {
            "missing_field"
        }
        "confidence of the wrong type" | "pnl_pct as a string" => "wrong_type",
        "confidence out of [0,1]" | "empty symbol" | "non-positive price" | "negative leverage" => {
            "out_of_range"
        }
        "number too large for f64" => "invalid_json",
        "payload over 64 KiB" => "payload_too_large",
        "empty payload" => "empty_payload",
        other => panic!("no expected reason for fixture `{other}`"),
    }
}

#[test]
fn every_fixture_is_accepted_or_rejected_as_marked() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/events.jsonl"
    ))
    .unwrap();
    let mut engine = Engine::new(EngineConfig::default());
    let (mut accepted, mut rejected) = (0, 0);
    for (i, line) in text.lines().enumerate() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let kind = match case["subject"].as_str().unwrap() {
            "PREDICTION_GENERATED" => EventKind::PredictionGenerated,
            "TRADE_EXECUTED" => EventKind::TradeExecuted,
            _ => EventKind::PositionClosed,
        };
        let note = case["note"].as_str().unwrap();
        let raw = case["raw"].as_str().unwrap();
        let seq = i as u64 + 1;
        match (
            case["expect"].as_str().unwrap(),
            decode(kind, raw.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES, T0),
        ) {
            ("accept", Ok(event)) => {
                let decisions = engine.apply(seq, &event);
                let expected = usize::from(kind != EventKind::PositionClosed);
                assert_eq!(decisions.len(), expected, "{note}");
                accepted += 1;
            }
            ("reject", Err(e)) => {
                assert_eq!(e.code(), expected_code(note), "{note}: {e}");
                engine.reject(seq, e.code());
                rejected += 1;
            }
            (expect, got) => panic!("{note}: expected {expect}, got {got:?}"),
        }
    }
    assert_eq!((accepted, rejected), (10, 14));
    let counters = engine.stats().counters;
    assert_eq!(counters.rejects.values().sum::<u64>(), 14);
    assert_eq!(engine.last_applied_seq(), 24);
    // BTCUSDT and ETHUSDT close after a signal and a trade; ADAUSDT closes with nothing pending.
    assert_eq!(counters.updates, 4);
    assert_eq!(counters.closes_without_decision, 1);
}

#[test]
fn fixture_reasons_name_the_field() {
    let k = EventKind::PredictionGenerated;
    let msg = |raw: &str| {
        decode(k, raw.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES, T0)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        msg(r#"{"confidence": 0.7}"#),
        "missing required field `symbol`"
    );
    assert_eq!(
        msg(r#"{"symbol": "BTCUSDT", "confidence": 1.7}"#),
        "field `confidence` must be in [0, 1], got 1.7"
    );
    assert!(
        msg(r#"{"symbol":"BTCUSDT","confidence":0.5,"price_history":[1e400,100]}"#)
            .contains("number out of range")
    );
}

fn finite_or_extreme() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e6..1e6f64,
        Just(0.0),
        Just(1e300),
        Just(-1e300),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
    ]
}

fn arbitrary_event() -> impl Strategy<Value = String> {
    let symbol = prop::sample::select(vec!["A", "B", "C"]);
    prop_oneof![
        (symbol.clone(), 0.0..=1.0f64, prop::collection::vec(1e-300..1e300f64, 0..15)).prop_map(
            |(s, c, prices)| {
                let prices: Vec<String> = prices.iter().map(|p| format!("{p:e}")).collect();
                format!(r#"P{{"symbol":"{s}","confidence":{c},"price_history":[{}]}}"#, prices.join(","))
            }
        ),
        (symbol.clone(), 1e-9..1000.0f64, finite_or_extreme(), finite_or_extreme()).prop_map(
            |(s, lev, size, bal)| format!(
                r#"T{{"symbol":"{s}","leverage":{lev},"position_size_usd":{:e},"account_balance":{:e}}}"#,
                size.abs(),
                bal.abs()
            )
        ),
        (symbol, finite_or_extreme(), finite_or_extreme(), finite_or_extreme(), finite_or_extreme()).prop_map(
            |(s, pnl, dd, usd, vol)| format!(
                r#"C{{"symbol":"{s}","pnl_pct":{pnl:e},"max_drawdown_pct":{:e},"pnl_usd":{usd:e},"volatility":{:e},"account_balance":{:e}}}"#,
                dd.abs(),
                vol.abs(),
                usd.abs()
            )
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn accepted_inputs_never_panic_or_store_non_finite_values(raws in prop::collection::vec(arbitrary_event(), 1..60)) {
        let mut engine = Engine::new(EngineConfig::default());
        for (i, raw) in raws.iter().enumerate() {
            let kind = match &raw[..1] {
                "P" => EventKind::PredictionGenerated,
                "T" => EventKind::TradeExecuted,
                _ => EventKind::PositionClosed,
            };
            if let Ok(event) = decode(kind, &raw.as_bytes()[1..], DEFAULT_MAX_PAYLOAD_BYTES, T0) {
                for d in engine.apply(i as u64 + 1, &event) {
                    prop_assert!(d.q_value.is_finite() && d.propensity > 0.0 && d.propensity <= 1.0);
                }
            }
        }
        prop_assert!(engine.state().meta.q().all_finite());
        prop_assert!(engine.state().sizing.q().all_finite());
        let bytes = encode(engine.state()).unwrap();
        prop_assert!(serde_json::from_slice::<EngineState>(&bytes).is_ok());
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), k in 0..3usize) {
        let _ = decode(EventKind::ALL[k], &bytes, DEFAULT_MAX_PAYLOAD_BYTES, T0);
    }

    #[test]
    fn decoding_arbitrary_json_objects_never_panics(s in "\\{(\"[a-z_]{1,12}\": ?(-?[0-9.e+]{1,8}|\"[A-Za-z]{0,5}\"|null|true|\\[\\]|\\{\\}), ?){0,6}\"symbol\": ?\"[a-z]{0,4}\"\\}", k in 0..3usize) {
        let _ = decode(EventKind::ALL[k], s.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES, T0);
    }
}
