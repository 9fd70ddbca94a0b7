//! `rl-v2 bench`: rl-v2 against a bare async-nats service, side by side in one run.
//!
//! Every scenario gets a fresh `nats-server` on a free port, a service started in this process,
//! and the same load from [`load`]: first at saturation (a bounded window of outstanding
//! decisions) for throughput, then at a fixed rate for latency. The figures that matter are the
//! ratios rl-v2 ÷ baseline measured in the same run, since absolute times on a shared machine
//! mean little. A checkpoint scenario measures latency at the fixed rate with a 100k-state table
//! checkpointed every 100 updates against the same run without checkpoints, and a memory check
//! compares peak RSS after 1,000,000 and 100,000 events and, per table size, peak RSS while one
//! checkpoint is written against RSS at rest ([`write_memory`]).

pub mod baseline;
pub mod failover;
pub mod load;
pub mod write_memory;

mod cpu;

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::nats_server::{self, NatsServer};
use load::Pace;
use rl_v2_core::engine::{Engine, EngineConfig, StateError};
use rl_v2_service::checkpoint::CheckpointStore;
use rl_v2_service::settings::{DeliveryMode, Settings};
use rl_v2_service::{serve, ServeOptions};

/// What to run and how hard.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Events per saturation run.
    pub events: u64,
    /// Symbols the load cycles over.
    pub symbols: u64,
    /// Outstanding decisions allowed at saturation.
    pub window: usize,
    /// Events per second of the fixed-rate run.
    pub rate: u64,
    /// Seconds of the fixed-rate run.
    pub seconds: f64,
    /// Symbols of the stack-shaped load.
    pub stack_symbols: u64,
    /// Prices in each stack-shaped prediction's `market_features.price_history`.
    pub stack_history: usize,
    /// Outstanding decisions allowed at saturation with the stack-shaped load.
    pub stack_window: usize,
    /// Q-table states of the checkpoint scenario.
    pub checkpoint_states: usize,
    /// Events of the two memory runs (small, large).
    pub memory_events: (u64, u64),
    /// Symbols of the memory runs.
    pub memory_symbols: u64,
    /// Table sizes (states) of the checkpoint-write memory runs.
    pub write_memory_states: Vec<usize>,
    /// The nats-server binary; `None`: found by [`crate::nats_server::locate`], provisioning
    /// the pinned release into the system's temporary directory when none is installed.
    pub nats_server: Option<PathBuf>,
    /// Which parts to run.
    pub parts: Vec<Part>,
    /// Lease TTL of the failover runs, seconds.
    pub failover_ttl_secs: f64,
    /// Pairs of runs (baseline then rl-v2, or without then with checkpoints) per comparison;
    /// figures are medians, ratios the median of the pairs' ratios.
    pub repeat: usize,
}

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Core NATS: baseline and rl-v2.
    Core,
    /// JetStream: baseline and rl-v2.
    Jetstream,
    /// Both modes again on a load shaped like the stack's (more symbols, a longer history under
    /// `market_features`, more decisions outstanding).
    Stack,
    /// Latency with and without checkpoints of a large table.
    Checkpoint,
    /// Peak memory after many events.
    Memory,
    /// Hot standby: SIGKILL of the leader to the new leader's first decision.
    Failover,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            events: 60_000,
            symbols: 1_000,
            window: 256,
            rate: 6_000,
            seconds: 10.0,
            stack_symbols: 500,
            stack_history: 20,
            stack_window: 1_000,
            checkpoint_states: 100_000,
            memory_events: (100_000, 1_000_000),
            memory_symbols: 10_000,
            write_memory_states: vec![10_000, 100_000, 1_000_000],
            failover_ttl_secs: 5.0,
            nats_server: None,
            parts: vec![
                Part::Core,
                Part::Jetstream,
                Part::Stack,
                Part::Checkpoint,
                Part::Memory,
                Part::Failover,
            ],
            repeat: 5,
        }
    }
}

