//! `rl-v2 control`: an operator's commands to the running service, and what it confirms.
//!
//! `halt`, `reduce` and `resume` publish a command on `subjects.control` carrying a fresh `id`,
//! then poll `<service.name>.stats` until the service reports that very command applied
//! (`control.last_command.id`), and return the trading state it reports. In JetStream mode the
//! stream captures the command, so it is applied in order with the events before it: with a
//! backlog, confirmation waits for the backlog. `status` only reads the stats.
//!
//! Exit codes (see `src/cli.rs`): 0 confirmed; 1 not confirmed in time, no service answering,
//! no connection, or the server refused the publish (a user without permission on the control
//! subject); 2 bad usage or settings.

use serde::Serialize;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::settings::Settings;
use rl_v2_core::control::{CommandKind, CommandRecord, TradingState, TradingStateChange};

/// Pause between two stats requests while waiting for a confirmation.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// What the service confirmed.
#[derive(Debug, Clone, Serialize)]
pub struct ControlReport {
    /// The trading state now.
    pub trading_state: TradingState,
    /// The latest change of state.
    pub last_change: Option<TradingStateChange>,
    /// The latest command applied.
    pub last_command: Option<CommandRecord>,
    /// Decisions refused so far, by reason.
    pub refusals: Value,
    /// Sequence number of the last message applied.
    pub last_applied_seq: u64,
}

fn parse<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("the stats' {what} is unreadable: {e}"))
}

impl ControlReport {
    fn from_stats(stats: &Value) -> Result<Self, String> {
        let field = |name: &str| stats.get(name).cloned().unwrap_or(Value::Null);
        let control = field("control");
        Ok(Self {
            trading_state: parse(field("trading_state"), "trading_state")?,
            last_change: parse(
                control.get("last_change").cloned().unwrap_or(Value::Null),
                "last_change",
            )?,
            last_command: parse(
                control.get("last_command").cloned().unwrap_or(Value::Null),
                "last_command",
            )?,
            refusals: stats
                .pointer("/counters/refusals")
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default())),
            last_applied_seq: field("last_applied_seq").as_u64().unwrap_or(0),
        })
    }

    /// The report as a few lines of text.
    pub fn render(&self) -> String {
        let mut out = format!("trading state: {}\n", self.trading_state);
        if let Some(c) = &self.last_change {
            out += &format!(
                "last change: {} → {} at sequence {} by {}: {}\n",
                c.previous, c.new, c.sequence, c.who, c.reason
            );
        }
        if let Some(c) = &self.last_command {
            out += &format!(
                "last command: {} by {} at sequence {}\n",
                c.command.as_str(),
                c.who,
                c.sequence
            );
        }
        out += &format!("refusals: {}\n", self.refusals);
        out
    }
}

/// A client for the running service.
pub struct ControlClient {
    client: async_nats::Client,
    settings: Settings,
    refused: Arc<Mutex<Vec<String>>>,
}

impl ControlClient {
    /// Connects with the same settings (URL, credentials, TLS) as `serve`, within `timeout`.
    pub async fn connect(settings: &Settings, timeout: Duration) -> Result<Self, String> {
        let refused: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = refused.clone();
        let opts = crate::connect::options(&settings.nats, None)
            .await
            .map_err(|e| e.to_string())?
            .name("rl-v2-control")
            .connection_timeout(timeout)
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        if let Ok(mut v) = seen.lock() {
                            v.push(e.to_string());
                        }
                    }
                }
            });
        let url = settings.nats.redacted_url();
        let servers = crate::credentials::connect_urls(&settings.nats);
        let client = tokio::time::timeout(timeout, opts.connect(servers))
            .await
            .map_err(|_| format!("no connection to {url} within {timeout:?}"))?
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        Ok(Self {
            client,
            settings: settings.clone(),
            refused,
        })
    }

    /// The service's stats, as JSON.
    pub async fn stats(&self, timeout: Duration) -> Result<Value, String> {
        let subject = format!("{}.stats", self.settings.service.name);
        let reply = tokio::time::timeout(timeout, self.client.request(subject.clone(), "".into()))
            .await
            .map_err(|_| format!("no answer on {subject} within {timeout:?}"))?
            .map_err(|e| format!("{subject}: {e}"))?;
        serde_json::from_slice(&reply.payload)
            .map_err(|e| format!("{subject} answered something else: {e}"))
    }

    /// The trading state and what led to it.
    pub async fn status(&self, timeout: Duration) -> Result<ControlReport, String> {
        ControlReport::from_stats(&self.stats(timeout).await?)
    }

    /// Sends `command` and waits, up to `timeout`, until the service reports it applied.
    pub async fn command(
        &self,
        command: CommandKind,
        reason: &str,
        who: &str,
        timeout: Duration,
    ) -> Result<ControlReport, String> {
        let deadline = Instant::now() + timeout;
        let id = self
            .client
            .new_inbox()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_string();
        let payload = serde_json::json!({
            "command": command.as_str(),
            "reason": reason,
            "who": who,
            "id": id,
        });
        let subject = self.settings.subjects.control.clone();
        self.client
            .publish(subject.clone(), payload.to_string().into())
            .await
            .map_err(|e| format!("publish on {subject}: {e}"))?;
        self.client
            .flush()
            .await
            .map_err(|e| format!("publish on {subject}: {e}"))?;
        loop {
            if let Some(e) = self.refused_publish(&subject) {
                return Err(format!("the server refused the command: {e}"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the service did not confirm the command within {timeout:?} (in JetStream \
                     mode it is in the stream and will still be applied, after the events before it)"
                ));
            }
            if let Ok(stats) = self.stats(left.min(Duration::from_secs(2))).await {
                let report = ControlReport::from_stats(&stats)?;
                if report
                    .last_command
                    .as_ref()
                    .is_some_and(|c| c.id.as_deref() == Some(id.as_str()))
                {
                    return Ok(report);
                }
            }
            tokio::time::sleep(POLL_EVERY.min(left)).await;
        }
    }

    fn refused_publish(&self, subject: &str) -> Option<String> {
        let errors = self.refused.lock().ok()?;
        errors
            .iter()
            .find(|e| {
                let e = e.to_lowercase();
                e.contains("permissions violation") && e.contains(&subject.to_lowercase())
            })
            .cloned()
    }
}

/// Who a command names when `--who` is not given: the login user, else the NATS user.
pub fn default_who(settings: &Settings) -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| (!settings.nats.user.is_empty()).then(|| settings.nats.user.clone()))
        .unwrap_or_else(|| "operator".into())
}
