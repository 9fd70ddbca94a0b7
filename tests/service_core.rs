//! The NATS service in core mode, against a real nats-server per test.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const CORE: [(&str, &str); 1] = [("RL_V2__DELIVERY__MODE", "core")];

async fn setup() -> (NatsServer, Service, async_nats::Client, tempfile::TempDir) {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&server.url(), &dir.path().join("data"), &CORE);
    let client = client(&server.url()).await;
    service.ready(&client).await;
    (server, service, client, dir)
}

#[tokio::test]
async fn full_pipeline_over_nats_with_interleaved_symbols() {
    let (_server, _service, client, _dir) = setup().await;
    let mut meta_sub = client.subscribe("RL_META_STRATEGY_DECISION").await.unwrap();
    let mut sizing_sub = client
        .subscribe("RL_POSITION_SIZING_DECISION")
        .await
        .unwrap();
    client.flush().await.unwrap();

    let steps: Vec<(&str, String)> = vec![
        ("PREDICTION_GENERATED", prediction("btcusdt", 0.1, "p-btc")),
        ("PREDICTION_GENERATED", prediction("ETHUSDT", 0.5, "p-eth")),
        ("TRADE_EXECUTED", trade("BTCUSDT", 10, "t-btc")),
        ("PREDICTION_GENERATED", prediction("SOLUSDT", 0.9, "p-sol")),
        ("TRADE_EXECUTED", trade("ETHUSDT", 20, "t-eth")),
        ("POSITION_CLOSED", close("BTCUSDT", 2.0, "c-btc")),
        ("TRADE_EXECUTED", trade("SOLUSDT", 5, "t-sol")),
        ("POSITION_CLOSED", close("SOLUSDT", -1.0, "c-sol")),
        ("POSITION_CLOSED", close("ETHUSDT", 0.5, "c-eth")),
    ];
    let mut replies = Vec::new();
    for (subject, payload) in steps {
        replies.push(request(&client, subject, payload).await);
    }
    let metas = collect(&mut meta_sub, 3).await;
    let sizings = collect(&mut sizing_sub, 3).await;

    for (d, (symbol, trace)) in metas.iter().zip([
        ("BTCUSDT", "p-btc"),
        ("ETHUSDT", "p-eth"),
        ("SOLUSDT", "p-sol"),
    ]) {
        assert_eq!(d["agent"], "meta_strategy");
        assert_eq!(d["symbol"], symbol);
        assert_eq!(d["trace_id"], trace);
        assert!(d["strategy"].is_string() && d["model"].is_string() && d["weight"].is_number());
        assert!(d["decision_id"]
            .as_str()
            .unwrap()
            .starts_with("meta_strategy-"));
        for field in [
            "event_seq",
            "action_index",
            "propensity",
            "epsilon",
            "q_value",
            "timestamp",
        ] {
            assert!(d[field].is_number(), "{field} in {d}");
        }
        assert!(d["explored"].is_boolean() && d["state_key"].is_string());
    }
    for (d, (symbol, trace)) in sizings.iter().zip([
        ("BTCUSDT", "t-btc"),
        ("ETHUSDT", "t-eth"),
        ("SOLUSDT", "t-sol"),
    ]) {
        assert_eq!(d["agent"], "position_sizing");
        assert_eq!(d["symbol"], symbol);
        assert_eq!(d["trace_id"], trace);
        assert!(d["size_multiplier"].is_number() && d["leverage"].is_u64());
        assert!(d.get("strategy").is_none());
    }
    // The replies to the requests are the same decisions; closes report their updates.
    assert_eq!(replies[0], metas[0]);
    assert_eq!(replies[2], sizings[0]);
    assert_eq!(replies[5]["updates_applied"], 2);
    assert_eq!(replies[8]["updates_applied"], 2);

    let s = stats(&client).await;
    assert_eq!(s["meta_agent_stats"]["agent_type"], "meta_strategy");
    assert_eq!(s["meta_agent_stats"]["action_space_size"], 60);
    assert_eq!(s["sizing_agent_stats"]["action_space_size"], 40);
    assert_eq!(s["meta_agent_stats"]["q_learning_stats"]["update_count"], 3);
    assert_eq!(
        s["sizing_agent_stats"]["q_learning_stats"]["update_count"],
        3
    );
    assert_eq!(s["meta_agent_stats"]["episode_stats"]["total_episodes"], 3);
    assert_eq!(s["counters"]["updates"], 6);
    assert_eq!(s["counters"]["events"]["POSITION_CLOSED"], 3);
    assert_eq!(
        s["service"]["messages_by_subject"]["PREDICTION_GENERATED"],
        3
    );
    assert_eq!(s["service"]["decisions_published"], 6);
    assert_eq!(s["open_positions"], 0);
}

