//! JetStream mode under faults: crashes, downtime, broker restarts, redeliveries, rejects.
//! Each test has its own nats-server with its own store directory.

mod common;

use async_nats::jetstream;
use common::*;
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn three_sigkills_while_events_flow_end_byte_identical_to_an_uninterrupted_run() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server.url()).await;
    let data = dir.path().join("crashing");
    let mut service = Service::start(&server.url(), &data, &[]);
    service.ready(&client).await;

    let all = Arc::new(events(5_000));
    let js = jetstream::new(client.clone());
    let publishing = {
        let (js, all) = (js.clone(), all.clone());
        tokio::spawn(async move { publish_all(&js, &all, 0).await })
    };
    let seed: u64 = rand::random();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for window in [(200, 1_400), (1_700, 3_000), (3_300, 4_600)] {
        let at = rng.random_range(window.0..window.1);
        applied(&client, at).await;
        service.signal("KILL");
        let status = service.wait().await;
        assert!(!status.success(), "seed {seed}: killed at {at}");
        service = Service::start(&server.url(), &data, &[]);
        service.ready(&client).await;
    }
    publishing.await.unwrap();
    let s = applied(&client, 5_000).await;
    assert_eq!(
        total(&s["counters"]["events"]) + total(&s["counters"]["rejects"]),
        5_000
    );
    service.signal("TERM");
    assert!(service.wait().await.success());
    let crashed = std::fs::read(data.join("checkpoint.json")).unwrap();
    let reference = reference_checkpoint(&server.url(), dir.path(), 5_000).await;
    assert!(
        crashed == reference,
        "seed {seed}: checkpoints differ after crashes"
    );
}

#[tokio::test]
async fn events_published_while_the_service_is_down_are_all_applied() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server.url()).await;
    let data = dir.path().join("data");
    // First run creates the stream, then stops.
    let mut service = Service::start(&server.url(), &data, &[]);
    service.ready(&client).await;
    service.signal("TERM");
    assert!(service.wait().await.success());
    let js = jetstream::new(client.clone());
    let evs = events(600);
    publish_all(&js, &evs, 0).await;
    let mut decisions = decisions(&client).await;
    let service = Service::start(&server.url(), &data, &[]);
    service.ready(&client).await;
    let expected = evs
        .iter()
        .filter(|(subject, payload)| *subject != "POSITION_CLOSED" && !payload.contains(":7}"))
        .count();
    let got = collect(&mut decisions, expected).await;
    assert_eq!(got.len(), expected);
    let s = applied(&client, 600).await;
    assert_eq!(s["last_applied_seq"], 600);
    assert_eq!(total(&s["counters"]["decisions"]), expected as u64);
}

#[tokio::test]
async fn broker_sigkill_and_restart_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let mut server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server.url()).await;
    let data = dir.path().join("data");
    let mut service = Service::start(&server.url(), &data, &[]);
    service.ready(&client).await;
    let js = jetstream::new(client.clone());
    let all = events(3_000);
    publish_all(&js, &all[..1_500], 0).await;
    applied(&client, 700).await;
    server.kill();
    server.restart().expect("the broker restarts on its port");
    publish_all(&js, &all[1_500..], 1_500).await;
    let s = applied(&client, 3_000).await;
    assert!(service.running(), "the service rode out the broker restart");
    assert_eq!(
        total(&s["counters"]["events"]) + total(&s["counters"]["rejects"]),
        3_000
    );
    service.signal("TERM");
    assert!(service.wait().await.success(), "{}", service.log_text());
    let survived = std::fs::read(data.join("checkpoint.json")).unwrap();
    let reference = reference_checkpoint(&server.url(), dir.path(), 3_000).await;
    assert!(
        survived == reference,
        "checkpoint after the broker restart differs from an undisturbed run"
    );
}

async fn recv(
    rx: &mut tokio::sync::mpsc::Receiver<rl_v2_service::source::Inbound>,
) -> rl_v2_service::source::Inbound {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a message in time")
        .expect("open")
}

