//! Test support: a real `nats-server` per test on a free port with its own store directory, and
//! the `rl-v2` binary run as a child process against it.

#![allow(dead_code)]

use futures::StreamExt;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for anything in a test.
pub const WAIT: Duration = Duration::from_secs(30);

pub use rl_v2_tools::nats_server::{NatsCluster, NatsServer};

/// Where the pinned nats-server is provisioned when none is installed.
fn provision_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).to_path_buf()
}

/// The nats-server binary the tests run (see `rl_v2_tools::nats_server::locate`).
pub fn nats_server_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        rl_v2_tools::nats_server::locate(&provision_dir()).unwrap_or_else(|e| panic!("{e}"))
    })
    .clone()
}

/// Test-side start-up of servers: panics with the reason when one cannot start.
pub trait StartServer: Sized {
    /// Starts a server; with `jetstream`, with JetStream on a temporary store.
    fn start(jetstream: bool) -> Self;
    /// As `start`, with extra arguments for nats-server.
    fn start_with_args(jetstream: bool, args: &[&str]) -> Self;
}

impl StartServer for NatsServer {
    fn start(jetstream: bool) -> Self {
        Self::start_with_args(jetstream, &[])
    }

    fn start_with_args(jetstream: bool, args: &[&str]) -> Self {
        NatsServer::launch_with(&nats_server_bin(), jetstream, args)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Starts a 3-node JetStream cluster.
pub fn start_cluster() -> NatsCluster {
    NatsCluster::launch(&nats_server_bin(), 3).unwrap_or_else(|e| panic!("{e}"))
}

/// Connects a test client that reconnects quickly.
/// `url` may list several servers, comma-separated, as `nats.url` does.
pub async fn client(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(url.split(',').collect::<Vec<_>>())
        .await
        .expect("test client connects")
}

/// The rl-v2 binary running `serve`.
pub struct Service {
    child: Option<Child>,
    pub data: PathBuf,
    pub log: PathBuf,
}

impl Service {
    /// Starts `rl-v2 serve` against `url` with its checkpoint in `data` and extra settings
    /// as `RL_V2__…` variables.
    pub fn start(url: &str, data: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with_args(url, data, env, &[])
    }

    /// As [`Self::start`], with extra arguments after `serve`.
    pub fn start_with_args(url: &str, data: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        std::fs::create_dir_all(data).expect("data dir");
        let log = data.with_extension(format!("{}.log", std::process::id()));
        let log = unique(log);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rl-v2"));
        cmd.arg("serve")
            .args(args)
            .env("RL_V2__NATS__URL", url)
            .env("RL_V2__CHECKPOINT__DIR", data)
            .env("RL_V2__NATS__CONNECT_RETRY_SECS", "0.2")
            .env_remove("RUST_LOG")
            .current_dir(data)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: Some(cmd.spawn().expect("rl-v2 starts")),
            data: data.to_path_buf(),
            log,
        }
    }

    /// Waits until the micro service answers PING and its stats endpoint answers.
    pub async fn ready(&self, client: &async_nats::Client) {
        let deadline = Instant::now() + WAIT;
        loop {
            // PING is answered as soon as the micro service exists, which can be before its
            // endpoints have subscribed: ready means the stats endpoint answers too.
            let ping = client.request("$SRV.PING.rl_v2", "".into());
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), ping).await {
                let stats = client.request("rl_v2.stats", "".into());
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), stats).await {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "rl-v2 never answered PING; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal (`TERM`, `KILL`, …).
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([&format!("-{name}"), &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success());
        }
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let waited = tokio::task::spawn_blocking(move || child.wait());
        tokio::time::timeout(WAIT, waited)
            .await
            .expect("rl-v2 exits in time")
            .expect("join")
            .expect("wait")
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// What it logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The checkpoint it wrote, parsed.
    pub fn checkpoint(&self) -> Value {
        let bytes = std::fs::read(self.data.join("checkpoint.json")).expect("checkpoint exists");
        serde_json::from_slice(&bytes).expect("checkpoint is JSON")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unique(path: PathBuf) -> PathBuf {
    let mut n = 0;
    loop {
        let candidate = path.with_extension(format!("{n}.log"));
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

/// Asks `rl_v2.stats`.
pub async fn stats(client: &async_nats::Client) -> Value {
    let reply = tokio::time::timeout(WAIT, client.request("rl_v2.stats", "".into()))
        .await
        .expect("stats in time")
        .expect("stats reply");
    serde_json::from_slice(&reply.payload).expect("stats JSON")
}

/// Polls `rl_v2.stats` until `done` holds; returns those stats.
pub async fn stats_until(client: &async_nats::Client, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = stats(client).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "stats never matched; last: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a request and parses the JSON reply.
pub async fn request(client: &async_nats::Client, subject: &str, payload: String) -> Value {
    let reply = tokio::time::timeout(WAIT, client.request(subject.to_string(), payload.into()))
        .await
        .expect("reply in time")
        .expect("reply");
    serde_json::from_slice(&reply.payload).expect("reply is JSON")
}

/// Both decision subjects, merged.
pub async fn decisions(
    client: &async_nats::Client,
) -> futures::stream::SelectAll<async_nats::Subscriber> {
    let meta = client
        .subscribe("RL_META_STRATEGY_DECISION")
        .await
        .expect("subscribe");
    let sizing = client
        .subscribe("RL_POSITION_SIZING_DECISION")
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    futures::stream::select_all([meta, sizing])
}

/// Collects JSON messages from a subscription until `n` have arrived.
pub async fn collect(
    sub: &mut (impl futures::Stream<Item = async_nats::Message> + Unpin),
    n: usize,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let msg = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages arrived", out.len()))
            .expect("subscription open");
        out.push(serde_json::from_slice(&msg.payload).expect("JSON message"));
    }
    out
}

/// A PREDICTION_GENERATED payload.
pub fn prediction(symbol: &str, confidence: f64, trace: &str) -> String {
    format!(r#"{{"symbol":"{symbol}","confidence":{confidence},"trace_id":"{trace}"}}"#)
}

/// A TRADE_EXECUTED payload.
pub fn trade(symbol: &str, leverage: u32, trace: &str) -> String {
    format!(
        r#"{{"symbol":"{symbol}","leverage":{leverage},"portfolio_exposure":0.2,"trace_id":"{trace}"}}"#
    )
}

/// A POSITION_CLOSED payload.
pub fn close(symbol: &str, pnl_pct: f64, trace: &str) -> String {
    format!(r#"{{"symbol":"{symbol}","pnl_pct":{pnl_pct},"trace_id":"{trace}"}}"#)
}

/// Sum of a JSON object's numeric values (counters by key).
pub fn total(v: &Value) -> u64 {
    v.as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// A reproducible stream of events over 40 symbols, with a rejected payload every 97th.
pub fn events(n: usize) -> Vec<(&'static str, String)> {
    (0..n)
        .map(|i| {
            let sym = format!("S{}USDT", i % 40);
            if i % 97 == 50 {
                return (
                    "PREDICTION_GENERATED",
                    format!(r#"{{"symbol":"{sym}","confidence":7}}"#),
                );
            }
            match (i / 40) % 3 {
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
                    close(&sym, (i % 13) as f64 - 6.0, &format!("e{i}")),
                ),
            }
        })
        .collect()
}

/// How long one event may go unacknowledged by the stream while a broker restarts or a
/// cluster elects a new stream leader (2.9 clusters have taken over 30 s under load).
const PUBLISH_WAIT: Duration = Duration::from_secs(90);

/// Publishes events into the stream, each with a `Nats-Msg-Id` so a retry after a broker
/// restart cannot store it twice; retries until the stream acknowledges.
pub async fn publish_all(
    js: &async_nats::jetstream::Context,
    events: &[(&'static str, String)],
    from: usize,
) {
    for (i, (subject, payload)) in events.iter().enumerate() {
        let id = format!("evt-{}", from + i);
        let deadline = std::time::Instant::now() + PUBLISH_WAIT;
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            let sent = js
                .publish_with_headers(*subject, headers, payload.clone().into())
                .await;
            if let Ok(ack) = sent {
                if tokio::time::timeout(Duration::from_secs(2), ack)
                    .await
                    .is_ok_and(|a| a.is_ok())
                {
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "stream never acknowledged {id}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until the service has applied (or rejected) every event up to `seq`.
pub async fn applied(client: &async_nats::Client, seq: u64) -> Value {
    stats_until(client, |s| s["last_applied_seq"].as_u64() >= Some(seq)).await
}

/// Runs a fresh service over the whole stream without interruption and returns its final
/// checkpoint bytes.
pub async fn reference_checkpoint(url: &str, dir: &std::path::Path, last_seq: u64) -> Vec<u8> {
    let data = dir.join("reference");
    let mut service = Service::start(url, &data, &[]);
    let client = client(url).await;
    service.ready(&client).await;
    applied(&client, last_seq).await;
    service.signal("TERM");
    assert!(service.wait().await.success(), "{}", service.log_text());
    std::fs::read(data.join("checkpoint.json")).unwrap()
}

/// Runs `rl-v2 serve` with its checkpoint in `dir` and `env` (`RL_V2__…` settings, the URL among
/// them) until it exits, killed after [`WAIT`]: the exit code (`None` when killed) and what it
/// printed.
pub fn serve_until_exit(dir: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rl-v2"));
    cmd.arg("serve")
        .env("RL_V2__CHECKPOINT__DIR", dir)
        .env("RL_V2__NATS__CONNECT_RETRY_SECS", "0.2")
        .env_remove("RUST_LOG")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("rl-v2 starts");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The pinned current nats-server, whatever `$NATS_SERVER` says: for what 2.9 cannot do
/// (key-value buckets for the hot standby).
pub fn pinned_server_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        rl_v2_tools::nats_server::provision(&provision_dir()).unwrap_or_else(|e| panic!("{e}"))
    })
    .clone()
}

/// Starts the pinned server with JetStream.
pub fn start_pinned() -> NatsServer {
    NatsServer::launch_with(&pinned_server_bin(), true, &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts a 3-node JetStream cluster of the pinned server.
pub fn start_pinned_cluster() -> NatsCluster {
    NatsCluster::launch(&pinned_server_bin(), 3).unwrap_or_else(|e| panic!("{e}"))
}

/// Asks one instance's stats (`rl_v2.stats.<id>`); `None` when it does not answer in a second.
pub async fn instance_stats(client: &async_nats::Client, id: &str) -> Option<Value> {
    let ask = client.request(format!("rl_v2.stats.{id}"), "".into());
    match tokio::time::timeout(Duration::from_secs(1), ask).await {
        Ok(Ok(reply)) => serde_json::from_slice(&reply.payload).ok(),
        _ => None,
    }
}

/// Polls one instance's stats until `done` holds; returns those stats.
pub async fn instance_until(
    client: &async_nats::Client,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    loop {
        if let Some(s) = instance_stats(client, id).await {
            if done(&s) {
                return s;
            }
            last = Some(s);
        }
        assert!(
            Instant::now() < deadline,
            "instance {id} never matched; last stats: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the cluster has a JetStream meta leader: creating a stream succeeds then.
pub async fn jetstream_ready(js: &async_nats::jetstream::Context) {
    tokio::time::timeout(WAIT, async {
        loop {
            let probe = js
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: "READY".into(),
                    subjects: vec!["ready".into()],
                    num_replicas: 3,
                    ..Default::default()
                })
                .await;
            if probe.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the cluster elects a JetStream meta leader");
}

/// The name of the node that leads `stream`, once it has one.
pub async fn stream_leader(js: &async_nats::jetstream::Context, stream: &str) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(mut s) = js.get_stream(stream).await {
                if let Ok(info) = s.info().await {
                    if let Some(leader) = info.cluster.clone().and_then(|c| c.leader) {
                        break leader;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the stream has a leader")
}