#[tokio::test]
async fn every_fixture_is_served_or_dead_lettered_and_the_service_keeps_serving() {
    let (_server, mut service, client, _dir) = setup().await;
    let mut dead = client.subscribe("RL_V2_DEAD_LETTER").await.unwrap();
    client.flush().await.unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/events.jsonl"
    ))
    .unwrap();
    let mut expected_rejects = Vec::new();
    for line in text.lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        let subject = case["subject"].as_str().unwrap();
        let raw = case["raw"].as_str().unwrap().to_string();
        let note = case["note"].as_str().unwrap();
        let reply = tokio::time::timeout(
            WAIT,
            client.request(subject.to_string(), raw.clone().into()),
        )
        .await
        .expect("reply in time")
        .expect("reply");
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        if case["expect"] == "accept" {
            if subject == "POSITION_CLOSED" {
                assert!(reply["updates_applied"].is_u64(), "{note}: {reply}");
            } else {
                assert!(reply["decision_id"].is_string(), "{note}: {reply}");
            }
        } else {
            assert!(reply["reason"].is_string(), "{note}: {reply}");
            expected_rejects.push((subject.to_string(), raw, reply["reason"].clone()));
        }
    }
    assert_eq!(expected_rejects.len(), 14);
    let letters = collect(&mut dead, 14).await;
    for (letter, (subject, raw, reason)) in letters.iter().zip(&expected_rejects) {
        assert_eq!(&letter["subject"], subject);
        assert_eq!(&letter["reason"], reason);
        assert!(letter["error"].as_str().is_some_and(|e| !e.is_empty()));
        let shown = letter["payload"].as_str().unwrap();
        let prefix: String = raw.chars().take(shown.len()).collect();
        assert_eq!(shown, prefix, "dead letter carries the payload's start");
        assert!(shown.len() <= 4096);
    }
    let codes: BTreeSet<&str> = letters
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        BTreeSet::from([
            "empty_payload",
            "invalid_json",
            "missing_field",
            "not_an_object",
            "out_of_range",
            "payload_too_large",
            "wrong_type"
        ])
    );
    // Nothing more arrives on the dead-letter subject than one letter per rejection.
    let extra = tokio::time::timeout(std::time::Duration::from_millis(300), dead.next()).await;
    assert!(extra.is_err(), "unexpected extra dead letter: {extra:?}");

    let again = request(
        &client,
        "PREDICTION_GENERATED",
        prediction("XRPUSDT", 0.4, "after"),
    )
    .await;
    assert_eq!(again["symbol"], "XRPUSDT");
    let s = stats(&client).await;
    assert_eq!(total(&s["counters"]["rejects"]), 14);
    assert_eq!(s["service"]["dead_letters"], 14);
    assert!(service.running());
    assert!(service.log_text().contains("event rejected"));
}

