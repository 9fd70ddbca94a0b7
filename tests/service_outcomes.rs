//! Outcome events: one per Q-update on `RL_V2_OUTCOME`, captured by a stream, counted in
//! `rl_v2.stats`, kept once by the stream when a replay after a crash publishes them again; and
//! `rl-v2 evaluate --stream` reads them back.

mod common;

use async_nats::jetstream;
use common::*;
use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;

const OUTCOME_STREAM: &str = "OUTCOMES";

/// Creates a stream that captures the outcome subject.
async fn capture_outcomes(js: &jetstream::Context) -> jetstream::stream::Stream {
    js.create_stream(jetstream::stream::Config {
        name: OUTCOME_STREAM.into(),
        subjects: vec!["RL_V2_OUTCOME".into()],
        ..Default::default()
    })
    .await
    .expect("outcome stream")
}

/// Waits until the stream holds `n` messages.
async fn stream_holds(stream: &mut jetstream::stream::Stream, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let info = stream.info().await.expect("stream info");
        if info.state.messages >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the outcome stream holds {} of {n} messages",
            info.state.messages
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every message of the stream: (Nats-Msg-Id, outcome JSON).
async fn read_all(stream: &jetstream::stream::Stream) -> Vec<(String, Value)> {
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .expect("consumer");
    let n = stream.cached_info().state.messages as usize;
    let mut messages = consumer
        .fetch()
        .max_messages(n)
        .messages()
        .await
        .expect("fetch");
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("message in time")
            .expect("a message")
            .expect("no error");
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push((
            id,
            serde_json::from_slice(&m.payload).expect("outcome JSON"),
        ));
    }
    out
}

#[tokio::test]
async fn each_update_publishes_one_outcome_that_a_stream_keeps_once_across_a_crash() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server.url()).await;
    let js = jetstream::new(client.clone());
    let mut outcomes = capture_outcomes(&js).await;
    let data = dir.path().join("data");
    // Checkpoints every 40 updates, so the crash below replays (and republishes) the rest.
    let env = [("RL_V2__CHECKPOINT__EVERY_UPDATES", "40")];
    let mut service = Service::start(&server.url(), &data, &env);
    service.ready(&client).await;

    let evs = events(480);
    publish_all(&js, &evs, 0).await;
    let s = applied(&client, 480).await;
    let updates = s["counters"]["updates"].as_u64().unwrap();
    assert!(updates > 40, "{s}");
    assert_eq!(s["service"]["outcomes_published"], updates);
    stream_holds(&mut outcomes, updates).await;

    service.signal("KILL");
    assert!(!service.wait().await.success());
    let mut service = Service::start(&server.url(), &data, &env);
    service.ready(&client).await;
    let s = applied(&client, 480).await;
    assert!(
        s["service"]["outcomes_published"].as_u64() > Some(0),
        "the replay republished the outcomes the checkpoint had not covered: {s}"
    );
    let info = outcomes.info().await.expect("stream info");
    assert_eq!(info.state.messages, updates, "duplicates dropped by id");

    let all = read_all(&outcomes).await;
    let mut ids = std::collections::BTreeSet::new();
    for (msg_id, o) in &all {
        let decision_id = o["decision_id"].as_str().unwrap();
        assert_eq!(msg_id, &format!("outcome-{decision_id}"));
        assert!(
            ids.insert(decision_id.to_string()),
            "one outcome per decision"
        );
        let p = o["propensity"].as_f64().unwrap();
        assert!(p > 0.0 && p <= 1.0, "{o}");
        assert_eq!(o["epsilon"], 0.1);
        let (n, agent_parts) = match o["agent"].as_str().unwrap() {
            "meta_strategy" => (60, "sharpe"),
            _ => (40, "risk_penalty"),
        };
        assert_eq!(o["allowed_actions"], n);
        assert!(o["reward_parts"][agent_parts].is_number(), "{o}");
        assert!(o["reward"].is_number() && o["state_key"].is_string());
        assert!(o["next_state_key"].is_string() && o["seq"].is_u64());
    }

    // `rl-v2 evaluate --stream` reads the same outcomes back; the logging policy's value is
    // their mean reward, and the service's final checkpoint is the greedy target.
    service.signal("TERM");
    assert!(service.wait().await.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rl-v2"))
        .args([
            "evaluate",
            "--stream",
            OUTCOME_STREAM,
            "--json",
            "--checkpoint",
        ])
        .arg(&data)
        .env("RL_V2__NATS__URL", server.url())
        .output()
        .expect("rl-v2 evaluate runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let decisions = |agent: &str| all.iter().filter(|(_, o)| o["agent"] == agent).count();
    assert_eq!(report["meta_decisions"], decisions("meta_strategy"));
    assert_eq!(report["sizing_decisions"], decisions("position_sizing"));
    let targets = report["targets"].as_array().unwrap();
    let names: Vec<&str> = targets
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "logging policy");
    assert!(names[1].starts_with("greedy "), "{names:?}");
    assert!(names.contains(&"uniformly random"), "{names:?}");
    for agent in targets[0]["agents"].as_array().unwrap() {
        let rewards: Vec<f64> = all
            .iter()
            .filter(|(_, o)| o["agent"] == agent["agent"])
            .map(|(_, o)| o["reward"].as_f64().unwrap())
            .collect();
        let mean = rewards.iter().sum::<f64>() / rewards.len() as f64;
        let ips = agent["ips"]["value"].as_f64().unwrap();
        assert!((ips - mean).abs() < 1e-9, "{ips} vs {mean}");
    }
}
