//! The command line. Every subcommand is a thin wrapper around a library function.
//!
//! Exit codes, for scripts: 0 success (for `health`: the service answered; for `control`: the
//! service confirmed); 1 a runtime failure (broker, checkpoint, file, service; for `health`: no
//! answer; for `control`: no confirmation in time or the publish refused); 2 bad usage or bad
//! settings.

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use rl_v2_core::engine::Engine;
use rl_v2_service::checkpoint::{import_python_tables, CheckpointStore};
use rl_v2_service::settings::Settings;
use rl_v2_service::{serve, ServeOptions};

/// Exit code of a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of bad usage or bad settings.
pub const EXIT_USAGE: u8 = 2;

/// rl-v2: the learning brain of a crypto-futures trading stack.
///
/// Two tabular Q-learning agents (meta strategy, position sizing) learn from PREDICTION_GENERATED,
/// TRADE_EXECUTED and POSITION_CLOSED events on NATS. Settings come from config/default.toml,
/// the --config file, then RL_V2__SECTION__KEY environment variables.
/// Exit codes: 0 success, 1 failure, 2 bad usage or settings.
#[derive(Debug, Parser)]
#[command(name = "rl-v2", version, about, long_about)]
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
    /// Loads the checkpoint from checkpoint.dir (or imports Python-format Q-tables found there),
    /// connects to nats.url (retrying), and serves until SIGINT or SIGTERM: then it stops taking
    /// events, finishes those in flight, flushes publishes, writes the final checkpoint and
    /// exits 0. Exits 1 when it cannot start (corrupt checkpoint, no JetStream in jetstream
    /// mode, a stream behind the checkpoint) and 2 on bad settings.
    Serve {
        /// When the checkpoint is corrupt, move it aside and start empty instead of stopping.
        #[arg(long)]
        discard_corrupt_checkpoint: bool,
    },
    /// Watch rl-v2 learn on a seeded synthetic market: no broker needed.
    ///
    /// Several symbols change regime over time; each regime has a known best strategy and each
    /// volatility level a known best leverage. The market's events go through the engine exactly
    /// as the service feeds it, the engine's decisions decide each trade's P&L, and after
    /// training the learned greedy policy is evaluated against an untrained engine, a
    /// uniformly random policy and the oracle (the best expected P&L for what the engine sees)
    /// on the same market. Prints the learning curve and the
    /// evaluation, and writes the curve as an SVG chart. Learning settings come from the
    /// settings files (learning.seed is the exploration seed). Exits 0, or 2 on bad options.
    Simulate {
        /// Seed of the market (regimes, prices, noise).
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Trades to train on.
        #[arg(long, default_value_t = rl_v2_tools::simulate::DEFAULT_CYCLES)]
        cycles: usize,
        /// Trades each policy plays in the evaluation.
        #[arg(long, default_value_t = rl_v2_tools::simulate::DEFAULT_EVALUATION_CYCLES)]
        evaluation_cycles: usize,
        /// Where to write the learning-curve chart (SVG).
        #[arg(long, value_name = "FILE", default_value = "simulation.svg")]
        chart: PathBuf,
        /// Print the whole report as JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
        /// Write every training Q-update's outcome event to FILE (JSON Lines), for `evaluate`.
        #[arg(long, value_name = "FILE")]
        outcomes: Option<PathBuf>,
        /// Write the trained engine's checkpoint into DIR.
        #[arg(long, value_name = "DIR")]
        save_checkpoint: Option<PathBuf>,
    },
    /// Estimate, from outcome events, what other policies would have earned per decision.
    ///
    /// Off-policy evaluation: the logging policy (on-policy mean), the greedy policy of each
    /// checkpoint, uniformly random and the best constant action pair, by IPS, clipped IPS,
    /// self-normalised IPS and doubly robust, with bootstrap 95 % intervals, effective sample
    /// sizes and a warning when the log supports a target too thinly. Exits 1 when the outcomes
    /// or a checkpoint cannot be read, 2 on bad arguments.
    Evaluate(rl_v2_tools::evaluate::EvaluateArgs),
    /// Train offline from a recorded event log and write a checkpoint.
    ///
    /// FILE holds one JSON object per line: {"subject": "...", "payload": <raw string or
    /// object>}, optionally with "seq" and "received_at" as the transport stamped them. Starts
    /// from the checkpoint in the output directory when there is one. Exits 0 when the log was
    /// replayed (rejected events are counted, not fatal), 1 when the log or checkpoint cannot be
    /// read or written.
    Replay {
        /// The event log (JSON Lines).
        file: PathBuf,
        /// Checkpoint directory to continue from and write to (default: checkpoint.dir).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Ignore an existing checkpoint in the output directory and start empty.
        #[arg(long)]
        fresh: bool,
        /// Number lines without `seq` after the checkpoint's last_applied_seq (for a different
        /// log that continues the checkpoint's) instead of from the log's first line.
        #[arg(long)]
        after_checkpoint: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Summarise a checkpoint: states visited, updates, epsilon, pending decisions, and for the
    /// most-visited states (then imported ones) the greedy action and the top actions.
    ///
    /// Exits 1 when there is no readable checkpoint.
    Inspect {
        /// Checkpoint directory (default: checkpoint.dir).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Most-visited states to list per agent.
        #[arg(long, default_value_t = 5)]
        states: usize,
        /// Best actions to list per state.
        #[arg(long, default_value_t = 3)]
        actions: usize,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Turn the Python version's Q-table files into a checkpoint.
    ///
    /// Refuses to overwrite an existing checkpoint unless --force. Exits 1 when a file cannot be
    /// read or holds an unknown action.
    Import {
        /// meta_strategy_q_table.json of the Python version.
        #[arg(long, value_name = "FILE")]
        meta: Option<PathBuf>,
        /// position_sizing_q_table.json of the Python version.
        #[arg(long, value_name = "FILE")]
        sizing: Option<PathBuf>,
        /// Checkpoint directory to write (default: checkpoint.dir).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Overwrite an existing checkpoint.
        #[arg(long)]
        force: bool,
    },
    /// Measure rl-v2 against a bare async-nats service, side by side, in one run.
    ///
    /// Starts its own nats-server per scenario (nats-server on PATH, /usr/sbin/nats-server, or
    /// $NATS_SERVER) and runs: core mode (bare baseline, rl-v2), JetStream mode (bare JetStream
    /// baseline, rl-v2), fixed-rate latency with and without checkpoints of a large Q-table, and
    /// peak memory after a small and a large number of events. Prints Markdown tables with the
    /// ratios rl-v2 ÷ baseline. Build with --release for meaningful figures. Exits 1 when a
    /// scenario cannot run.
    Bench(BenchArgs),
    /// Operate the running service: show or change its trading state.
    ///
    /// Uses the same settings as serve (nats.url, credentials, subjects.control,
    /// service.name). halt, reduce and resume publish a command on the control subject and wait
    /// until the service reports that very command applied, then print the state it confirms.
    /// Exits 0 when confirmed, 1 when the service did not confirm in time (no service, a
    /// backlog in JetStream mode: the command is then still applied later) or the server
    /// refused the publish (only the operator user may), 2 on bad usage or settings.
    Control {
        /// What to do.
        #[command(subcommand)]
        action: ControlAction,
        /// Seconds to wait for the connection and for the confirmation.
        #[arg(long, global = true, default_value_t = 10.0)]
        timeout: f64,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Ping the running service over NATS ($SRV.PING.<service.name>): exit 0 when it answers,
    /// 1 when it does not.
    Health {
        /// Seconds to wait for the connection and for the answer.
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
    },
}

/// `rl-v2 control` actions.
#[derive(Debug, Subcommand)]
pub enum ControlAction {
    /// Print the trading state, its latest change and the refusals by reason.
    Status,
    /// HALTED: no decision is published (each prediction and trade is refused); closes still
    /// teach.
    Halt(CommandArgs),
    /// REDUCING: the sizing agent may choose only multiplier ≤ 1.0 and leverage ≤
    /// control.reducing_max_leverage; meta decisions continue.
    Reduce(CommandArgs),
    /// ACTIVE: decide normally; re-arms the circuit breakers.
    Resume(CommandArgs),
}

/// What a command says besides itself.
#[derive(Debug, clap::Args)]
pub struct CommandArgs {
    /// Why (published with the change and kept in the checkpoint).
    #[arg(long)]
    pub reason: String,
    /// Who asks (default: $USER, else nats.user).
    #[arg(long)]
    pub who: Option<String>,
}

/// `rl-v2 bench`'s options.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Events per saturation run.
    #[arg(long, default_value_t = 60_000)]
    events: u64,
    /// Symbols the load cycles over.
    #[arg(long, default_value_t = 1_000)]
    symbols: u64,
    /// Outstanding decisions allowed at saturation.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Events per second of the fixed-rate runs.
    #[arg(long, default_value_t = 6_000)]
    rate: u64,
    /// Seconds of each fixed-rate run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Symbols of the stack-shaped load.
    #[arg(long, default_value_t = 500)]
    stack_symbols: u64,
    /// Prices in each stack-shaped prediction's `market_features.price_history`.
    #[arg(long, default_value_t = 20)]
    stack_history: usize,
    /// Outstanding decisions allowed at saturation with the stack-shaped load.
    #[arg(long, default_value_t = 1_000)]
    stack_window: usize,
    /// Q-table states of the checkpoint scenario.
    #[arg(long, default_value_t = 100_000)]
    checkpoint_states: usize,
    /// Events of the small and the large memory run.
    #[arg(long, num_args = 2, value_names = ["SMALL", "LARGE"], default_values_t = [100_000u64, 1_000_000])]
    memory_events: Vec<u64>,
    /// Parts to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<rl_v2_tools::bench::Part>,
    /// Pairs of runs per comparison (figures are medians).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Table sizes (states) of the checkpoint-write memory runs.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000, 1_000_000])]
    write_memory_states: Vec<usize>,
    /// Lease TTL, in seconds, of the hot-standby failover runs.
    #[arg(long, default_value_t = 5.0)]
    failover_ttl: f64,
    /// Internal: write one checkpoint of this many states and print what it cost.
    #[arg(long, hide = true)]
    write_memory_child: Option<usize>,
    /// Internal: run the memory workload with this many events and print peak RSS.
    #[arg(long, hide = true)]
    memory_child: Option<u64>,
    /// Internal: symbols of the memory workload.
    #[arg(long, hide = true, default_value_t = 10_000)]
    symbols_memory: u64,
}

fn load_settings(path: Option<&Path>) -> Result<Settings, ExitCode> {
    Settings::load(path).map_err(|e| {
        eprintln!("rl-v2: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the async runtime: {e}")))
}

/// Prints `value` as pretty JSON when `json`, else the text `render` makes.
fn print_json_or(json: bool, value: &impl serde::Serialize, render: impl FnOnce() -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        print!("{}", render());
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("rl-v2: {message}");
    ExitCode::from(EXIT_FAILURE)
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
    let settings = load_settings(cli.config.as_deref())?;
    match cli.command {
        Command::Serve {
            discard_corrupt_checkpoint,
        } => serve_command(settings, discard_corrupt_checkpoint),
        Command::Replay {
            file,
            out,
            fresh,
            after_checkpoint,
            json,
        } => {
            let numbering = if after_checkpoint {
                rl_v2_service::replay::Numbering::AfterCheckpoint
            } else {
                rl_v2_service::replay::Numbering::FromLog
            };
            replay(&settings, &file, out, fresh, numbering, json)
        }
        Command::Simulate {
            seed,
            cycles,
            evaluation_cycles,
            chart,
            json,
            quiet,
            outcomes,
            save_checkpoint,
        } => simulate(
            &settings,
            seed,
            cycles,
            evaluation_cycles,
            chart,
            json,
            quiet,
            (outcomes, save_checkpoint),
        ),
        Command::Evaluate(args) => evaluate(&settings, &args),
        Command::Inspect {
            dir,
            states,
            actions,
            json,
        } => inspect(&settings, dir, states, actions, json),
        Command::Import {
            meta,
            sizing,
            out,
            force,
        } => import(&settings, meta, sizing, out, force),
        Command::Bench(args) => bench_command(&settings, args),
        Command::Health { timeout } => health(&settings, timeout),
        Command::Control {
            action,
            timeout,
            json,
        } => control(&settings, action, timeout, json),
    }
}

/// `rl-v2 control`: sends a command, or reads the state, and prints what the service confirms.
fn control(
    settings: &Settings,
    action: ControlAction,
    timeout: f64,
    json: bool,
) -> Result<(), ExitCode> {
    use rl_v2_core::control::CommandKind;
    use rl_v2_service::control::{default_who, ControlClient};
    let timeout = Duration::from_secs_f64(timeout.max(0.1));
    let rt = runtime()?;
    let report = rt
        .block_on(async {
            let client = ControlClient::connect(settings, timeout).await?;
            let (kind, args) = match action {
                ControlAction::Status => return client.status(timeout).await,
                ControlAction::Halt(a) => (CommandKind::Halt, a),
                ControlAction::Reduce(a) => (CommandKind::Reduce, a),
                ControlAction::Resume(a) => (CommandKind::Resume, a),
            };
            let who = args.who.unwrap_or_else(|| default_who(settings));
            client.command(kind, &args.reason, &who, timeout).await
        })
        .map_err(fail)?;
    print_json_or(json, &report, || report.render());
    Ok(())
}

/// `rl-v2 serve`: runs the service until SIGINT or SIGTERM.
fn serve_command(settings: Settings, discard_corrupt_checkpoint: bool) -> Result<(), ExitCode> {
    rl_v2_service::telemetry::init(&settings.log);
    let rt = runtime()?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        rl_v2_service::shutdown::cancel_on_signals(shutdown.clone());
        let options = ServeOptions {
            discard_corrupt_checkpoint,
        };
        serve(settings, options, shutdown).await
    })
    .map_err(|e| {
        tracing::error!(error = %e, "rl-v2 stopped");
        fail(e)
    })
}

