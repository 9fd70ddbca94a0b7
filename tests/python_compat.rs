//! rl-v2 against the original Python version's own output (`tests/fixtures/python-original/`):
//! state keys and rewards case by case, imported tables and their greedy choices, and the tables
//! rl-v2 writes read back with the original's key format.

use rl_v2_core::domain::agent::AgentKind;
use rl_v2_core::domain::market::{EquityCurve, Regime, WinRateTracker};
use rl_v2_core::domain::python_compat as py;
use rl_v2_core::domain::reward::RewardWeights;
use rl_v2_core::domain::state::{Discretizer, MetaState, SizingState};
use rl_v2_core::engine::{Engine, EngineConfig, Outcome};
use rl_v2_core::event::EventKind;
use rl_v2_service::checkpoint::{
    import_python_tables, CheckpointStore, META_TABLE_FILE, SIZING_TABLE_FILE,
};
use rl_v2_service::python_format::{python_action_key, PythonTable};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/python-original")
        .join(name)
}

fn cases(name: &str) -> Vec<Value> {
    std::fs::read_to_string(fixture(name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

fn python_config() -> EngineConfig {
    EngineConfig {
        discretizer: Discretizer::PythonCompat,
        ..EngineConfig::default()
    }
}

/// `data.get(a, data.get(b, default))` for numbers, as the Python code reads its dicts.
fn get_num(data: &Value, names: &[&str], default: f64) -> f64 {
    names
        .iter()
        .find_map(|n| data.get(n))
        .map_or(default, |v| v.as_f64().unwrap())
}

fn prices(v: Option<&Value>) -> Vec<f64> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(|p| p.as_f64().unwrap()).collect())
        .unwrap_or_default()
}

/// Inputs rl-v2 never receives, so it cannot reproduce the key the original built from them:
/// a regime handed to the state builder (rl-v2's signals carry none; it always detects one) and
/// a null confidence (rl-v2 treats null as absent: a signal without confidence is rejected, a
/// trade's defaults to 0.5, where the original keys the state by the string "None").
const INPUTS_RL_V2_NEVER_RECEIVES: [&str; 3] = ["regime_given", "regime_given_lower", "conf_null"];

#[test]
fn every_state_case_gives_the_original_key_byte_for_byte() {
    let d = Discretizer::PythonCompat;
    let mut skipped = Vec::new();
    let all = cases("state_cases.jsonl");
    assert_eq!(all.len(), 77);
    for case in &all {
        let id = case["id"].as_str().unwrap();
        let data = &case["data"];
        let given_regime = data.get("regime").and_then(Value::as_str).unwrap_or("");
        if !given_regime.is_empty() || data.get("confidence") == Some(&Value::Null) {
            skipped.push(id);
            continue;
        }
        // Trackers as the original's builder held them.
        let mut winrate = WinRateTracker::default();
        for win in case["recorded_trade_outcomes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            winrate.record(if win.as_bool().unwrap() { 1.0 } else { -1.0 });
        }
        let mut equity = EquityCurve::new(10_000.0);
        for p in prices(case.get("recorded_equity_points")) {
            equity.record(Some(p), None);
        }

        // Meta: the builder reads only a top-level price_history.
        let ph = prices(data.get("price_history"));
        let meta = MetaState {
            regime: py::detect_regime(&ph),
            volatility: py::volatility(&ph),
            market_pressure: py::market_pressure(&ph),
            confidence: get_num(data, &["confidence"], 0.5),
            previous_winrate: winrate.win_rate(),
            account_health: equity.account_health(),
        };
        let expected = &case["meta"];
        assert_eq!(
            d.meta_key(&meta),
            expected["state_key"].as_str().unwrap(),
            "{id}: meta key"
        );
        let state = &expected["state"];
        assert_eq!(
            meta.volatility,
            state["volatility"].as_f64().unwrap(),
            "{id}"
        );
        let pressure = state["market_pressure"].as_f64().unwrap();
        assert!((meta.market_pressure - pressure).abs() < 1e-12, "{id}");
        if let Some(detector) = expected["regime_detector"].as_object() {
            let (ts, vol) = py::trend_and_volatility(&ph).unwrap();
            assert_eq!(ts, detector["trend_strength"].as_f64().unwrap(), "{id}");
            assert_eq!(vol, detector["volatility"].as_f64().unwrap(), "{id}");
        }

        // Sizing: the builder also records equity_history and recent_trades from the data.
        for t in data["recent_trades"].as_array().into_iter().flatten() {
            winrate.record(if t.get("result") == Some(&Value::from("win")) {
                1.0
            } else {
                -1.0
            });
        }
        for p in prices(data.get("equity_history")) {
            equity.record(Some(p), None);
        }
        let points: Vec<f64> = equity.points().collect();
        let sizing = SizingState {
            signal_confidence: get_num(data, &["confidence", "signal_confidence"], 0.5),
            portfolio_exposure: get_num(data, &["portfolio_exposure"], 0.0),
            recent_winrate: winrate.win_rate(),
            volatility: get_num(
                data,
                &["volatility", "market_volatility"],
                py::DEFAULT_VOLATILITY,
            ),
            equity_curve_slope: py::equity_slope(&points),
        };
        let expected = &case["sizing"];
        assert_eq!(
            d.sizing_key(&sizing),
            expected["state_key"].as_str().unwrap(),
            "{id}: sizing key"
        );
        assert_eq!(
            sizing.equity_curve_slope,
            expected["state"]["equity_curve_slope"].as_f64().unwrap(),
            "{id}"
        );
        assert_eq!(
            equity.account_health(),
            expected["account_health"].as_f64().unwrap(),
            "{id}"
        );
    }
    assert_eq!(skipped, INPUTS_RL_V2_NEVER_RECEIVES);
}

/// The engine itself, fed events, builds the original's key wherever an event can say what the
/// original's builder was given: a signal's price history and confidence with no tracker input.
#[test]
fn the_engine_builds_the_original_meta_keys_from_signals() {
    let mut checked = 0;
    for case in cases("state_cases.jsonl") {
        let data = &case["data"];
        let confidence = data.get("confidence").and_then(Value::as_f64);
        let in_range = confidence.is_some_and(|c| (0.0..=1.0).contains(&c));
        if case.get("recorded_trade_outcomes").is_some()
            || case.get("recorded_equity_points").is_some()
            || data.get("regime").is_some()
            || data.get("market_features").is_some()
            || !in_range
        {
            continue;
        }
        let mut engine = Engine::new(python_config());
        let mut payload = serde_json::json!({"symbol": "BTCUSDT", "confidence": confidence});
        if let Some(ph) = data.get("price_history") {
            payload["price_history"] = ph.clone();
        }
        let raw = payload.to_string();
        let Outcome::Applied { decisions, .. } = engine.ingest(
            1,
            EventKind::PredictionGenerated,
            raw.as_bytes(),
            0.0,
            65536,
        ) else {
            panic!("{}: rejected", case["id"]);
        };
        assert_eq!(
            decisions[0].state_key,
            case["meta"]["state_key"].as_str().unwrap(),
            "{}",
            case["id"]
        );
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} cases checked");
}

fn regime_arg(data: &Value, names: &[&str]) -> Option<Regime> {
    let v = names.iter().find_map(|n| data.get(n));
    match v {
        None => Some(Regime::Unknown),
        Some(Value::Null) => None,
        Some(v) => {
            let s = v.as_str().unwrap();
            if s.is_empty() {
                None
            } else if s.eq_ignore_ascii_case("UNKNOWN") {
                Some(Regime::Unknown)
            } else {
                Some(Regime::parse_known(s).unwrap())
            }
        }
    }
}

#[test]
fn every_reward_case_gives_the_original_rewards() {
    let w = RewardWeights::default();
    let all = cases("reward_cases.jsonl");
    assert_eq!(all.len(), 31);
    for case in &all {
        let id = case["id"].as_str().unwrap();
        let data = &case["data"];
        let pnl = get_num(data, &["pnl_percentage", "pnl_pct"], 0.0);
        let mut window: Vec<f64> = prices(case.get("prior_meta_pnl_percentages"));
        window.push(pnl);
        let window = &window[window.len().saturating_sub(20)..];
        let outcome = py::MetaOutcome {
            pnl_pct: pnl,
            drawdown_pct: get_num(data, &["drawdown", "max_drawdown_pct"], 0.0),
            pnl_window: window,
            regime_at_close: regime_arg(data, &["regime", "current_regime"]),
            regime_at_decision: regime_arg(data, &["predicted_regime"]),
            confidence: get_num(data, &["confidence"], 0.5),
        };
        let meta = &case["meta"];
        let reward = py::meta_reward(&w, &outcome);
        assert!(
            (reward - meta["reward"].as_f64().unwrap()).abs() < 1e-9,
            "{id}: {reward}"
        );
        let sharpe = meta["components"]["sharpe_signal"].as_f64().unwrap();
        assert!((py::sharpe_signal(window) - sharpe).abs() < 1e-9, "{id}");

        let exposure = py::risk_exposure(
            data.get("position_size_usd").and_then(Value::as_f64),
            data.get("account_balance").and_then(Value::as_f64),
        );
        let reward = py::sizing_reward(
            &w,
            pnl,
            get_num(data, &["leverage"], py::DEFAULT_LEVERAGE),
            exposure,
            get_num(
                data,
                &["volatility", "market_volatility"],
                py::DEFAULT_VOLATILITY,
            ),
        );
        let sizing = case["sizing"]["reward"].as_f64().unwrap();
        assert!((reward - sizing).abs() < 1e-9, "{id}: {reward} vs {sizing}");
    }
}

/// The original's greedy choice: actions in its order, strict `>`, untried actions 0.
fn original_argmax(row: &serde_json::Map<String, Value>, keys: &[String]) -> usize {
    let q = |i: usize| row.get(&keys[i]).map_or(0.0, |v| v.as_f64().unwrap());
    let mut best = 0;
    for i in 1..keys.len() {
        if q(i) > q(best) {
            best = i;
        }
    }
    best
}

fn action_keys(kind: AgentKind) -> Vec<String> {
    json("action_keys.json")[kind.as_str()]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap().to_string())
        .collect()
}

