//! Connecting to the broker: credentials and TLS from settings, a retry loop with a log line
//! per attempt at start-up, and automatic reconnection (with resubscription) afterwards.

use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::settings::NatsSettings;
use crate::ServiceError;

/// Longest pause between reconnection attempts after the connection was lost.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// Connection options from settings: credentials, TLS, unlimited quick reconnection, and a log
/// line per connection change.
pub async fn options(s: &NatsSettings) -> Result<async_nats::ConnectOptions, ServiceError> {
    let mut o = if !s.creds_file.is_empty() {
        async_nats::ConnectOptions::with_credentials_file(&s.creds_file)
            .await
            .map_err(|e| ServiceError::Settings(format!("nats.creds_file {}: {e}", s.creds_file)))?
    } else {
        async_nats::ConnectOptions::new()
    };
    if !s.user.is_empty() {
        o = o.user_and_password(s.user.clone(), s.password.clone());
    }
    if !s.token.is_empty() {
        o = o.token(s.token.clone());
    }
    if !s.tls_ca.is_empty() {
        o = o
            .add_root_certificates(PathBuf::from(&s.tls_ca))
            .require_tls(true);
    }
    if !s.tls_cert.is_empty() {
        o = o
            .add_client_certificate(PathBuf::from(&s.tls_cert), PathBuf::from(&s.tls_key))
            .require_tls(true);
    }
    Ok(o.name(&s.client_name)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            (Duration::from_millis(100) * attempts as u32).min(MAX_RECONNECT_DELAY)
        })
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connection up"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("disconnected from NATS; reconnecting")
                }
                async_nats::Event::Closed => tracing::info!("NATS connection closed"),
                other => tracing::warn!(event = %other, "NATS connection event"),
            }
        }))
}

/// Connects, retrying every `connect_retry_secs` until the broker answers or `shutdown` fires
/// (then `Ok(None)`).
pub async fn connect(
    s: &NatsSettings,
    shutdown: &CancellationToken,
) -> Result<Option<async_nats::Client>, ServiceError> {
    let retry = Duration::from_secs_f64(s.connect_retry_secs);
    let mut attempt = 1u64;
    loop {
        let opts = options(s).await?;
        match opts.connect(s.servers()).await {
            Ok(client) => {
                tracing::info!(url = %s.url, attempt, "connected to NATS");
                return Ok(Some(client));
            }
            Err(e) => {
                tracing::warn!(url = %s.url, attempt, error = %e, "NATS not reachable; retrying in {:?}", retry);
            }
        }
        attempt += 1;
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
    }
}
