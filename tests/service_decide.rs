//! Decisions as replies in JetStream mode: `rl_v2.decide.<event subject>` puts the event into
//! the stream and answers with the decision made for that stream sequence. Also: a data
//! directory served in core mode is refused in JetStream mode with the true reason.

mod common;

use async_nats::jetstream;
use common::*;
use futures::StreamExt;
use serde_json::Value;

async fn decide(client: &async_nats::Client, subject: &str, payload: String) -> Value {
    request(client, &format!("rl_v2.decide.{subject}"), payload).await
}

async fn last_stream_seq(js: &jetstream::Context) -> u64 {
    let mut stream = js.get_stream("RL_V2_EVENTS").await.expect("stream");
    stream.info().await.expect("info").state.last_sequence
}

#[tokio::test]
async fn decide_requests_get_their_own_decision_through_the_stream() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&server.url(), &dir.path().join("data"), &[]);
    let client = client(&server.url()).await;
    service.ready(&client).await;
    let js = jetstream::new(client.clone());
    let mut published = decisions(&client).await;

    // A plain request on the event subject is answered by the stream, not by rl-v2.
    let ack = request(
        &client,
        "PREDICTION_GENERATED",
        prediction("ETHUSDT", 0.4, "p0"),
    )
    .await;
    assert_eq!(ack["stream"], "RL_V2_EVENTS", "{ack}");
    assert!(ack.get("decision_id").is_none(), "{ack}");
    let first = collect(&mut published, 1).await;

    let meta = decide(
        &client,
        "PREDICTION_GENERATED",
        prediction("btcusdt", 0.8, "p1"),
    )
    .await;
    assert_eq!(meta["agent"], "meta_strategy", "{meta}");
    assert_eq!(meta["trace_id"], "p1", "{meta}");
    assert_eq!(meta["symbol"], "BTCUSDT", "{meta}");
    let seq = meta["event_seq"].as_u64().expect("event_seq");
    assert_eq!(
        seq,
        last_stream_seq(&js).await,
        "the event went through the stream"
    );
    // The same decision was published on the decision subject.
    let same = collect(&mut published, 1).await;
    assert_eq!(same[0]["decision_id"], meta["decision_id"]);
    assert_ne!(first[0]["decision_id"], meta["decision_id"]);

    let sizing = decide(&client, "TRADE_EXECUTED", trade("BTCUSDT", 10, "t1")).await;
    assert_eq!(sizing["agent"], "position_sizing", "{sizing}");
    assert_eq!(sizing["trace_id"], "t1", "{sizing}");
    let closed = decide(&client, "POSITION_CLOSED", close("BTCUSDT", 1.5, "c1")).await;
    assert_eq!(closed["symbol"], "BTCUSDT", "{closed}");
    assert_eq!(closed["updates_applied"], 2, "{closed}");
    assert_eq!(closed["event_seq"], seq + 2, "{closed}");

    let rejected = decide(&client, "PREDICTION_GENERATED", "{not json".into()).await;
    assert_eq!(rejected["reason"], "invalid_json", "{rejected}");
    let unknown = decide(&client, "SOMETHING_ELSE", prediction("X", 0.1, "x")).await;
    assert_eq!(unknown["reason"], "unknown_subject", "{unknown}");

    // Concurrent requests each get the decision of their own event.
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..40 {
        let client = client.clone();
        pending.push(async move {
            let trace = format!("many-{i}");
            let symbol = format!("SYM{i}");
            let d = decide(
                &client,
                "PREDICTION_GENERATED",
                prediction(&symbol, 0.5, &trace),
            )
            .await;
            (trace, symbol, d)
        });
    }
    let mut seqs = std::collections::BTreeSet::new();
    while let Some((trace, symbol, d)) = pending.next().await {
        assert_eq!(d["trace_id"], trace.as_str(), "{d}");
        assert_eq!(d["symbol"], symbol.as_str(), "{d}");
        assert!(seqs.insert(d["event_seq"].as_u64().unwrap()));
    }
    assert_eq!(seqs.len(), 40);
}

#[tokio::test]
async fn a_retried_decide_request_with_the_same_msg_id_is_applied_once() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&server.url(), &dir.path().join("data"), &[]);
    let client = client(&server.url()).await;
    service.ready(&client).await;
    let send = || async {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, "order-77");
        let reply = tokio::time::timeout(
            WAIT,
            client.request_with_headers(
                "rl_v2.decide.PREDICTION_GENERATED",
                headers,
                prediction("SOLUSDT", 0.6, "retry").into(),
            ),
        )
        .await
        .expect("in time")
        .expect("reply");
        serde_json::from_slice::<Value>(&reply.payload).expect("JSON")
    };
    let first = send().await;
    assert_eq!(first["agent"], "meta_strategy", "{first}");
    let again = send().await;
    assert_eq!(again["reason"], "duplicate", "{again}");
    assert_eq!(again["event_seq"], first["event_seq"], "{again}");
    let s = stats_until(&client, |s| s["last_applied_seq"] == first["event_seq"]).await;
    assert_eq!(s["counters"]["events"]["PREDICTION_GENERATED"], 1, "{s}");
}