/// `rl-v2 simulate`: trains on the synthetic market and prints the evaluation; with `logged`
/// (an outcome file, a checkpoint directory) also writes the training outcomes and the trained
/// checkpoint.
#[allow(clippy::too_many_arguments)]
fn simulate(
    settings: &Settings,
    seed: u64,
    cycles: usize,
    evaluation_cycles: usize,
    chart: PathBuf,
    json: bool,
    quiet: bool,
    logged: (Option<PathBuf>, Option<PathBuf>),
) -> Result<(), ExitCode> {
    let options = rl_v2_tools::simulate::SimulateOptions {
        seed,
        cycles,
        evaluation_cycles,
        engine: settings.engine_config(),
        chart: Some(chart.clone()),
        progress: !quiet && !json,
        ..rl_v2_tools::simulate::SimulateOptions::default()
    };
    if let Err(e) = options.validate() {
        eprintln!("rl-v2: {e}");
        return Err(ExitCode::from(EXIT_USAGE));
    }
    let report = match logged {
        (None, None) => rl_v2_tools::simulate::run(&options).map_err(fail)?,
        (outcomes, checkpoint) => {
            simulate_logged(&options, outcomes.as_deref(), checkpoint.as_deref())?
        }
    };
    print_json_or(json, &report, || {
        format!(
            "{}\n{}\nlearning curve chart: {}\n",
            rl_v2_tools::simulate::learning_curve_table(&report),
            rl_v2_tools::simulate::summary(&report),
            chart.display()
        )
    });
    Ok(())
}

