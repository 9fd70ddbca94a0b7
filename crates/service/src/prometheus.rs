//! The Prometheus `/metrics` endpoint (off unless `service.metrics_addr` is set).
//!
//! A scrape asks the event loop for a stats snapshot (the same one `rl_v2.stats` answers) and
//! renders it, with the decision-latency and checkpoint-duration histograms, in the
//! OpenMetrics text format.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::{ServiceMetrics, ServiceSnapshot};
use crate::serve::{ServiceError, StatsReply};
use rl_v2_core::control::{RefusalReason, TradingState};
use rl_v2_core::engine::{Counters, EngineStats};

/// A request for a stats snapshot, answered by the event loop.
pub type StatsRequest = oneshot::Sender<StatsReply>;

#[derive(Clone)]
struct Shared {
    stats: mpsc::Sender<StatsRequest>,
    metrics: Arc<ServiceMetrics>,
}

/// Binds `addr` and serves `/metrics` until `shutdown`.
pub async fn serve_metrics(
    addr: SocketAddr,
    stats: mpsc::Sender<StatsRequest>,
    metrics: Arc<ServiceMetrics>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, ServiceError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServiceError::Settings(format!("service.metrics_addr {addr}: {e}")))?;
    let app = axum::Router::new()
        .route("/metrics", get(scrape))
        .with_state(Shared { stats, metrics });
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    Ok(tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.cancelled().await;
        });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    }))
}

async fn scrape(State(shared): State<Shared>) -> impl IntoResponse {
    let (tx, rx) = oneshot::channel();
    let snapshot = match shared.stats.send(tx).await {
        Ok(()) => rx.await.ok(),
        Err(_) => None,
    };
    match snapshot {
        Some(stats) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            render(&stats, &shared.metrics),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "rl-v2 is shutting down\n".to_string(),
        ),
    }
}

type Labels = Vec<(String, String)>;

fn counter_family(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (String, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for (key, value) in values {
        family
            .get_or_create(&vec![(label.to_string(), key)])
            .inc_by(value);
    }
    registry.register(name, help, family);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

/// The trading state (1 for the current one), refusals by reason, commands and changes.
fn control_metrics(r: &mut Registry, stats: &StatsReply) {
    let c = &stats.engine.counters;
    counter_family(
        r,
        "risk_refusals",
        "Decisions the risk gate refused, by reason",
        "reason",
        RefusalReason::ALL.iter().map(|reason| {
            let n = c.refusals.get(reason).copied().unwrap_or(0);
            (reason.as_str().to_string(), n)
        }),
    );
    let state = Family::<Labels, Gauge>::default();
    for t in TradingState::ALL {
        let on = i64::from(t == stats.engine.trading_state);
        state
            .get_or_create(&vec![("state".to_string(), t.as_str().to_string())])
            .set(on);
    }
    r.register(
        "trading_state",
        "Trading state: 1 for the current one (ACTIVE, REDUCING, HALTED)",
        state,
    );
    counter(
        r,
        "trading_state_changes",
        "Changes of the trading state (operators and breakers)",
        stats.engine.control.changes,
    );
    counter(
        r,
        "control_commands",
        "Control commands applied",
        c.control_commands,
    );
}

/// This instance's place among the instances on the stream (see [`crate::ha`]).
fn instance_gauges(r: &mut Registry, i: &crate::ha::InstanceReport) {
    let labels = vec![("instance".to_string(), i.id.clone())];
    for (name, help, value) in [
        (
            "leader",
            "1 while this instance publishes (leads), 0 while it follows",
            i64::from(i.role == "leader"),
        ),
        (
            "epoch",
            "Epoch of the current leader's lease (0 without [ha])",
            i.epoch as i64,
        ),
        (
            "held_decisions",
            "Decisions a follower keeps for a takeover",
            i.held as i64,
        ),
        (
            "lag",
            "Events in the stream after the last one applied",
            i.lag as i64,
        ),
    ] {
        let family = Family::<Labels, Gauge>::default();
        family.get_or_create(&labels).set(value);
        r.register(name, help, family);
    }
}

/// Renders a stats snapshot and the histograms as OpenMetrics text.
pub fn render(stats: &StatsReply, metrics: &ServiceMetrics) -> String {
    let mut r = Registry::with_prefix("rl_v2");
    engine_counters(&mut r, &stats.engine.counters);
    service_counters(&mut r, &stats.service);
    engine_gauges(&mut r, &stats.engine);
    control_metrics(&mut r, stats);
    instance_gauges(&mut r, &stats.instance);
    r.register(
        "decision_latency_seconds",
        "From message arrival to decision published",
        metrics.decision_latency.clone(),
    );
    r.register(
        "checkpoint_duration_seconds",
        "Time to write a checkpoint",
        metrics.checkpoint_duration.clone(),
    );
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &r) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    out
}

/// The engine's counters: events, rejects and decisions by label, then one counter each.
fn engine_counters(r: &mut Registry, c: &Counters) {
    counter_family(
        r,
        "events",
        "Events applied, by type",
        "kind",
        c.events.iter().map(|(k, v)| (k.as_str().to_string(), *v)),
    );
    counter_family(
        r,
        "rejects",
        "Events rejected, by reason",
        "reason",
        c.rejects.iter().map(|(k, v)| (k.clone(), *v)),
    );
    counter_family(
        r,
        "decisions",
        "Decisions made, by agent",
        "agent",
        c.decisions
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), *v)),
    );
    for (name, help, value) in [
        ("updates", "Q-updates applied", c.updates),
        (
            "refused_updates",
            "Q-updates refused as non-finite",
            c.refused_updates,
        ),
        (
            "superseded_pending",
            "Pending meta decisions superseded",
            c.superseded_pending,
        ),
        (
            "replaced_sizing",
            "Sizing decisions replaced by a second trade",
            c.replaced_sizing,
        ),
        (
            "expired_pending",
            "Pending meta decisions expired unrewarded",
            c.expired_pending,
        ),
        (
            "expired_positions",
            "Open positions expired unrewarded",
            c.expired_positions,
        ),
        (
            "closes_without_decision",
            "Closes with no decision to reward",
            c.closes_without_decision,
        ),
        (
            "timestamps_clamped",
            "Event timestamps clamped into the allowed skew of the transport's time",
            c.timestamps_clamped,
        ),
        (
            "rewards_clamped",
            "Rewards clamped to plausibility.max_abs_reward",
            c.rewards_clamped,
        ),
        (
            "evicted_symbols",
            "Market contexts dropped at limits.max_symbols",
            c.evicted_symbols,
        ),
        (
            "evicted_pending",
            "Pending meta decisions dropped at limits.max_pending_decisions",
            c.evicted_pending,
        ),
        (
            "evicted_positions",
            "Open positions dropped at limits.max_open_positions",
            c.evicted_positions,
        ),
    ] {
        counter(r, name, help, value);
    }
}

