//! Micro-benchmarks of the hot path: decoding, `apply` per event type, the Q-update, and
//! checkpoint write and load for 1k, 10k and 100k visited states.
//!
//! `cargo bench --bench engine`

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use rl_v2_core::domain::qlearning::{ActionSet, Hyperparameters, QLearning};
use rl_v2_core::engine::{Engine, EngineConfig};
use rl_v2_core::event::{decode, EventKind, DEFAULT_MAX_PAYLOAD_BYTES};
use rl_v2_service::checkpoint::CheckpointStore;
use rl_v2_tools::bench::engine_with_states;
use std::hint::black_box;

const PREDICTION: &str = r#"{"trace_id":"6f1c0a52","timestamp":1764633600.0,"symbol":"btcusdt","side":"BUY","confidence":0.72,"timeframe":"1h","model_version":"ensemble-v3","metadata":{},"market_features":{"price_history":[100.0,100.4,100.9,101.3,101.0,101.8,102.5,102.2,103.0,103.6,104.1,104.0]}}"#;
const TRADE: &str = r#"{"trace_id":"0d9e","timestamp":1764633660.0,"symbol":"BTCUSDT","side":"BUY","entry_price":97250.5,"position_size_usd":1500.0,"leverage":10.0,"order_id":"8812231","account_balance":10250.0}"#;
const CLOSE: &str = r#"{"trace_id":"a1b2","timestamp":1764637200.0,"symbol":"BTCUSDT","pnl_usd":131.0,"pnl_pct":8.73,"max_drawdown_pct":1.2,"exit_reason":"TP","market_condition":"TREND"}"#;
const ENVELOPE: &str = r#"{"event_type":"PREDICTION_GENERATED","payload":"{\"symbol\": \"BNBUSDT\", \"confidence\": 0.8}","trace_id":"t-1","timestamp":"2025-12-02T10:00:00","source":"ai-engine"}"#;

fn decoding(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (name, kind, raw) in [
        ("prediction", EventKind::PredictionGenerated, PREDICTION),
        ("trade", EventKind::TradeExecuted, TRADE),
        ("close", EventKind::PositionClosed, CLOSE),
        ("envelope", EventKind::PredictionGenerated, ENVELOPE),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                decode(
                    kind,
                    black_box(raw.as_bytes()),
                    DEFAULT_MAX_PAYLOAD_BYTES,
                    0.0,
                )
            })
        });
    }
    g.finish();
}

fn applying(c: &mut Criterion) {
    let event =
        |kind, raw: &str| decode(kind, raw.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES, 0.0).unwrap();
    let prediction = event(EventKind::PredictionGenerated, PREDICTION);
    let trade = event(EventKind::TradeExecuted, TRADE);
    let close = event(EventKind::PositionClosed, CLOSE);
    let mut g = c.benchmark_group("apply");
    g.bench_function("prediction", |b| {
        let mut engine = Engine::new(EngineConfig::default());
        let mut seq = 0;
        b.iter(|| {
            seq += 1;
            engine.apply(seq, black_box(&prediction))
        })
    });
    g.bench_function("trade", |b| {
        let mut engine = Engine::new(EngineConfig::default());
        let mut seq = 0;
        b.iter(|| {
            seq += 1;
            engine.apply(seq, black_box(&trade))
        })
    });
    // A close needs a decision to reward: each iteration starts from an engine holding one.
    let mut primed = Engine::new(EngineConfig::default());
    primed.apply(1, &prediction);
    primed.apply(2, &trade);
    g.bench_function("close", |b| {
        b.iter_batched(
            || primed.clone(),
            |mut engine| {
                engine.apply(3, black_box(&close));
                engine
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn q_update(c: &mut Criterion) {
    let all = ActionSet::all(60);
    let mut q: QLearning<String> = QLearning::new(60, Hyperparameters::default());
    let keys: Vec<String> = (0..1_000)
        .map(|i| format!("TREND|vol={}|press={}|conf={}", i % 6, i % 5, i % 33))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        let _ = q.update(k, i % 60, 0.5, None, &all);
    }
    let mut i = 0;
    c.bench_function("q_update/1k_states", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            q.update(
                black_box(&keys[i]),
                i % 60,
                0.25,
                Some(&keys[(i + 7) % keys.len()]),
                &all,
            )
        })
    });
}

fn checkpoints(c: &mut Criterion) {
    let mut g = c.benchmark_group("checkpoint");
    g.sample_size(10);
    for states in [1_000usize, 10_000, 100_000] {
        let engine = engine_with_states(states, &EngineConfig::default()).expect("a valid table");
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        g.bench_with_input(BenchmarkId::new("write", states), &engine, |b, engine| {
            b.iter(|| store.write(engine.state()).unwrap())
        });
        store.write(engine.state()).unwrap();
        g.bench_with_input(BenchmarkId::new("load", states), &store, |b, store| {
            b.iter(|| store.load(&EngineConfig::default()).unwrap())
        });
        g.bench_with_input(
            BenchmarkId::new("snapshot", states),
            &engine,
            |b, engine| b.iter(|| black_box(engine.state().clone())),
        );
    }
    g.finish();
}

criterion_group!(benches, decoding, applying, q_update, checkpoints);
criterion_main!(benches);
