//! Checkpoints under crashes and failing disks, with the real binary and real `nats-server`s:
//! a crash after every step of the first checkpoint write (the test-only fault point
//! `RL_V2_FAULT_CHECKPOINT_ABORT_AFTER_STEP`), an injected ENOSPC after every step, a read-only
//! data directory, rl-v2's own tables without a checkpoint, hand-edited checkpoint values,
//! the checkpoint timer and its pacing, and concurrent `rl_v2.checkpoint` requests.

mod common;

use async_nats::jetstream;
use common::*;
use rl_v2_service::checkpoint::WRITE_STEPS;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Events in each JetStream run.
const EVENTS: usize = 300;
/// Q-updates between periodic checkpoints in these runs: the first comes early in the stream.
const EVERY: &str = "20";

/// A reproducible stream over 10 symbols: signal, trade, close in turn.
fn events(n: usize) -> Vec<(&'static str, String)> {
    (0..n)
        .map(|i| {
            let sym = format!("S{}USDT", i % 10);
            match (i / 10) % 3 {
                0 => (
                    "PREDICTION_GENERATED",
                    prediction(&sym, (i % 10) as f64 / 10.0, &format!("e{i}")),
                ),
                1 => (
                    "TRADE_EXECUTED",
                    trade(&sym, [5, 10, 20][i % 3], &format!("e{i}")),
                ),
                _ => (
                    "POSITION_CLOSED",
                    close(&sym, (i % 7) as f64 - 3.0, &format!("e{i}")),
                ),
            }
        })
        .collect()
}

/// A server with the stream holding [`EVENTS`] events, and the checkpoint of an uninterrupted
/// run over them (`python` puts the Python version's meta table in its data dir first).
struct Fixture {
    server: NatsServer,
    dir: tempfile::TempDir,
    client: async_nats::Client,
}

impl Fixture {
    async fn new() -> Self {
        let server = NatsServer::start(true);
        let dir = tempfile::tempdir().unwrap();
        let client = client(&server.url()).await;
        // A first run creates the stream; it applies nothing.
        let mut first = Service::start(&server.url(), &dir.path().join("creator"), &[]);
        first.ready(&client).await;
        first.signal("TERM");
        assert!(first.wait().await.success());
        publish_all(&jetstream::new(client.clone()), &events(EVENTS), 0).await;
        Self {
            server,
            dir,
            client,
        }
    }

    fn data(&self, name: &str, python: bool) -> PathBuf {
        let data = self.dir.path().join(name);
        std::fs::create_dir_all(&data).unwrap();
        if python {
            std::fs::write(data.join("meta_strategy_q_table.json"), PYTHON_META).unwrap();
        }
        data
    }

    /// Runs a service over the whole stream, stops it with SIGTERM and returns its checkpoint.
    async fn run_to_end(&self, data: &Path) -> Vec<u8> {
        let mut service = Service::start(
            &self.server.url(),
            data,
            &[("RL_V2__CHECKPOINT__EVERY_UPDATES", EVERY)],
        );
        service.ready(&self.client).await;
        stats_until(&self.client, |s| {
            s["last_applied_seq"].as_u64() >= Some(EVENTS as u64)
        })
        .await;
        service.signal("TERM");
        assert!(service.wait().await.success(), "{}", service.log_text());
        std::fs::read(data.join("checkpoint.json")).unwrap()
    }
}

/// A meta table as the Python version writes it (no `written_by`).
const PYTHON_META: &str = r#"{"q_table": {"UNKNOWN|vol=3|press=2|conf=4|wr=2|health=2": {"momentum_flip|ensemble|1.5": 2.0}}, "epsilon": 0.05, "update_count": 40}"#;