/// Throughput and latency of one service.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Which service.
    pub name: String,
    /// Events per second at saturation.
    pub events_per_sec: f64,
    /// Decisions per second at saturation.
    pub decisions_per_sec: f64,
    /// Decisions lost at saturation.
    pub lost_at_saturation: u64,
    /// Median decision latency at the fixed rate, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Maximum, milliseconds.
    pub max_ms: f64,
    /// Decisions lost at the fixed rate.
    pub lost_at_rate: u64,
    /// Events per second actually sent at the fixed rate.
    pub achieved_rate: f64,
    /// CPU time (user + system) of the service's own threads per decision it published, over
    /// both loads, microseconds.
    pub cpu_us_per_decision: f64,
}

/// rl-v2 against its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The baseline.
    pub baseline: Measured,
    /// rl-v2.
    pub rl_v2: Measured,
    /// rl-v2 ÷ baseline decisions per second.
    pub throughput_ratio: f64,
    /// rl-v2 ÷ baseline p99 latency.
    pub p99_ratio: f64,
    /// rl-v2 ÷ baseline CPU time per decision.
    pub cpu_ratio: f64,
    /// The load.
    pub shape: load::Shape,
}

/// Latency at the fixed rate with and without checkpoints.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointStall {
    /// States in the meta table.
    pub states: usize,
    /// Without periodic checkpoints.
    pub without: Measured,
    /// With a checkpoint due every 100 updates.
    pub with: Measured,
    /// Checkpoints written during all the runs with checkpoints.
    pub checkpoints_written: u64,
    /// with ÷ without p99.
    pub p99_ratio: f64,
    /// Without periodic checkpoints, while 8 clients keep requesting checkpoints.
    pub requested: Measured,
    /// Checkpoint requests answered during all the runs with requesting clients.
    pub checkpoint_requests_answered: u64,
    /// requested ÷ without p99.
    pub requested_p99_ratio: f64,
}

/// Peak memory of two runs.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Symbols.
    pub symbols: u64,
    /// (events, peak RSS in KiB, states visited) of the small run.
    pub small: (u64, u64, usize),
    /// The same for the large run.
    pub large: (u64, u64, usize),
    /// large ÷ small peak RSS.
    pub ratio: f64,
}

/// Everything measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The machine: CPUs and kernel.
    pub machine: String,
    /// Core mode.
    pub core: Option<Comparison>,
    /// JetStream mode.
    pub jetstream: Option<Comparison>,
    /// Core mode, stack-shaped load.
    pub stack_core: Option<Comparison>,
    /// JetStream mode, stack-shaped load.
    pub stack_jetstream: Option<Comparison>,
    /// Checkpoint stall.
    pub checkpoint: Option<CheckpointStall>,
    /// Memory.
    pub memory: Option<Memory>,
    /// Memory and CPU of one checkpoint write, per table size.
    pub write_memory: Option<Vec<write_memory::WriteMemory>>,
    /// Failover time of the hot standby.
    pub failover: Option<failover::Failover>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The kind of service under load.
#[derive(Debug, Clone, Copy)]
enum Subject {
    Baseline,
    RlV2,
}

/// Settings of an in-process rl-v2 for `url`.
fn rl_settings(url: &str, mode: DeliveryMode, dir: &Path, every_updates: u64) -> Settings {
    let mut s = Settings::defaults();
    s.nats.url = url.to_string();
    s.delivery.mode = mode;
    s.checkpoint.dir = dir.to_path_buf();
    s.checkpoint.every_updates = every_updates;
    s
}