/// Runs `n` complete prediction → trade → close cycles, one symbol each.
async fn cycles(client: &async_nats::Client, n: usize) {
    for i in 0..n {
        let sym = format!("S{i}USDT");
        request(
            client,
            "PREDICTION_GENERATED",
            prediction(&sym, (i % 10) as f64 / 10.0, "p"),
        )
        .await;
        request(client, "TRADE_EXECUTED", trade(&sym, 10, "t")).await;
        request(
            client,
            "POSITION_CLOSED",
            close(&sym, (i % 7) as f64 - 3.0, "c"),
        )
        .await;
    }
}

fn engine_part(stats: &Value) -> Value {
    let mut s = stats.clone();
    s.as_object_mut().unwrap().remove("service");
    s.as_object_mut().unwrap().remove("instance");
    s
}

#[tokio::test]
async fn checkpoint_after_100_updates_restores_identical_stats() {
    let (server, mut service, client, dir) = setup().await;
    cycles(&client, 50).await;
    let s = stats_until(&client, |s| s["service"]["checkpoints"].as_u64() >= Some(1)).await;
    assert_eq!(s["counters"]["updates"], 100);
    let checkpoint = service.checkpoint();
    assert_eq!(checkpoint["counters"]["updates"], 100);
    assert_eq!(checkpoint["last_applied_seq"], 150);
    for file in ["meta_strategy_q_table.json", "position_sizing_q_table.json"] {
        let table: Value =
            serde_json::from_slice(&std::fs::read(service.data.join(file)).unwrap()).unwrap();
        assert_eq!(table["update_count"], 50, "{file}");
    }
    // No graceful shutdown: the restarted service must rely on the periodic checkpoint.
    service.signal("KILL");
    service.wait().await;
    let restarted = Service::start(&server.url(), &dir.path().join("data"), &CORE);
    restarted.ready(&client).await;
    let after = stats(&client).await;
    let (mut after_engine, mut before_engine) = (engine_part(&after), engine_part(&s));
    // A restart in core mode begins a new decision-id epoch; everything else is restored.
    let epoch = |v: &mut Value| v.as_object_mut().unwrap().remove("epoch").unwrap();
    assert_eq!(
        epoch(&mut after_engine).as_u64(),
        epoch(&mut before_engine).as_u64().map(|e| e + 1)
    );
    assert_eq!(after_engine, before_engine);
    assert_eq!(after["service"]["checkpoints"], 0);
}

#[tokio::test]
async fn after_crashes_in_core_mode_no_decision_id_is_published_twice() {
    let (server, mut service, client, dir) = setup().await;
    let mut meta = client.subscribe("RL_META_STRATEGY_DECISION").await.unwrap();
    client.flush().await.unwrap();
    let mut ids = BTreeSet::new();
    for round in 0..3 {
        // Fewer events than a checkpoint needs: each crash loses the numbering since the last.
        for i in 0..5 {
            let p = prediction(&format!("S{i}USDT"), 0.6, &format!("r{round}-{i}"));
            client
                .publish("PREDICTION_GENERATED", p.into())
                .await
                .unwrap();
        }
        for d in collect(&mut meta, 5).await {
            let id = d["decision_id"].as_str().unwrap().to_string();
            assert!(ids.insert(id.clone()), "{id} published twice");
        }
        service.signal("KILL");
        service.wait().await;
        service = Service::start(&server.url(), &dir.path().join("data"), &CORE);
        service.ready(&client).await;
    }
    assert_eq!(ids.len(), 15);
}