const TABLES: [(AgentKind, &str); 2] = [
    (AgentKind::MetaStrategy, META_TABLE_FILE),
    (AgentKind::PositionSizing, SIZING_TABLE_FILE),
];

#[test]
fn rl_v2_spells_every_action_as_the_original() {
    for (kind, _) in TABLES {
        let keys = action_keys(kind);
        assert_eq!(keys.len(), kind.action_space_size());
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(python_action_key(kind, i).as_deref(), Some(key.as_str()));
        }
    }
}

fn import_fixtures(config: &EngineConfig) -> Engine {
    import_python_tables(
        config,
        Some(&fixture(META_TABLE_FILE)),
        Some(&fixture(SIZING_TABLE_FILE)),
    )
    .unwrap()
}

#[test]
fn imported_tables_choose_the_original_argmax_in_every_state() {
    let engine = import_fixtures(&python_config());
    for (kind, file) in TABLES {
        let original = json(file);
        let keys = action_keys(kind);
        let agent = match kind {
            AgentKind::MetaStrategy => &engine.state().meta,
            AgentKind::PositionSizing => &engine.state().sizing,
        };
        assert_eq!(agent.q().epsilon(), original["epsilon"].as_f64().unwrap());
        assert_eq!(agent.q().update_count(), 300);
        let rows = original["q_table"].as_object().unwrap();
        assert_eq!(agent.q().states_visited(), rows.len());
        for (state, row) in rows {
            let row = row.as_object().unwrap();
            let expected = original_argmax(row, &keys);
            assert_eq!(
                agent.q().greedy(state, agent.allowed()),
                expected,
                "{} {state}",
                kind.as_str()
            );
            // The decision path: with exploration off, selection is the greedy choice.
            let mut rng = rl_v2_core::domain::qlearning::decision_rng(1, 0, 1);
            let mut frozen = agent.clone();
            frozen.q_mut().restore_schedule(0.0, 300);
            assert_eq!(frozen.select(state, &mut rng).action, expected);
        }
    }
}

