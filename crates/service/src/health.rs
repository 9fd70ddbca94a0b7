//! `rl-v2 health`: is the service up? Pings the micro service over NATS.

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
    serde_json::from_slice(&reply.payload)
        .map_err(|e| format!("{subject} answered something else: {e}"))
}