#[tokio::test]
async fn sigterm_while_events_flow_exits_0_with_every_applied_event_checkpointed() {
    let (_server, mut service, client, _dir) = setup().await;
    let mut decisions = decisions(&client).await;
    // Four requesters keep events flowing, each waiting for its answer (a bounded window).
    let stop = tokio_util::sync::CancellationToken::new();
    let mut publishers = Vec::new();
    for p in 0..4u64 {
        let publisher = client.clone();
        let stop = stop.clone();
        publishers.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.is_cancelled() {
                let sym = format!("S{p}-{}", sent % 50);
                let (subject, payload) = match sent % 3 {
                    0 => ("PREDICTION_GENERATED", prediction(&sym, 0.5, "p")),
                    1 => ("TRADE_EXECUTED", trade(&sym, 10, "t")),
                    _ => ("POSITION_CLOSED", close(&sym, 1.0, "c")),
                };
                sent += 1;
                let ask = publisher.request(subject, payload.into());
                if !matches!(
                    tokio::time::timeout(std::time::Duration::from_secs(2), ask).await,
                    Ok(Ok(_))
                ) {
                    break;
                }
            }
            sent
        }));
    }
    // Let events flow until the service has demonstrably applied some.
    let mut seen = collect(&mut decisions, 300).await.len();
    service.signal("TERM");
    let status = service.wait().await;
    stop.cancel();
    let mut sent = 0;
    for p in publishers {
        sent += p.await.unwrap();
    }
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        service.log_text()
    );
    // Everything the service published is at the broker; a round trip brings it here.
    client.flush().await.unwrap();
    while let Ok(Some(_)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), decisions.next()).await
    {
        seen += 1;
    }
    let checkpoint = service.checkpoint();
    let applied = total(&checkpoint["counters"]["events"]);
    assert_eq!(
        total(&checkpoint["counters"]["decisions"]),
        seen as u64,
        "decisions in checkpoint = decisions published"
    );
    assert_eq!(checkpoint["last_applied_seq"], applied);
    assert!(
        applied <= sent && applied >= 300,
        "applied {applied} of {sent}"
    );
    assert!(service.log_text().contains("final checkpoint written"));
}

#[tokio::test]
async fn broker_restart_on_the_same_port_is_survived_without_a_restart() {
    let (mut server, mut service, client, _dir) = setup().await;
    let first = request(
        &client,
        "PREDICTION_GENERATED",
        prediction("BTCUSDT", 0.7, "before"),
    )
    .await;
    assert_eq!(first["event_seq"], 1);
    server.kill();
    server.restart().expect("the broker restarts on its port");
    // Both the test client and the service reconnect on their own; retry until served.
    let deadline = std::time::Instant::now() + WAIT;
    let second = loop {
        let ask = client.request(
            "PREDICTION_GENERATED",
            prediction("ETHUSDT", 0.7, "after").into(),
        );
        match tokio::time::timeout(std::time::Duration::from_millis(500), ask).await {
            Ok(Ok(reply)) => break serde_json::from_slice::<Value>(&reply.payload).unwrap(),
            _ => assert!(
                std::time::Instant::now() < deadline,
                "not served after the broker restart"
            ),
        }
    };
    assert_eq!(second["symbol"], "ETHUSDT");
    assert!(service.running(), "the service kept running");
    let s = stats(&client).await;
    assert!(s["counters"]["events"]["PREDICTION_GENERATED"].as_u64() >= Some(2));
    assert_eq!(s["meta_agent_stats"]["agent_type"], "meta_strategy");
}

