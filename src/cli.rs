//! The command line.
//!
//! Exit codes: 0 success, 1 runtime failure (broker, checkpoint, service), 2 bad usage or bad
//! settings.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use crate::service::{serve, ServeOptions};
use crate::settings::Settings;

/// Exit code of a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of bad usage or bad settings.
pub const EXIT_USAGE: u8 = 2;

/// rl-v2: the learning brain of a crypto-futures trading stack.
#[derive(Debug, Parser)]
#[command(name = "rl-v2", version, about, long_about = None)]
pub struct Cli {
    /// Settings file layered over config/default.toml (then RL_V2__SECTION__KEY variables).
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the NATS service: consume events, publish decisions, learn, checkpoint.
    ///
    /// Stops cleanly on SIGINT or SIGTERM: stops taking events, finishes those in flight,
    /// flushes publishes, writes the final checkpoint and exits 0.
    Serve {
        /// When the checkpoint is corrupt, move it aside and start empty instead of stopping.
        #[arg(long)]
        discard_corrupt_checkpoint: bool,
    },
}

fn load_settings(path: Option<&std::path::Path>) -> Result<Settings, ExitCode> {
    Settings::load(path).map_err(|e| {
        eprintln!("rl-v2: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("rl-v2: cannot start the async runtime: {e}");
            ExitCode::from(EXIT_FAILURE)
        })
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn run(cli: Cli) -> Result<(), ExitCode> {
    match cli.command {
        Command::Serve {
            discard_corrupt_checkpoint,
        } => {
            let settings = load_settings(cli.config.as_deref())?;
            crate::telemetry::init(&settings.log);
            let rt = runtime()?;
            rt.block_on(async {
                let shutdown = CancellationToken::new();
                crate::shutdown::cancel_on_signals(shutdown.clone());
                let options = ServeOptions {
                    discard_corrupt_checkpoint,
                };
                serve(settings, options, shutdown).await
            })
            .map_err(|e| {
                tracing::error!(error = %e, "rl-v2 stopped");
                eprintln!("rl-v2: {e}");
                ExitCode::from(EXIT_FAILURE)
            })
        }
    }
}