#[tokio::test]
async fn decide_works_in_core_mode_too() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        &server.url(),
        &dir.path().join("data"),
        &[("RL_V2__DELIVERY__MODE", "core")],
    );
    let client = client(&server.url()).await;
    service.ready(&client).await;
    let meta = decide(
        &client,
        "PREDICTION_GENERATED",
        prediction("BTCUSDT", 0.8, "core-1"),
    )
    .await;
    assert_eq!(meta["agent"], "meta_strategy", "{meta}");
    assert_eq!(meta["trace_id"], "core-1", "{meta}");
}

#[tokio::test]
async fn a_core_mode_directory_is_refused_in_jetstream_mode_as_such_unless_accepted() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = client(&server.url()).await;
    let mut core = Service::start(&server.url(), &data, &[("RL_V2__DELIVERY__MODE", "core")]);
    core.ready(&client).await;
    for i in 0..5 {
        request(
            &client,
            "PREDICTION_GENERATED",
            prediction("BTCUSDT", 0.5, &format!("c{i}")),
        )
        .await;
    }
    core.signal("TERM");
    assert!(core.wait().await.success());
    assert_eq!(core.checkpoint()["last_applied_seq"], 5);

    let mut js = Service::start(&server.url(), &data, &[]);
    let status = js.wait().await;
    let log = js.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("written in core mode"), "{log}");
    assert!(!log.contains("lost its tail"), "{log}");

    // Accepted: the learned state is kept and the stream's events are consumed from its end.
    let js_ctx = jetstream::new(client.clone());
    let service = Service::start(
        &server.url(),
        &data,
        &[("RL_V2__DELIVERY__ACCEPT_STREAM_RESET", "true")],
    );
    service.ready(&client).await;
    let d = decide(
        &client,
        "PREDICTION_GENERATED",
        prediction("BTCUSDT", 0.5, "js-1"),
    )
    .await;
    assert_eq!(
        d["event_seq"].as_u64(),
        Some(last_stream_seq(&js_ctx).await),
        "{d}"
    );
    let s = stats(&client).await;
    assert_eq!(s["counters"]["events"]["PREDICTION_GENERATED"], 6, "{s}");
}

#[tokio::test]
async fn decide_requests_in_flight_when_the_service_stops_each_get_an_answer() {
    const BACKLOG: usize = 30_000;
    const REQUESTS: usize = 20;
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut service = Service::start(&server.url(), &data, &[]);
    let client = client(&server.url()).await;
    service.ready(&client).await;
    let js = jetstream::new(client.clone());

    // A frozen service reads nothing: a backlog piles up in the stream, and the decide requests
    // wait for it on the connection.
    service.signal("STOP");
    publish_all(&js, &events(BACKLOG), 0).await;
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let subject = "rl_v2.decide.PREDICTION_GENERATED";
                let payload = prediction(&format!("R{i}USDT"), 0.5, &format!("stop-{i}"));
                let reply = client.request(subject, payload.into());
                tokio::time::timeout(std::time::Duration::from_secs(20), reply).await
            })
        })
        .collect();
    client.flush().await.unwrap();
    // Resumed, it puts the requests' events into the stream behind the backlog; it is told to
    // stop as soon as they are there, long before it reaches them.
    service.signal("CONT");
    let total = (BACKLOG + REQUESTS) as u64;
    tokio::time::timeout(WAIT, async {
        while last_stream_seq(&js).await < total {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the requests' events reach the stream");
    service.signal("TERM");

    let (mut decided, mut stopped) = (0, 0);
    for (i, task) in requests.into_iter().enumerate() {
        let reply = task
            .await
            .unwrap()
            .unwrap_or_else(|_| panic!("request {i} got no answer within 20 s"))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        let answer: Value = serde_json::from_slice(&reply.payload).unwrap();
        match answer["reason"].as_str() {
            None => {
                assert_eq!(answer["agent"], "meta_strategy", "{answer}");
                decided += 1;
            }
            Some("shutting_down") => {
                let seq = answer["event_seq"].as_u64().expect("the event's sequence");
                assert!(seq > BACKLOG as u64, "{answer}");
                stopped += 1;
            }
            Some(other) => panic!("request {i}: {other}: {answer}"),
        }
    }
    assert_eq!(decided + stopped, REQUESTS);
    assert!(
        stopped > 0,
        "the service reached every request before it stopped"
    );
    assert!(service.wait().await.success(), "{}", service.log_text());

    // Restarted, it applies what was left exactly once: its state is an uninterrupted run's.
    let mut again = Service::start(&server.url(), &data, &[]);
    again.ready(&client).await;
    applied(&client, total).await;
    again.signal("TERM");
    assert!(again.wait().await.success(), "{}", again.log_text());
    let reference = reference_checkpoint(&server.url(), dir.path(), total).await;
    assert_eq!(
        std::fs::read(data.join("checkpoint.json")).unwrap(),
        reference,
        "restarted state differs from an uninterrupted run"
    );
}
