//! Off-policy evaluation checked against the truth.
//!
//! simulate's exploring training run is the logging policy and its outcome events are the log.
//! From that log alone, `evaluate` estimates the value per decision (mean reward of each agent)
//! of four policies: the frozen greedy policy of an engine trained on another stretch of the
//! market, a uniformly random policy, the best constant action pair and simulate's oracle.
//! simulate measures each by playing it on its evaluation stretch. Every estimator's 95 %
//! interval (IPS, SNIPS, DR) must contain the measured value, and every estimator must rank
//! greedy, constant and random as the measurements do.
//!
//! The settings make the log able to answer: the greedy policy is trained on other trades than
//! the log (evaluated on its own training data, its estimate is inflated by the noise its argmax
//! chose), exploration is ε = 0.3 over 60 × 5 action pairs (`max_leverage = 5`), so that a
//! deterministic pair is logged often enough, and the states leave out the win-rate, equity-slope
//! and account-health buckets, the features a policy's own results move: with them a policy
//! meets states its log rarely shows. The README ("Is it learning?") shows the figures with and
//! without each of these.
//!
//! Reproduce the figures: `cargo test --release --test evaluate_simulate -- --nocapture`.

use std::collections::BTreeMap;

use rl_v2_core::domain::actions::MetaAction;
use rl_v2_core::domain::agent::AgentKind;
use rl_v2_core::domain::state::Discretizer;
use rl_v2_core::engine::EngineConfig;
use rl_v2_tools::evaluate::estimate::AgentEstimate;
use rl_v2_tools::evaluate::{
    allowed_of, best_constant, evaluate, render, EstimateOptions, OutcomeLog, Target,
};
use rl_v2_tools::simulate::logged::{run_logged, train_only, TradeContext};
use rl_v2_tools::simulate::{PolicyScore, SimulateOptions};

/// Exploration of the logging run.
const LOGGING_EPSILON: f64 = 0.3;
/// Highest leverage: 5 sizing actions, 300 action pairs.
const MAX_LEVERAGE: u32 = 5;
/// Market seed of the run that trains the greedy policy (the log's is the default, 7).
const GREEDY_TRAINING_SEED: u64 = 8;
/// Trades each policy plays to measure its value.
const EVALUATION_CYCLES: usize = 12_000;

/// The settings of both runs.
fn options(seed: u64) -> SimulateOptions {
    let mut engine = EngineConfig::default();
    engine.learning.epsilon = LOGGING_EPSILON;
    engine.learning.epsilon_min = LOGGING_EPSILON;
    engine.max_leverage = MAX_LEVERAGE;
    if let Discretizer::Buckets(edges) = &mut engine.discretizer {
        edges.winrate.clear();
        edges.equity_slope.clear();
        edges.account_health.clear();
    }
    SimulateOptions {
        seed,
        engine,
        evaluation_cycles: EVALUATION_CYCLES,
        ..SimulateOptions::default()
    }
}

/// The allowed meta actions with the strategy of `action`: in simulate's market the model and
/// the weight change nothing, so the oracle is indifferent between them. As a target it picks
/// among them uniformly: the same value as its lowest-index choice, and 20 times the support.
fn same_strategy(action: usize, allowed: &[usize]) -> Vec<usize> {
    let strategy = MetaAction::from_index(action).map(|a| a.strategy);
    allowed
        .iter()
        .copied()
        .filter(|&a| MetaAction::from_index(a).map(|a| a.strategy) == strategy)
        .collect()
}

/// Reads one estimator's figure.
type Reading = fn(&AgentEstimate) -> f64;

/// The value simulate measured for `agent`: mean reward per decision.
fn truth(score: &PolicyScore, agent: AgentKind) -> f64 {
    match agent {
        AgentKind::MetaStrategy => score.mean_meta_reward,
        AgentKind::PositionSizing => score.mean_sizing_reward,
    }
}

#[test]
fn the_example_settings_are_the_ones_the_proof_uses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/evaluate.toml");
    let settings = rl_v2_service::settings::Settings::load(Some(&path)).expect("valid settings");
    assert_eq!(settings.engine_config(), options(7).engine);
}

