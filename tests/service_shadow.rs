//! Shadow policies decide on the live events and publish only on their own subjects; a frozen
//! live engine decides and publishes outcomes but never changes its Q-tables.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use rl_v2_core::engine::{Engine, EngineConfig};
use rl_v2_service::checkpoint::CheckpointStore;

const EVENTS: usize = 600;

/// A trained checkpoint in `dir`: the candidate a shadow starts from.
fn candidate(dir: &Path) -> usize {
    let mut engine = Engine::new(EngineConfig::default());
    for (seq, (subject, payload)) in events(600).iter().enumerate() {
        let kind = rl_v2_core::event::EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == *subject)
            .unwrap();
        engine.ingest(seq as u64 + 1, kind, payload.as_bytes(), 1.0e9, 65_536);
    }
    CheckpointStore::new(dir).write(engine.state()).unwrap();
    engine.state().meta.q().states_visited()
}

/// Publishes the test events in core mode; returns how many decisions the live engine makes.
async fn publish(client: &async_nats::Client, evs: &[(&'static str, String)]) -> usize {
    for (subject, payload) in evs {
        client
            .publish(*subject, payload.clone().into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    evs.iter()
        .filter(|(s, p)| *s != "POSITION_CLOSED" && !p.contains(":7}"))
        .count()
}

#[tokio::test]
async fn shadows_publish_only_on_their_own_subjects_and_never_learn() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let states_in_candidate = candidate(&dir.path().join("candidate"));
    let config = dir.path().join("shadows.toml");
    std::fs::write(
        &config,
        format!(
            "[[shadows]]\nname = \"copy\"\nepsilon = 0.2\n\n[[shadows]]\nname = \"candidate\"\ncheckpoint = {:?}\n",
            dir.path().join("candidate")
        ),
    )
    .unwrap();
    let client = client(&server.url()).await;
    let data = dir.path().join("data");
    let config_arg = config.to_str().unwrap();
    let service = Service::start_with_args(
        &server.url(),
        &data,
        &[("RL_V2__DELIVERY__MODE", "core")],
        &["--config", config_arg],
    );
    service.ready(&client).await;
    let mut live = decisions(&client).await;
    let mut shadow = client.subscribe("RL_V2_SHADOW.>").await.unwrap();
    client.flush().await.unwrap();

    let expected = publish(&client, &events(EVENTS)).await;
    let s = applied(&client, EVENTS as u64).await;
    let live_got = collect(&mut live, expected).await;
    let ids: BTreeSet<&str> = live_got
        .iter()
        .map(|d| d["decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        expected,
        "each live decision once, no shadow copy"
    );
    assert_eq!(s["service"]["decisions_published"], expected);

    let mut by_subject: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for _ in 0..2 * expected {
        let m = tokio::time::timeout(Duration::from_secs(10), shadow.next())
            .await
            .expect("shadow decision in time")
            .unwrap();
        let d: Value = serde_json::from_slice(&m.payload).unwrap();
        by_subject.entry(m.subject.to_string()).or_default().push(d);
    }
    let count = |s: &str| by_subject.get(s).map_or(0, Vec::len);
    let copy =
        count("RL_V2_SHADOW.copy.meta_strategy") + count("RL_V2_SHADOW.copy.position_sizing");
    let cand = count("RL_V2_SHADOW.candidate.meta_strategy")
        + count("RL_V2_SHADOW.candidate.position_sizing");
    assert_eq!(
        (copy, cand),
        (expected, expected),
        "{:?}",
        by_subject.keys()
    );
    for d in &by_subject["RL_V2_SHADOW.candidate.meta_strategy"] {
        assert_eq!(d["explored"], false, "epsilon 0: greedy");
        assert!(
            ids.contains(d["decision_id"].as_str().unwrap()),
            "same ids as live"
        );
    }
    assert!(by_subject["RL_V2_SHADOW.copy.position_sizing"]
        .iter()
        .all(|d| d["epsilon"] == 0.2));

    let s = stats(&client).await;
    let shadows = s["shadows"].as_array().expect("shadows in stats");
    assert_eq!(shadows.len(), 2);
    for sh in shadows {
        assert_eq!(sh["decisions_published"], expected, "{sh}");
        assert_eq!(sh["last_applied_seq"], EVENTS);
    }
    assert_eq!(
        shadows[0]["states"],
        serde_json::json!([0, 0]),
        "the copy learned nothing"
    );
    assert_eq!(
        shadows[1]["states"][0], states_in_candidate,
        "nor did the candidate"
    );
    assert!(s["meta_agent_stats"]["q_learning_stats"]["states_visited"].as_u64() > Some(0));
}

#[tokio::test]
async fn a_frozen_live_engine_publishes_outcomes_and_keeps_its_tables() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server.url()).await;
    let env = [
        ("RL_V2__DELIVERY__MODE", "core"),
        ("RL_V2__LEARNING__FROZEN", "true"),
    ];
    let service = Service::start(&server.url(), &dir.path().join("data"), &env);
    service.ready(&client).await;
    let mut outcomes = client.subscribe("RL_V2_OUTCOME").await.unwrap();
    client.flush().await.unwrap();
    publish(&client, &events(EVENTS)).await;
    let s = applied(&client, EVENTS as u64).await;
    let rewarded = s["counters"]["updates"].as_u64().unwrap();
    assert!(rewarded > 0);
    let got = collect(&mut outcomes, rewarded as usize).await;
    assert!(got.iter().all(|o| o["propensity"].is_number()));
    for agent in ["meta_agent_stats", "sizing_agent_stats"] {
        let q = &s[agent]["q_learning_stats"];
        assert_eq!(q["states_visited"], 0, "{agent}: no Q-value stored");
        assert_eq!(q["epsilon"], 0.1, "{agent}: ε unchanged");
    }
}

#[test]
fn a_bad_shadow_setting_stops_start_up_with_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, key) in [
        ("[[shadows]]\nname = \"has space\"\n", "shadows[0].name"),
        (
            "[[shadows]]\nname = \"a\"\nepsilon = 2.0\n",
            "shadows[0].epsilon",
        ),
        (
            "[[shadows]]\nname = \"a\"\ncheckpoint = \"/nonexistent\"\n",
            "shadows[0].checkpoint",
        ),
        (
            "[subjects]\nshadow = \"RL_META_STRATEGY_DECISION\"\n",
            "subjects.shadow",
        ),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rl-v2"))
            .args(["--config", file.to_str().unwrap(), "serve"])
            .env("RL_V2__CHECKPOINT__DIR", dir.path().join("data"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{toml}: {stderr}");
        assert!(stderr.contains(key), "{key} in {stderr}");
    }
}
