//! Operator control through the real service: `rl-v2 control` against a running `rl-v2 serve`
//! on a real nats-server; refusals and trading-state events on their subjects; the state across
//! SIGKILL and restarts.

mod common;

use async_nats::jetstream;
use common::*;
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Runs `rl-v2 control ARGS` against `url` with `env`; (exit code, stdout, stderr).
fn control(url: &str, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rl-v2"));
    cmd.arg("control")
        .args(args)
        .env("RL_V2__NATS__URL", url)
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("rl-v2 control runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `rl-v2 control --json ARGS`, which must succeed: the state the service confirmed.
fn confirmed(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = control(url, &[], &all);
    assert_eq!(code, Some(0), "rl-v2 control {args:?}: {out}{err}");
    serde_json::from_str(&out).expect("JSON report")
}

async fn subscribe(client: &async_nats::Client, subject: &str) -> async_nats::Subscriber {
    let sub = client.subscribe(subject.to_string()).await.unwrap();
    client.flush().await.unwrap();
    sub
}

#[tokio::test]
async fn halt_refuses_every_prediction_and_trade_while_closes_teach_and_resume_decides_again() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let service = Service::start(&url, &dir.path().join("data"), &[]);
    let client = client(&url).await;
    service.ready(&client).await;
    let mut decided = decisions(&client).await;
    let mut refused = subscribe(&client, "RL_V2_RISK_REFUSED").await;
    let mut changes = subscribe(&client, "RL_V2_TRADING_STATE").await;
    let js = jetstream::new(client.clone());

    // Three positions opened before the halt.
    let mut before = Vec::new();
    for s in ["AUSDT", "BUSDT", "CUSDT"] {
        before.push(("PREDICTION_GENERATED", prediction(s, 0.7, "open")));
        before.push(("TRADE_EXECUTED", trade(s, 10, "open")));
    }
    publish_all(&js, &before, 0).await;
    collect(&mut decided, 6).await;

    let report = confirmed(
        &url,
        &["halt", "--reason", "exchange maintenance", "--who", "ops"],
    );
    assert_eq!(report["trading_state"], "HALTED", "{report}");
    let change = &collect(&mut changes, 1).await[0];
    assert_eq!(
        (&change["previous"], &change["new"], &change["who"]),
        (&"ACTIVE".into(), &"HALTED".into(), &"ops".into()),
        "{change}"
    );
    assert_eq!(change["reason"], "exchange maintenance");
    assert_eq!(change["sequence"], 7);

    let n = 10;
    let mut halted = Vec::new();
    for i in 0..n {
        let s = format!("H{i}USDT");
        halted.push((
            "PREDICTION_GENERATED",
            prediction(&s, 0.6, &format!("h{i}")),
        ));
        halted.push(("TRADE_EXECUTED", trade(&s, 20, &format!("h{i}"))));
    }
    // Closes of the positions opened before the halt still teach both agents.
    for s in ["AUSDT", "BUSDT", "CUSDT"] {
        halted.push(("POSITION_CLOSED", close(s, 2.5, "teach")));
    }
    publish_all(&js, &halted, 100).await;
    let refusals = collect(&mut refused, 2 * n).await;
    for (i, r) in refusals.iter().enumerate() {
        assert_eq!(r["reason"], "trading_halted", "{r}");
        assert_eq!(r["trading_state"], "HALTED", "{r}");
        assert_eq!(r["trace_id"], format!("h{}", i / 2), "{r}");
        assert_eq!(r["symbol"], format!("H{}USDT", i / 2), "{r}");
        assert_eq!(r["event_seq"], 8 + i as u64, "{r}");
    }
    let s = applied(&client, 7 + halted.len() as u64).await;
    assert_eq!(
        s["counters"]["refusals"]["trading_halted"],
        2 * n as u64,
        "{s}"
    );
    assert_eq!(
        total(&s["counters"]["decisions"]),
        6,
        "no decision while halted: {s}"
    );
    assert_eq!(s["service"]["decisions_published"], 6, "{s}");
    assert_eq!(
        s["counters"]["updates"], 6,
        "three closes, both agents: {s}"
    );
    assert_eq!(s["open_positions"], 0, "refused trades open nothing: {s}");
    assert_eq!(
        s["pending_decisions"], 0,
        "refused predictions leave nothing pending: {s}"
    );
    assert_eq!(s["trading_state"], "HALTED");

    let report = confirmed(&url, &["resume", "--reason", "maintenance over"]);
    assert_eq!(report["trading_state"], "ACTIVE", "{report}");
    publish_all(
        &js,
        &[("PREDICTION_GENERATED", prediction("AUSDT", 0.7, "after"))],
        1000,
    )
    .await;
    let after = collect(&mut decided, 1).await;
    assert_eq!(after[0]["trace_id"], "after");
    // Nothing was decided between: the first decision after the six is this one.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), decided.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn control_exits_1_when_no_service_confirms_and_status_reads_the_state() {
    let server = NatsServer::start(false);
    let url = server.url();
    let (code, _, err) = control(&url, &[], &["--timeout", "1", "halt", "--reason", "x"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("did not confirm"), "{err}");
    let (code, _, err) = control(&url, &[], &["--timeout", "1", "status"]);
    assert_eq!(code, Some(1), "{err}");
    let (code, _, err) = control(&url, &[], &["halt"]);
    assert_eq!(code, Some(2), "--reason is required: {err}");

    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        &url,
        &dir.path().join("data"),
        &[("RL_V2__DELIVERY__MODE", "core")],
    );
    let client = client(&url).await;
    service.ready(&client).await;
    let (code, out, err) = control(&url, &[], &["status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("trading state: ACTIVE"), "{out}");
    let (code, out, err) = control(&url, &[], &["reduce", "--reason", "volatile"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("trading state: REDUCING"), "{out}");
    assert!(out.contains("volatile"), "{out}");
    let mut health = Command::new(env!("CARGO_BIN_EXE_rl-v2"));
    let out = health
        .arg("health")
        .env("RL_V2__NATS__URL", &url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("trading state REDUCING"), "{text}");
}

#[tokio::test]
async fn a_halt_in_core_mode_survives_sigkill() {
    let server = NatsServer::start(false);
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("RL_V2__DELIVERY__MODE", "core")];
    let mut service = Service::start(&url, &data, &env);
    let client = client(&url).await;
    service.ready(&client).await;
    confirmed(&url, &["halt", "--reason", "kill switch"]);
    // The change is checkpointed at once, without waiting for updates.
    let written = tokio::time::timeout(WAIT, async {
        loop {
            let state = std::fs::read(data.join("checkpoint.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            if state.is_some_and(|s| s["control"]["state"] == "HALTED") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(written.is_ok(), "the halt never reached the checkpoint");
    service.signal("KILL");
    service.wait().await;
    let service = Service::start(&url, &data, &env);
    service.ready(&client).await;
    let mut refused = subscribe(&client, "RL_V2_RISK_REFUSED").await;
    client
        .publish("PREDICTION_GENERATED", prediction("XUSDT", 0.5, "k").into())
        .await
        .unwrap();
    assert_eq!(
        collect(&mut refused, 1).await[0]["reason"],
        "trading_halted"
    );
    // A request for a decision is answered with the refusal.
    let reply = request(&client, "TRADE_EXECUTED", trade("XUSDT", 10, "asked")).await;
    assert_eq!(
        (&reply["reason"], &reply["trace_id"]),
        (&"trading_halted".into(), &"asked".into()),
        "{reply}"
    );
}

/// Events with an operator command every 250 messages (halt, reduce, resume in turn).
fn events_with_commands(n: usize) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (i, e) in events(n).into_iter().enumerate() {
        if i % 250 == 125 {
            let command = ["halt", "reduce", "resume"][(i / 250) % 3];
            out.push((
                "RL_V2_CONTROL",
                format!(r#"{{"command":"{command}","reason":"step {i}","who":"test"}}"#),
            ));
        }
        out.push(e);
    }
    out
}

/// Settings that exercise the gate and the breakers on the test events.
const GUARDED: [(&str, &str); 4] = [
    ("RL_V2__RISK__MAX_DECISIONS_PER_SYMBOL_PER_MINUTE", "2"),
    ("RL_V2__BREAKERS__MAX_CONSECUTIVE_LOSSES", "4"),
    ("RL_V2__BREAKERS__CONFIRMATIONS", "2"),
    ("RL_V2__CONTROL__REDUCING_MAX_LEVERAGE", "10"),
];

async fn uninterrupted(url: &str, data: &Path, last_seq: u64) -> Vec<u8> {
    let mut service = Service::start(url, data, &GUARDED);
    let client = client(url).await;
    service.ready(&client).await;
    applied(&client, last_seq).await;
    service.signal("TERM");
    assert!(service.wait().await.success(), "{}", service.log_text());
    std::fs::read(data.join("checkpoint.json")).unwrap()
}

#[tokio::test]
async fn the_trading_state_survives_sigkills_byte_identical_to_an_uninterrupted_run() {
    let server = NatsServer::start(true);
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&url).await;
    let data = dir.path().join("crashing");
    let mut service = Service::start(&url, &data, &GUARDED);
    service.ready(&client).await;
    let all = Arc::new(events_with_commands(3_000));
    let last = all.len() as u64;
    let js = jetstream::new(client.clone());
    let publishing = {
        let (js, all) = (js.clone(), all.clone());
        tokio::spawn(async move { publish_all(&js, &all, 0).await })
    };
    let seed: u64 = rand::random();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for window in [(300, 1_200), (1_500, 2_700)] {
        let at = rng.random_range(window.0..window.1);
        applied(&client, at).await;
        service.signal("KILL");
        assert!(
            !service.wait().await.success(),
            "seed {seed}: killed at {at}"
        );
        service = Service::start(&url, &data, &GUARDED);
        service.ready(&client).await;
    }
    publishing.await.unwrap();
    let s = applied(&client, last).await;
    assert_eq!(s["counters"]["control_commands"], 12, "{s}");
    assert!(
        s["control"]["changes"].as_u64() > Some(12),
        "breakers tripped too: {s}"
    );
    assert!(total(&s["counters"]["refusals"]) > 0, "{s}");
    service.signal("TERM");
    assert!(service.wait().await.success());
    let crashed = std::fs::read(data.join("checkpoint.json")).unwrap();
    let reference = uninterrupted(&url, &dir.path().join("reference"), last).await;
    assert!(
        crashed == reference,
        "seed {seed}: checkpoints differ after crashes"
    );
}

#[tokio::test]
async fn gate_refusals_are_published_with_their_reason_and_counted_in_metrics() {
    let server = NatsServer::start(false);
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let service = Service::start(
        &url,
        &dir.path().join("data"),
        &[
            ("RL_V2__DELIVERY__MODE", "core"),
            ("RL_V2__RISK__MAX_EXPOSURE", "0.2"),
            ("RL_V2__RISK__MAX_OPEN_POSITIONS", "1"),
            ("RL_V2__SERVICE__METRICS_ADDR", &addr),
        ],
    );
    let client = client(&url).await;
    service.ready(&client).await;
    let mut refused = subscribe(&client, "RL_V2_RISK_REFUSED").await;
    let mut decided = decisions(&client).await;
    let sized = |s: &str, size: u32| {
        format!(
            r#"{{"symbol":"{s}","position_size_usd":{size},"account_balance":10000,"trace_id":"{s}"}}"#
        )
    };
    // 0.15 of the account per unit: allowed, masked to multipliers ≤ 1.0.
    client
        .publish("TRADE_EXECUTED", sized("AUSDT", 1500).into())
        .await
        .unwrap();
    let d = &collect(&mut decided, 1).await[0];
    assert!(d["size_multiplier"].as_f64() <= Some(1.0), "{d}");
    // A second position beyond max_open_positions = 1.
    client
        .publish("TRADE_EXECUTED", sized("BUSDT", 1000).into())
        .await
        .unwrap();
    // 0.5 per unit on the open position: even 0.5× exceeds 0.2.
    client
        .publish("TRADE_EXECUTED", sized("AUSDT", 5000).into())
        .await
        .unwrap();
    let r = collect(&mut refused, 2).await;
    assert_eq!(
        (&r[0]["reason"], &r[0]["symbol"], &r[0]["trace_id"]),
        (
            &"max_open_positions".into(),
            &"BUSDT".into(),
            &"BUSDT".into()
        )
    );
    assert_eq!(r[1]["reason"], "exposure_cap");
    assert_eq!(
        (&r[0]["event_seq"], &r[1]["event_seq"]),
        (&2.into(), &3.into())
    );
    let s = stats_until(&client, |s| total(&s["counters"]["refusals"]) == 2).await;
    assert_eq!(s["counters"]["refusals"]["exposure_cap"], 1, "{s}");
    let metrics = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        use std::io::{Read, Write};
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        body
    })
    .await
    .unwrap();
    assert!(
        metrics.contains(r#"rl_v2_risk_refusals_total{reason="exposure_cap"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"rl_v2_risk_refusals_total{reason="max_open_positions"} 1"#));
    assert!(
        metrics.contains(r#"rl_v2_trading_state{state="ACTIVE"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stream_created_without_the_control_subject_is_extended_to_capture_it() {
    let server = NatsServer::start(true);
    let url = server.url();
    let client = client(&url).await;
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: "RL_V2_EVENTS".into(),
        subjects: vec![
            "PREDICTION_GENERATED".into(),
            "TRADE_EXECUTED".into(),
            "POSITION_CLOSED".into(),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&url, &dir.path().join("data"), &[]);
    service.ready(&client).await;
    let mut stream = js.get_stream("RL_V2_EVENTS").await.unwrap();
    let subjects = stream.info().await.unwrap().config.subjects.clone();
    assert!(
        subjects.contains(&"RL_V2_CONTROL".to_string()),
        "{subjects:?}"
    );
    let report = confirmed(&url, &["halt", "--reason", "upgrade"]);
    assert_eq!(report["trading_state"], "HALTED");
    let last = stream.info().await.unwrap().state.last_sequence;
    assert_eq!(last, 1, "the command is in the stream");
}
