//! The command line: replay, inspect, import, health, and its exit codes.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::Value;
use std::process::{Command, Output};

fn rl_v2(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rl-v2"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("rl-v2 runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Events with their own timestamps, far from the transport's clock (so they are clamped), a
/// rejected one, and a position left open at the end, so the transport times are in the
/// checkpoint.
fn timed_events() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for i in 0..60 {
        let sym = format!("S{}", i % 7);
        let t = 1_764_633_600 + i * 60;
        out.push(("PREDICTION_GENERATED", format!(r#"{{"symbol":"{sym}","confidence":0.{},"timestamp":{t},"price_history":[100,101,102,101,103,104,103,105,106,107,108]}}"#, i % 10)));
        out.push((
            "TRADE_EXECUTED",
            format!(
                r#"{{"symbol":"{sym}","leverage":10,"timestamp":{}}}"#,
                t + 10
            ),
        ));
        out.push((
            "POSITION_CLOSED",
            format!(
                r#"{{"symbol":"{sym}","pnl_pct":{},"timestamp":{}}}"#,
                (i % 5) as f64 - 2.0,
                t + 20
            ),
        ));
    }
    out.push(("POSITION_CLOSED", "not json".to_string()));
    out.push((
        "PREDICTION_GENERATED",
        r#"{"symbol":"LAST","confidence":0.5,"timestamp":1764633600}"#.to_string(),
    ));
    out.push(("TRADE_EXECUTED", r#"{"symbol":"LAST"}"#.to_string()));
    out
}

/// The stream's messages as a replay log: subject, payload, and what the transport added (the
/// stream sequence and the message time, read as the service reads them).
async fn stream_as_log(client: &async_nats::Client, n: usize) -> Vec<String> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("RL_V2_EVENTS").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut lines = Vec::new();
    while lines.len() < n {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await
            .expect("the stream delivers")
            .unwrap()
            .unwrap();
        let info = message.info().unwrap();
        lines.push(
            serde_json::json!({
                "subject": message.subject.as_str(),
                "payload": String::from_utf8(message.payload.to_vec()).unwrap(),
                "seq": info.stream_sequence,
                "received_at": info.published.unix_timestamp_nanos() as f64 / 1e9,
            })
            .to_string(),
        );
    }
    lines
}

#[tokio::test]
async fn replay_writes_the_checkpoint_the_service_writes_for_the_same_events() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server.url()).await;
    let mut service = Service::start(&server.url(), &dir.path().join("served"), &[]);
    service.ready(&client).await;
    let events = timed_events();
    for (subject, payload) in &events {
        client
            .publish(subject.to_string(), payload.clone().into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    stats_until(&client, |s| s["last_applied_seq"] == events.len()).await;
    service.signal("TERM");
    assert!(service.wait().await.success());

    let log = dir.path().join("events.jsonl");
    let lines = stream_as_log(&client, events.len()).await;
    std::fs::write(&log, lines.join("\n")).unwrap();
    let out_dir = dir.path().join("replayed");
    let out = rl_v2(
        &[
            "replay",
            log.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["applied"], 182);
    assert_eq!(summary["rejected"]["invalid_json"], 1);
    let served = std::fs::read(dir.path().join("served/checkpoint.json")).unwrap();
    let replayed = std::fs::read(out_dir.join("checkpoint.json")).unwrap();
    assert!(served == replayed, "replay and service checkpoints differ");

    // inspect reads it back, as tables and as JSON.
    let table = rl_v2(&["inspect", "--dir", out_dir.to_str().unwrap()], &[]);
    assert!(table.status.success());
    let t = text(&table);
    assert!(
        t.contains("meta_strategy: ")
            && t.contains("position_sizing: ")
            && t.contains("last_applied_seq 183"),
        "{t}"
    );
    let json = rl_v2(
        &[
            "inspect",
            "--dir",
            out_dir.to_str().unwrap(),
            "--json",
            "--states",
            "2",
        ],
        &[],
    );
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["meta"]["updates"], 60);
    assert_eq!(v["meta"]["most_visited"].as_array().unwrap().len(), 2);
    assert_eq!(v["counters"]["rejects"]["invalid_json"], 1);
}

#[test]
fn replaying_a_log_without_seq_twice_applies_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    let lines: Vec<String> = timed_events()
        .iter()
        .map(|(s, p)| serde_json::json!({"subject": s, "payload": p}).to_string())
        .collect();
    std::fs::write(&log, lines.join("\n")).unwrap();
    let out_dir = dir.path().join("data");
    let replay = |extra: &[&str]| {
        let mut args = vec![
            "replay",
            log.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = rl_v2(&args, &[]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let first = replay(&[]);
    assert_eq!(first["applied"], 182);
    let checkpoint = std::fs::read(out_dir.join("checkpoint.json")).unwrap();
    let second = replay(&[]);
    assert_eq!(second["applied"], 0);
    assert_eq!(second["already_applied"], 183);
    assert_eq!(
        std::fs::read(out_dir.join("checkpoint.json")).unwrap(),
        checkpoint,
        "a second replay changes nothing"
    );
    // Continuing with another log is a choice made explicitly.
    let third = replay(&["--after-checkpoint"]);
    assert_eq!(third["applied"], 182);
    assert_eq!(third["already_applied"], 0);
}

#[test]
fn import_turns_python_tables_into_a_checkpoint_and_never_overwrites_silently() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta.json");
    std::fs::write(&meta, r#"{"q_table": {"{\"regime\": \"TREND\"}": {"dual_momentum|lstm|1.0": 0.5, "3": -0.25}}, "epsilon": 0.05, "update_count": 321}"#).unwrap();
    let out_dir = dir.path().join("data");
    let out = rl_v2(
        &[
            "import",
            "--meta",
            meta.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let json = rl_v2(
        &["inspect", "--dir", out_dir.to_str().unwrap(), "--json"],
        &[],
    );
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["meta"]["states_visited"], 1);
    assert_eq!(v["meta"]["updates"], 321);
    assert_eq!(v["meta"]["epsilon"], 0.05);
    let again = rl_v2(
        &[
            "import",
            "--meta",
            meta.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("--force"));
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"q_table": {"s": {"yolo": 1.0}}, "epsilon": 0.1, "update_count": 1}"#,
    )
    .unwrap();
    let refused = rl_v2(
        &[
            "import",
            "--sizing",
            bad.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--force",
        ],
        &[],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused).contains("yolo"));
}

#[tokio::test]
async fn health_exits_0_when_the_service_answers_and_1_when_it_does_not() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let env = [("RL_V2__NATS__URL", url.as_str())];
    let down = rl_v2(&["health", "--timeout", "0.5"], &env);
    assert_eq!(down.status.code(), Some(1), "{}", text(&down));
    let client = client(&url).await;
    let service = Service::start(
        &url,
        &dir.path().join("data"),
        &[("RL_V2__DELIVERY__MODE", "core")],
    );
    service.ready(&client).await;
    let up = tokio::task::spawn_blocking(move || {
        rl_v2(&["health"], &[("RL_V2__NATS__URL", url.as_str())])
    })
    .await
    .unwrap();
    assert!(up.status.success(), "{}", text(&up));
    assert!(text(&up).contains("rl_v2"));
}

#[test]
fn bad_settings_and_usage_exit_2_naming_the_problem() {
    let out = rl_v2(&["inspect"], &[("RL_V2__LEARNING__ALPHA", "7")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("learning.alpha"), "{}", text(&out));
    let out = rl_v2(&["inspect"], &[("RL_V2__DELIVERY__STREAM_REPLICAS", "7")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("delivery.stream_replicas"),
        "{}",
        text(&out)
    );
    let out = rl_v2(&["no-such-command"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = rl_v2(
        &["replay", "/nonexistent/events.jsonl", "--out", "/tmp"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn every_subcommand_has_help() {
    for cmd in [
        "serve", "simulate", "replay", "inspect", "import", "health", "bench",
    ] {
        let out = rl_v2(&[cmd, "--help"], &[]);
        assert!(out.status.success(), "{cmd}");
        assert!(text(&out).len() > 200, "{cmd} help is too thin");
    }
}

#[test]
fn simulate_prints_the_curve_and_the_evaluation_and_writes_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("curve.svg");
    let out = rl_v2(
        &[
            "simulate",
            "--cycles",
            "3000",
            "--evaluation-cycles",
            "300",
            "--quiet",
            "--chart",
            chart.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("evaluation: 300 trades per policy")
            && t.contains("learned")
            && t.contains("random"),
        "{t}"
    );
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.contains("<svg"),
        "an SVG chart"
    );
    let json = rl_v2(
        &[
            "simulate",
            "--cycles",
            "1000",
            "--evaluation-cycles",
            "100",
            "--json",
            "--chart",
            chart.to_str().unwrap(),
        ],
        &[],
    );
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["cycles"], 1000);
    let bad = rl_v2(&["simulate", "--cycles", "0"], &[]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}