async fn wait_for_service(url: &str) -> Result<(), String> {
    let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ping = client.request("$SRV.PING.rl_v2", "".into());
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), ping).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("rl-v2 did not come up".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a service, runs the saturation and fixed-rate loads against it, stops it. The service
/// runs on a runtime of its own, whose threads are counted for its CPU time.
async fn measure(
    opts: &BenchOptions,
    work: Workload,
    who: Subject,
    mode: DeliveryMode,
    name: &str,
    data: Option<Stored<'_>>,
) -> Result<(Measured, Side), String> {
    let bin = match &opts.nats_server {
        Some(bin) => bin.clone(),
        None => {
            nats_server::locate(&std::env::temp_dir().join("rl-v2")).map_err(|e| e.to_string())?
        }
    };
    let server =
        NatsServer::launch(&bin, mode == DeliveryMode::Jetstream).map_err(|e| e.to_string())?;
    let url = server.url();
    let shutdown = CancellationToken::new();
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (dir, every, requesters) = data.map_or((scratch.path(), 100, 0), |d| {
        (d.dir, d.every_updates, d.checkpoint_requesters)
    });
    let settings = rl_settings(&url, mode, dir, every);
    let subjects = settings.subjects.clone();
    let threads = match who {
        Subject::RlV2 => cpu::RL_V2_THREADS,
        Subject::Baseline => cpu::BASELINE_THREADS,
    };
    let runtime = cpu::service_runtime(threads)?;
    let task = start(&runtime, who, mode, settings, &shutdown).await?;
    let cpu_before = cpu::service_cpu_ms(threads);
    let saturated = match data {
        Some(_) => None,
        None => {
            let pace = Pace::Saturate {
                window: work.window,
            };
            Some(load::run(&url, &subjects, work.shape, opts.events, pace).await?)
        }
    };
    let rated_events = (opts.rate as f64 * opts.seconds) as u64;
    let requesting = CancellationToken::new();
    let requests = request_checkpoints(&url, requesters, &requesting).await?;
    let started = Instant::now();
    let pace = Pace::Rate { per_sec: opts.rate };
    let rated = load::run(&url, &subjects, work.shape, rated_events, pace).await?;
    let sending_secs = started.elapsed().as_secs_f64();
    let cpu_ms = cpu::service_cpu_ms(threads) - cpu_before;
    requesting.cancel();
    let mut side = Side::default();
    for task in requests {
        side.checkpoint_requests_answered += task.await.unwrap_or(0);
    }
    if let Subject::RlV2 = who {
        side.checkpoints_written = checkpoints_written(&url).await;
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(120), task).await;
    runtime.shutdown_background();
    drop(server);
    let s = saturated.unwrap_or_default();
    let decisions = (s.received + rated.received).max(1);
    Ok((
        Measured {
            name: name.to_string(),
            events_per_sec: s.events_per_sec(),
            decisions_per_sec: s.decisions_per_sec(),
            lost_at_saturation: s.lost(),
            p50_ms: ms(rated.quantile(0.5)),
            p99_ms: ms(rated.quantile(0.99)),
            max_ms: ms(rated.quantile(1.0)),
            lost_at_rate: rated.lost(),
            achieved_rate: rated.events as f64 / sending_secs.max(1e-9),
            cpu_us_per_decision: cpu_ms * 1e3 / decisions as f64,
        },
        side,
    ))
}

/// Starts the service under test on `runtime` and waits until it takes events.
async fn start(
    runtime: &tokio::runtime::Runtime,
    who: Subject,
    mode: DeliveryMode,
    settings: Settings,
    shutdown: &CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<(), String>>, String> {
    let url = settings.nats.url.clone();
    let subjects = settings.subjects.clone();
    let token = shutdown.clone();
    match who {
        Subject::RlV2 => {
            let task = runtime.spawn(async move {
                serve(settings, ServeOptions::default(), token)
                    .await
                    .map_err(|e| e.to_string())
            });
            wait_for_service(&url).await?;
            Ok(task)
        }
        Subject::Baseline => {
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let task = runtime.spawn(async move {
                let started = async {
                    let client = async_nats::connect(&url).await.map_err(|e| e.to_string())?;
                    match mode {
                        DeliveryMode::Core => baseline::core(client, subjects, token).await,
                        DeliveryMode::Jetstream => {
                            baseline::jetstream(client, subjects, "BENCH_BASELINE", token).await
                        }
                    }
                };
                match started.await {
                    Ok(inner) => {
                        let _ = ready_tx.send(Ok(()));
                        inner.await.map_err(|e| e.to_string())
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        Err(e)
                    }
                }
            });
            ready_rx
                .await
                .map_err(|_| "the baseline did not start".to_string())??;
            Ok(task)
        }
    }
}

/// A load and how many of its decisions may be outstanding at saturation.
#[derive(Debug, Clone, Copy)]
struct Workload {
    shape: load::Shape,
    window: usize,
}

impl BenchOptions {
    fn flat(&self) -> Workload {
        Workload {
            shape: load::Shape::flat(self.symbols),
            window: self.window,
        }
    }

    fn stack(&self) -> Workload {
        Workload {
            shape: load::Shape::stack(self.stack_symbols, self.stack_history),
            window: self.stack_window,
        }
    }
}

/// A run on a data directory: its checkpoint cadence and how many clients keep requesting
/// checkpoints on `rl_v2.checkpoint` meanwhile.
#[derive(Debug, Clone, Copy)]
struct Stored<'a> {
    dir: &'a Path,
    every_updates: u64,
    checkpoint_requesters: usize,
}

/// What a run did besides deciding.
#[derive(Debug, Clone, Copy, Default)]
struct Side {
    checkpoints_written: u64,
    checkpoint_requests_answered: u64,
}

/// `clients` tasks, each on its own connection, requesting a checkpoint again as soon as the
/// last one is answered, until `stop`; each returns the requests answered.
async fn request_checkpoints(
    url: &str,
    clients: usize,
    stop: &CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<u64>>, String> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut answered = 0;
            while !stop.is_cancelled() {
                let request = client.request("rl_v2.checkpoint", "".into());
                tokio::select! {
                    reply = tokio::time::timeout(Duration::from_secs(60), request) => {
                        match reply {
                            Ok(Ok(_)) => answered += 1,
                            _ => break,
                        }
                    }
                    () = stop.cancelled() => break,
                }
            }
            answered
        }));
    }
    Ok(tasks)
}

