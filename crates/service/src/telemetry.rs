//! Logging: one subscriber, installed once, writing text or JSON lines to stderr.

use tracing_subscriber::EnvFilter;

use crate::settings::{LogFormat, LogSettings};

/// Added to `log.level` unless it names `async_nats` itself: the NATS client logs every
/// connection event at INFO, one line per message dropped by a slow consumer among them, which
/// a flood turns into hundreds of thousands of lines a second. rl-v2 logs those events itself
/// (connection changes one line each, dropped messages counted and reported once a second).
const QUIET_CLIENT: &str = "async_nats=warn";

/// The filter `log.level` stands for: itself, with the NATS client held to WARN when the level
/// would let its INFO lines through.
pub fn filter_directives(level: &str) -> String {
    let global = level
        .split(',')
        .map(str::trim)
        .rfind(|d| !d.contains('='))
        .unwrap_or("error")
        .to_ascii_lowercase();
    let quieter_already = matches!(global.as_str(), "off" | "error" | "warn");
    if level.contains("async_nats") || quieter_already {
        level.to_string()
    } else {
        format!("{level},{QUIET_CLIENT}")
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `settings.level`. Calling it
/// again is harmless: the first subscriber stays.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(filter_directives(&settings.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_held_to_warn_unless_named() {
        assert_eq!(filter_directives("info"), "info,async_nats=warn");
        assert_eq!(
            filter_directives("debug,rl_v2=trace"),
            "debug,rl_v2=trace,async_nats=warn"
        );
        assert_eq!(filter_directives("error"), "error");
        assert_eq!(
            filter_directives("info,async_nats=debug"),
            "info,async_nats=debug"
        );
    }
}