/// A simulation that writes its training outcomes and/or its trained checkpoint.
fn simulate_logged(
    options: &rl_v2_tools::simulate::SimulateOptions,
    outcomes: Option<&Path>,
    checkpoint: Option<&Path>,
) -> Result<rl_v2_tools::simulate::SimulationReport, ExitCode> {
    use rl_v2_tools::simulate::logged;
    let run = match outcomes {
        Some(path) => logged::run_to_file(options, path),
        None => logged::run_logged(options, &mut |_, _| {}),
    }
    .map_err(fail)?;
    if let Some(dir) = checkpoint {
        CheckpointStore::new(dir)
            .write(run.engine.state())
            .map_err(fail)?;
    }
    Ok(run.report)
}

/// `rl-v2 evaluate`: off-policy evaluation of other policies from outcome events.
fn evaluate(
    settings: &Settings,
    args: &rl_v2_tools::evaluate::EvaluateArgs,
) -> Result<(), ExitCode> {
    let request = args.request().map_err(|e| {
        eprintln!("rl-v2: {e}");
        ExitCode::from(EXIT_USAGE)
    })?;
    let report = runtime()?
        .block_on(rl_v2_tools::evaluate::run(settings, &request))
        .map_err(fail)?;
    print_json_or(args.json, &report, || {
        rl_v2_tools::evaluate::render(&report)
    });
    Ok(())
}