async fn checkpoints_written(url: &str) -> u64 {
    let Ok(client) = async_nats::connect(url).await else {
        return 0;
    };
    let Ok(Ok(reply)) = tokio::time::timeout(
        Duration::from_secs(10),
        client.request("rl_v2.stats", "".into()),
    )
    .await
    else {
        return 0;
    };
    serde_json::from_slice::<serde_json::Value>(&reply.payload)
        .ok()
        .and_then(|v| v["service"]["checkpoints"].as_u64())
        .unwrap_or(0)
}

/// The median of `values` (0 when empty).
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Field-by-field medians of repeated measurements.
fn median_of(runs: &[Measured]) -> Measured {
    let m = |f: fn(&Measured) -> f64| median(runs.iter().map(f).collect());
    Measured {
        name: runs.first().map(|r| r.name.clone()).unwrap_or_default(),
        events_per_sec: m(|r| r.events_per_sec),
        decisions_per_sec: m(|r| r.decisions_per_sec),
        lost_at_saturation: runs.iter().map(|r| r.lost_at_saturation).max().unwrap_or(0),
        p50_ms: m(|r| r.p50_ms),
        p99_ms: m(|r| r.p99_ms),
        max_ms: m(|r| r.max_ms),
        lost_at_rate: runs.iter().map(|r| r.lost_at_rate).max().unwrap_or(0),
        achieved_rate: m(|r| r.achieved_rate),
        cpu_us_per_decision: m(|r| r.cpu_us_per_decision),
    }
}

