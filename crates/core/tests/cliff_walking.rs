//! The generic Q-learning core on Sutton & Barto's Cliff Walking (Example 6.6): a 4 × 12 grid,
//! −1 per step, −100 and back to the start for stepping into the cliff. With γ 0.99, α 0.01 and a
//! fixed ε 0.1, Q-learning learns the optimal 13-step path along the cliff edge, and
//! Q(start, up) = −(1 − 0.99¹³) / 0.01 ≈ −12.248.

use rl_v2_core::domain::qlearning::{
    decision_rng, ActionSet, Hyperparameters, QLearning, StepSize,
};

const ROWS: usize = 4;
const COLS: usize = 12;
const START: (usize, usize) = (3, 0);
const GOAL: (usize, usize) = (3, 11);
const UP: usize = 0;
const RIGHT: usize = 1;
const DOWN: usize = 2;
const LEFT: usize = 3;

/// Moves from `pos` with `action`; returns the reward and the next position (None at the goal).
fn step(pos: (usize, usize), action: usize) -> (f64, Option<(usize, usize)>) {
    let (r, c) = pos;
    let next = match action {
        UP => (r.saturating_sub(1), c),
        RIGHT => (r, (c + 1).min(COLS - 1)),
        DOWN => ((r + 1).min(ROWS - 1), c),
        _ => (r, c.saturating_sub(1)),
    };
    if next.0 == 3 && (1..COLS - 1).contains(&next.1) {
        (-100.0, Some(START))
    } else if next == GOAL {
        (-1.0, None)
    } else {
        (-1.0, Some(next))
    }
}

fn train(seed: u64) -> QLearning<(usize, usize)> {
    let params = Hyperparameters {
        alpha: 0.01,
        gamma: 0.99,
        epsilon: 0.1,
        epsilon_decay: 1.0,
        epsilon_min: 0.1,
        // The textbook rule: α on every update, unseen Q = 0.
        step_size: StepSize::Constant,
        initial_q: 0.0,
    };
    let all = ActionSet::all(4);
    let mut q = QLearning::new(4, params);
    let mut seq = 0u64;
    for _ in 0..5_000 {
        let mut pos = START;
        loop {
            seq += 1;
            let action = q.select(&pos, &all, &mut decision_rng(seed, 0, seq)).action;
            let (reward, next) = step(pos, action);
            q.update(&pos, action, reward, next.as_ref(), &all).unwrap();
            match next {
                Some(n) => pos = n,
                None => break,
            }
        }
    }
    q
}

#[test]
fn q_learning_finds_the_cliff_edge_path_for_five_seeds() {
    let optimal: Vec<usize> = std::iter::once(UP)
        .chain(std::iter::repeat_n(RIGHT, COLS - 1))
        .chain(std::iter::once(DOWN))
        .collect();
    let expected_q = -(1.0 - 0.99f64.powi(13)) / 0.01;
    assert!((expected_q + 12.248).abs() < 1e-3);
    let all = ActionSet::all(4);
    for seed in 1..=5 {
        let q = train(seed);
        let mut pos = START;
        let mut path = Vec::new();
        while path.len() < 50 {
            let a = q.greedy(&pos, &all);
            path.push(a);
            let (reward, next) = step(pos, a);
            assert_eq!(
                reward, -1.0,
                "seed {seed}: greedy policy stepped into the cliff"
            );
            match next {
                Some(n) => pos = n,
                None => break,
            }
        }
        assert_eq!(path, optimal, "seed {seed}: greedy path");
        let q_start_up = q.q(&START, UP);
        assert!(
            (q_start_up - expected_q).abs() < 0.05,
            "seed {seed}: Q(start, up) = {q_start_up}, expected {expected_q}"
        );
        assert!(q.q(&START, LEFT) < q_start_up);
    }
}