/// `rl-v2 inspect`: summarizes a checkpoint.
fn inspect(
    settings: &Settings,
    dir: Option<PathBuf>,
    states: usize,
    actions: usize,
    json: bool,
) -> Result<(), ExitCode> {
    let store = CheckpointStore::new(dir.unwrap_or(settings.checkpoint.dir.clone()));
    // Loaded with the settings, so greedy choices use the allowed actions and the
    // update semantics the service would use.
    let engine = store
        .load(&settings.engine_config())
        .map_err(fail)?
        .ok_or_else(|| fail(format!("no checkpoint in {}", store.dir().display())))?;
    let summary = rl_v2_service::inspect::summarize(engine.state(), states, actions);
    print_json_or(json, &summary, || rl_v2_service::inspect::render(&summary));
    Ok(())
}

/// `rl-v2 import`: turns the Python version's tables into a checkpoint.
fn import(
    settings: &Settings,
    meta: Option<PathBuf>,
    sizing: Option<PathBuf>,
    out: Option<PathBuf>,
    force: bool,
) -> Result<(), ExitCode> {
    if meta.is_none() && sizing.is_none() {
        eprintln!("rl-v2: import needs --meta FILE, --sizing FILE, or both");
        return Err(ExitCode::from(EXIT_USAGE));
    }
    let store = CheckpointStore::new(out.unwrap_or(settings.checkpoint.dir.clone()));
    if store.checkpoint_path().exists() && !force {
        return Err(fail(format!(
            "{} exists; pass --force to overwrite it",
            store.checkpoint_path().display()
        )));
    }
    let engine = import_python_tables(
        &settings.engine_config(),
        meta.as_deref(),
        sizing.as_deref(),
    )
    .map_err(fail)?;
    let path = store.write(engine.state()).map_err(fail)?;
    println!(
        "imported {} meta and {} sizing states into {}",
        engine.state().meta.q().states_visited(),
        engine.state().sizing.q().states_visited(),
        path.display()
    );
    Ok(())
}

