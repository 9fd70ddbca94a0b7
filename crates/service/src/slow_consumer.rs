//! Slow-consumer reporting.
//!
//! When rl-v2 falls further behind a subscription than `nats.subscription_capacity` messages,
//! the NATS client drops what does not fit and reports one `SlowConsumer` event per dropped
//! message through its event callback ([`crate::connect::options`] counts them in
//! [`ServiceMetrics`]). A flood can drop hundreds of thousands of messages a second, so they are
//! never logged one by one: this task logs one WARN line per second at most, with how many were
//! dropped since the previous line and in total.

use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::ServiceMetrics;

/// How often dropped messages are reported, at most.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Spawns the reporter; it stops with `shutdown`, after reporting what is left.
pub fn report(metrics: Arc<ServiceMetrics>, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reported = 0u64;
        let mut tick = tokio::time::interval(REPORT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = shutdown.cancelled() => true,
            };
            let total = metrics.slow_consumer_drops();
            if total > reported {
                tracing::warn!(
                    dropped = total - reported,
                    total,
                    "slow consumer: the NATS client dropped messages because rl-v2 fell behind \
                     (counted in slow_consumer_drops; see nats.subscription_capacity)"
                );
                reported = total;
            }
            if stopping {
                return;
            }
        }
    })
}
