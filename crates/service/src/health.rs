//! `rl-v2 health`: is the service up? Pings the micro service over NATS, and reports the
//! trading state its stats show.

use std::time::Duration;

use crate::settings::Settings;

/// What the PING answered.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Pong {
    /// Service name.
    pub name: String,
    /// Service instance id.
    pub id: String,
    /// Service version.
    pub version: String,
    /// The trading state its stats report (none when the stats did not answer).
    #[serde(default)]
    pub trading_state: Option<rl_v2_core::control::TradingState>,
}

/// Connects once and pings `$SRV.PING.<service.name>`; the error says what failed.
pub async fn ping(settings: &Settings, timeout: Duration) -> Result<Pong, String> {
    let opts = crate::connect::options(&settings.nats, None)
        .await
        .map_err(|e| e.to_string())?
        .name("rl-v2-health")
        .connection_timeout(timeout);
    let url = settings.nats.redacted_url();
    let servers = crate::credentials::connect_urls(&settings.nats);
    let client = tokio::time::timeout(timeout, opts.connect(servers))
        .await
        .map_err(|_| format!("no connection to {url} within {timeout:?}"))?
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let subject = format!("$SRV.PING.{}", settings.service.name);
    let reply = tokio::time::timeout(timeout, client.request(subject.clone(), "".into()))
        .await
        .map_err(|_| format!("no answer on {subject} within {timeout:?}"))?
        .map_err(|e| format!("{subject}: {e}"))?;
    let mut pong: Pong = serde_json::from_slice(&reply.payload)
        .map_err(|e| format!("{subject} answered something else: {e}"))?;
    let stats = format!("{}.stats", settings.service.name);
    if let Ok(Ok(reply)) = tokio::time::timeout(timeout, client.request(stats, "".into())).await {
        pong.trading_state = serde_json::from_slice::<serde_json::Value>(&reply.payload)
            .ok()
            .and_then(|s| serde_json::from_value(s["trading_state"].clone()).ok());
    }
    Ok(pong)
}
