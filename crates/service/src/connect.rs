//! Connecting to the broker: credentials and TLS from settings, a retry loop with a log line
//! per attempt at start-up, and automatic reconnection (with resubscription) afterwards.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::credentials::{self, Credentials};
use crate::metrics::ServiceMetrics;
use crate::settings::NatsSettings;
use crate::ServiceError;

/// Longest pause between reconnection attempts after the connection was lost.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// Connection options from settings: credentials (from the settings or the URL), TLS, the
/// subscription buffer, unlimited quick reconnection, and a log line per connection change.
/// Messages the client drops because rl-v2 fell behind (slow consumer) are counted in
/// `metrics` when given (one client event per dropped message), never logged one by one:
/// [`crate::slow_consumer`] reports them once a second.
pub async fn options(
    s: &NatsSettings,
    metrics: Option<Arc<ServiceMetrics>>,
) -> Result<async_nats::ConnectOptions, ServiceError> {
    let credentials = credentials::resolve(s).map_err(|e| ServiceError::Settings(e.to_string()))?;
    let mut o = match credentials {
        Credentials::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(&path)
            .await
            .map_err(|e| ServiceError::Settings(format!("nats.creds_file {path}: {e}")))?,
        Credentials::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        Credentials::Token(token) => async_nats::ConnectOptions::with_token(token),
        Credentials::None => async_nats::ConnectOptions::new(),
    };
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
        .subscription_capacity(s.subscription_capacity)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            (Duration::from_millis(100) * attempts as u32).min(MAX_RECONNECT_DELAY)
        })
        .event_callback(move |event| {
            let metrics = metrics.clone();
            async move {
                match event {
                    // One event per message dropped; reported in bulk by the slow-consumer task.
                    async_nats::Event::SlowConsumer(_) => {
                        if let Some(metrics) = &metrics {
                            metrics.slow_consumer_drop();
                        }
                    }
                    async_nats::Event::Connected => tracing::info!("NATS connection up"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from NATS; reconnecting")
                    }
                    async_nats::Event::Closed => tracing::info!("NATS connection closed"),
                    async_nats::Event::ServerError(
                        e @ async_nats::ServerError::AuthorizationViolation,
                    ) => tracing::error!(
                        reason = %e,
                        "the broker refused rl-v2's credentials; fix nats.user/nats.password, \
                         nats.token, nats.creds_file or the credentials in nats.url"
                    ),
                    async_nats::Event::ClientError(e)
                        if e.to_string().to_ascii_lowercase().contains("authorization") =>
                    {
                        tracing::error!(
                            reason = %e,
                            "reconnection refused by the broker: credentials rejected; still retrying"
                        )
                    }
                    other => tracing::warn!(event = %other, "NATS connection event"),
                }
            }
        }))
}

/// Whether a connection error is the broker refusing the credentials: retrying cannot help.
fn is_permanent(e: &async_nats::ConnectError) -> bool {
    matches!(
        e.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation
            | async_nats::ConnectErrorKind::Authentication
    )
}

/// Connects, retrying every `connect_retry_secs` until the broker answers or `shutdown` fires
/// (then `Ok(None)`). A broker that refuses the credentials is not retried: the error, with the
/// server's reason, is logged at ERROR and returned.
pub async fn connect(
    s: &NatsSettings,
    metrics: Arc<ServiceMetrics>,
    shutdown: &CancellationToken,
) -> Result<Option<async_nats::Client>, ServiceError> {
    connect_as(s, Some(metrics), &s.client_name, shutdown).await
}

/// A second connection that carries only the core-mode event subscriptions, so that its
/// message count tells exactly how many of their messages the client dropped (see
/// [`crate::source::Source::core`]); its slow-consumer events are therefore not counted.
pub async fn connect_events(
    s: &NatsSettings,
    shutdown: &CancellationToken,
) -> Result<Option<async_nats::Client>, ServiceError> {
    connect_as(s, None, &format!("{}-events", s.client_name), shutdown).await
}

async fn connect_as(
    s: &NatsSettings,
    metrics: Option<Arc<ServiceMetrics>>,
    name: &str,
    shutdown: &CancellationToken,
) -> Result<Option<async_nats::Client>, ServiceError> {
    let retry = Duration::from_secs_f64(s.connect_retry_secs);
    let url = s.redacted_url();
    let servers = credentials::connect_urls(s);
    let mut attempt = 1u64;
    loop {
        let opts = options(s, metrics.clone()).await?.name(name);
        match opts.connect(servers.clone()).await {
            Ok(client) => {
                tracing::info!(%url, attempt, "connected to NATS");
                return Ok(Some(client));
            }
            Err(e) if is_permanent(&e) => {
                tracing::error!(
                    %url,
                    reason = %e,
                    "the broker refused rl-v2's credentials; not retrying. Fix nats.user/nats.password, \
                     nats.token, nats.creds_file or the credentials in nats.url"
                );
                return Err(ServiceError::nats(
                    format!("{url} refused the credentials"),
                    e,
                ));
            }
            Err(e) => {
                tracing::warn!(%url, attempt, error = %e, "NATS not reachable; retrying in {:?}", retry);
            }
        }
        attempt += 1;
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
    }
}