#[tokio::test]
async fn a_crash_after_any_step_of_the_first_checkpoint_ends_byte_identical_to_an_uninterrupted_run(
) {
    let f = Fixture::new().await;
    for python in [false, true] {
        let reference = f
            .run_to_end(&f.data(&format!("reference-{python}"), python))
            .await;
        for k in 1..=WRITE_STEPS {
            let data = f.data(&format!("crash-{python}-{k}"), python);
            let step = k.to_string();
            let mut crashing = Service::start(
                &f.server.url(),
                &data,
                &[
                    ("RL_V2__CHECKPOINT__EVERY_UPDATES", EVERY),
                    ("RL_V2_FAULT_CHECKPOINT_ABORT_AFTER_STEP", &step),
                ],
            );
            let status = crashing.wait().await;
            assert!(!status.success(), "step {k}: {}", crashing.log_text());
            assert!(
                crashing
                    .log_text()
                    .contains(&format!("aborting after step {k} ")),
                "step {k}: {}",
                crashing.log_text()
            );
            let after = f.run_to_end(&data).await;
            assert!(
                after == reference,
                "python tables {python}, crash after step {k}: the checkpoint differs from an uninterrupted run"
            );
            for table in ["meta_strategy_q_table.json", "position_sizing_q_table.json"] {
                let t: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(data.join(table)).unwrap()).unwrap();
                assert_eq!(t["written_by"], "rl-v2", "{table}");
            }
        }
    }
}

#[tokio::test]
async fn a_checkpoint_failing_with_enospc_after_any_step_applies_nothing_twice() {
    let f = Fixture::new().await;
    let reference = f.run_to_end(&f.data("reference", false)).await;
    for k in 1..=WRITE_STEPS {
        let data = f.data(&format!("full-{k}"), false);
        let step = k.to_string();
        let mut full = Service::start(
            &f.server.url(),
            &data,
            &[
                ("RL_V2__CHECKPOINT__EVERY_UPDATES", EVERY),
                ("RL_V2_FAULT_CHECKPOINT_FAIL_AFTER_STEP", &step),
            ],
        );
        full.ready(&f.client).await;
        stats_until(&f.client, |s| {
            s["last_applied_seq"].as_u64() >= Some(EVENTS as u64)
                && s["service"]["checkpoint_failures"].as_u64() >= Some(1)
        })
        .await;
        full.signal("TERM");
        let status = full.wait().await;
        let log = full.log_text();
        assert!(
            !status.success(),
            "step {k}: a failed final checkpoint exits non-zero"
        );
        assert!(log.contains("No space left on device"), "step {k}: {log}");
        let after = f.run_to_end(&data).await;
        assert!(
            after == reference,
            "ENOSPC after step {k}: the checkpoint differs"
        );
    }
}

#[tokio::test]
async fn rl_v2s_own_tables_without_a_checkpoint_are_not_imported() {
    let f = Fixture::new().await;
    let reference = f.run_to_end(&f.data("reference", false)).await;
    let data = f.data("deleted", false);
    f.run_to_end(&data).await;
    // What a crash between the tables and checkpoint.json left when the tables came first.
    std::fs::remove_file(data.join("checkpoint.json")).unwrap();
    let after = f.run_to_end(&data).await;
    assert!(
        after == reference,
        "rl-v2's own tables were imported and the stream replayed on top"
    );
}

/// `rl-v2 serve` in a mount namespace where `data` is a read-only bind mount (as root, whom
/// file modes do not stop), or in a directory with mode 0555 otherwise.
struct ReadOnly {
    child: Child,
    log: PathBuf,
}

