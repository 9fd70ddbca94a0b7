//! Failover time of the hot standby: two `rl-v2 serve` processes with `[ha]` on one stream,
//! events flowing at a steady rate, the leader killed with SIGKILL; the time from the kill to
//! the first decision the new leader publishes. Each run gets a fresh server (the pinned current
//! release when the server found is older than 2.10, which has no key-value buckets).

use futures::StreamExt;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::load::{self, Shape};
use crate::nats_server::{self, NatsServer};
use rl_v2_service::settings::Settings;

/// Events per second while the leader is killed.
pub const RATE: u64 = 1_000;
/// Events applied before the kill.
const WARM_UP: u64 = 1_000;
/// Longest wait for anything.
const WAIT: Duration = Duration::from_secs(60);

/// Failover times over several runs.
#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    /// The lease TTL, seconds.
    pub lease_ttl_secs: f64,
    /// Kill to first decision of the new leader, per run, milliseconds.
    pub runs_ms: Vec<f64>,
    /// Median of the runs, milliseconds.
    pub median_ms: f64,
    /// Slowest run, milliseconds.
    pub max_ms: f64,
}

/// A child `rl-v2 serve`, killed on drop.
struct Instance(Child);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(url: &str, dir: &Path, id: &str, ttl: f64) -> Result<Instance, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let data = dir.join(id);
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    Command::new(exe)
        .arg("serve")
        .env("RL_V2__NATS__URL", url)
        .env("RL_V2__CHECKPOINT__DIR", &data)
        .env("RL_V2__HA__ENABLED", "true")
        .env("RL_V2__HA__LEASE_TTL_SECS", ttl.to_string())
        .env("RL_V2__HA__INSTANCE_ID", id)
        .env("RL_V2__LOG__LEVEL", "warn")
        .env_remove("RUST_LOG")
        .current_dir(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Instance)
        .map_err(|e| format!("rl-v2 serve: {e}"))
}

/// A server binary that has key-value buckets.
fn server_bin(configured: Option<&PathBuf>) -> Result<PathBuf, String> {
    let provision_dir = std::env::temp_dir().join("rl-v2");
    let found = match configured {
        Some(bin) => bin.clone(),
        None => nats_server::locate(&provision_dir).map_err(|e| e.to_string())?,
    };
    let version = nats_server::version(&found).map_err(|e| e.to_string())?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= (2, 10) {
        return Ok(found);
    }
    nats_server::provision(&provision_dir).map_err(|e| e.to_string())
}

/// Polls `rl_v2.stats.<id>` until `done` holds.
async fn until(
    client: &async_nats::Client,
    id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let ask = client.request(format!("rl_v2.stats.{id}"), "".into());
        if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(1), ask).await {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&reply.payload) {
                if done(&v) {
                    return Ok(v);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("instance {id} never got there"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes load events at [`RATE`] until `stop`.
fn feed(client: async_nats::Client, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let subjects = Settings::defaults().subjects;
        let shape = Shape::flat(100);
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
        for n in 0.. {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            let (subject, payload, _) = load::event(n, &shape, &subjects);
            if client.publish(subject, payload).await.is_err() {
                break;
            }
        }
    })
}

/// One failover: milliseconds from the leader's SIGKILL to the new leader's first decision.
async fn once(bin: &Path, ttl: f64) -> Result<f64, String> {
    let server = NatsServer::launch(bin, true).map_err(|e| e.to_string())?;
    let url = server.url();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let client = async_nats::connect(&url).await.map_err(|e| e.to_string())?;
    let mut leader = spawn(&url, dir.path(), "a", ttl)?;
    let led = until(&client, "a", |s| s["instance"]["role"] == "leader").await?;
    let old_epoch = led["instance"]["epoch"].as_u64().unwrap_or(0);
    let _follower = spawn(&url, dir.path(), "b", ttl)?;
    until(&client, "b", |s| s["instance"]["role"] == "follower").await?;
    let subjects = Settings::defaults().subjects;
    let mut decisions = client
        .subscribe(subjects.meta_decision.clone())
        .await
        .map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())?;
    let stop = CancellationToken::new();
    let feeding = feed(client.clone(), stop.clone());
    until(&client, "b", |s| {
        s["last_applied_seq"].as_u64() >= Some(WARM_UP)
    })
    .await?;
    leader.0.kill().map_err(|e| e.to_string())?;
    let killed = Instant::now();
    let first = tokio::time::timeout(WAIT, async {
        while let Some(msg) = decisions.next().await {
            let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap_or_default();
            if v["epoch"].as_u64().is_some_and(|e| e > old_epoch) {
                return Some(killed.elapsed());
            }
        }
        None
    })
    .await;
    stop.cancel();
    let _ = feeding.await;
    match first {
        Ok(Some(took)) => Ok(took.as_secs_f64() * 1e3),
        _ => Err("no decision from a new leader after the kill".into()),
    }
}

/// Runs `repeat` failovers with a lease of `ttl` seconds.
pub async fn measure(
    configured: Option<&PathBuf>,
    ttl: f64,
    repeat: usize,
) -> Result<Failover, String> {
    let bin = server_bin(configured)?;
    let mut runs = Vec::new();
    for _ in 0..repeat.max(1) {
        runs.push(once(&bin, ttl).await?);
    }
    Ok(Failover {
        lease_ttl_secs: ttl,
        median_ms: super::median(runs.clone()),
        max_ms: runs.iter().copied().fold(0.0, f64::max),
        runs_ms: runs,
    })
}
