//! The hot standby, on real servers: instances on one stream elect a leader through a lease in a
//! JetStream key-value bucket (the pinned current server: 2.9 has no usable key-value buckets),
//! followers take over when it dies or freezes, and two instances without `[ha]` never both
//! publish.

mod common;

use async_nats::jetstream;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lease TTL of the tests, seconds.
const TTL_SECS: u64 = 2;

/// Starts an instance with the hot standby on, named `id`, its checkpoint in `dir/id`.
fn start_instance(url: &str, dir: &Path, id: &str) -> Service {
    let ttl = TTL_SECS.to_string();
    Service::start(
        url,
        &dir.join(id),
        &[
            ("RL_V2__HA__ENABLED", "true"),
            ("RL_V2__HA__LEASE_TTL_SECS", &ttl),
            ("RL_V2__HA__INSTANCE_ID", id),
            ("RL_V2__DELIVERY__STREAM_REPLICAS", &replicas(url)),
        ],
    )
}

/// R3 on a cluster (several URLs), else R1.
fn replicas(url: &str) -> String {
    if url.contains(',') { "3" } else { "1" }.to_string()
}

/// A decision as it arrived.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    value: Value,
}

impl Seen {
    fn epoch(&self) -> Option<u64> {
        self.value["epoch"].as_u64()
    }

    fn id(&self) -> String {
        self.value["decision_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The decision without the epoch of whoever published it.
    fn content(&self) -> Value {
        let mut v = self.value.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("epoch");
        }
        v
    }
}

type Record = Arc<Mutex<Vec<Seen>>>;

/// Records every decision published from now on.
async fn record(client: &async_nats::Client) -> Record {
    use futures::StreamExt;
    let mut sub = decisions(client).await;
    let seen: Record = Arc::default();
    let out = seen.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Ok(value) = serde_json::from_slice(&msg.payload) {
                out.lock().unwrap().push(Seen {
                    at: Instant::now(),
                    value,
                });
            }
        }
    });
    seen
}

/// Waits until `done` holds for what was recorded.
async fn recorded_until(seen: &Record, what: &str, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = seen.lock().unwrap().clone();
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never happened ({} decisions recorded)",
            now.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each decision id with its content; panics when one id was published with two contents.
fn by_id(seen: &[Seen]) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for s in seen {
        let content = s.content();
        if let Some(before) = out.get(&s.id()) {
            assert_eq!(
                before,
                &content,
                "decision {} was published twice with different contents",
                s.id()
            );
        }
        out.insert(s.id(), content);
    }
    out
}

fn role(s: &Value) -> &str {
    s["instance"]["role"].as_str().unwrap_or_default()
}

fn applied_through(s: &Value) -> u64 {
    s["last_applied_seq"].as_u64().unwrap_or(0)
}

/// Stops every instance with SIGTERM; each exits 0.
async fn stop_all(instances: &mut [&mut Service]) {
    for s in instances.iter() {
        s.signal("TERM");
    }
    for s in instances.iter_mut() {
        assert!(s.wait().await.success(), "{}", s.log_text());
    }
}

/// Runs the uninterrupted reference over the stream; checks that the decisions the HA run
/// published are exactly the reference's (each at least once, same contents), and that every
/// instance's checkpoint is byte-identical to the reference's.
async fn check_against_reference(
    url: &str,
    dir: &Path,
    last_seq: u64,
    seen: &Record,
    instances: &[&Service],
) {
    let published = by_id(
        &seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.epoch().is_some())
            .cloned()
            .collect::<Vec<_>>(),
    );
    let reference = reference_checkpoint(url, dir, last_seq).await;
    let expected =
        total(&serde_json::from_slice::<Value>(&reference).unwrap()["counters"]["decisions"])
            as usize;
    // The reference publishes without an epoch.
    let reference_decisions = recorded_until(seen, "the reference's decisions", |now| {
        now.iter().filter(|s| s.epoch().is_none()).count() >= expected
    })
    .await;
    let reference_decisions = by_id(
        &reference_decisions
            .into_iter()
            .filter(|s| s.epoch().is_none())
            .collect::<Vec<_>>(),
    );
    assert_eq!(reference_decisions.len(), expected);
    let missing: Vec<&String> = reference_decisions
        .keys()
        .filter(|id| !published.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} decisions never published, first: {:?}",
        missing.len(),
        missing.first()
    );
    for (id, content) in &published {
        assert_eq!(
            reference_decisions.get(id),
            Some(content),
            "decision {id} differs from the reference run's"
        );
    }
    for instance in instances {
        let bytes = std::fs::read(instance.data.join("checkpoint.json")).unwrap();
        assert!(
            bytes == reference,
            "the checkpoint of {} differs from an uninterrupted run",
            instance.data.display()
        );
    }
}