/// The service shell's counters.
fn service_counters(r: &mut Registry, s: &ServiceSnapshot) {
    counter_family(
        r,
        "messages",
        "Messages received, by subject",
        "subject",
        s.messages_by_subject.iter().map(|(k, v)| (k.clone(), *v)),
    );
    for (name, help, value) in [
        (
            "decisions_published",
            "Decisions published",
            s.decisions_published,
        ),
        ("dead_letters", "Dead letters published", s.dead_letters),
        (
            "outcomes_published",
            "Outcome events published (one per Q-update)",
            s.outcomes_published,
        ),
        (
            "publish_failures",
            "Publishes that failed",
            s.publish_failures,
        ),
        (
            "duplicates_skipped",
            "Redeliveries of applied events skipped",
            s.duplicates_skipped,
        ),
        (
            "events_lost",
            "Events that aged out of the stream unapplied",
            s.events_lost,
        ),
        (
            "slow_consumer_drops",
            "Messages the NATS client dropped because rl-v2 fell behind",
            s.slow_consumer_drops,
        ),
        ("checkpoints", "Checkpoints written", s.checkpoints),
        (
            "checkpoint_requests",
            "rl_v2.checkpoint requests received (concurrent ones share a write)",
            s.checkpoint_requests,
        ),
        (
            "checkpoint_failures",
            "Checkpoints that failed",
            s.checkpoint_failures,
        ),
    ] {
        counter(r, name, help, value);
    }
}

/// The engine's gauges: pending work, the stream position, and each agent's table and ε.
fn engine_gauges(r: &mut Registry, engine: &EngineStats) {
    gauge(
        r,
        "pending_decisions",
        "Pending meta decisions",
        engine.pending_decisions as i64,
    );
    gauge(
        r,
        "open_positions",
        "Open positions",
        engine.open_positions as i64,
    );
    gauge(
        r,
        "last_applied_seq",
        "Sequence of the last event applied",
        engine.last_applied_seq as i64,
    );
    let states = Family::<Labels, Gauge>::default();
    let epsilon = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for a in [&engine.meta_agent_stats, &engine.sizing_agent_stats] {
        let labels = vec![("agent".to_string(), a.agent_type.as_str().to_string())];
        states
            .get_or_create(&labels)
            .set(a.q_learning_stats.states_visited as i64);
        epsilon
            .get_or_create(&labels)
            .set(a.q_learning_stats.epsilon);
    }
    r.register("states_visited", "States in the Q-table", states);
    r.register("epsilon", "Exploration rate", epsilon);
}