impl ReadOnly {
    fn start(url: &str, data: &Path) -> Self {
        let log = data.with_extension("readonly.log");
        let probe = data.join(".probe");
        std::fs::set_permissions(data, std::os::unix::fs::PermissionsExt::from_mode(0o555))
            .unwrap();
        let privileged = std::fs::write(&probe, b"").is_ok();
        let _ = std::fs::remove_file(&probe);
        let mut cmd = if privileged {
            let mut c = Command::new("unshare");
            c.args([
                "-m",
                "--",
                "sh",
                "-c",
                r#"mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@""#,
            ])
            .arg(data)
            .arg(env!("CARGO_BIN_EXE_rl-v2"));
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_rl-v2"))
        };
        cmd.arg("serve")
            .env("RL_V2__NATS__URL", url)
            .env("RL_V2__CHECKPOINT__DIR", data)
            .env("RL_V2__CHECKPOINT__EVERY_UPDATES", EVERY)
            .env_remove("RUST_LOG")
            .current_dir(data)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        Self {
            child: cmd.spawn().expect("rl-v2 starts"),
            log,
        }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_read_only_data_dir_stops_start_up_with_a_clear_error_and_nothing_applies_twice() {
    let f = Fixture::new().await;
    let reference = f.run_to_end(&f.data("reference", false)).await;
    let data = f.data("readonly", false);
    let mut ro = ReadOnly::start(&f.server.url(), &data);
    // The delivery-mode record is written before anything is consumed: a data directory that
    // cannot be written is found at start-up, not at the first checkpoint.
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = ro.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "rl-v2 did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log = std::fs::read_to_string(&ro.log).unwrap();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("Read-only file system") || log.contains("Permission denied"),
        "{log}"
    );
    assert!(log.contains(&data.display().to_string()), "{log}");
    drop(ro);
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert!(!data.join("checkpoint.json").exists());
    let after = f.run_to_end(&data).await;
    assert!(
        after == reference,
        "the checkpoint after a read-only dir differs"
    );
}

#[tokio::test]
async fn a_stale_temporary_file_is_removed_at_start() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let tmp = data.join(".checkpoint.json.tmp");
    std::fs::write(&tmp, b"{\"half a").unwrap();
    let client = client(&server.url()).await;
    let service = Service::start(&server.url(), &data, &[("RL_V2__DELIVERY__MODE", "core")]);
    service.ready(&client).await;
    assert!(!tmp.exists(), "{}", service.log_text());
}

#[tokio::test]
async fn hand_edited_checkpoint_values_stop_start_up_naming_the_field() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server.url()).await;
    let data = dir.path().join("data");
    let env = [("RL_V2__DELIVERY__MODE", "core")];
    let mut service = Service::start(&server.url(), &data, &env);
    service.ready(&client).await;
    service.signal("TERM");
    assert!(service.wait().await.success());
    let good = service.checkpoint();
    for (field, pointer, value) in [
        ("meta.q.epsilon", "/meta/q/epsilon", serde_json::json!(5.0)),
        (
            "last_applied_seq",
            "/last_applied_seq",
            serde_json::json!(u64::MAX),
        ),
    ] {
        let mut bad = good.clone();
        *bad.pointer_mut(pointer).expect("field exists") = value;
        let text = bad.to_string();
        std::fs::write(data.join("checkpoint.json"), &text).unwrap();
        let mut refused = Service::start(&server.url(), &data, &env);
        let status = refused.wait().await;
        assert!(!status.success(), "{field}");
        assert!(refused.log_text().contains(field), "{}", refused.log_text());
        assert_eq!(
            std::fs::read_to_string(data.join("checkpoint.json")).unwrap(),
            text
        );
    }
}

/// Sends one signal, trade and close for `symbol` (two Q-updates) as core requests.
async fn round_trip(client: &async_nats::Client, symbol: &str) {
    request(client, "PREDICTION_GENERATED", prediction(symbol, 0.6, "t")).await;
    request(client, "TRADE_EXECUTED", trade(symbol, 10, "t")).await;
    request(client, "POSITION_CLOSED", close(symbol, 1.5, "t")).await;
}

#[tokio::test]
async fn a_due_checkpoint_is_written_when_traffic_stops_and_survives_a_crash() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server.url()).await;
    let data = dir.path().join("data");
    let env = [
        ("RL_V2__DELIVERY__MODE", "core"),
        ("RL_V2__CHECKPOINT__EVERY_UPDATES", "2"),
        ("RL_V2__CHECKPOINT__MIN_INTERVAL_SECS", "2"),
    ];
    let mut service = Service::start(&server.url(), &data, &env);
    service.ready(&client).await;
    round_trip(&client, "AUSDT").await;
    stats_until(&client, |s| s["service"]["checkpoints"] == 1).await;
    // Due at once, but paced: the writer's own timer writes it, with no further traffic.
    round_trip(&client, "BUSDT").await;
    let s = stats_until(&client, |s| s["service"]["checkpoints"] == 2).await;
    assert_eq!(s["service"]["last_checkpoint_seq"], 6);
    service.signal("KILL");
    service.wait().await;
    let restarted = Service::start(&server.url(), &data, &env);
    restarted.ready(&client).await;
    let s = stats(&client).await;
    assert_eq!(s["counters"]["updates"], 4, "updates lost in the crash");
}

