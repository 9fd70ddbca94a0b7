//! A core-mode flood against a real nats-server: messages the client drops because rl-v2 falls
//! behind (slow consumer) are counted in `rl_v2.stats` and on `/metrics`, and reported in a few
//! log lines, not one per message.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Events published as fast as the client can.
const FLOOD: usize = 200_000;

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

async fn http_get(addr: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut body = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut body))
        .await
        .expect("in time")
        .expect("read");
    body
}

#[tokio::test]
async fn slow_consumer_drops_are_counted_and_reported_once_a_second_at_most() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = free_addr();
    let mut service = Service::start(
        &server.url(),
        &dir.path().join("data"),
        &[
            ("RL_V2__DELIVERY__MODE", "core"),
            // A small buffer, so that a flood a test can send overflows it.
            ("RL_V2__NATS__SUBSCRIPTION_CAPACITY", "16"),
            ("RL_V2__SERVICE__METRICS_ADDR", &metrics_addr),
        ],
    );
    let client = client(&server.url()).await;
    service.ready(&client).await;

    let payload = bytes::Bytes::from(prediction("BTCUSDT", 0.5, "flood"));
    for _ in 0..FLOOD {
        client
            .publish("PREDICTION_GENERATED", payload.clone())
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    // A request sent after the flood is answered once everything before it was handled or
    // dropped (it may be dropped itself while the buffer is still full: then ask again).
    let mut sent = FLOOD as u64;
    loop {
        sent += 1;
        let marker = client.request(
            "PREDICTION_GENERATED",
            prediction("ETHUSDT", 0.5, "marker").into(),
        );
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), marker).await {
            break;
        }
    }
    let s = stats_until(&client, |s| {
        s["service"]["slow_consumer_drops"].as_u64() > Some(0)
    })
    .await;
    let drops = s["service"]["slow_consumer_drops"].as_u64().unwrap();
    let handled = s["service"]["messages_by_subject"]["PREDICTION_GENERATED"]
        .as_u64()
        .unwrap();
    assert!(handled < sent, "nothing was dropped: {s}");
    // Core-mode events are counted from their connection's message count: exact, give or take
    // a message in flight at the moment of counting.
    assert!(
        drops.abs_diff(sent - handled) <= 1,
        "{drops} drops counted, but {} of {sent} were not handled",
        sent - handled
    );

    let metrics = http_get(&metrics_addr, "/metrics").await;
    let exported = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rl_v2_slow_consumer_drops_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no slow-consumer counter on /metrics:\n{metrics}"));
    assert!(exported >= drops, "{exported} < {drops}");

    service.signal("TERM");
    assert!(service.wait().await.success());
    let log = service.log_text();
    let lines = log
        .lines()
        .filter(|l| l.to_lowercase().contains("slow consumer"))
        .count();
    eprintln!("flood: {sent} sent, {handled} handled, {drops} drops counted, {lines} slow-consumer log lines");
    assert!(lines >= 1, "no slow-consumer report:\n{log}");
    assert!(
        lines * 10 <= drops as usize,
        "{lines} slow-consumer log lines for {drops} drops"
    );
    assert!(
        log.lines().count() < 200,
        "the flood flooded the log: {} lines",
        log.lines().count()
    );
}
