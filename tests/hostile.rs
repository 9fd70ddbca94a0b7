//! The service against hostile producers, with the release binary and a real nats-server:
//! forged rewards, timestamps from the future, the README's own examples, floods of symbols and
//! a stream that starts over.

mod common;

use async_nats::jetstream;
use common::*;
use serde_json::Value;

const DEAD_LETTER: &str = "RL_V2_DEAD_LETTER";

/// A JetStream-mode service (the default) on its own server.
async fn setup(
    env: &[(&str, &str)],
) -> (NatsServer, Service, async_nats::Client, tempfile::TempDir) {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server.url()).await;
    let service = Service::start(&server.url(), &dir.path().join("data"), env);
    service.ready(&client).await;
    (server, service, client, dir)
}

/// Publishes in order (plain core publish: the stream captures it) and flushes.
async fn publish(client: &async_nats::Client, events: &[(&str, String)]) {
    for (subject, payload) in events {
        client
            .publish(subject.to_string(), payload.clone().into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
}

fn applied_events(stats: &Value) -> u64 {
    total(&stats["counters"]["events"]) + total(&stats["counters"]["rejects"])
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn eight_forged_closes_give_eight_dead_letters_and_leave_the_q_tables_untouched() {
    let (_server, mut service, client, _dir) = setup(&[]).await;
    let mut letters = client.subscribe(DEAD_LETTER).await.unwrap();
    client.flush().await.unwrap();
    let mut events = Vec::new();
    for i in 0..8 {
        let s = format!("F{i}USDT");
        events.push(("PREDICTION_GENERATED", prediction(&s, 0.6, "p")));
        events.push(("TRADE_EXECUTED", trade(&s, 50, "t")));
    }
    for i in 0..8 {
        events.push((
            "POSITION_CLOSED",
            format!(r#"{{"symbol":"F{i}USDT","pnl_pct":1e300,"trace_id":"forged"}}"#),
        ));
    }
    publish(&client, &events).await;

    for letter in collect(&mut letters, 8).await {
        assert_eq!(letter["reason"], "implausible", "{letter}");
        assert!(
            letter["error"].as_str().unwrap().contains("pnl_pct"),
            "{letter}"
        );
    }
    let s = stats_until(&client, |s| applied_events(s) == 24).await;
    assert_eq!(s["counters"]["rejects"]["implausible"], 8);
    assert_eq!(s["counters"]["updates"], 0);
    assert_eq!(s["service"]["dead_letters"], 8);

    service.signal("TERM");
    assert!(service.wait().await.success(), "{}", service.log_text());
    for file in ["meta_strategy_q_table.json", "position_sizing_q_table.json"] {
        let table: Value =
            serde_json::from_slice(&std::fs::read(service.data.join(file)).unwrap()).unwrap();
        assert_eq!(table["update_count"], 0, "{file}");
        let untouched = table["q_table"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|row| row.as_object().unwrap().values())
            .all(|q| q.as_f64() == Some(0.0));
        assert!(untouched, "{file}: {table}");
    }
    let log = service.log_text();
    assert!(
        log.contains("event rejected") && log.contains("implausible"),
        "{log}"
    );
}

#[tokio::test]
async fn predictions_stamped_eight_days_ahead_do_not_expire_other_symbols() {
    let (_server, service, client, _dir) = setup(&[]).await;
    let mut events = Vec::new();
    for i in 0..100 {
        events.push((
            "PREDICTION_GENERATED",
            prediction(&format!("P{i}"), 0.5, "p"),
        ));
        events.push((
            "PREDICTION_GENERATED",
            prediction(&format!("O{i}"), 0.5, "p"),
        ));
        events.push(("TRADE_EXECUTED", trade(&format!("O{i}"), 10, "t")));
    }
    let ahead = now_secs() + 8.0 * 86_400.0;
    for i in 0..1_100 {
        events.push((
            "PREDICTION_GENERATED",
            format!(r#"{{"symbol":"FUTURE{i}","confidence":0.5,"timestamp":{ahead}}}"#),
        ));
    }
    for i in 0..100 {
        events.push(("POSITION_CLOSED", close(&format!("P{i}"), 1.0, "c")));
        events.push(("POSITION_CLOSED", close(&format!("O{i}"), 1.0, "c")));
    }
    publish(&client, &events).await;
    let s = stats_until(&client, |s| applied_events(s) == events.len() as u64).await;
    let c = &s["counters"];
    assert_eq!(c["expired_pending"], 0, "{s}");
    assert_eq!(c["expired_positions"], 0, "{s}");
    assert_eq!(c["closes_without_decision"], 0, "{s}");
    assert_eq!(c["updates"], 300, "{s}");
    assert_eq!(c["timestamps_clamped"], 1_100, "{s}");
    assert!(
        service
            .log_text()
            .contains("event timestamp too far from the transport's time; clamped"),
        "{}",
        service.log_text()
    );
}

/// The three example events of the README's subject table, exactly as written there.
fn readme_examples() -> Vec<(&'static str, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    ["PREDICTION_GENERATED", "TRADE_EXECUTED", "POSITION_CLOSED"]
        .into_iter()
        .map(|subject| {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{subject}` (")))
                .unwrap_or_else(|| panic!("README has no row for {subject}"));
            let example = row
                .split("| in | `")
                .nth(1)
                .and_then(|rest| rest.strip_suffix("` |"))
                .unwrap_or_else(|| panic!("no example in {row}"));
            serde_json::from_str::<Value>(example)
                .unwrap_or_else(|e| panic!("the README's {subject} example is not JSON: {e}"));
            (subject, example.to_string())
        })
        .collect()
}

#[tokio::test]
async fn the_readme_examples_train_both_agents() {
    let (_server, _service, client, _dir) = setup(&[]).await;
    let events = readme_examples();
    publish(&client, &events).await;
    let s = stats_until(&client, |s| applied_events(s) == 3).await;
    assert_eq!(total(&s["counters"]["rejects"]), 0, "{s}");
    assert_eq!(s["counters"]["expired_pending"], 0, "{s}");
    assert_eq!(s["counters"]["updates"], 2, "{s}");
    assert_eq!(
        s["meta_agent_stats"]["q_learning_stats"]["update_count"], 1,
        "{s}"
    );
    assert_eq!(
        s["sizing_agent_stats"]["q_learning_stats"]["update_count"], 1,
        "{s}"
    );
}

#[tokio::test]
async fn a_flood_of_symbols_stays_within_the_caps_with_evictions_counted_and_logged() {
    let (_server, service, client, _dir) = setup(&[
        ("RL_V2__LIMITS__MAX_PENDING_DECISIONS", "10"),
        ("RL_V2__LIMITS__MAX_OPEN_POSITIONS", "5"),
        ("RL_V2__LIMITS__MAX_SYMBOLS", "7"),
    ])
    .await;
    let prices = "[100,101,102,101,103,104,103,105,106,107,108]";
    let mut events = Vec::new();
    for i in 0..300 {
        events.push((
            "PREDICTION_GENERATED",
            format!(r#"{{"symbol":"N{i}","confidence":0.5,"price_history":{prices}}}"#),
        ));
    }
    for i in 0..20 {
        events.push(("TRADE_EXECUTED", trade(&format!("T{i}"), 10, "t")));
    }
    publish(&client, &events).await;
    let s = stats_until(&client, |s| applied_events(s) == 320).await;
    assert_eq!(s["pending_decisions"], 10, "{s}");
    assert_eq!(s["open_positions"], 5, "{s}");
    assert_eq!(s["tracked_symbols"], 7, "{s}");
    assert_eq!(s["counters"]["evicted_pending"], 290, "{s}");
    assert_eq!(s["counters"]["evicted_positions"], 15, "{s}");
    assert_eq!(s["counters"]["evicted_symbols"], 293, "{s}");
    let log = service.log_text();
    for line in [
        "pending-decision cap reached",
        "open-position cap reached",
        "symbol cap reached",
    ] {
        assert!(log.contains(line), "{line}: {log}");
    }
    // One line per power of two, not one per eviction.
    let lines = log.matches("pending-decision cap reached").count();
    assert!(lines <= 9, "{lines} log lines for 290 evictions");
}

#[tokio::test]
async fn after_an_accepted_stream_reset_decision_ids_are_not_reused() {
    let first = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client1 = client(&first.url()).await;
    let mut service = Service::start(&first.url(), &data, &[]);
    service.ready(&client1).await;
    let mut before = decisions(&client1).await;
    publish(
        &client1,
        &[("PREDICTION_GENERATED", prediction("AUSDT", 0.5, "old"))],
    )
    .await;
    let old = collect(&mut before, 1).await;
    assert_eq!(old[0]["decision_id"], "meta_strategy-1");
    service.signal("TERM");
    assert!(service.wait().await.success());

    // A new broker with an empty store: stream sequence 1 comes again, for another event.
    let second = NatsServer::start(true);
    let client2 = client(&second.url()).await;
    let accepted = Service::start(
        &second.url(),
        &data,
        &[("RL_V2__DELIVERY__ACCEPT_STREAM_RESET", "true")],
    );
    accepted.ready(&client2).await;
    let mut after = decisions(&client2).await;
    let js = jetstream::new(client2.clone());
    js.publish(
        "PREDICTION_GENERATED",
        prediction("BUSDT", 0.5, "new").into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let new = collect(&mut after, 1).await;
    assert_eq!(new[0]["event_seq"], 1);
    assert_eq!(new[0]["decision_id"], "meta_strategy-e1-1", "{}", new[0]);
    let s = stats(&client2).await;
    assert_eq!(s["epoch"], 1);
}