/// Seconds of the day of a JSON log line's `timestamp` (`…THH:MM:SS.ffffffZ`).
fn seconds_of_day(line: &serde_json::Value) -> f64 {
    let ts = line["timestamp"].as_str().expect("timestamp");
    let time = ts.split('T').nth(1).expect("time").trim_end_matches('Z');
    time.split(':')
        .map(|p| p.parse::<f64>().expect("number"))
        .fold(0.0, |acc, p| acc * 60.0 + p)
}

#[tokio::test]
async fn periodic_checkpoints_are_never_closer_than_min_interval_under_a_flood() {
    let server = NatsServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server.url()).await;
    let data = dir.path().join("data");
    let mut service = Service::start(
        &server.url(),
        &data,
        &[
            ("RL_V2__CHECKPOINT__EVERY_UPDATES", "1"),
            ("RL_V2__CHECKPOINT__MIN_INTERVAL_SECS", "1"),
            ("RL_V2__LOG__FORMAT", "json"),
        ],
    );
    service.ready(&client).await;
    let js = jetstream::new(client.clone());
    let batch = events(300);
    // Keep the flood going until five periodic checkpoints were written.
    let mut from = 0;
    loop {
        publish_all(&js, &batch, from).await;
        from += batch.len();
        if stats(&client).await["service"]["checkpoints"].as_u64() >= Some(5) {
            break;
        }
    }
    service.signal("KILL");
    service.wait().await;
    let written: Vec<f64> = service
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "checkpoint written")
        .map(|l| seconds_of_day(&l))
        .collect();
    assert!(written.len() >= 5, "{written:?}");
    for pair in written.windows(2) {
        let gap = (pair[1] - pair[0]).rem_euclid(86_400.0);
        assert!(gap >= 0.999, "two checkpoints {gap} s apart: {written:?}");
    }
}

#[tokio::test]
async fn concurrent_checkpoint_requests_share_a_write_and_never_stall_decisions() {
    let server = NatsServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server.url()).await;
    let data = dir.path().join("data");
    let hold = dir.path().join("hold");
    std::fs::write(&hold, b"").unwrap();
    let hold_env = hold.to_string_lossy().into_owned();
    let service = Service::start(
        &server.url(),
        &data,
        &[
            ("RL_V2__DELIVERY__MODE", "core"),
            ("RL_V2_FAULT_CHECKPOINT_HOLD_WHILE", &hold_env),
        ],
    );
    service.ready(&client).await;
    round_trip(&client, "AUSDT").await;
    let asks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                tokio::time::timeout(WAIT, client.request("rl_v2.checkpoint", "".into())).await
            })
        })
        .collect();
    // The event loop took all eight while the writer is held, and still answers.
    let s = stats_until(&client, |s| s["service"]["checkpoint_requests"] == 8).await;
    assert_eq!(s["service"]["checkpoints"], 0, "the write was not held");
    let decision = request(
        &client,
        "PREDICTION_GENERATED",
        prediction("BUSDT", 0.5, "d"),
    )
    .await;
    assert_eq!(decision["agent"], "meta_strategy", "{decision}");
    assert_eq!(stats(&client).await["service"]["checkpoints"], 0);
    std::fs::remove_file(&hold).unwrap();
    for ask in asks {
        let reply = ask.await.unwrap().expect("reply in time").expect("reply");
        let written: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert!(written["last_applied_seq"].as_u64() >= Some(3), "{written}");
    }
    let writes = stats(&client).await["service"]["checkpoints"]
        .as_u64()
        .unwrap();
    assert!((1..=2).contains(&writes), "{writes} writes for 8 requests");
}
