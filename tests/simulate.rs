//! The quick start end to end: the default simulation trains the engine through `Engine::ingest`
//! and the learned policy beats chance on the same seeded market.
//!
//! Reproduce the figures: `cargo test --release --test simulate -- --nocapture`.

use rl_v2_core::domain::market::Regime;
use rl_v2_tools::simulate::{learning_curve_table, run, summary, SimulateOptions};
use std::time::Instant;

#[test]
fn default_simulation_learns_the_best_strategies_and_beats_a_random_policy() {
    let options = SimulateOptions::default();
    let started = Instant::now();
    let report = run(&options).expect("the default options are valid");
    let elapsed = started.elapsed();
    println!("{}", learning_curve_table(&report));
    println!("{}", summary(&report));
    println!(
        "default run: {} training trades, {} evaluation trades per policy, {:.1} s",
        options.cycles,
        options.evaluation_cycles,
        elapsed.as_secs_f64()
    );

    let f = &report.final_figures;
    assert_eq!(f.rejected_events, 0, "every simulated event decodes");
    assert_eq!(f.trades, options.cycles, "every trade completes");

    let e = &report.evaluation;
    println!(
        "learned greedy policy: mean reward meta {:.3}, sizing {:.3}, pnl {:.3} % per trade",
        e.learned.mean_meta_reward, e.learned.mean_sizing_reward, e.learned.mean_pnl_pct
    );
    println!(
        "uniformly random policy: mean reward meta {:.3}, sizing {:.3}, pnl {:.3} % per trade",
        e.random.mean_meta_reward, e.random.mean_sizing_reward, e.random.mean_pnl_pct
    );
    assert!(e.learned.mean_pnl_pct > e.random.mean_pnl_pct);
    assert!(e.learned.mean_meta_reward > e.random.mean_meta_reward);
    assert!(e.learned.mean_sizing_reward > e.random.mean_sizing_reward);

    println!(
        "often-visited meta states (>= {} updates) whose greedy strategy is the regime's best: \
         {}/{} = {:.1} %",
        e.often_visited_updates,
        e.meta_states.best,
        e.meta_states.states,
        100.0 * e.meta_states.share
    );
    assert!(e.meta_states.states > 0, "some states are visited often");
    assert!(e.meta_states.share > 0.5, "{:?}", e.meta_states);
    // An untrained table's greedy action (index 0) is already momentum, the best strategy in
    // TREND and BREAKOUT; in the mean-reverting regimes only learning can find the best one.
    for regime in [Regime::Range, Regime::MeanReversion] {
        let s = &e.meta_states_by_regime[&regime];
        assert!(s.share > 0.5, "{regime}: {s:?}");
    }
}