#[tokio::test]
async fn ten_thousand_events_over_a_thousand_symbols_lose_no_decision() {
    let (_server, _service, client, _dir) = setup().await;
    let mut decisions = decisions(&client).await;
    let mut expected = BTreeMap::new();
    for i in 0..10_000u32 {
        let sym = format!("SYM{}", i % 1000);
        let (subject, payload) = match (i / 1000) % 3 {
            0 => (
                "PREDICTION_GENERATED",
                prediction(&sym, 0.5, &format!("e{i}")),
            ),
            1 => ("TRADE_EXECUTED", trade(&sym, 10, &format!("e{i}"))),
            _ => ("POSITION_CLOSED", close(&sym, 1.0, &format!("e{i}"))),
        };
        if subject != "POSITION_CLOSED" {
            expected.insert(format!("e{i}"), sym);
        }
        client.publish(subject, payload.into()).await.unwrap();
    }
    client.flush().await.unwrap();
    let got = collect(&mut decisions, expected.len()).await;
    let got: BTreeMap<String, String> = got
        .iter()
        .map(|d| {
            (
                d["trace_id"].as_str().unwrap().to_string(),
                d["symbol"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    let s = stats_until(&client, |s| total(&s["counters"]["events"]) == 10_000).await;
    assert_eq!(total(&s["counters"]["decisions"]), 7_000);
}

#[tokio::test]
async fn a_request_to_prediction_generated_gets_the_decision_as_its_reply() {
    let (_server, _service, client, _dir) = setup().await;
    let mut meta = client.subscribe("RL_META_STRATEGY_DECISION").await.unwrap();
    client.flush().await.unwrap();
    let reply = request(
        &client,
        "PREDICTION_GENERATED",
        prediction("adausdt", 0.8, "req-1"),
    )
    .await;
    assert_eq!(reply["agent"], "meta_strategy");
    assert_eq!(reply["symbol"], "ADAUSDT");
    assert_eq!(reply["trace_id"], "req-1");
    let published = collect(&mut meta, 1).await;
    assert_eq!(published[0], reply);
}

/// GETs `path` from `addr` over plain HTTP/1.1 and returns the body.
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn prometheus_endpoint_exposes_counters_and_latency_histograms() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let service = Service::start(
        &server.url(),
        &dir.path().join("data"),
        &[
            ("RL_V2__DELIVERY__MODE", "core"),
            ("RL_V2__SERVICE__METRICS_ADDR", &addr),
        ],
    );
    let client = client(&server.url()).await;
    service.ready(&client).await;
    request(
        &client,
        "PREDICTION_GENERATED",
        prediction("BTCUSDT", 0.5, "m1"),
    )
    .await;
    request(&client, "TRADE_EXECUTED", trade("BTCUSDT", 10, "m2")).await;
    request(&client, "POSITION_CLOSED", close("BTCUSDT", 1.0, "m3")).await;
    request(&client, "POSITION_CLOSED", "{".to_string()).await;
    let ckpt = request(&client, "rl_v2.checkpoint", String::new()).await;
    assert_eq!(ckpt["last_applied_seq"], 4);
    let body = http_get(&addr, "/metrics").await;
    for line in [
        "rl_v2_events_total{kind=\"PREDICTION_GENERATED\"} 1",
        "rl_v2_rejects_total{reason=\"invalid_json\"} 1",
        "rl_v2_decisions_total{agent=\"meta_strategy\"} 1",
        "rl_v2_updates_total 2",
        "rl_v2_decision_latency_seconds_count 2",
        "rl_v2_checkpoint_duration_seconds_count 1",
        "rl_v2_checkpoint_requests_total 1",
        "rl_v2_last_applied_seq 4",
        "rl_v2_states_visited{agent=\"meta_strategy\"} 1",
    ] {
        assert!(body.contains(line), "missing `{line}` in:\n{body}");
    }
}

#[tokio::test]
async fn a_corrupt_checkpoint_stops_start_up_untouched_unless_discarded() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let corrupt = b"{\"format_version\": 1, \"last_applied_seq\": 12, \"meta\": {";
    std::fs::write(data.join("checkpoint.json"), corrupt).unwrap();
    let mut refused = Service::start(&server.url(), &data, &CORE);
    assert_eq!(refused.wait().await.code(), Some(1));
    let log = refused.log_text();
    assert!(log.contains("checkpoint.json is corrupt"), "{log}");
    assert_eq!(
        std::fs::read(data.join("checkpoint.json")).unwrap(),
        corrupt,
        "left untouched"
    );

    let mut cmd_env = CORE.to_vec();
    cmd_env.push(("RL_V2__LOG__LEVEL", "info"));
    let started = Service::start_with_args(
        &server.url(),
        &data,
        &cmd_env,
        &["--discard-corrupt-checkpoint"],
    );
    let client = client(&server.url()).await;
    started.ready(&client).await;
    let aside: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("checkpoint.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the corrupt file is kept aside");
    assert_eq!(std::fs::read(aside[0].path()).unwrap(), corrupt);
    assert_eq!(stats(&client).await["last_applied_seq"], 0);
}

#[tokio::test]
async fn python_tables_in_the_checkpoint_dir_are_imported_at_start_up() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("meta_strategy_q_table.json"),
        r#"{"q_table": {"UNKNOWN|vol=3|press=2|conf=4|wr=2|health=2": {"momentum_flip|ensemble|1.5": 2.0}}, "epsilon": 0.05, "update_count": 40}"#,
    )
    .unwrap();
    // Python tables keep their meaning (state keys, bootstrapped values) under the seed
    // profile.
    let settings = [CORE[0], ("RL_V2__LEARNING__PROFILE", "seed")];
    let service = Service::start(&server.url(), &data, &settings);
    let client = client(&server.url()).await;
    service.ready(&client).await;
    let s = stats(&client).await;
    assert_eq!(
        s["meta_agent_stats"]["q_learning_stats"]["states_visited"],
        1
    );
    assert_eq!(
        s["meta_agent_stats"]["q_learning_stats"]["update_count"],
        40
    );
    assert_eq!(s["meta_agent_stats"]["q_learning_stats"]["epsilon"], 0.05);
    // The imported table decides: in that state the greedy action is the imported best one.
    let d = request(
        &client,
        "PREDICTION_GENERATED",
        prediction("BTCUSDT", 0.9, "imp"),
    )
    .await;
    assert_eq!(d["state_key"], "UNKNOWN|vol=3|press=2|conf=4|wr=2|health=2");
    if d["explored"] == false {
        assert_eq!(
            (
                d["strategy"].as_str(),
                d["model"].as_str(),
                d["weight"].as_f64()
            ),
            (Some("momentum_flip"), Some("ensemble"), Some(1.5))
        );
        assert_eq!(d["q_value"], 2.0);
    }
    assert!(service
        .log_text()
        .contains("imported Python-format Q-tables"));
}

