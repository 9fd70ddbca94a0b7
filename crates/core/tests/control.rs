//! Operator control in the engine: the trading state and its commands, the risk gate's masks and
//! refusals, the circuit breakers, and the control state in checkpoints.

use proptest::prelude::*;
use rl_v2_core::audit::Outcome;
use rl_v2_core::control::{
    BreakerConfig, BreakerKind, ControlBook, GateConfig, RefusalReason, TradingState,
};
use rl_v2_core::domain::actions::{SizingAction, SIZING_ACTIONS};
use rl_v2_core::domain::agent::AgentKind;
use rl_v2_core::domain::qlearning::{decision_rng, ActionSet, Hyperparameters, QLearning};
use rl_v2_core::engine::{Engine, EngineConfig, EngineState};
use rl_v2_core::event::{EventKind, DEFAULT_MAX_PAYLOAD_BYTES};

const T0: f64 = 1_764_633_600.0;

/// An engine fed raw messages in sequence, as the service feeds it.
struct Feed {
    engine: Engine,
    seq: u64,
    now: f64,
}

/// What one message did, flattened for assertions.
#[derive(Debug, Default)]
struct Did {
    decisions: usize,
    refusals: Vec<RefusalReason>,
    updates: usize,
    changes: Vec<(TradingState, TradingState, String)>,
}

impl Feed {
    fn new(config: EngineConfig) -> Self {
        Self {
            engine: Engine::new(config),
            seq: 0,
            now: T0,
        }
    }

    fn read(outcome: Outcome) -> Did {
        match outcome {
            Outcome::Applied {
                decisions,
                updates,
                refusals,
                state_changes,
                ..
            } => Did {
                decisions: decisions.len(),
                refusals: refusals.iter().map(|r| r.reason).collect(),
                updates: updates.iter().filter(|u| u.applied).count(),
                changes: state_changes
                    .into_iter()
                    .map(|c| (c.previous, c.new, c.who))
                    .collect(),
            },
            Outcome::Rejected(_) | Outcome::AlreadyApplied => Did::default(),
        }
    }

    fn event(&mut self, kind: EventKind, raw: &str) -> Did {
        self.seq += 1;
        self.now += 1.0;
        Self::read(self.engine.ingest(
            self.seq,
            kind,
            raw.as_bytes(),
            self.now,
            DEFAULT_MAX_PAYLOAD_BYTES,
        ))
    }

