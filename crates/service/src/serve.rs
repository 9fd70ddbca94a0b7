//! The NATS service: the shell that feeds the engine from the broker and publishes what it
//! decides.
//!
//! One task, the event loop, owns the [`Engine`]. Source tasks hand it messages over a bounded
//! channel; it decodes, applies, publishes decisions (and dead letters), answers the micro
//! service's `stats` and `checkpoint` endpoints, and hands snapshots to the background
//! [`checkpointer`]. Shutdown is one [`CancellationToken`]: the sources drain and close the
//! channel, the loop finishes what was handed over, flushes publishes, writes the final
//! checkpoint, and returns.

mod outcomes;
mod shadows;

use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::checkpointer::Checkpointer;
use crate::metrics::{ServiceMetrics, ServiceSnapshot};
use crate::settings::{DeliveryMode, Settings};
use crate::source::{Delivery, Inbound, Source, Topic};
use crate::{
    connect, decide, fault, ha, jetstream, mode, prometheus, slow_consumer, source, supervise,
};
use rl_v2_core::decision::Decision;
use rl_v2_core::domain::agent::AgentKind;
use rl_v2_core::engine::{Engine, EngineConfig, EngineStats, Outcome};
use rl_v2_core::event::DecodeError;

mod control_publish;

/// Messages buffered between the sources and the event loop.
const INBOUND_CAPACITY: usize = 4096;