/// The rows of a file as ordered (action key, Q) lists, by state.
fn ordered_rows(bytes: &[u8]) -> Vec<(String, Vec<(String, f64)>)> {
    let table: PythonTable = serde_json::from_slice(bytes).unwrap();
    table.q_table.into_iter().collect()
}

#[test]
fn written_tables_hold_the_original_rows_and_round_trip_unchanged() {
    let engine = import_fixtures(&python_config());
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path());
    store.write(engine.state()).unwrap();
    for (kind, file) in TABLES {
        let keys = action_keys(kind);
        let written = std::fs::read(dir.path().join(file)).unwrap();
        let original = std::fs::read(fixture(file)).unwrap();
        // Same states, same actions in the same order, same values.
        let mut original_rows = ordered_rows(&original);
        original_rows.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(ordered_rows(&written), original_rows, "{file}");
        let w: Value = serde_json::from_slice(&written).unwrap();
        let o: Value = serde_json::from_slice(&original).unwrap();
        assert_eq!(w["epsilon"], o["epsilon"]);
        assert_eq!(w["update_count"], o["update_count"]);
        // Every action key is one the original writes.
        for row in w["q_table"].as_object().unwrap().values() {
            for key in row.as_object().unwrap().keys() {
                assert!(keys.contains(key), "{key}");
            }
        }
    }
    // Importing what was written and writing again gives the same bytes.
    let again = import_python_tables(
        &python_config(),
        Some(&dir.path().join(META_TABLE_FILE)),
        Some(&dir.path().join(SIZING_TABLE_FILE)),
    )
    .unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    CheckpointStore::new(dir2.path())
        .write(again.state())
        .unwrap();
    for (_, file) in TABLES {
        assert_eq!(
            std::fs::read(dir.path().join(file)).unwrap(),
            std::fs::read(dir2.path().join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn tables_rl_v2_learns_hold_only_updated_actions_in_the_original_spelling() {
    let mut engine = Engine::new(python_config());
    let mut seq = 0;
    let mut feed = |engine: &mut Engine, kind, raw: String| {
        seq += 1;
        engine.ingest(seq, kind, raw.as_bytes(), seq as f64, 65536);
    };
    for i in 0..40 {
        let sym = format!("S{}", i % 3);
        feed(
            &mut engine,
            EventKind::PredictionGenerated,
            format!(r#"{{"symbol":"{sym}","confidence":0.{}}}"#, 5 + i % 4),
        );
        feed(
            &mut engine,
            EventKind::TradeExecuted,
            format!(r#"{{"symbol":"{sym}","portfolio_exposure":0.1}}"#),
        );
        feed(
            &mut engine,
            EventKind::PositionClosed,
            format!(r#"{{"symbol":"{sym}","pnl_pct":{}}}"#, (i % 5) as f64 - 2.0),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    CheckpointStore::new(dir.path())
        .write(engine.state())
        .unwrap();
    for (kind, file) in TABLES {
        let keys = action_keys(kind);
        let w: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(file)).unwrap()).unwrap();
        let rows = w["q_table"].as_object().unwrap();
        let entries: usize = rows.values().map(|r| r.as_object().unwrap().len()).sum();
        assert!(entries <= 40, "{file}: {entries} entries for 40 updates");
        for row in rows.values() {
            for key in row.as_object().unwrap().keys() {
                // The original parses every key back into its action.
                let action: Value = serde_json::from_str(key).unwrap();
                assert!(action.is_object());
                assert!(keys.contains(key), "{key}");
            }
        }
        assert_eq!(w["update_count"], 40);
    }
}

#[test]
fn tables_in_the_earlier_rl_v2_spelling_still_import() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join(META_TABLE_FILE);
    let sizing = dir.path().join(SIZING_TABLE_FILE);
    std::fs::write(&meta, r#"{"q_table":{"s":{"dual_momentum|gru|0.75":1.5,"0":-1.0}},"epsilon":0.05,"update_count":2}"#).unwrap();
    std::fs::write(
        &sizing,
        r#"{"q_table":{"t":{"2.0x|50x":0.5}},"update_count":1}"#,
    )
    .unwrap();
    let engine = import_python_tables(&python_config(), Some(&meta), Some(&sizing)).unwrap();
    let m = engine.state().meta.q();
    assert_eq!(
        (m.q(&"s".to_string(), 6), m.q(&"s".to_string(), 0)),
        (1.5, -1.0)
    );
    assert_eq!(m.stored_actions(&"s".to_string()), Some(&[6u32, 0][..]));
    assert_eq!(m.epsilon(), 0.05);
    let s = engine.state().sizing.q();
    assert_eq!(s.q(&"t".to_string(), 39), 0.5);
    // No epsilon in the file: the configured initial one, as the original's loader does.
    assert_eq!(s.epsilon(), 0.1);
}

#[test]
fn import_then_inspect_lists_every_imported_state_with_the_original_argmax() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ckpt");
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_rl-v2"))
            .args(args)
            .env("RL_V2__STATE__DISCRETIZER", "python_compat")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    let meta = fixture(META_TABLE_FILE);
    let sizing = fixture(SIZING_TABLE_FILE);
    let text = run(&[
        "import",
        "--meta",
        meta.to_str().unwrap(),
        "--sizing",
        sizing.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&text).contains("imported 24 meta and 24 sizing states"));
    let summary: Value = serde_json::from_slice(&run(&[
        "inspect",
        "--dir",
        out.to_str().unwrap(),
        "--states",
        "100",
        "--json",
    ]))
    .unwrap();
    for (kind, file, section) in [
        (AgentKind::MetaStrategy, META_TABLE_FILE, "meta"),
        (AgentKind::PositionSizing, SIZING_TABLE_FILE, "sizing"),
    ] {
        let original = json(file);
        let rows = original["q_table"].as_object().unwrap();
        let keys = action_keys(kind);
        let listed = summary[section]["most_visited"].as_array().unwrap();
        assert_eq!(listed.len(), rows.len());
        for entry in listed {
            let state = entry["state"].as_str().unwrap();
            let row = rows[state].as_object().unwrap();
            assert_eq!(
                entry["stored_actions"].as_u64().unwrap() as usize,
                row.len()
            );
            let expected = original_argmax(row, &keys);
            assert_eq!(
                entry["greedy"].as_str().unwrap(),
                kind.action_key(expected).unwrap(),
                "{state}"
            );
        }
    }
    let text =
        String::from_utf8_lossy(&run(&["inspect", "--dir", out.to_str().unwrap()])).into_owned();
    assert!(!text.contains("nothing learned yet"), "{text}");
}