#[tokio::test]
async fn micro_service_info_lists_every_endpoint_and_json_logs_are_json() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start(
        &server.url(),
        &dir.path().join("data"),
        &[
            ("RL_V2__DELIVERY__MODE", "core"),
            ("RL_V2__LOG__FORMAT", "json"),
        ],
    );
    let client = client(&server.url()).await;
    service.ready(&client).await;
    let info = request(&client, "$SRV.INFO.rl_v2", String::new()).await;
    assert_eq!(info["name"], "rl_v2");
    let subjects: BTreeSet<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    // Each instance also answers stats on a subject of its own.
    let own = stats(&client).await["instance"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let own = format!("rl_v2.stats.{own}");
    assert_eq!(
        subjects,
        BTreeSet::from([
            "rl_v2.checkpoint",
            "rl_v2.decide.>",
            "rl_v2.stats",
            own.as_str()
        ])
    );
    let nats_stats = request(&client, "$SRV.STATS.rl_v2", String::new()).await;
    assert_eq!(nats_stats["name"], "rl_v2");
    for i in 0..5 {
        request(
            &client,
            "PREDICTION_GENERATED",
            prediction(&format!("S{i}"), 0.5, "j"),
        )
        .await;
    }
    request(&client, "PREDICTION_GENERATED", "[]".to_string()).await;
    service.signal("TERM");
    assert!(service.wait().await.success());
    let log = service.log_text();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let rejected = lines
        .iter()
        .filter(|l| l["message"] == "event rejected")
        .count();
    assert_eq!(rejected, 1, "one line per rejection");
    assert!(
        lines.iter().any(|l| l["message"] == "checkpoint written"),
        "one line per checkpoint"
    );
    // No line per accepted event: five accepted events leave no trace at the default level.
    assert!(!log.contains("\"S3\""), "{log}");
}