/// Why the service could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A setting could not be used.
    #[error("settings: {0}")]
    Settings(String),
    /// The checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The broker refused an operation, or the connection failed.
    #[error("NATS: {what}: {source}")]
    Nats {
        /// What rl-v2 was doing.
        what: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// JetStream refused an operation.
    #[error("JetStream: {what}: {source}")]
    JetStreamRefused {
        /// What rl-v2 was doing.
        what: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// JetStream is missing, or the stream does not fit the checkpoint: start-up stops, saying
    /// how to fix it.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// A task of the service panicked; the service stopped (after its final checkpoint).
    #[error("{0}")]
    TaskFailed(String),
    /// Another instance serves the stream, and this one must not publish beside it.
    #[error("{0}")]
    Claimed(String),
    /// The hot standby cannot run (no key-value bucket).
    #[error("hot standby: {0}")]
    Ha(String),
}

/// An error from the NATS client, kept whole for its source chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl ServiceError {
    /// The broker refused `what`.
    pub(crate) fn nats(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Nats {
            what: what.into(),
            source: source.into(),
        }
    }

    /// JetStream refused `what`.
    pub(crate) fn jetstream(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::JetStreamRefused {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Start-up choices that are not settings.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// When the checkpoint is corrupt, move it aside (to `checkpoint.json.corrupt-<time>`) and
    /// start with an empty engine instead of stopping.
    pub discard_corrupt_checkpoint: bool,
}

/// What the `stats` endpoint answers: the engine's statistics and the service's counters.
#[derive(Debug, Clone, Serialize)]
pub struct StatsReply {
    /// The seed's `get_stats()` shape plus the engine's counters.
    #[serde(flatten)]
    pub engine: EngineStats,
    /// Counters of the service shell.
    pub service: ServiceSnapshot,
    /// The shadow policies, when there are any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<crate::shadow::ShadowStats>,
    /// This instance: its id, whether it leads, its epoch and lag.
    pub instance: ha::InstanceReport,
}

/// Loads the engine at start-up: the checkpoint; else Python-format tables the Python version
/// wrote in the same directory; else a fresh engine. Tables rl-v2 wrote itself are outputs and
/// never imported (without `checkpoint.json` they are copies of a checkpoint that was deleted or
/// never finished, and replaying the stream rebuilds what they hold). A
/// corrupt checkpoint is an error unless `discard_corrupt_checkpoint` is set.
pub fn load_engine(
    store: &CheckpointStore,
    config: &EngineConfig,
    options: &ServeOptions,
) -> Result<Engine, ServiceError> {
    match store.load(config) {
        Ok(Some(engine)) => {
            tracing::info!(
                path = %store.checkpoint_path().display(),
                last_applied_seq = engine.last_applied_seq(),
                updates = engine.updates(),
                "checkpoint loaded"
            );
            Ok(engine)
        }
        Ok(None) => load_without_checkpoint(store, config),
        Err(e @ CheckpointError::Corrupt { .. }) if options.discard_corrupt_checkpoint => {
            let path = store.checkpoint_path();
            let aside = PathBuf::from(format!(
                "{}.corrupt-{}",
                path.display(),
                source::now_secs() as u64
            ));
            std::fs::rename(&path, &aside).map_err(|io| CheckpointError::Io {
                path: path.clone(),
                source: io,
            })?;
            tracing::error!(error = %e, moved_to = %aside.display(), "corrupt checkpoint moved aside; starting empty");
            Ok(Engine::new(config.clone()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Start-up without `checkpoint.json`: import the Python version's tables, or start empty.
fn load_without_checkpoint(
    store: &CheckpointStore,
    config: &EngineConfig,
) -> Result<Engine, ServiceError> {
    let found = store.python_tables()?;
    for own in &found.own {
        tracing::warn!(
            path = %own.display(),
            "no checkpoint; this Q-table was written by rl-v2 and is not imported (its updates come back from the stream)"
        );
    }
    if !found.importable() {
        tracing::info!(dir = %store.dir().display(), "no checkpoint; starting empty");
        return Ok(Engine::new(config.clone()));
    }
    let engine = crate::checkpoint::import_python_tables(
        config,
        found.meta.as_deref(),
        found.sizing.as_deref(),
    )?;
    tracing::info!(
        dir = %store.dir().display(),
        meta_states = engine.state().meta.q().states_visited(),
        sizing_states = engine.state().sizing.q().states_visited(),
        "no checkpoint; imported Python-format Q-tables written by the Python version"
    );
    Ok(engine)
}

/// Runs the service until `shutdown` is cancelled, then shuts down cleanly.
pub async fn serve(
    settings: Settings,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let store = CheckpointStore::new(&settings.checkpoint.dir);
    let faults = fault::FaultPoints::from_env().map_err(ServiceError::Settings)?;
    remove_stale_temporaries(&store);
    let mut engine = load_engine(&store, &settings.engine_config(), &options)?;
    let metrics = Arc::new(ServiceMetrics::default());
    let Some(client) = connect::connect(&settings.nats, metrics.clone(), &shutdown).await? else {
        return Ok(());
    };
    let mut tasks = supervise::Tasks::default();
    tasks.add(
        "slow-consumer reporter",
        slow_consumer::report(metrics.clone(), shutdown.clone()),
    );
    let (standby, roles) = ha::join(&client, &settings, &mut tasks, &shutdown).await?;
    let started = match settings.delivery.mode {
        DeliveryMode::Core => {
            start_core(&settings, &mut engine, &store, &metrics, &shutdown).await?
        }
        DeliveryMode::Jetstream => {
            start_jetstream(&settings, &mut engine, &store, &client, &metrics, &shutdown).await?
        }
    };
    let Some((source, consuming)) = started else {
        return Ok(());
    };
    if let Some(task) = consuming {
        tasks.add("JetStream consumer", task);
    }
    let checkpointer = Checkpointer::start_with_faults(
        store,
        metrics.clone(),
        std::time::Duration::from_secs_f64(settings.checkpoint.min_interval_secs),
        Some(client.clone()),
        faults,
    );
    let endpoints = Endpoints::start(&client, &settings.service.name, standby.id()).await?;
    tracing::info!(
        mode = ?settings.delivery.mode,
        service = %settings.service.name,
        last_applied_seq = engine.last_applied_seq(),
        "rl-v2 serving"
    );
    let (scrapes_tx, scrapes) = mpsc::channel::<prometheus::StatsRequest>(8);
    if let Some(task) = start_metrics(&settings, scrapes_tx, &metrics, &shutdown).await? {
        tasks.add("metrics endpoint", task);
    }
    let waiters = Arc::<decide::Waiters>::default();
    tasks.add(
        "decide endpoint",
        decide::serve(
            endpoints.decide,
            decide_context(&settings, &client, waiters.clone()),
        ),
    );
    let shadows = crate::shadow::build(&settings, &engine)?;
    let mut event_loop =
        EventLoop::new(engine, client, settings, metrics, checkpointer).with_shadows(shadows);
    event_loop.waiters = waiters;
    event_loop.standby = standby;
    let requests = Requests {
        stats: endpoints.stats,
        instance: endpoints.instance,
        checkpoint: endpoints.checkpoint,
        scrapes,
        roles,
    };
    let failed = drive(&mut event_loop, source, requests, &mut tasks, &shutdown).await;
    tracing::info!("events drained; flushing and writing the final checkpoint");
    let _ = endpoints.service.stop().await;
    event_loop.finish().await?;
    match failed {
        Some(reason) => Err(ServiceError::TaskFailed(reason)),
        None => Ok(()),
    }
}

/// Removes the temporary files an interrupted checkpoint left, saying so.
fn remove_stale_temporaries(store: &CheckpointStore) {
    match store.remove_stale_temporaries() {
        Ok(removed) => {
            for path in removed {
                tracing::warn!(path = %path.display(), "removed a temporary file an interrupted checkpoint left");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not remove a stale temporary checkpoint file"),
    }
}

/// Where events come from, and the task that feeds them (JetStream mode); `None` when shutdown
/// came while connecting.
type Started = Option<(Source, Option<tokio::task::JoinHandle<()>>)>;

/// Core mode: plain subscriptions on a connection of their own; numbering starts a new epoch
/// when the directory ran before.
async fn start_core(
    settings: &Settings,
    engine: &mut Engine,
    store: &CheckpointStore,
    metrics: &Arc<ServiceMetrics>,
    shutdown: &CancellationToken,
) -> Result<Started, ServiceError> {
    let ran_before =
        engine.last_applied_seq() > 0 || mode::read(&settings.checkpoint.dir).is_some();
    if ran_before {
        // Core mode numbers events itself, from the checkpoint: after a crash the numbers
        // past it were used already, in decision ids that were published. A new epoch,
        // made durable before the first event, keeps every id new.
        engine.begin_epoch("core mode restarts its numbering at the checkpoint");
        store.write(engine.state())?;
    }
    mode::write(&settings.checkpoint.dir, &mode::ModeRecord::Core)?;
    let Some(events) = connect::connect_events(&settings.nats, shutdown).await? else {
        return Ok(None);
    };
    let source = Source::core(&events, &settings.subjects, metrics.clone()).await?;
    Ok(Some((source, None)))
}

/// JetStream mode: the stream prepared, the checkpoint fitted to it (a switch from core mode,
/// a stream reset, events aged out), and the consumer task started at the next sequence.
async fn start_jetstream(
    settings: &Settings,
    engine: &mut Engine,
    store: &CheckpointStore,
    client: &async_nats::Client,
    metrics: &Arc<ServiceMetrics>,
    shutdown: &CancellationToken,
) -> Result<Started, ServiceError> {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = jetstream::prepare_stream(
        &js,
        &settings.nats.redacted_url(),
        &settings.delivery,
        &settings.subjects,
    )
    .await?;
    let (first, last) = jetstream::bounds(&mut stream).await?;
    switch_to_jetstream(settings, engine, store, last)?;
    let plan = jetstream::plan_start(
        engine.last_applied_seq(),
        first,
        last,
        settings.delivery.accept_stream_reset,
        &settings.delivery.stream,
    )?;
    if let Some(seq) = plan.rebase_to {
        tracing::warn!(
            checkpoint_seq = engine.last_applied_seq(),
            stream_last_seq = seq,
            "checkpoint is ahead of the stream; accepted by delivery.accept_stream_reset, continuing from the stream's end"
        );
        engine.rebase(seq);
    }
    if plan.lost > 0 {
        metrics.events_lost(plan.lost);
        tracing::error!(
            lost = plan.lost,
            first_available = first,
            last_applied_seq = engine.last_applied_seq(),
            "events aged out of the stream before rl-v2 applied them; they are lost to learning"
        );
    }
    let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
    let task = jetstream::consume(
        stream,
        plan.start_seq,
        settings.delivery.clone(),
        settings.subjects.clone(),
        tx,
        shutdown.clone(),
        metrics.clone(),
    );
    Ok(Some((Source::Channel(rx), Some(task))))
}

/// Checks the directory's delivery-mode record against JetStream mode, renumbers a checkpoint
/// written in core mode (when allowed), and records JetStream mode.
fn switch_to_jetstream(
    settings: &Settings,
    engine: &mut Engine,
    store: &CheckpointStore,
    stream_last_seq: u64,
) -> Result<(), ServiceError> {
    let dir = &settings.checkpoint.dir;
    let switch = mode::jetstream_start(
        mode::read(dir).as_ref(),
        engine.last_applied_seq(),
        stream_last_seq,
        settings.delivery.accept_stream_reset,
        &settings.delivery.stream,
        dir,
    )?;
    if let mode::Switch::FromCore { last_seq } = switch {
        tracing::warn!(
            core_seq = engine.last_applied_seq(),
            stream_last_seq = last_seq,
            "the checkpoint was written in core mode; accepted by delivery.accept_stream_reset: keeping the learned state and consuming from the stream's next event"
        );
        engine.renumber(last_seq);
        // The checkpoint says where in the stream to resume before the record says
        // JetStream, so a crash mid-switch never applies the stream's older events.
        let written = store.write(engine.state())?;
        tracing::info!(path = %written.display(), "checkpoint rewritten at the stream's end");
    }
    mode::write(
        dir,
        &mode::ModeRecord::Jetstream {
            stream: settings.delivery.stream.clone(),
        },
    )?;
    Ok(())
}

/// The micro service `<service.name>` and its endpoints.
struct Endpoints {
    service: async_nats::service::Service,
    stats: async_nats::service::endpoint::Endpoint,
    /// `<name>.stats.<instance id>`: this instance's stats, whoever else runs.
    instance: async_nats::service::endpoint::Endpoint,
    checkpoint: async_nats::service::endpoint::Endpoint,
    decide: async_nats::service::endpoint::Endpoint,
}

impl Endpoints {
    async fn start(
        client: &async_nats::Client,
        name: &str,
        instance_id: &str,
    ) -> Result<Self, ServiceError> {
        let service = client
            .service_builder()
            .description("rl-v2: Q-learning meta-strategy and position-sizing agents")
            .start(name, env!("CARGO_PKG_VERSION"))
            .await
            .map_err(|e| ServiceError::nats(format!("start micro service {name}"), e))?;
        let group = service.group(name);
        let stats = group
            .endpoint("stats")
            .await
            .map_err(|e| ServiceError::nats(format!("endpoint {name}.stats"), e))?;
        let checkpoint = group
            .endpoint("checkpoint")
            .await
            .map_err(|e| ServiceError::nats(format!("endpoint {name}.checkpoint"), e))?;
        let instance = group
            .endpoint_builder()
            .name("stats-instance")
            .add(format!("stats.{instance_id}"))
            .await
            .map_err(|e| ServiceError::nats(format!("endpoint {name}.stats.{instance_id}"), e))?;
        let decide = group
            .endpoint_builder()
            .name("decide")
            .add("decide.>")
            .await
            .map_err(|e| ServiceError::nats(format!("endpoint {name}.decide.>"), e))?;
        Ok(Self {
            service,
            stats,
            instance,
            checkpoint,
            decide,
        })
    }
}

/// The Prometheus endpoint, when `service.metrics_addr` is set.
async fn start_metrics(
    settings: &Settings,
    scrapes: mpsc::Sender<prometheus::StatsRequest>,
    metrics: &Arc<ServiceMetrics>,
    shutdown: &CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServiceError> {
    let addr = match settings.service.metrics_addr.as_str() {
        "" => return Ok(None),
        addr => addr
            .parse()
            .map_err(|e| ServiceError::Settings(format!("service.metrics_addr {addr}: {e}")))?,
    };
    let task = prometheus::serve_metrics(addr, scrapes, metrics.clone(), shutdown.clone()).await?;
    Ok(Some(task))
}

/// What the decide endpoint needs to publish a request's event and wait for its decision.
fn decide_context(
    settings: &Settings,
    client: &async_nats::Client,
    waiters: Arc<decide::Waiters>,
) -> decide::Context {
    decide::Context {
        client: client.clone(),
        mode: settings.delivery.mode,
        stream: settings.delivery.stream.clone(),
        subjects: settings.subjects.clone(),
        prefix: format!("{}.decide.", settings.service.name),
        timeout: std::time::Duration::from_secs_f64(settings.delivery.decide_timeout_secs),
        waiters,
    }
}

/// Requests the event loop answers itself, from the engine it owns.
struct Requests {
    stats: async_nats::service::endpoint::Endpoint,
    instance: async_nats::service::endpoint::Endpoint,
    checkpoint: async_nats::service::endpoint::Endpoint,
    scrapes: mpsc::Receiver<prometheus::StatsRequest>,
    /// Role changes from the hot standby's election.
    roles: ha::Roles,
}

/// Runs the event loop until the source ends or shutdown has drained it; then stops the other
/// tasks. Returns why the service failed, when a task panicked.
async fn drive(
    event_loop: &mut EventLoop,
    mut source: Source,
    mut requests: Requests,
    tasks: &mut supervise::Tasks,
    shutdown: &CancellationToken,
) -> Option<String> {
    // The first task that panics: the service then stops, and exits with an error.
    let mut failed: Option<String> = None;
    let mut draining = false;
    // Armed when shutdown starts: how long to wait for messages already sent to us.
    let drain_deadline = tokio::time::sleep(std::time::Duration::MAX);
    tokio::pin!(drain_deadline);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if !draining => {
                // Stop taking events; those already sent to us are still handled.
                source.stop().await;
                draining = true;
                drain_deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + source::DRAIN_TIMEOUT);
            }
            msg = source.next() => match msg {
                Some(msg) => event_loop.handle(msg).await,
                None => break,
            },
            Some(request) = requests.stats.next() => event_loop.answer_stats(request).await,
            Some(request) = requests.instance.next() => event_loop.answer_stats(request).await,
            role = requests.roles.next() => event_loop.take_role(role).await,
            Some(request) = requests.checkpoint.next() => event_loop.answer_checkpoint(request).await,
            Some(reply_to) = requests.scrapes.recv() => {
                let _ = reply_to.send(event_loop.stats());
            }
            Some(ended) = tasks.next(), if !tasks.is_empty() => {
                if let Some(reason) = panicked(&ended) {
                    failed.get_or_insert(reason);
                    shutdown.cancel();
                }
            }
            _ = &mut drain_deadline, if draining => {
                tracing::warn!("in-flight events did not arrive within {:?}; stopping", source::DRAIN_TIMEOUT);
                break;
            }
        }
    }
    // The loop also ends when the source does (its task ended): stop everything else too.
    shutdown.cancel();
    // No outcome comes any more: decide requests still waiting get their answer now.
    event_loop.waiters.close();
    while let Some(ended) = tasks.next().await {
        if let Some(reason) = panicked(&ended) {
            failed.get_or_insert(reason);
        }
    }
    failed
}

/// Why the service fails, when `ended` panicked (logged).
fn panicked(ended: &supervise::Ended) -> Option<String> {
    let panic = ended.panicked()?;
    tracing::error!(task = ended.name, panic = %panic, "a task of the service panicked; stopping");
    Some(format!("the {} task panicked: {panic}", ended.name))
}

/// The reply to a request whose event caused no decision (a close): what it caused.
fn close_answer(seq: u64, symbol: &str, updates: u64) -> Bytes {
    let answer = serde_json::json!({
        "event_seq": seq,
        "symbol": symbol,
        "updates_applied": updates,
    });
    Bytes::from(answer.to_string())
}

/// The reply to a request whose event was rejected.
fn rejection_answer(error: &DecodeError) -> Bytes {
    let answer = serde_json::json!({"error": error.to_string(), "reason": error.code()});
    Bytes::from(answer.to_string())
}

/// The task that owns the engine: decodes, applies, publishes, acks, and hands snapshots to
/// the checkpoint writer. [`serve`] drives it; tests may drive it directly.
pub struct EventLoop {
    engine: Engine,
    client: async_nats::Client,
    settings: Settings,
    metrics: Arc<ServiceMetrics>,
    checkpointer: Checkpointer,
    next_checkpoint_at: u64,
    /// Decide requests waiting for the outcome of their stream sequence.
    pub waiters: Arc<decide::Waiters>,
    /// Shadow policies fed the same messages ([`EventLoop::with_shadows`]).
    shadows: Vec<crate::shadow::Shadow>,
    /// Whether this instance publishes (the hot standby's gate).
    pub standby: ha::Standby,
}

impl EventLoop {
    /// An event loop around `engine`.
    pub fn new(
        engine: Engine,
        client: async_nats::Client,
        settings: Settings,
        metrics: Arc<ServiceMetrics>,
        checkpointer: Checkpointer,
    ) -> Self {
        let every = settings.checkpoint.every_updates;
        let next_checkpoint_at = (engine.updates() / every + 1) * every;
        Self {
            engine,
            client,
            settings,
            metrics,
            checkpointer,
            next_checkpoint_at,
            waiters: Arc::default(),
            shadows: Vec::new(),
            standby: ha::Standby::solo(String::new()),
        }
    }

    /// Handles one message: applies it (or skips it when its sequence was applied already, or
    /// dead-letters it when it does not decode), publishes the decisions, acks a JetStream
    /// message, and starts a checkpoint when one is due.
    pub async fn handle(&mut self, msg: Inbound) {
        self.metrics.message(&msg.subject);
        let seq = match &msg.delivery {
            Delivery::Core { .. } => self.engine.next_seq(),
            Delivery::JetStream { seq, .. } => *seq,
        };
        let outcome = self.apply(seq, &msg);
        let rejected = matches!(outcome, Outcome::Rejected(_));
        self.run_shadows(seq, &msg).await;
        // A decide request waits for this message's outcome.
        let decide_seq = match &msg.delivery {
            Delivery::JetStream { seq, message } if decide::requested(message) => Some(*seq),
            _ => None,
        };
        match outcome {
            Outcome::AlreadyApplied => {
                self.metrics.duplicate_skipped();
                tracing::debug!(seq, "already applied; skipped");
            }
            Outcome::Applied {
                symbol,
                decisions,
                updates,
                refusals,
                state_changes,
                ..
            } => {
                self.publish_outcomes(seq, &updates).await;
                let updates = updates.iter().filter(|u| u.applied).count() as u64;
                for decision in &decisions {
                    self.publish_decision(seq, decision, &msg.delivery).await;
                    self.metrics
                        .decision_latency
                        .observe(msg.arrived.elapsed().as_secs_f64());
                }
                self.publish_control(seq, &refusals, &state_changes, &msg.delivery)
                    .await;
                // A close (or a refused or control message) has no decision; a request for one
                // learns what it caused.
                let answer = || {
                    control_publish::answer(&refusals, &state_changes)
                        .unwrap_or_else(|| close_answer(seq, &symbol, updates))
                };
                if let (true, Delivery::Core { reply: Some(reply) }) =
                    (decisions.is_empty(), &msg.delivery)
                {
                    self.publish(reply.to_string(), answer(), None).await;
                }
                if let Some(seq) = decide_seq {
                    let answer = match decisions.first() {
                        Some(d) => Bytes::from(serde_json::to_vec(d).unwrap_or_default()),
                        None => answer(),
                    };
                    self.waiters.deliver(seq, answer);
                }
            }
            Outcome::Rejected(error) => {
                self.dead_letter(&msg, seq, &error).await;
                if let Some(seq) = decide_seq {
                    self.waiters.deliver(seq, rejection_answer(&error));
                }
            }
        }
        let pending = match &msg.delivery {
            Delivery::JetStream { message, .. } => message.info().ok().map(|i| i.pending),
            Delivery::Core { .. } => None,
        };
        self.standby.handled(seq, pending);
        if let Delivery::JetStream { message, .. } = &msg.delivery {
            // A rejected message is terminated so it is never redelivered.
            let kind = if rejected {
                async_nats::jetstream::AckKind::Term
            } else {
                async_nats::jetstream::AckKind::Ack
            };
            if let Err(e) = message.ack_with(kind).await {
                tracing::warn!(seq, error = %e, "ack failed; the message will be redelivered and skipped");
            }
        }
        self.maybe_checkpoint();
    }

    /// Applies a message to the engine: an event, or a command on the control subject.
    fn apply(&mut self, seq: u64, msg: &Inbound) -> Outcome {
        let limit = self.settings.limits.max_payload_bytes;
        let (payload, at) = (&msg.payload, msg.received_at);
        match msg.kind {
            Topic::Event(kind) => self.engine.ingest(seq, kind, payload, at, limit),
            Topic::Control => self.engine.ingest_control(seq, payload, at, limit),
        }
    }

    /// Hands a snapshot to the writer when `checkpoint.every_updates` more updates were applied;
    /// the writer paces it and writes it on its own timer, traffic or not.
    fn maybe_checkpoint(&mut self) {
        if self.engine.updates() >= self.next_checkpoint_at {
            let every = self.settings.checkpoint.every_updates;
            self.next_checkpoint_at = (self.engine.updates() / every + 1) * every;
            self.checkpointer.offer(self.engine.state());
        }
    }

    /// Publishes; with `msg_id`, sets `Nats-Msg-Id` so a stream capturing `subject` drops the
    /// copy a replay after a crash publishes again.
    async fn publish(&self, subject: String, payload: Bytes, msg_id: Option<&str>) -> bool {
        let sent = match msg_id {
            Some(id) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
                self.client
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await
            }
            None => self.client.publish(subject.clone(), payload).await,
        };
        match sent {
            Ok(()) => true,
            Err(e) => {
                self.metrics.publish_failed();
                tracing::error!(subject, error = %e, "publish failed");
                false
            }
        }
    }

    /// Publishes what the event at `seq` caused when this instance publishes it; a follower
    /// keeps it for a takeover instead. True when it was published.
    async fn publish_gated(
        &mut self,
        seq: u64,
        subject: &str,
        payload: Bytes,
        msg_id: Option<&str>,
    ) -> bool {
        let epoch = match self.standby.gate(seq) {
            ha::Gate::Skip => return false,
            ha::Gate::Publish(None) => return self.publish(subject.into(), payload, msg_id).await,
            ha::Gate::Publish(Some(epoch)) => Some(epoch),
            ha::Gate::Hold => None,
        };
        // Kept until known delivered: a follower's for a takeover, the leader's for a
        // republication after a reconnect.
        self.standby.hold(ha::Held {
            seq,
            subject: subject.to_string(),
            payload: payload.clone(),
            msg_id: msg_id.map(str::to_string),
        });
        match epoch {
            Some(epoch) => {
                let payload = ha::with_epoch(&payload, epoch);
                self.publish(subject.to_string(), payload, msg_id).await
            }
            None => false,
        }
    }

    /// Takes the role the election gave: at a takeover, publishes the decisions kept as a
    /// follower that the previous leader may not have published.
    pub async fn take_role(&mut self, role: ha::Role) {
        let applied = self.engine.last_applied_seq();
        let Some((epoch, backlog)) = self.standby.take_role(role, applied) else {
            return;
        };
        for held in backlog {
            let payload = ha::with_epoch(&held.payload, epoch);
            let sent = self
                .publish(held.subject.clone(), payload, held.msg_id.as_deref())
                .await;
            let s = &self.settings.subjects;
            if !sent {
                continue;
            }
            if held.subject == s.outcome {
                self.metrics.outcome_published();
            } else if held.subject == s.meta_decision || held.subject == s.sizing_decision {
                self.metrics.decision_published();
            }
        }
    }

    async fn publish_decision(&mut self, seq: u64, decision: &Decision, delivery: &Delivery) {
        let subject = match decision.agent {
            AgentKind::MetaStrategy => self.settings.subjects.meta_decision.clone(),
            AgentKind::PositionSizing => self.settings.subjects.sizing_decision.clone(),
        };
        let payload = Bytes::from(serde_json::to_vec(decision).unwrap_or_default());
        let msg_id = match delivery {
            Delivery::JetStream { .. } => Some(decision.decision_id.as_str()),
            Delivery::Core { .. } => None,
        };
        if self
            .publish_gated(seq, &subject, payload.clone(), msg_id)
            .await
        {
            self.metrics.decision_published();
        }
        if let Delivery::Core { reply: Some(reply) } = delivery {
            self.publish(reply.to_string(), payload, None).await;
        }
    }

    async fn dead_letter(&mut self, msg: &Inbound, seq: u64, error: &DecodeError) {
        let keep = self.settings.limits.dead_letter_payload_bytes;
        let shown = &msg.payload[..msg.payload.len().min(keep)];
        tracing::warn!(
            subject = %msg.subject,
            seq,
            reason = error.code(),
            error = %error,
            bytes = msg.payload.len(),
            "event rejected"
        );
        let letter = serde_json::json!({
            "subject": msg.subject,
            "reason": error.code(),
            "error": error.to_string(),
            "seq": seq,
            "received_at": msg.received_at,
            "payload_bytes": msg.payload.len(),
            "payload_truncated": shown.len() < msg.payload.len(),
            "payload": String::from_utf8_lossy(shown),
        });
        let payload = Bytes::from(letter.to_string());
        let msg_id = match &msg.delivery {
            Delivery::JetStream { seq, .. } => Some(format!("dead_letter-{seq}")),
            Delivery::Core { .. } => None,
        };
        let subject = self.settings.subjects.dead_letter.clone();
        if self
            .publish_gated(seq, &subject, payload, msg_id.as_deref())
            .await
        {
            self.metrics.dead_letter();
        }
        if let Delivery::Core { reply: Some(reply) } = &msg.delivery {
            self.publish(reply.to_string(), rejection_answer(error), None)
                .await;
        }
    }

    /// The engine's statistics and the service's counters.
    pub fn stats(&self) -> StatsReply {
        StatsReply {
            engine: self.engine.stats(),
            service: self.metrics.snapshot(),
            shadows: self.shadows.iter().map(|s| s.stats()).collect(),
            instance: self.standby.report(),
        }
    }

    async fn answer_stats(&self, request: async_nats::service::Request) {
        let body = serde_json::to_vec(&self.stats()).unwrap_or_default();
        if let Err(e) = request.respond(Ok(body.into())).await {
            tracing::warn!(error = %e, "stats reply failed");
        }
    }

    /// Hands the writer a snapshot and answers when it is written, without waiting for it:
    /// concurrent requests share one write.
    async fn answer_checkpoint(&self, request: async_nats::service::Request) {
        self.metrics.checkpoint_requested();
        let done = self.checkpointer.request(self.engine.state());
        tokio::spawn(async move {
            let reply = match done.await {
                Ok(Ok(written)) => Ok(serde_json::to_vec(&written).unwrap_or_default().into()),
                Ok(Err(e)) => Err(async_nats::service::error::Error {
                    status: format!("checkpoint failed: {e}"),
                    code: 500,
                }),
                Err(_) => Err(async_nats::service::error::Error {
                    status: "checkpoint writer stopped".into(),
                    code: 503,
                }),
            };
            if let Err(e) = request.respond(reply).await {
                tracing::warn!(error = %e, "checkpoint reply failed");
            }
        });
    }

    /// Flushes publishes and writes the final checkpoint.
    pub async fn finish(self) -> Result<(), ServiceError> {
        if let Err(e) = self.client.flush().await {
            tracing::warn!(error = %e, "flush failed: some decisions may not have reached the broker");
        }
        let written = self
            .checkpointer
            .finish(self.engine.state())
            .await
            .map_err(|e| {
                ServiceError::Checkpoint(CheckpointError::Io {
                    path: self.settings.checkpoint.dir.clone(),
                    source: std::io::Error::other(e),
                })
            })?;
        tracing::info!(
            path = %written.path.display(),
            last_applied_seq = written.last_applied_seq,
            updates = written.updates,
            "final checkpoint written; bye"
        );
        Ok(())
    }
}