#[tokio::test]
async fn a_message_redelivered_after_its_ack_wait_is_not_applied_twice() {
    use rl_v2_service::{
        checkpointer::Checkpointer, jetstream as source, metrics::ServiceMetrics, EventLoop,
    };
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server.url()).await;
    let mut settings = rl_v2_service::settings::Settings::defaults();
    settings.delivery.ack_wait_secs = 1.0;
    settings.checkpoint.dir = dir.path().to_path_buf();
    let js = jetstream::new(client.clone());
    let stream = source::prepare_stream(&js, &server.url(), &settings.delivery, &settings.subjects)
        .await
        .unwrap();
    publish_all(&js, &events(3), 0).await;

    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let metrics = Arc::new(ServiceMetrics::default());
    let consuming = source::consume(
        stream,
        1,
        settings.delivery.clone(),
        settings.subjects.clone(),
        tx,
        shutdown.clone(),
        metrics.clone(),
    );
    // Hold the first message unacked past its ack wait: the stream delivers it again.
    let first = recv(&mut rx).await;
    let mut others = Vec::new();
    let again = loop {
        let m = recv(&mut rx).await;
        if matches!((&m.delivery, &first.delivery), (rl_v2_service::source::Delivery::JetStream { seq: a, .. }, rl_v2_service::source::Delivery::JetStream { seq: b, .. }) if a == b)
        {
            break m;
        }
        others.push(m);
    };
    let engine = rl_v2_core::engine::Engine::new(settings.engine_config());
    let checkpointer = Checkpointer::start(
        rl_v2_service::checkpoint::CheckpointStore::new(dir.path()),
        metrics.clone(),
        Duration::ZERO,
        Some(client.clone()),
    );
    let mut event_loop = EventLoop::new(engine, client.clone(), settings, metrics, checkpointer);
    event_loop.handle(first).await;
    event_loop.handle(again).await;
    for m in others {
        event_loop.handle(m).await;
    }
    let stats = serde_json::to_value(event_loop.stats()).unwrap();
    assert_eq!(stats["service"]["duplicates_skipped"], 1);
    assert_eq!(total(&stats["counters"]["events"]), 3, "{stats}");
    assert_eq!(stats["last_applied_seq"], 3);
    shutdown.cancel();
    consuming.await.unwrap();
    event_loop.finish().await.unwrap();
}

#[tokio::test]
async fn a_rejected_message_gives_exactly_one_dead_letter() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server.url()).await;
    let service = Service::start(
        &server.url(),
        &dir.path().join("data"),
        &[("RL_V2__DELIVERY__ACK_WAIT_SECS", "1")],
    );
    service.ready(&client).await;
    let mut dead = client.subscribe("RL_V2_DEAD_LETTER").await.unwrap();
    client.flush().await.unwrap();
    let js = jetstream::new(client.clone());
    publish_all(
        &js,
        &[(
            "POSITION_CLOSED",
            r#"{"symbol":"BTCUSDT","pnl_pct":"NaN"}"#.to_string(),
        )],
        0,
    )
    .await;
    let letters = collect(&mut dead, 1).await;
    assert_eq!(letters[0]["reason"], "wrong_type");
    assert_eq!(letters[0]["seq"], 1);
    // The message was terminated: nothing stays pending on the consumer, nothing is redelivered.
    let stream = js.get_stream("RL_V2_EVENTS").await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut consumers = stream.consumers();
        let mut infos = Vec::new();
        while let Some(info) = consumers.next().await {
            infos.push(info.unwrap());
        }
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].num_redelivered, 0);
        if infos[0].num_ack_pending == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rejected message stayed pending"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Well past the ack wait, no second letter arrives.
    let extra = tokio::time::timeout(Duration::from_millis(2_500), dead.next()).await;
    assert!(extra.is_err(), "a second dead letter arrived");
    let s = stats(&client).await;
    assert_eq!(s["counters"]["rejects"]["wrong_type"], 1);
    assert_eq!(s["service"]["dead_letters"], 1);
}

#[tokio::test]
async fn without_jetstream_the_service_exits_non_zero_and_says_how_to_fix_it() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start(&server.url(), &dir.path().join("data"), &[]);
    let status = service.wait().await;
    assert_eq!(status.code(), Some(1));
    let log = service.log_text();
    assert!(
        log.contains("-js") && log.contains("delivery.mode"),
        "{log}"
    );
}

#[tokio::test]
async fn a_checkpoint_ahead_of_the_stream_stops_start_up_unless_accepted() {
    let first = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client1 = client(&first.url()).await;
    let mut service = Service::start(&first.url(), &data, &[]);
    service.ready(&client1).await;
    publish_all(&jetstream::new(client1.clone()), &events(10), 0).await;
    applied(&client1, 10).await;
    service.signal("TERM");
    assert!(service.wait().await.success());

    // A new broker with an empty store: the stream starts over.
    let second = NatsServer::start(true);
    let mut refused = Service::start(&second.url(), &data, &[]);
    assert_eq!(refused.wait().await.code(), Some(1));
    let log = refused.log_text();
    assert!(
        log.contains("up to sequence 10") && log.contains("ends at sequence 0"),
        "{log}"
    );
    assert!(log.contains("delivery.accept_stream_reset"), "{log}");

    let client2 = client(&second.url()).await;
    let accepted = Service::start(
        &second.url(),
        &data,
        &[("RL_V2__DELIVERY__ACCEPT_STREAM_RESET", "true")],
    );
    accepted.ready(&client2).await;
    publish_all(&jetstream::new(client2.clone()), &events(3), 100).await;
    let s = applied(&client2, 3).await;
    assert_eq!(s["last_applied_seq"], 3);
    assert_eq!(
        total(&s["counters"]["events"]) + total(&s["counters"]["rejects"]),
        13,
        "learned state kept"
    );
}