#[test]
fn estimates_from_the_training_log_contain_the_values_simulate_measures_and_rank_policies_alike() {
    let options = options(7);
    let mut events = Vec::new();
    let mut contexts: BTreeMap<String, TradeContext> = BTreeMap::new();
    let run = run_logged(&options, &mut |o, context| {
        contexts.insert(o.decision_id.clone(), *context);
        events.push(o.clone());
    })
    .expect("valid options");
    let log = OutcomeLog::from_events(events);
    assert_eq!(
        log.trades.len(),
        options.cycles,
        "one trade per training close"
    );
    let greedy = train_only(&self::options(GREEDY_TRAINING_SEED)).expect("valid options");
    let allowed = allowed_of(&run.engine);
    let estimate_options = EstimateOptions::default();

    // The oracle decides on the trade's regime and volatility, which the log does not carry:
    // it is given by its actions for each logged decision.
    let oracle = run.oracle();
    let (meta_allowed, sizing_allowed) = run.allowed();
    let mut oracle_actions = BTreeMap::new();
    for trade in &log.trades {
        for (agent, d) in [
            (AgentKind::MetaStrategy, &trade.meta),
            (AgentKind::PositionSizing, &trade.sizing),
        ] {
            let Some(d) = d else { continue };
            let c = contexts[&d.decision_id];
            let (m, s) = oracle.choose(c.regime, c.volatility, &meta_allowed, &sizing_allowed);
            let actions = match agent {
                AgentKind::MetaStrategy => same_strategy(m, &meta_allowed),
                AgentKind::PositionSizing => vec![s],
            };
            oracle_actions.insert(d.decision_id.clone(), actions);
        }
    }
    let (meta, sizing) = best_constant(&log, &allowed, estimate_options.min_ess)
        .expect("some constant pair is supported");
    let e = &run.report.evaluation;
    let greedy_truth = run.score_greedy(&greedy);
    let constant_truth = run.score_constant(meta, sizing);
    let cases: Vec<(Target, &PolicyScore)> = vec![
        (
            Target::Greedy {
                name: "trained on seed 8".into(),
                engine: Box::new(greedy.clone()),
            },
            &greedy_truth,
        ),
        (Target::Uniform, &e.random),
        (
            Target::HeldOut(Box::new(Target::Constant { meta, sizing })),
            &constant_truth,
        ),
        (
            Target::PerDecision {
                name: "oracle".into(),
                actions: oracle_actions,
            },
            &e.oracle,
        ),
    ];
    let targets: Vec<Target> = cases.iter().map(|(t, _)| t.clone()).collect();
    let report = evaluate(
        "simulate training",
        &log,
        &targets,
        &allowed,
        Some(("greedy", &greedy)),
        &estimate_options,
    );
    println!("{}", render(&report));

    let mut failures = Vec::new();
    for ((target, score), estimate) in cases.iter().zip(&report.targets) {
        for agent in [AgentKind::MetaStrategy, AgentKind::PositionSizing] {
            let a = estimate.agent(agent).expect("both agents logged");
            let true_value = truth(score, agent);
            println!(
                "{:<52} {:<15} measured {:>7.2}  IPS {:>7.2} [{:.2}, {:.2}]  SNIPS {:>7.2} [{:.2}, {:.2}]  DR {:>7.2}  ESS {:.0}  mean weight {:.2}",
                target.name(),
                agent.as_str(),
                true_value,
                a.ips.value,
                a.ips.low,
                a.ips.high,
                a.snips.value,
                a.snips.low,
                a.snips.high,
                a.dr.map_or(f64::NAN, |d| d.value),
                a.ess,
                a.mean_weight.value,
            );
            // The target's weights carry their whole mass: the log reaches where it goes.
            assert!(a.mean_weight.contains(1.0), "{}: {a:?}", target.name());
            let mut intervals = vec![("IPS", a.ips), ("SNIPS", a.snips)];
            intervals.extend(a.dr.map(|d| ("DR", d)));
            for (name, interval) in intervals {
                if !interval.contains(true_value) {
                    failures.push(format!(
                        "{} {}: {name} interval [{:.2}, {:.2}] misses the measured {true_value:.2}",
                        target.name(),
                        agent.as_str(),
                        interval.low,
                        interval.high
                    ));
                }
            }
        }
    }
    // Ranking of greedy, constant and random: by measured value and by every estimator.
    let ranked = |values: [f64; 3]| {
        let mut order = [0usize, 1, 2];
        order.sort_by(|&x, &y| values[y].total_cmp(&values[x]));
        order
    };
    for agent in [AgentKind::MetaStrategy, AgentKind::PositionSizing] {
        let measured = ranked([0usize, 2, 1].map(|i| truth(cases[i].1, agent)));
        let estimate = |i: usize| report.targets[i].agent(agent).expect("logged");
        let estimators: [(&str, Reading); 3] = [
            ("IPS", |a| a.ips.value),
            ("SNIPS", |a| a.snips.value),
            ("DR", |a| a.dr.map_or(f64::NAN, |d| d.value)),
        ];
        for (name, of) in estimators {
            let estimated = ranked([0usize, 2, 1].map(|i| of(estimate(i))));
            if estimated != measured {
                failures.push(format!(
                    "{}: {name} ranks greedy/constant/random as {estimated:?}, simulate as {measured:?}",
                    agent.as_str()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
