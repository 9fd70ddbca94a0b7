//! The one cancellation signal: SIGINT or SIGTERM cancels a [`CancellationToken`] that every
//! loop of the service selects on.

use tokio_util::sync::CancellationToken;

/// Spawns a task that cancels `token` on SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => tracing::info!("SIGINT received: shutting down"),
                        _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
                        _ = token.cancelled() => return,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; SIGINT only");
                    tokio::select! {
                        _ = ctrl_c => tracing::info!("SIGINT received: shutting down"),
                        _ = token.cancelled() => return,
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            tokio::select! {
                _ = ctrl_c => tracing::info!("interrupt received: shutting down"),
                _ = token.cancelled() => return,
            }
        }
        token.cancel();
    });
}