async fn compare(
    opts: &BenchOptions,
    work: Workload,
    mode: DeliveryMode,
    label: &str,
) -> Result<Comparison, String> {
    let (mut baselines, mut rl) = (Vec::new(), Vec::new());
    let (mut throughput, mut p99, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..opts.repeat.max(1) {
        let name = format!("bare async-nats ({label})");
        let (b, _) = measure(opts, work, Subject::Baseline, mode, &name, None).await?;
        let name = format!("rl-v2 ({label})");
        let (r, _) = measure(opts, work, Subject::RlV2, mode, &name, None).await?;
        throughput.push(r.decisions_per_sec / b.decisions_per_sec.max(1e-9));
        p99.push(r.p99_ms / b.p99_ms.max(1e-9));
        cpu.push(r.cpu_us_per_decision / b.cpu_us_per_decision.max(1e-9));
        baselines.push(b);
        rl.push(r);
    }
    Ok(Comparison {
        baseline: median_of(&baselines),
        rl_v2: median_of(&rl),
        throughput_ratio: median(throughput),
        p99_ratio: median(p99),
        cpu_ratio: median(cpu),
        shape: work.shape,
    })
}

/// An engine whose meta table has `states` visited states, for the checkpoint scenario.
pub fn engine_with_states(states: usize, config: &EngineConfig) -> Result<Engine, StateError> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(states as u64);
    let mut state = Engine::new(config.clone()).state().clone();
    let q = state.meta.q_mut();
    for i in 0..states {
        let row: Vec<f64> = (0..q.n_actions())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        // Finite by construction.
        let _ = q.insert_row(format!("BENCH|state={i:07}"), row);
    }
    Engine::from_state(config.clone(), state)
}

async fn checkpoint_stall(opts: &BenchOptions) -> Result<CheckpointStall, String> {
    let runs = [
        ("without checkpoints", 1_000_000_000u64, 0),
        ("with checkpoints", 100, 0),
        (
            "8 clients requesting checkpoints",
            1_000_000_000,
            CHECKPOINT_REQUESTERS,
        ),
    ];
    let mut measured: [Vec<Measured>; 3] = Default::default();
    let (mut ratios, mut requested_ratios) = (Vec::new(), Vec::new());
    let (mut written, mut answered) = (0, 0);
    for _ in 0..opts.repeat.max(1) {
        for (i, (label, every_updates, checkpoint_requesters)) in runs.into_iter().enumerate() {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let engine = engine_with_states(opts.checkpoint_states, &EngineConfig::default())
                .map_err(|e| e.to_string())?;
            CheckpointStore::new(dir.path())
                .write(engine.state())
                .map_err(|e| e.to_string())?;
            let stored = Stored {
                dir: dir.path(),
                every_updates,
                checkpoint_requesters,
            };
            let (m, side) = measure(
                opts,
                opts.flat(),
                Subject::RlV2,
                DeliveryMode::Core,
                label,
                Some(stored),
            )
            .await?;
            match i {
                1 => written += side.checkpoints_written,
                2 => answered += side.checkpoint_requests_answered,
                _ => {}
            }
            measured[i].push(m);
        }
        let last = |i: usize| measured[i].last().map_or(1e-9, |m| m.p99_ms.max(1e-9));
        ratios.push(last(1) / last(0));
        requested_ratios.push(last(2) / last(0));
    }
    let [without, with, requested] = measured;
    Ok(CheckpointStall {
        states: opts.checkpoint_states,
        without: median_of(&without),
        with: median_of(&with),
        checkpoints_written: written,
        p99_ratio: median(ratios),
        requested: median_of(&requested),
        checkpoint_requests_answered: answered,
        requested_p99_ratio: median(requested_ratios),
    })
}

/// Clients that keep requesting checkpoints in the checkpoint scenario's third run.
const CHECKPOINT_REQUESTERS: usize = 8;

