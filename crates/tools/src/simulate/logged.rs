//! Training with an outcome log, and the true values the off-policy evaluation is checked
//! against.
//!
//! [`run_logged`] is [`super::run`] that also hands every training Q-update to the caller as
//! the [`OutcomeEvent`] the service would publish, with what the simulator knows about the
//! trade (its regime and the volatility of its window: what the oracle decides on). The
//! exploring training engine is the logging policy; `rl-v2 evaluate` estimates other policies'
//! values from that log, and the simulator measures the truth by playing them on its
//! evaluation stretch ([`LoggedRun::score_constant`]; the learned greedy, uniformly random and
//! oracle policies are in the report already).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use rl_v2_core::audit::Update;
use rl_v2_core::domain::market::Regime;
use rl_v2_core::engine::Engine;
use rl_v2_core::outcome::OutcomeEvent;

use super::market::{Market, Scenario};
use super::oracle::Oracle;
use super::SimulationReport;
use super::{play_evaluation, Desk, Policy, PolicyScore, SimulateError, SimulateOptions};

/// Where the training loop hands each Q-update of a close, with the close's scenario.
pub type Sink<'a> = &'a mut dyn FnMut(&Update, &Scenario);

/// What the simulator knows about a logged trade that the engine does not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TradeContext {
    /// The regime the symbol was in.
    pub regime: Regime,
    /// Volatility of the signal's price window.
    pub volatility: f64,
}

/// A finished simulation whose training was logged.
pub struct LoggedRun {
    /// The report, as [`super::run`] gives it.
    pub report: SimulationReport,
    /// The trained engine (its Q-tables are the learned greedy policy's).
    pub engine: Engine,
    options: SimulateOptions,
    /// Rounds training played: the evaluation's clock starts after them.
    rounds: u64,
}

/// Trains and evaluates as [`super::run`] does, handing each training Q-update to
/// `on_outcome` as an [`OutcomeEvent`] with its trade's [`TradeContext`].
pub fn run_logged(
    options: &SimulateOptions,
    on_outcome: &mut dyn FnMut(&OutcomeEvent, &TradeContext),
) -> Result<LoggedRun, SimulateError> {
    let mut sink = |update: &Update, s: &Scenario| {
        let context = TradeContext {
            regime: s.regime,
            volatility: s.volatility,
        };
        on_outcome(&OutcomeEvent::of(update), &context);
    };
    let (report, engine, rounds) = super::run_with(options, Some(&mut sink))?;
    Ok(LoggedRun {
        report,
        engine,
        options: options.clone(),
        rounds,
    })
}

/// [`run_logged`] writing the outcomes to `path` as JSON Lines (what a stream capturing
/// `RL_V2_OUTCOME` holds, one event per line).
pub fn run_to_file(options: &SimulateOptions, path: &Path) -> Result<LoggedRun, SimulateError> {
    let failed = |e: std::io::Error| SimulateError::Outcomes {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut out = BufWriter::new(File::create(path).map_err(failed)?);
    let mut error = None;
    let run = run_logged(options, &mut |o, _| {
        if error.is_none() {
            let written = serde_json::to_writer(&mut out, o)
                .map_err(std::io::Error::other)
                .and_then(|()| out.write_all(b"\n"));
            error = written.err();
        }
    })?;
    match error {
        Some(e) => Err(failed(e)),
        None => out.flush().map(|()| run).map_err(failed),
    }
}

/// Trains an engine on the market of `options` as [`super::run`] does, without the evaluation:
/// a policy to evaluate on another run's log.
pub fn train_only(options: &SimulateOptions) -> Result<Engine, SimulateError> {
    options.validate()?;
    let market = Market::new(options.seed, &options.symbols);
    let mut engine = Engine::new(options.engine.clone());
    let progress = indicatif::ProgressBar::hidden();
    super::train(&market, &mut engine, options, &progress, None);
    Ok(engine)
}

impl LoggedRun {
    /// The true value of always choosing `meta` and `sizing`: the policy played on the same
    /// evaluation stretch as the report's policies.
    pub fn score_constant(&self, meta: usize, sizing: usize) -> PolicyScore {
        let market = Market::new(self.options.seed, &self.options.symbols);
        let mut desk = Desk::new(&market, &self.engine, self.rounds);
        let progress = indicatif::ProgressBar::hidden();
        let cycles = self.options.evaluation_cycles;
        play_evaluation(
            &market,
            &mut desk,
            Policy::Constant(meta, sizing),
            cycles,
            &progress,
        )
    }

    /// The true value of `engine`'s greedy policy (a frozen copy: ε = 0, learning nothing),
    /// played on the same evaluation stretch as the report's policies: for a policy trained
    /// elsewhere, evaluated off-policy on this run's log.
    pub fn score_greedy(&self, engine: &Engine) -> PolicyScore {
        let market = Market::new(self.options.seed, &self.options.symbols);
        let mut frozen = super::frozen(engine);
        let mut desk = Desk::new(&market, &frozen, self.rounds);
        let progress = indicatif::ProgressBar::hidden();
        play_evaluation(
            &market,
            &mut desk,
            Policy::Engine(&mut frozen),
            self.options.evaluation_cycles,
            &progress,
        )
    }

    /// The oracle's tables, for its choice on each logged trade ([`Oracle::choose`] with the
    /// engine's allowed actions, see [`Self::allowed`]).
    pub fn oracle(&self) -> Oracle {
        Oracle::new()
    }

    /// The actions each agent may choose: (meta, sizing).
    pub fn allowed(&self) -> (Vec<usize>, Vec<usize>) {
        let state = self.engine.state();
        (
            state.meta.allowed().indices().to_vec(),
            state.sizing.allowed().indices().to_vec(),
        )
    }
}