    fn command(&mut self, command: &str) -> Did {
        self.seq += 1;
        self.now += 1.0;
        let raw = format!(r#"{{"command":"{command}","reason":"test","who":"ops"}}"#);
        Self::read(self.engine.ingest_control(
            self.seq,
            raw.as_bytes(),
            self.now,
            DEFAULT_MAX_PAYLOAD_BYTES,
        ))
    }

    fn predict(&mut self, symbol: &str) -> Did {
        let raw = format!(r#"{{"symbol":"{symbol}","confidence":0.7,"trace_id":"p-{symbol}"}}"#);
        self.event(EventKind::PredictionGenerated, &raw)
    }

    fn trade(&mut self, symbol: &str, extra: &str) -> Did {
        let raw = format!(r#"{{"symbol":"{symbol}","trace_id":"t-{symbol}"{extra}}}"#);
        self.event(EventKind::TradeExecuted, &raw)
    }

    fn close(&mut self, symbol: &str, pnl: f64) -> Did {
        let raw = format!(r#"{{"symbol":"{symbol}","pnl_pct":{pnl}}}"#);
        self.event(EventKind::PositionClosed, &raw)
    }

    fn state(&self) -> TradingState {
        self.engine.stats().trading_state
    }
}

#[test]
fn halted_refuses_every_prediction_and_trade_while_closes_still_teach() {
    let mut f = Feed::new(EngineConfig::default());
    // Positions opened before the halt.
    for s in ["A", "B", "C"] {
        assert_eq!(f.predict(s).decisions, 1);
        assert_eq!(f.trade(s, "").decisions, 1);
    }
    let did = f.command("halt");
    assert_eq!(
        did.changes,
        vec![(TradingState::Active, TradingState::Halted, "ops".into())]
    );
    let n = 7;
    let decided_before = f.engine.stats().counters.decisions.clone();
    let mut refusals = Vec::new();
    for i in 0..n {
        let symbol = format!("X{i}");
        let p = f.predict(&symbol);
        let t = f.trade(&symbol, "");
        assert_eq!((p.decisions, t.decisions), (0, 0));
        refusals.extend(p.refusals);
        refusals.extend(t.refusals);
    }
    assert_eq!(refusals, vec![RefusalReason::TradingHalted; 2 * n]);
    let stats = f.engine.stats();
    assert_eq!(stats.counters.decisions, decided_before);
    assert_eq!(
        stats.counters.refusals.get(&RefusalReason::TradingHalted),
        Some(&(2 * n as u64))
    );
    // No refused decision is pending or open: the refused symbols' closes reward nothing.
    assert!(stats.open_positions == 3 && stats.pending_decisions == 0);
    assert_eq!(f.close("X0", 5.0).updates, 0);
    // The positions opened before the halt still teach both agents.
    let meta_before = stats.meta_agent_stats.q_learning_stats.update_count;
    let sizing_before = stats.sizing_agent_stats.q_learning_stats.update_count;
    for s in ["A", "B", "C"] {
        assert_eq!(f.close(s, 2.0).updates, 2);
    }
    let stats = f.engine.stats();
    assert_eq!(
        stats.meta_agent_stats.q_learning_stats.update_count,
        meta_before + 3
    );
    assert_eq!(
        stats.sizing_agent_stats.q_learning_stats.update_count,
        sizing_before + 3
    );

    // Resume: decisions again.
    let did = f.command("resume");
    assert_eq!(did.changes[0].1, TradingState::Active);
    assert_eq!(f.predict("A").decisions, 1);
    assert_eq!(f.trade("A", "").decisions, 1);
    assert_eq!(f.state(), TradingState::Active);
}

#[test]
fn a_command_that_changes_nothing_publishes_no_change_but_is_recorded() {
    let mut f = Feed::new(EngineConfig::default());
    let did = f.command("resume");
    assert!(did.changes.is_empty());
    let stats = f.engine.stats();
    assert_eq!(stats.control.last_command.as_ref().unwrap().sequence, 1);
    assert_eq!(stats.counters.control_commands, 1);
    assert_eq!(stats.control.changes, 0);
    // A bad command is rejected, counted, and changes nothing.
    f.seq += 1;
    let bad = f
        .engine
        .ingest_control(f.seq, br#"{"command":"sell_everything"}"#, T0, 1024);
    assert!(matches!(bad, Outcome::Rejected(ref e) if e.code() == "out_of_range"));
    assert_eq!(f.engine.last_applied_seq(), 2);
    assert_eq!(f.state(), TradingState::Active);
    // Already applied.
    assert!(matches!(
        f.engine
            .ingest_control(2, br#"{"command":"halt"}"#, T0, 1024),
        Outcome::AlreadyApplied
    ));
}

#[test]
fn the_initial_state_is_a_setting_and_a_checkpoint_keeps_its_own() {
    let mut config = EngineConfig::default();
    config.control.initial_state = TradingState::Halted;
    let mut f = Feed::new(config.clone());
    assert_eq!(f.predict("A").refusals, vec![RefusalReason::TradingHalted]);
    f.command("reduce");
    let bytes = serde_json::to_vec(f.engine.state()).unwrap();
    let state: EngineState = serde_json::from_slice(&bytes).unwrap();
    let restored = Engine::from_state(config, state).unwrap();
    assert_eq!(restored.stats().trading_state, TradingState::Reducing);
    assert_eq!(serde_json::to_vec(restored.state()).unwrap(), bytes);
}

#[test]
fn a_checkpoint_without_control_state_loads_active() {
    let mut value = serde_json::to_value(Engine::new(EngineConfig::default()).state()).unwrap();
    value.as_object_mut().unwrap().remove("control");
    let counters = value["counters"].as_object_mut().unwrap();
    counters.remove("refusals");
    counters.remove("control_commands");
    let state: EngineState = serde_json::from_value(value).unwrap();
    assert_eq!(state.control, ControlBook::default());
    let engine = Engine::from_state(EngineConfig::default(), state).unwrap();
    assert_eq!(engine.stats().trading_state, TradingState::Active);
}

fn sizing_of(outcome: &Outcome) -> (SizingAction, f64) {
    let Outcome::Applied { decisions, .. } = outcome else {
        panic!("applied: {outcome:?}");
    };
    let d = &decisions[0];
    (
        SizingAction::from_index(d.action_index).unwrap(),
        d.propensity,
    )
}

#[test]
fn reducing_lets_the_sizing_agent_choose_only_actions_that_add_no_risk() {
    let mut config = EngineConfig::default();
    config.learning.epsilon = 1.0;
    config.learning.epsilon_min = 1.0;
    config.control.reducing_max_leverage = 10;
    let mut engine = Engine::new(config);
    engine.ingest_control(1, br#"{"command":"reduce"}"#, T0, 1024);
    for seq in 2..200 {
        let raw = format!(r#"{{"symbol":"S{seq}","confidence":0.5}}"#);
        let meta = engine.ingest(
            seq * 2,
            EventKind::PredictionGenerated,
            raw.as_bytes(),
            T0,
            4096,
        );
        let Outcome::Applied { decisions, .. } = &meta else {
            panic!()
        };
        assert_eq!(decisions.len(), 1, "meta decisions continue");
        let outcome = engine.ingest(
            seq * 2 + 1,
            EventKind::TradeExecuted,
            raw.as_bytes(),
            T0,
            4096,
        );
        let (action, propensity) = sizing_of(&outcome);
        assert!(
            action.size_multiplier <= 1.0 && action.leverage <= 10,
            "{action}"
        );
        // ε = 1: uniform over the 3 multipliers × 2 leverages allowed.
        assert!((propensity - 1.0 / 6.0).abs() < 1e-12, "{propensity}");
    }
}

#[test]
fn the_exposure_cap_masks_and_refuses_when_no_multiplier_fits() {
    let mut config = EngineConfig::default();
    config.learning.epsilon = 1.0;
    config.learning.epsilon_min = 1.0;
    config.control.gate = GateConfig {
        max_exposure: 0.2,
        ..GateConfig::default()
    };
    let mut f = Feed::new(config);
    for i in 0..50 {
        let raw =
            format!(r#"{{"symbol":"S{i}","position_size_usd":1500,"account_balance":10000}}"#);
        f.seq += 1;
        let outcome = f
            .engine
            .ingest(f.seq, EventKind::TradeExecuted, raw.as_bytes(), T0, 4096);
        let (action, propensity) = sizing_of(&outcome);
        assert!(action.size_multiplier <= 1.0, "{action}");
        assert!((propensity - 1.0 / 24.0).abs() < 1e-12, "{propensity}");
    }
    let did = f.trade(
        "BIG",
        r#","position_size_usd":5000,"account_balance":10000"#,
    );
    assert_eq!(
        (did.decisions, did.refusals),
        (0, vec![RefusalReason::ExposureCap])
    );
    assert_eq!(
        f.close("BIG", -3.0).updates,
        0,
        "a refused decision is never rewarded"
    );
}

#[test]
fn the_rate_limit_refuses_beyond_n_decisions_per_symbol_per_minute() {
    let mut config = EngineConfig::default();
    config.control.gate.max_decisions_per_symbol_per_minute = 3;
    let mut f = Feed::new(config);
    // One event a second: three decisions, then refusals until the first leaves the window.
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        outcomes.push(f.predict("A").refusals);
    }
    assert_eq!(
        outcomes,
        vec![
            vec![],
            vec![],
            vec![],
            vec![RefusalReason::RateLimit],
            vec![RefusalReason::RateLimit],
            vec![RefusalReason::RateLimit],
        ]
    );
    assert_eq!(f.predict("B").decisions, 1, "per symbol");
    f.now += 60.0;
    assert_eq!(f.predict("A").decisions, 1);
}

#[test]
fn max_open_positions_refuses_a_trade_that_would_open_one_more() {
    let mut config = EngineConfig::default();
    config.control.gate.max_open_positions = 2;
    let mut f = Feed::new(config);
    assert_eq!(f.trade("A", "").decisions, 1);
    assert_eq!(f.trade("B", "").decisions, 1);
    assert_eq!(
        f.trade("C", "").refusals,
        vec![RefusalReason::MaxOpenPositions]
    );
    assert_eq!(
        f.trade("A", "").decisions,
        1,
        "an open position may be resized"
    );
    f.close("A", 1.0);
    assert_eq!(f.trade("C", "").decisions, 1);
}

#[test]
fn a_losing_streak_halts_after_exactly_k_confirmations_and_resume_rearms() {
    for k in 1..=3u32 {
        let mut config = EngineConfig::default();
        config.control.breakers = BreakerConfig {
            max_consecutive_losses: 2,
            confirmations: k,
            ..BreakerConfig::default()
        };
        let mut f = Feed::new(config);
        let trips_at = 2 + k as usize - 1;
        for i in 1..=trips_at {
            let did = f.close("A", -1.0);
            if i < trips_at {
                assert!(did.changes.is_empty(), "k = {k}: tripped at close {i}");
                assert_eq!(f.state(), TradingState::Active);
            } else {
                assert_eq!(
                    did.changes,
                    vec![(TradingState::Active, TradingState::Halted, "breaker".into())],
                    "k = {k}"
                );
            }
        }
        let change = f.engine.stats().control.last_change.unwrap();
        let trip = change.breaker.unwrap();
        assert_eq!(trip.breaker, BreakerKind::LosingStreak);
        assert_eq!(trip.confirmations, k);
        assert!(change.reason.contains("losing"), "{}", change.reason);
        assert_eq!(change.sequence, f.seq);
        // Only a resume leaves HALTED; it re-arms the breaker from scratch.
        f.close("A", -1.0);
        assert_eq!(f.state(), TradingState::Halted);
        f.command("resume");
        assert_eq!(f.state(), TradingState::Active);
        assert!(f.close("A", -1.0).changes.is_empty());
    }
}

#[test]
fn a_drawdown_moves_to_reducing_and_a_cooldown_ends_a_breakers_halt() {
    let mut config = EngineConfig::default();
    config.control.breakers = BreakerConfig {
        max_drawdown_pct: 5.0,
        max_window_loss_pct: 10.0,
        window_secs: 3600.0,
        confirmations: 1,
        halt_cooldown_secs: 100.0,
        ..BreakerConfig::default()
    };
    let mut f = Feed::new(config);
    let balance = |b: f64| format!(r#"{{"symbol":"A","pnl_pct":-4,"account_balance":{b}}}"#);
    assert!(f
        .event(EventKind::PositionClosed, &balance(9700.0))
        .changes
        .is_empty());
    let did = f.event(EventKind::PositionClosed, &balance(9400.0));
    assert_eq!(did.changes[0].1, TradingState::Reducing);
    let did = f.event(EventKind::PositionClosed, &balance(9300.0));
    assert_eq!(
        did.changes[0].1,
        TradingState::Halted,
        "12 % lost in the window"
    );
    f.now += 98.0;
    assert_eq!(f.predict("B").refusals, vec![RefusalReason::TradingHalted]);
    let did = f.predict("B");
    assert_eq!(did.changes[0].1, TradingState::Active, "cooldown over");
    assert_eq!(did.decisions, 1);
}

#[test]
fn an_operators_halt_has_no_cooldown() {
    let mut config = EngineConfig::default();
    config.control.breakers.halt_cooldown_secs = 1.0;
    let mut f = Feed::new(config);
    f.command("halt");
    f.now += 1e6;
    assert_eq!(f.predict("A").refusals, vec![RefusalReason::TradingHalted]);
}

#[test]
fn replaying_the_same_messages_gives_the_same_bytes() {
    let run = || {
        let mut config = EngineConfig::default();
        config.control.gate.max_decisions_per_symbol_per_minute = 2;
        config.control.breakers.max_consecutive_losses = 2;
        config.control.breakers.confirmations = 2;
        let mut f = Feed::new(config);
        for i in 0..60 {
            let s = format!("S{}", i % 4);
            match i % 7 {
                0 => {
                    f.command(["halt", "reduce", "resume"][(i / 7) % 3]);
                }
                1 | 2 => {
                    f.predict(&s);
                }
                3 | 4 => {
                    f.trade(&s, r#","position_size_usd":100,"account_balance":1000"#);
                }
                _ => {
                    f.close(&s, (i % 5) as f64 - 3.0);
                }
            }
        }
        serde_json::to_vec(f.engine.state()).unwrap()
    };
    assert_eq!(run(), run());
}

proptest! {
    /// Over any allowed set the gate leaves, the ε-greedy propensities are in (0, 1], sum to 1,
    /// and the selection reports the policy's probability of the action it picked.
    #[test]
    fn propensities_are_a_distribution_over_the_allowed_actions(
        row in proptest::collection::vec(-5.0f64..5.0, SIZING_ACTIONS),
        mask in proptest::collection::vec(any::<bool>(), SIZING_ACTIONS),
        epsilon in 0.0f64..=1.0,
        seq in 1u64..10_000,
    ) {
        let allowed: Vec<usize> = (0..SIZING_ACTIONS).filter(|&i| mask[i]).collect();
        prop_assume!(!allowed.is_empty());
        let allowed = ActionSet::from_indices(allowed).unwrap();
        let params = Hyperparameters { epsilon, epsilon_min: 0.0, ..Hyperparameters::default() };
        let mut q: QLearning<String> = QLearning::new(SIZING_ACTIONS, params);
        q.insert_row("s".into(), row).unwrap();
        let policy = q.policy(&"s".to_string(), &allowed);
        prop_assert_eq!(policy.len(), allowed.len());
        let sum: f64 = policy.iter().map(|(_, p)| p).sum();
        prop_assert!((sum - 1.0).abs() < 1e-9, "sum {}", sum);
        for (_, p) in &policy {
            prop_assert!(*p > 0.0 && *p <= 1.0, "p {}", p);
        }
        let selection = q.select(&"s".to_string(), &allowed, &mut decision_rng(1, 1, seq));
        prop_assert!(allowed.indices().contains(&selection.action));
        let expected = policy.iter().find(|(a, _)| *a == selection.action).unwrap().1;
        prop_assert_eq!(selection.propensity, expected);
    }
}

#[test]
fn the_agent_kind_of_a_refusal_is_the_one_that_would_have_decided() {
    let mut config = EngineConfig::default();
    config.control.initial_state = TradingState::Halted;
    let mut engine = Engine::new(config);
    let Outcome::Applied { refusals, .. } = engine.ingest(
        1,
        EventKind::TradeExecuted,
        br#"{"symbol":"a","trace_id":"t1"}"#,
        T0,
        4096,
    ) else {
        panic!()
    };
    assert_eq!(refusals[0].agent, AgentKind::PositionSizing);
    assert_eq!(refusals[0].symbol, "A");
    assert_eq!(refusals[0].trace_id.as_deref(), Some("t1"));
    assert_eq!(refusals[0].event_seq, 1);
    let json = serde_json::to_value(&refusals[0]).unwrap();
    assert_eq!(json["reason"], "trading_halted");
    assert_eq!(json["trading_state"], "HALTED");
}