/// Feeds `events` load events over `symbols` through a fresh engine in this process and returns
/// (peak RSS in KiB, states visited): the child side of the memory check.
pub fn memory_run(events: u64, symbols: u64) -> (u64, usize) {
    let subjects = Settings::defaults().subjects;
    let mut engine = Engine::new(EngineConfig::default());
    for n in 0..events {
        let (subject, payload, _) = load::event(n, &load::Shape::flat(symbols), &subjects);
        if let Some(kind) = subjects.kind_of(&subject) {
            engine.ingest(n + 1, kind, &payload, n as f64, usize::MAX);
        }
    }
    let states =
        engine.state().meta.q().states_visited() + engine.state().sizing.q().states_visited();
    (peak_rss_kib(), states)
}

/// VmHWM of this process, KiB (0 where /proc is not available).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn memory(opts: &BenchOptions) -> Result<Memory, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let run = |events: u64| -> Result<(u64, u64, usize), String> {
        let out = std::process::Command::new(&exe)
            .args([
                "bench",
                "--memory-child",
                &events.to_string(),
                "--symbols-memory",
                &opts.memory_symbols.to_string(),
            ])
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace();
        let rss = parts
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or(format!("memory run said: {text}"))?;
        let states = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((events, rss, states))
    };
    let small = run(opts.memory_events.0)?;
    let large = run(opts.memory_events.1)?;
    Ok(Memory {
        symbols: opts.memory_symbols,
        ratio: large.1 as f64 / small.1.max(1) as f64,
        small,
        large,
    })
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1).map(|m| m.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} × {model}, Linux {}", kernel.trim())
}

/// Runs the chosen parts and returns the report; `progress` hears what is being measured.
pub async fn run(opts: &BenchOptions, mut progress: impl FnMut(&str)) -> Result<Report, String> {
    let mut report = Report {
        machine: machine(),
        ..Report::default()
    };
    if opts.parts.contains(&Part::Core) {
        progress("core mode: bare baseline, then rl-v2");
        report.core = Some(compare(opts, opts.flat(), DeliveryMode::Core, "core").await?);
    }
    if opts.parts.contains(&Part::Jetstream) {
        progress("JetStream mode: bare baseline, then rl-v2");
        let work = opts.flat();
        report.jetstream = Some(compare(opts, work, DeliveryMode::Jetstream, "JetStream").await?);
    }
    if opts.parts.contains(&Part::Stack) {
        progress("stack-shaped load, core mode: bare baseline, then rl-v2");
        let work = opts.stack();
        report.stack_core = Some(compare(opts, work, DeliveryMode::Core, "core, stack").await?);
        progress("stack-shaped load, JetStream mode: bare baseline, then rl-v2");
        let label = "JetStream, stack";
        report.stack_jetstream = Some(compare(opts, work, DeliveryMode::Jetstream, label).await?);
    }
    if opts.parts.contains(&Part::Checkpoint) {
        progress("checkpoints of a large table: without, then with");
        report.checkpoint = Some(checkpoint_stall(opts).await?);
    }
    if opts.parts.contains(&Part::Memory) {
        progress("memory: small run, then large run");
        report.memory = Some(memory(opts)?);
        progress("memory: one checkpoint write per table size");
        report.write_memory = Some(write_memory::measure(&opts.write_memory_states)?);
    }
    if opts.parts.contains(&Part::Failover) {
        progress("hot standby: SIGKILL of the leader, time to the new leader's first decision");
        let (bin, ttl) = (opts.nats_server.as_ref(), opts.failover_ttl_secs);
        report.failover = Some(failover::measure(bin, ttl, opts.repeat).await?);
    }
    Ok(report)
}

