//! What `Engine::ingest` reports: every decision, every Q-update with its reward and the terms
//! that made it, and the bookkeeping an event caused.

use rl_v2_core::audit::{Outcome, Tally};
use rl_v2_core::domain::agent::AgentKind;
use rl_v2_core::domain::reward::RewardWeights;
use rl_v2_core::engine::{Engine, EngineConfig};
use rl_v2_core::event::{EventKind, DEFAULT_MAX_PAYLOAD_BYTES};

const T0: f64 = 1_764_633_600.0;
const PRICES: &str = "[100.0,100.4,100.9,101.3,101.0,101.8,102.5,102.2,103.0,103.6,104.1,104.0]";

fn feed(engine: &mut Engine, seq: u64, kind: EventKind, raw: &str, at: f64) -> Outcome {
    engine.ingest(seq, kind, raw.as_bytes(), at, DEFAULT_MAX_PAYLOAD_BYTES)
}

#[test]
fn a_close_reports_each_update_with_its_reward_and_the_terms_that_made_it() {
    let mut engine = Engine::new(EngineConfig::default());
    let w = RewardWeights::default();
    let prediction = format!(r#"{{"symbol":"BTCUSDT","confidence":0.8,"price_history":{PRICES}}}"#);
    let Outcome::Applied { decisions, .. } = feed(
        &mut engine,
        1,
        EventKind::PredictionGenerated,
        &prediction,
        T0,
    ) else {
        panic!("prediction applied")
    };
    let meta_id = decisions[0].decision_id.clone();
    let trade = r#"{"symbol":"BTCUSDT","position_size_usd":1500,"account_balance":10000}"#;
    let Outcome::Applied { decisions, .. } =
        feed(&mut engine, 2, EventKind::TradeExecuted, trade, T0 + 1.0)
    else {
        panic!("trade applied")
    };
    let sizing_id = decisions[0].decision_id.clone();
    let close = r#"{"symbol":"BTCUSDT","pnl_pct":8.73,"max_drawdown_pct":1.2}"#;
    let Outcome::Applied {
        decisions,
        updates,
        tally,
        ..
    } = feed(&mut engine, 3, EventKind::PositionClosed, close, T0 + 2.0)
    else {
        panic!("close applied")
    };
    assert!(decisions.is_empty());
    assert_eq!(tally, Tally::default());
    assert_eq!(updates.len(), 2);
    assert_eq!(engine.stats().counters.updates, 2);

    let meta = &updates[0];
    assert_eq!(
        (meta.agent, meta.decision_id.as_str()),
        (AgentKind::MetaStrategy, meta_id.as_str())
    );
    assert!(meta.applied);
    // Under the default profile a close ends the episode: nothing is bootstrapped from.
    assert_eq!(
        meta.next_state_key.is_none(),
        engine.config().close_ends_episode
    );
    assert_eq!(meta.parts.pnl_pct, 8.73);
    assert_eq!(meta.parts.max_drawdown_pct, Some(1.2));
    let expected = 8.73 - w.drawdown_penalty * 1.2
        + w.sharpe_weight * meta.parts.sharpe.unwrap()
        + w.regime_weight * meta.parts.regime_alignment.unwrap();
    assert!((meta.reward - expected).abs() < 1e-12, "{meta:?}");
    assert_eq!(meta.reward, meta.raw_reward);

    let sizing = &updates[1];
    assert_eq!(
        (sizing.agent, sizing.decision_id.as_str()),
        (AgentKind::PositionSizing, sizing_id.as_str())
    );
    let expected = 8.73 - w.risk_penalty_weight * sizing.parts.risk_penalty.unwrap()
        + w.volatility_weight * sizing.parts.volatility_adjustment.unwrap();
    assert!((sizing.reward - expected).abs() < 1e-12, "{sizing:?}");
    assert_eq!(sizing.parts.sharpe, None);
}

#[test]
fn an_expired_decision_and_an_unrewarded_close_show_in_the_tally() {
    let mut engine = Engine::new(EngineConfig::default());
    let window = engine.config().reward_window_secs;
    let prediction = r#"{"symbol":"ETHUSDT","confidence":0.6}"#;
    feed(
        &mut engine,
        1,
        EventKind::PredictionGenerated,
        prediction,
        T0,
    );
    let close = r#"{"symbol":"ETHUSDT","pnl_pct":1.0}"#;
    let Outcome::Applied { updates, tally, .. } = feed(
        &mut engine,
        2,
        EventKind::PositionClosed,
        close,
        T0 + window + 1.0,
    ) else {
        panic!("close applied")
    };
    assert!(updates.is_empty());
    assert_eq!(tally.expired_pending, 1);
    assert_eq!(tally.closes_without_decision, 1);
    assert_eq!(engine.stats().counters.updates, 0);
}

#[test]
fn a_repeated_sequence_and_a_rejected_payload_report_no_effect() {
    let mut engine = Engine::new(EngineConfig::default());
    let prediction = r#"{"symbol":"SOLUSDT","confidence":0.6}"#;
    feed(
        &mut engine,
        1,
        EventKind::PredictionGenerated,
        prediction,
        T0,
    );
    assert_eq!(
        feed(
            &mut engine,
            1,
            EventKind::PredictionGenerated,
            prediction,
            T0
        ),
        Outcome::AlreadyApplied
    );
    let bad = r#"{"symbol":"SOLUSDT","confidence":7}"#;
    let outcome = feed(&mut engine, 2, EventKind::PredictionGenerated, bad, T0);
    assert!(matches!(outcome, Outcome::Rejected(ref e) if e.code() == "out_of_range"));
    assert_eq!(outcome.updates_applied(), 0);
    assert_eq!(engine.last_applied_seq(), 2);
}

#[test]
fn an_outcome_carries_the_propensity_and_epsilon_its_decision_was_drawn_with() {
    use rl_v2_core::outcome::OutcomeEvent;
    let mut engine = Engine::new(EngineConfig::default());
    let prediction = format!(r#"{{"symbol":"ETHUSDT","confidence":0.6,"price_history":{PRICES}}}"#);
    let Outcome::Applied {
        decisions: meta, ..
    } = feed(
        &mut engine,
        1,
        EventKind::PredictionGenerated,
        &prediction,
        T0,
    )
    else {
        panic!("prediction applied")
    };
    let trade = r#"{"symbol":"ETHUSDT","position_size_usd":1000,"account_balance":10000}"#;
    let Outcome::Applied {
        decisions: sizing, ..
    } = feed(&mut engine, 2, EventKind::TradeExecuted, trade, T0 + 1.0)
    else {
        panic!("trade applied")
    };
    let close = r#"{"symbol":"ETHUSDT","pnl_pct":-2.0,"max_drawdown_pct":3.0}"#;
    let Outcome::Applied { updates, .. } =
        feed(&mut engine, 3, EventKind::PositionClosed, close, T0 + 2.0)
    else {
        panic!("close applied")
    };
    let outcomes: Vec<OutcomeEvent> = updates.iter().map(OutcomeEvent::of).collect();
    assert_eq!(outcomes.len(), 2);
    for (o, d) in outcomes.iter().zip([&meta[0], &sizing[0]]) {
        assert_eq!(o.decision_id, d.decision_id);
        assert_eq!(o.agent, d.agent);
        assert_eq!(o.symbol, "ETHUSDT");
        assert_eq!(o.state_key, d.state_key);
        assert_eq!(o.action_index, d.action_index);
        assert_eq!(o.propensity, Some(d.propensity));
        assert_eq!(o.epsilon, Some(d.epsilon));
        assert_eq!(o.seq, 3);
        assert_eq!(o.timestamp, T0 + 2.0);
        assert_eq!(o.reward_parts.pnl_pct, -2.0);
        assert!(o.applied && o.terminal);
        assert_eq!(o.msg_id(), format!("outcome-{}", d.decision_id));
    }
    assert_eq!(outcomes[0].allowed_actions, Some(60));
    assert_eq!(outcomes[1].allowed_actions, Some(40));
    assert_eq!(outcomes[0].reward_parts.max_drawdown_pct, Some(3.0));
    assert_eq!(outcomes[1].reward_parts.max_drawdown_pct, None);
    assert!(outcomes[1].reward_parts.risk_penalty.is_some());
}

#[test]
fn a_frozen_engine_rewards_its_decisions_but_never_changes_its_tables() {
    let config = EngineConfig {
        frozen: true,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config);
    let epsilon = engine.state().meta.q().epsilon();
    for round in 0..20u64 {
        let seq = 3 * round;
        let prediction =
            format!(r#"{{"symbol":"BTCUSDT","confidence":0.7,"price_history":{PRICES}}}"#);
        let t = T0 + seq as f64;
        feed(
            &mut engine,
            seq + 1,
            EventKind::PredictionGenerated,
            &prediction,
            t,
        );
        let trade = r#"{"symbol":"BTCUSDT","portfolio_exposure":0.2}"#;
        feed(&mut engine, seq + 2, EventKind::TradeExecuted, trade, t);
        let close = r#"{"symbol":"BTCUSDT","pnl_pct":5.0}"#;
        let Outcome::Applied { updates, .. } =
            feed(&mut engine, seq + 3, EventKind::PositionClosed, close, t)
        else {
            panic!("close applied")
        };
        assert_eq!(updates.len(), 2, "both decisions rewarded");
        assert!(updates.iter().all(|u| u.reward > 0.0 && u.logged.is_some()));
    }
    let state = engine.state();
    assert_eq!(state.meta.q().states_visited(), 0, "no Q-value stored");
    assert_eq!(state.sizing.q().states_visited(), 0);
    assert_eq!(state.meta.q().epsilon(), epsilon, "ε unchanged");
    assert_eq!(state.meta.stats().episode_stats.total_episodes, 0);
    assert_eq!(
        state.winrate.win_rate(),
        1.0,
        "the trackers still follow the account"
    );
}
