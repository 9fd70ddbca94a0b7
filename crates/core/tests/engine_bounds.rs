//! The engine against hostile producers, without NATS: forged rewards, dragged clocks, floods of
//! symbols, and sequence numbers that start over.

use rl_v2_core::domain::profile::LearningProfile;
use rl_v2_core::engine::{Engine, EngineConfig, EngineState, Outcome};
use rl_v2_core::event::{EventKind, DEFAULT_MAX_PAYLOAD_BYTES};

/// The checkpoint bytes of a state (what the service writes).
fn encode(state: &EngineState) -> Vec<u8> {
    serde_json::to_vec(state).expect("engine state serializes")
}

const T0: f64 = 1_800_000_000.0;
const DAY: f64 = 86_400.0;

/// Feeds one raw event received (by the transport) at `at`; returns its outcome.
fn feed(engine: &mut Engine, kind: EventKind, raw: &str, at: f64) -> Outcome {
    let seq = engine.last_applied_seq() + 1;
    engine.ingest(seq, kind, raw.as_bytes(), at, DEFAULT_MAX_PAYLOAD_BYTES)
}

fn predict(engine: &mut Engine, symbol: &str, at: f64) -> Outcome {
    feed(
        engine,
        EventKind::PredictionGenerated,
        &format!(r#"{{"symbol":"{symbol}","confidence":0.6}}"#),
        at,
    )
}

fn open(engine: &mut Engine, symbol: &str, at: f64) -> Outcome {
    feed(
        engine,
        EventKind::TradeExecuted,
        &format!(r#"{{"symbol":"{symbol}","leverage":10}}"#),
        at,
    )
}

fn close(engine: &mut Engine, symbol: &str, pnl_pct: &str, at: f64) -> Outcome {
    feed(
        engine,
        EventKind::PositionClosed,
        &format!(r#"{{"symbol":"{symbol}","pnl_pct":{pnl_pct}}}"#),
        at,
    )
}

fn updates(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Applied { updates, .. } => updates.iter().filter(|u| u.applied).count() as u64,
        other => panic!("not applied: {other:?}"),
    }
}

fn q_tables(engine: &Engine) -> String {
    let s = engine.state();
    format!(
        "{}{}",
        serde_json::to_string(s.meta.q().table()).unwrap(),
        serde_json::to_string(s.sizing.q().table()).unwrap()
    )
}

#[test]
fn forged_closes_are_rejected_as_implausible_and_leave_the_q_tables_untouched() {
    let mut engine = Engine::new(EngineConfig::default());
    for i in 0..8 {
        let s = format!("S{i}");
        predict(&mut engine, &s, T0);
        open(&mut engine, &s, T0);
    }
    let before = q_tables(&engine);
    for i in 0..8 {
        let outcome = close(&mut engine, &format!("S{i}"), "1e300", T0 + 1.0);
        match outcome {
            Outcome::Rejected(e) => {
                assert_eq!(e.code(), "implausible");
                assert!(e.to_string().contains("pnl_pct"), "{e}");
            }
            other => panic!("forged close accepted: {other:?}"),
        }
    }
    assert_eq!(q_tables(&engine), before);
    let stats = engine.stats();
    assert_eq!(stats.counters.rejects.get("implausible"), Some(&8));
    assert_eq!(stats.counters.updates, 0);
    // The positions are still open: honest closes reward them.
    for i in 0..8 {
        assert_eq!(
            updates(&close(&mut engine, &format!("S{i}"), "2.5", T0 + 2.0)),
            2
        );
    }
}

#[test]
fn apply_refuses_an_implausible_event_too() {
    let mut engine = Engine::new(EngineConfig::default());
    predict(&mut engine, "A", T0);
    let forged = rl_v2_core::event::decode(
        EventKind::PositionClosed,
        br#"{"symbol":"A","pnl_pct":5,"account_balance":1e200}"#,
        DEFAULT_MAX_PAYLOAD_BYTES,
        T0,
    )
    .unwrap();
    assert!(engine.apply(2, &forged).is_empty());
    assert_eq!(engine.stats().counters.rejects.get("implausible"), Some(&1));
    assert_eq!(engine.updates(), 0);
    assert_eq!(engine.last_applied_seq(), 2);
}

#[test]
fn the_reward_reaching_the_q_update_is_bounded_and_counted() {
    // The seed profile's constant step α = 0.01 makes the bound visible in the Q-value.
    let mut config = EngineConfig::with_profile(LearningProfile::Seed);
    config.plausibility.max_abs_reward = 10.0;
    let mut engine = Engine::new(config);
    let Outcome::Applied { decisions, .. } = predict(&mut engine, "A", T0) else {
        panic!()
    };
    let meta = &decisions[0];
    assert_eq!(updates(&close(&mut engine, "A", "500", T0 + 1.0)), 1);
    let q = engine
        .state()
        .meta
        .q()
        .q(&meta.state_key, meta.action_index);
    // α · bound, not α · 500.
    assert!((q - 0.01 * 10.0).abs() < 1e-12, "{q}");
    assert_eq!(engine.stats().counters.rewards_clamped, 1);
}

#[test]
fn predictions_stamped_eight_days_ahead_expire_no_one_else() {
    let mut engine = Engine::new(EngineConfig::default());
    for i in 0..100 {
        predict(&mut engine, &format!("P{i}"), T0);
        predict(&mut engine, &format!("O{i}"), T0);
        open(&mut engine, &format!("O{i}"), T0);
    }
    let ahead = T0 + 8.0 * DAY;
    for i in 0..1_100 {
        let raw = format!(r#"{{"symbol":"F{i}","confidence":0.5,"timestamp":{ahead}}}"#);
        let outcome = feed(&mut engine, EventKind::PredictionGenerated, &raw, T0 + 60.0);
        let Outcome::Applied { decisions, .. } = outcome else {
            panic!("{outcome:?}")
        };
        // The decision carries the claimed time only as far as the skew allows.
        assert_eq!(decisions[0].timestamp, T0 + 60.0 + 300.0);
    }
    let counters = engine.stats().counters;
    assert_eq!(counters.timestamps_clamped, 1_100);
    assert_eq!(
        (counters.expired_pending, counters.expired_positions),
        (0, 0)
    );
    let mut learned = 0;
    for i in 0..100 {
        learned += updates(&close(&mut engine, &format!("P{i}"), "1", T0 + 120.0));
        learned += updates(&close(&mut engine, &format!("O{i}"), "1", T0 + 120.0));
    }
    assert_eq!(learned, 300);
    assert_eq!(engine.stats().counters.closes_without_decision, 0);
}

#[test]
fn the_transport_clock_still_expires_what_is_truly_old() {
    let mut engine = Engine::new(EngineConfig::default());
    predict(&mut engine, "A", T0);
    predict(&mut engine, "B", T0);
    open(&mut engine, "B", T0);
    // Received eight days later, whatever the events claim.
    let late = T0 + 8.0 * DAY;
    let raw = format!(r#"{{"symbol":"A","pnl_pct":1,"timestamp":{T0}}}"#);
    assert_eq!(
        updates(&feed(&mut engine, EventKind::PositionClosed, &raw, late)),
        0
    );
    assert_eq!(updates(&close(&mut engine, "B", "1", late)), 0);
    let counters = engine.stats().counters;
    assert_eq!(
        (counters.expired_pending, counters.expired_positions),
        (1, 1)
    );
    assert_eq!(counters.closes_without_decision, 2);
}

#[test]
fn an_old_timestamp_on_a_fresh_signal_does_not_expire_it() {
    // The README's example: a prediction stamped long ago, a trade and a close without a
    // timestamp, all received now. Both agents learn.
    let mut engine = Engine::new(EngineConfig::default());
    let raw = r#"{"symbol": "btcusdt", "confidence": 0.72, "timestamp": 1764633600.0}"#;
    feed(&mut engine, EventKind::PredictionGenerated, raw, T0);
    open(&mut engine, "BTCUSDT", T0 + 1.0);
    assert_eq!(updates(&close(&mut engine, "BTCUSDT", "8.73", T0 + 2.0)), 2);
    assert_eq!(engine.stats().counters.expired_pending, 0);
}

#[test]
fn pending_decisions_are_capped_and_the_oldest_make_room() {
    let mut config = EngineConfig::default();
    config.capacity.max_pending_decisions = 3;
    let mut engine = Engine::new(config);
    for (i, s) in ["A", "B", "C", "D", "E"].iter().enumerate() {
        predict(&mut engine, s, T0 + i as f64);
    }
    let stats = engine.stats();
    assert_eq!(stats.pending_decisions, 3);
    assert_eq!(stats.counters.evicted_pending, 2);
    // A and B were the oldest: their closes find nothing; C, D and E are rewarded.
    for (s, expected) in [("A", 0), ("B", 0), ("C", 1), ("D", 1), ("E", 1)] {
        assert_eq!(
            updates(&close(&mut engine, s, "1", T0 + 10.0)),
            expected,
            "{s}"
        );
    }
}

#[test]
fn a_superseded_signal_counts_as_fresh_for_the_cap() {
    let mut config = EngineConfig::default();
    config.capacity.max_pending_decisions = 2;
    let mut engine = Engine::new(config);
    predict(&mut engine, "A", T0);
    predict(&mut engine, "B", T0 + 1.0);
    predict(&mut engine, "A", T0 + 2.0);
    predict(&mut engine, "C", T0 + 3.0);
    // B is now the oldest.
    assert_eq!(updates(&close(&mut engine, "B", "1", T0 + 4.0)), 0);
    assert_eq!(updates(&close(&mut engine, "A", "1", T0 + 4.0)), 1);
    assert_eq!(updates(&close(&mut engine, "C", "1", T0 + 4.0)), 1);
}

#[test]
fn open_positions_and_tracked_symbols_are_capped() {
    let mut config = EngineConfig::default();
    config.capacity.max_open_positions = 10;
    config.capacity.max_symbols = 20;
    let mut engine = Engine::new(config);
    let prices = "[100,101,102,101,103,104,103,105,106,107,108]";
    for i in 0..1_000 {
        let s = format!("S{i}");
        let raw = format!(r#"{{"symbol":"{s}","confidence":0.5,"price_history":{prices}}}"#);
        feed(
            &mut engine,
            EventKind::PredictionGenerated,
            &raw,
            T0 + i as f64,
        );
        open(&mut engine, &s, T0 + i as f64);
    }
    let stats = engine.stats();
    assert_eq!(stats.open_positions, 10);
    assert_eq!(stats.tracked_symbols, 20);
    assert_eq!(stats.pending_decisions, 0);
    assert_eq!(stats.counters.evicted_positions, 990);
    assert_eq!(stats.counters.evicted_symbols, 980);
    // The newest ten positions are the ones kept.
    assert_eq!(updates(&close(&mut engine, "S999", "1", T0 + 2_000.0)), 2);
    assert_eq!(updates(&close(&mut engine, "S989", "1", T0 + 2_000.0)), 0);
}

#[test]
fn eviction_after_a_checkpoint_load_is_what_an_uninterrupted_run_does() {
    let mut config = EngineConfig::default();
    config.capacity.max_pending_decisions = 50;
    config.capacity.max_open_positions = 30;
    let run = |engine: &mut Engine, from: usize, to: usize| {
        for i in from..to {
            let s = format!("S{}", (i * 7919) % 400);
            let at = T0 + i as f64;
            match i % 3 {
                0 => predict(engine, &s, at),
                1 => open(engine, &s, at),
                _ => close(engine, &s, &format!("{}", (i % 11) as f64 - 5.0), at),
            };
        }
    };
    let mut straight = Engine::new(config.clone());
    run(&mut straight, 0, 3_000);
    let mut first = Engine::new(config.clone());
    run(&mut first, 0, 1_234);
    let state: EngineState = serde_json::from_slice(&encode(first.state())).unwrap();
    let mut resumed = Engine::from_state(config, state).unwrap();
    run(&mut resumed, 1_234, 3_000);
    assert_eq!(encode(straight.state()), encode(resumed.state()));
    assert!(straight.stats().counters.evicted_pending > 0);
    assert!(straight.stats().counters.evicted_positions > 0);
}

#[test]
fn after_sequence_numbers_start_over_decision_ids_are_new() {
    let mut engine = Engine::new(EngineConfig::default());
    let Outcome::Applied { decisions, .. } = predict(&mut engine, "A", T0) else {
        panic!()
    };
    assert_eq!(decisions[0].decision_id, "meta_strategy-1");
    predict(&mut engine, "B", T0);
    // The stream was recreated: sequence 1 comes again, for another event.
    engine.rebase(0);
    assert_eq!(engine.epoch(), 1);
    let Outcome::Applied { decisions, .. } = predict(&mut engine, "C", T0) else {
        panic!()
    };
    assert_eq!(decisions[0].event_seq, 1);
    assert_eq!(decisions[0].decision_id, "meta_strategy-e1-1");
    // Moving forward is no reset.
    engine.rebase(10);
    assert_eq!(engine.epoch(), 1);

    // The epoch survives a checkpoint; a checkpoint written before epochs existed loads as 0.
    let bytes = encode(engine.state());
    let state: EngineState = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(state.epoch, 1);
    let mut old: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    old.as_object_mut().unwrap().remove("epoch");
    let state: EngineState = serde_json::from_value(old).unwrap();
    let engine = Engine::from_state(EngineConfig::default(), state).unwrap();
    assert_eq!(engine.epoch(), 0);
}