/// The report as Markdown tables, with the targets each ratio is held to.
pub fn render(r: &Report, opts: &BenchOptions) -> String {
    let mut out = format!(
        "machine: {}\nload: {} events at saturation (window {}), {} events/s for {} s, over {} symbols; stack-shaped: {} symbols, {}-price history under market_features, window {}; medians of {} pairs of runs\n\n",
        r.machine,
        opts.events,
        opts.window,
        opts.rate,
        opts.seconds,
        opts.symbols,
        opts.stack_symbols,
        opts.stack_history,
        opts.stack_window,
        opts.repeat.max(1)
    );
    out.push_str(&render_table(r));
    out.push('\n');
    out.push_str(&render_ratios(r));
    out.push_str(&render_memory(r));
    if let Some(f) = &r.failover {
        out.push_str(&format!(
            "hot standby failover (lease TTL {} s, {} events/s): SIGKILL of the leader to the new leader's first decision, median {:.0} ms, max {:.0} ms over {} runs\n",
            f.lease_ttl_secs,
            failover::RATE,
            f.median_ms,
            f.max_ms,
            f.runs_ms.len()
        ));
    }
    out
}

fn render_table(r: &Report) -> String {
    let row = |m: &Measured| {
        format!(
            "| {} | {:.0} | {:.0} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.1} |\n",
            m.name,
            m.events_per_sec,
            m.decisions_per_sec,
            m.lost_at_saturation,
            m.achieved_rate,
            m.p50_ms,
            m.p99_ms,
            m.max_ms,
            m.lost_at_rate,
            m.cpu_us_per_decision
        )
    };
    let mut table = "| service | events/s (sat.) | decisions/s (sat.) | lost (sat.) | events/s (rate) | p50 ms | p99 ms | max ms | lost (rate) | CPU µs/decision |\n|---|---|---|---|---|---|---|---|---|---|\n".to_string();
    for c in [&r.core, &r.jetstream, &r.stack_core, &r.stack_jetstream]
        .into_iter()
        .flatten()
    {
        table.push_str(&row(&c.baseline));
        table.push_str(&row(&c.rl_v2));
    }
    if let Some(c) = &r.checkpoint {
        table.push_str(&row(&c.without));
        table.push_str(&row(&c.with));
        table.push_str(&row(&c.requested));
    }
    table
}

fn render_ratios(r: &Report) -> String {
    let mut out = String::new();
    let comparisons = [
        ("core", &r.core),
        ("JetStream", &r.jetstream),
        ("core, stack-shaped", &r.stack_core),
        ("JetStream, stack-shaped", &r.stack_jetstream),
    ];
    for (label, c) in comparisons {
        if let Some(c) = c {
            out.push_str(&format!(
                "{label}: rl-v2/baseline throughput {:.2} (target >= 0.95), p99 {:.2} (target <= 1.1), CPU per decision {:.2} (target <= 1.15)\n",
                c.throughput_ratio, c.p99_ratio, c.cpu_ratio
            ));
        }
    }
    if let Some(c) = &r.checkpoint {
        out.push_str(&format!(
            "checkpoints of a {}-state table: p99 with/without {:.2} (target <= 2), {} checkpoints written\n",
            c.states, c.p99_ratio, c.checkpoints_written
        ));
        out.push_str(&format!(
            "{} clients requesting checkpoints without pause: p99 with/without {:.2}, {} requests answered\n",
            CHECKPOINT_REQUESTERS, c.requested_p99_ratio, c.checkpoint_requests_answered
        ));
    }
    out
}

fn render_memory(r: &Report) -> String {
    let mut out = String::new();
    if let Some(m) = &r.memory {
        out.push_str(&format!(
            "memory over {} symbols: peak RSS {} KiB after {} events ({} states), {} KiB after {} events ({} states): ratio {:.2}\n",
            m.symbols, m.small.1, m.small.0, m.small.2, m.large.1, m.large.0, m.large.2, m.ratio
        ));
    }
    for w in r.write_memory.iter().flatten() {
        out.push_str(&format!(
            "checkpoint write of {} states ({} MB): RSS {} KiB at rest, peak {} KiB while writing: ratio {:.2} (target <= 1.5); {:.0} ms CPU, {:.0} ms wall\n",
            w.states, w.bytes / 1_000_000, w.steady_kib, w.peak_kib, w.ratio, w.cpu_ms, w.wall_ms
        ));
    }
    out
}
