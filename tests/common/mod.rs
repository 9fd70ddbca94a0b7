//! Test support: a real `nats-server` per test on a free port with its own store directory, and
//! the `rl-v2` binary run as a child process against it.

#![allow(dead_code)]

use futures::StreamExt;
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Longest wait for anything in a test.
pub const WAIT: Duration = Duration::from_secs(30);

pub use rl_v2::bench::server::nats_server_bin;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A nats-server child process.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    jetstream: bool,
    store: TempDir,
    extra_args: Vec<String>,
}

impl NatsServer {
    /// Starts a server; with `jetstream`, with JetStream on a temporary store.
    pub fn start(jetstream: bool) -> Self {
        Self::start_with_args(jetstream, &[])
    }

    /// As [`Self::start`], with extra `nats-server` arguments (`--user`, `--pass`, `--auth`, …).
    pub fn start_with_args(jetstream: bool, extra_args: &[&str]) -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            jetstream,
            store: tempfile::tempdir().expect("store dir"),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        // A free port can be taken by another test's server before ours binds it: then ours
        // exits and the port answers with someone else's name. Try another port.
        for _ in 0..5 {
            if server.spawn() {
                return server;
            }
            server.kill();
            server.port = free_port();
        }
        panic!("nats-server did not start on a port of its own");
    }

    /// Spawns the server on `self.port`; true once this very server answers there.
    fn spawn(&mut self) -> bool {
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "rl-test-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut cmd = Command::new(nats_server_bin());
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-n", &name]);
        if self.jetstream {
            cmd.arg("-js").arg("-sd").arg(self.store.path());
        }
        cmd.args(&self.extra_args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("nats-server starts"));
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                // The server greets with INFO, which carries its name.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut info = String::new();
                let _ =
                    std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut info);
                return info.contains(&format!("\"server_name\":\"{name}\""));
            }
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "port {} was taken while the server was down",
            self.port
        );
    }

    /// The JetStream store directory.
    pub fn store(&self) -> &Path {
        self.store.path()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Connects a test client that reconnects quickly.
pub async fn client(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(url)
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

    /// Waits until the micro service answers PING.
    pub async fn ready(&self, client: &async_nats::Client) {
        let deadline = Instant::now() + WAIT;
        loop {
            let ping = client.request("$SRV.PING.rl_v2", "".into());
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), ping).await {
                return;
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