#[tokio::test]
async fn sigkill_of_the_leader_hands_over_within_the_lease_ttl_and_loses_no_decision() {
    let server = start_pinned();
    let url = server.url();
    let client = client(&url).await;
    let js = jetstream::new(client.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut a = start_instance(&url, dir.path(), "a");
    let led = instance_until(&client, "a", |s| role(s) == "leader").await;
    let epoch_a = led["instance"]["epoch"].as_u64().unwrap();
    assert!(epoch_a > 0, "{led}");
    let mut b = start_instance(&url, dir.path(), "b");
    instance_until(&client, "b", |s| {
        role(s) == "follower" && s["instance"]["leader"] == "a"
    })
    .await;
    let seen = record(&client).await;

    let all = Arc::new(events(3_000));
    let publishing = {
        let (js, all) = (js.clone(), all.clone());
        tokio::spawn(async move { publish_all(&js, &all, 0).await })
    };
    instance_until(&client, "a", |s| applied_through(s) >= 1_000).await;
    a.signal("KILL");
    let killed = Instant::now();
    a.wait().await;
    let took_over = instance_until(&client, "b", |s| role(s) == "leader").await;
    let epoch_b = took_over["instance"]["epoch"].as_u64().unwrap();
    assert!(epoch_b > epoch_a, "{took_over}");
    let now = recorded_until(&seen, "a decision from the new leader", |now| {
        now.iter().any(|s| s.epoch() == Some(epoch_b))
    })
    .await;
    let first = now
        .iter()
        .filter(|s| s.epoch() == Some(epoch_b))
        .map(|s| s.at)
        .min()
        .unwrap();
    let failover = first.duration_since(killed);
    eprintln!("failover: {failover:?}");
    assert!(
        failover <= Duration::from_secs(TTL_SECS + 1),
        "the first decision of the new leader came {failover:?} after the kill"
    );
    publishing.await.unwrap();
    instance_until(&client, "b", |s| applied_through(s) >= 3_000).await;

    // The killed instance comes back as a follower and catches up.
    let mut a = start_instance(&url, dir.path(), "a");
    instance_until(&client, "a", |s| {
        role(s) == "follower" && applied_through(s) >= 3_000
    })
    .await;
    stop_all(&mut [&mut a, &mut b]).await;
    check_against_reference(&url, dir.path(), 3_000, &seen, &[&a, &b]).await;
}

#[tokio::test]
async fn a_second_instance_without_ha_refuses_to_start_and_says_why() {
    let server = NatsServer::start(true);
    let url = server.url();
    let client = client(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let first = Service::start(&url, &dir.path().join("first"), &[]);
    first.ready(&client).await;
    let second = dir.path().join("second");
    std::fs::create_dir_all(&second).unwrap();
    let (code, text) = serve_until_exit(&second, &[("RL_V2__NATS__URL", &url)]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("already serves stream RL_V2_EVENTS") && text.contains("[ha]"),
        "{text}"
    );
    // The first one is untouched: it still answers.
    assert!(stats(&client).await["instance"]["role"] == "leader");
}

#[tokio::test]
async fn ha_on_a_server_without_key_value_buckets_stops_start_up_saying_why() {
    let bin = nats_server_bin();
    let version = rl_v2_tools::nats_server::version(&bin).unwrap();
    let minor: Option<(u32, u32)> = {
        let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
        match (parts.next().flatten(), parts.next().flatten()) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        }
    };
    if minor.is_none_or(|v| v >= (2, 10)) {
        eprintln!(
            "skipped: the server under test ({}, {version}) supports key-value buckets; this \
             checks the refusal on 2.9 (run without NATS_SERVER=pinned)",
            bin.display()
        );
        return;
    }
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let (code, text) = serve_until_exit(
        dir.path(),
        &[
            ("RL_V2__NATS__URL", &url),
            ("RL_V2__HA__ENABLED", "true"),
            ("RL_V2__HA__INSTANCE_ID", "old"),
        ],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("rl_v2_leader") && text.contains("2.10 or later"),
        "{text}"
    );
}

#[tokio::test]
async fn stats_name_the_instance_and_each_instance_answers_on_its_own_subject() {
    let server = start_pinned();
    let url = server.url();
    let client = client(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let _a = start_instance(&url, dir.path(), "a");
    instance_until(&client, "a", |s| role(s) == "leader").await;
    let _b = start_instance(&url, dir.path(), "b");
    let b = instance_until(&client, "b", |s| role(s) == "follower").await;
    assert_eq!(b["instance"]["id"], "b");
    assert_eq!(b["instance"]["leader"], "a");
    assert!(b["instance"]["epoch"].as_u64() > Some(0), "{b}");
    let ids: BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    let any = stats(&client).await;
    assert!(
        ids.contains(any["instance"]["id"].as_str().unwrap()),
        "{any}"
    );
}

/// Every decision id published (with an epoch) so far.
fn distinct_published(now: &[Seen]) -> usize {
    now.iter()
        .filter(|s| s.epoch().is_some())
        .map(Seen::id)
        .collect::<BTreeSet<_>>()
        .len()
}

/// Decisions the engine made over the stream, by an instance's stats.
fn decisions_made(s: &Value) -> usize {
    total(&s["counters"]["decisions"]) as usize
}

#[tokio::test]
async fn a_leader_frozen_past_its_lease_publishes_nothing_once_it_resumes() {
    let server = start_pinned();
    let url = server.url();
    let client = client(&url).await;
    let js = jetstream::new(client.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut a = start_instance(&url, dir.path(), "a");
    let led = instance_until(&client, "a", |s| role(s) == "leader").await;
    let epoch_a = led["instance"]["epoch"].as_u64().unwrap();
    let mut b = start_instance(&url, dir.path(), "b");
    instance_until(&client, "b", |s| role(s) == "follower").await;
    let seen = record(&client).await;
    let all = events(1_200);
    publish_all(&js, &all[..500], 0).await;
    for id in ["a", "b"] {
        instance_until(&client, id, |s| applied_through(s) >= 500).await;
    }

    a.signal("STOP");
    publish_all(&js, &all[500..1_000], 500).await;
    let took_over = instance_until(&client, "b", |s| {
        role(s) == "leader" && applied_through(s) >= 1_000
    })
    .await;
    let epoch_b = took_over["instance"]["epoch"].as_u64().unwrap();
    assert!(epoch_b > epoch_a, "{took_over}");
    a.signal("CONT");
    // It wakes up fenced, finds its lease gone and follows, applying what it missed.
    instance_until(&client, "a", |s| {
        role(s) == "follower" && s["instance"]["leader"] == "b" && applied_through(s) >= 1_000
    })
    .await;
    publish_all(&js, &all[1_000..], 1_000).await;
    let done = instance_until(&client, "a", |s| applied_through(s) >= 1_200).await;
    instance_until(&client, "b", |s| applied_through(s) >= 1_200).await;
    let expected = decisions_made(&done);
    recorded_until(&seen, "every decision published", |now| {
        distinct_published(now) >= expected
    })
    .await;

    let late: Vec<Value> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.epoch() == Some(epoch_a) && s.value["event_seq"].as_u64() > Some(500))
        .map(|s| s.value.clone())
        .collect();
    assert!(
        late.is_empty(),
        "the frozen leader published {} decisions for events after its freeze, first: {}",
        late.len(),
        late[0]
    );
    stop_all(&mut [&mut a, &mut b]).await;
    check_against_reference(&url, dir.path(), 1_200, &seen, &[&a, &b]).await;
}

#[tokio::test]
async fn a_leader_and_two_followers_ride_through_a_broker_node_kill() {
    let mut cluster = start_pinned_cluster();
    let urls = cluster.urls();
    let admin = client(&urls).await;
    let js = jetstream::new(admin.clone());
    jetstream_ready(&js).await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = start_instance(&urls, dir.path(), "a");
    instance_until(&admin, "a", |s| role(s) == "leader").await;
    let mut b = start_instance(&urls, dir.path(), "b");
    let mut c = start_instance(&urls, dir.path(), "c");
    for id in ["b", "c"] {
        instance_until(&admin, id, |s| role(s) == "follower").await;
    }
    // The node that leads the lease's bucket goes down; the decisions are watched from another.
    let victim = stream_leader(&js, "KV_rl_v2_leader").await;
    let watch_url = cluster
        .nodes
        .iter()
        .find(|n| n.name() != victim)
        .map(|n| n.url())
        .unwrap();
    let watcher = client(&watch_url).await;
    let seen = record(&watcher).await;

    let all = Arc::new(events(3_000));
    let publishing = {
        let (js, all) = (js.clone(), all.clone());
        tokio::spawn(async move { publish_all(&js, &all, 0).await })
    };
    instance_until(&watcher, "b", |s| applied_through(s) >= 1_000).await;
    cluster.node_named(&victim).unwrap().kill();
    publishing.await.unwrap();
    let mut made = 0;
    for id in ["a", "b", "c"] {
        let s = instance_until(&watcher, id, |s| applied_through(s) >= 3_000).await;
        made = decisions_made(&s);
    }
    cluster
        .node_named(&victim)
        .unwrap()
        .restart()
        .expect("the node comes back");
    // One leader in the end, and every decision out.
    let leaders = tokio::time::timeout(WAIT, async {
        loop {
            let mut leaders = Vec::new();
            for id in ["a", "b", "c"] {
                if let Some(s) = instance_stats(&watcher, id).await {
                    if role(&s) == "leader" {
                        leaders.push(id);
                    }
                }
            }
            if leaders.len() == 1 {
                break leaders;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("one leader");
    assert_eq!(leaders.len(), 1);
    recorded_until(&seen, "every decision published", |now| {
        distinct_published(now) >= made
    })
    .await;
    for s in [&mut a, &mut b, &mut c] {
        assert!(s.running(), "{}", s.log_text());
    }
    stop_all(&mut [&mut a, &mut b, &mut c]).await;
    check_against_reference(&urls, dir.path(), 3_000, &seen, &[&a, &b, &c]).await;
}