/// `rl-v2 bench`: the comparison, or one of its child processes.
fn bench_command(settings: &Settings, args: BenchArgs) -> Result<(), ExitCode> {
    let BenchArgs {
        events,
        symbols,
        window,
        rate,
        seconds,
        stack_symbols,
        stack_history,
        stack_window,
        checkpoint_states,
        memory_events,
        only,
        repeat,
        json,
        memory_child,
        symbols_memory,
        write_memory_states,
        write_memory_child,
        failover_ttl,
    } = args;
    if let Some(states) = write_memory_child {
        let measured = rl_v2_tools::bench::write_memory::child(states).map_err(fail)?;
        print_json_or(true, &measured, String::new);
        return Ok(());
    }
    if let Some(n) = memory_child {
        let (rss, states) = rl_v2_tools::bench::memory_run(n, symbols_memory);
        println!("{rss} {states}");
        return Ok(());
    }
    let defaults = rl_v2_tools::bench::BenchOptions::default();
    let opts = rl_v2_tools::bench::BenchOptions {
        events,
        symbols,
        window,
        rate,
        seconds,
        stack_symbols,
        stack_history,
        stack_window,
        checkpoint_states,
        memory_events: (
            memory_events
                .first()
                .copied()
                .unwrap_or(defaults.memory_events.0),
            memory_events
                .get(1)
                .copied()
                .unwrap_or(defaults.memory_events.1),
        ),
        memory_symbols: symbols_memory,
        write_memory_states,
        parts: if only.is_empty() {
            defaults.parts.clone()
        } else {
            only
        },
        repeat,
        failover_ttl_secs: failover_ttl,
        ..defaults
    };
    bench(settings, &opts, json)
}

/// `rl-v2 bench`: measures rl-v2 against the bare baselines and prints the report.
fn bench(
    settings: &Settings,
    opts: &rl_v2_tools::bench::BenchOptions,
    json: bool,
) -> Result<(), ExitCode> {
    // The services under test log to stderr too: warnings only, unless RUST_LOG says.
    rl_v2_service::telemetry::init(&rl_v2_service::settings::LogSettings {
        format: settings.log.format,
        level: "warn".into(),
    });
    let rt = runtime()?;
    let report = rt
        .block_on(rl_v2_tools::bench::run(opts, |step| {
            eprintln!("bench: {step}")
        }))
        .map_err(fail)?;
    print_json_or(json, &report, || rl_v2_tools::bench::render(&report, opts));
    Ok(())
}

/// `rl-v2 health`: pings the running service.
fn health(settings: &Settings, timeout: f64) -> Result<(), ExitCode> {
    let timeout = Duration::from_secs_f64(timeout.max(0.1));
    let rt = runtime()?;
    match rt.block_on(rl_v2_service::health::ping(settings, timeout)) {
        Ok(pong) => {
            let state = pong
                .trading_state
                .map(|t| format!("; trading state {t}"))
                .unwrap_or_default();
            println!("{} {} ({}) is up{state}", pong.name, pong.version, pong.id);
            Ok(())
        }
        Err(e) => Err(fail(format!("unhealthy: {e}"))),
    }
}

fn replay(
    settings: &Settings,
    file: &Path,
    out: Option<PathBuf>,
    fresh: bool,
    numbering: rl_v2_service::replay::Numbering,
    json: bool,
) -> Result<(), ExitCode> {
    let store = CheckpointStore::new(out.unwrap_or(settings.checkpoint.dir.clone()));
    let config = settings.engine_config();
    let mut engine = if fresh {
        Engine::new(config)
    } else {
        store
            .load(&config)
            .map_err(fail)?
            .unwrap_or_else(|| Engine::new(config))
    };
    let log = std::fs::File::open(file).map_err(|e| fail(format!("{}: {e}", file.display())))?;
    let size = log.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = indicatif::ProgressBar::new(size).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {msg} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let reader = std::io::BufReader::new(progress.wrap_read(log));
    let summary = rl_v2_service::replay::replay(
        &mut engine,
        reader,
        &settings.subjects,
        settings.limits.max_payload_bytes,
        numbering,
        |s| {
            if s.lines % 1024 == 0 {
                progress.set_message(format!("{} events, {} updates", s.applied, s.updates));
            }
        },
    )
    .map_err(|e| fail(format!("{}: {e}", file.display())))?;
    progress.finish_and_clear();
    let path = store.write(engine.state()).map_err(fail)?;
    print_json_or(json, &summary, || {
        format!(
            "replayed {} lines: {} applied, {} rejected, {} already applied, {} foreign; {} decisions, {} updates\ncheckpoint written to {} (last_applied_seq {})\n",
            summary.lines,
            summary.applied,
            summary.rejected.values().sum::<u64>(),
            summary.already_applied,
            summary.foreign_subjects,
            summary.decisions,
            summary.updates,
            path.display(),
            engine.last_applied_seq()
        )
    });
    Ok(())
}
