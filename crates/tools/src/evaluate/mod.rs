//! `rl-v2 evaluate`: off-policy evaluation from outcome events. How much reward per decision
//! would another policy have earned on the trades the service logged?
//!
//! How the pieces fit:
//!
//! * [`log`] reads outcome events (a JSON Lines file, or a JetStream stream capturing
//!   `RL_V2_OUTCOME`) and groups them into trades: the meta and sizing decisions a close
//!   rewarded.
//! * [`policy`] holds the target policies: the logging policy itself (its on-policy mean), the
//!   greedy policy of a checkpoint (the current one, a replay-trained one, imported Python
//!   tables, a shadow's), uniformly random, the best constant action pair, or any policy given
//!   by its action per logged decision.
//! * [`estimate`] computes IPS, clipped IPS, self-normalised IPS and doubly robust estimates
//!   with bootstrap intervals and effective sample sizes.
//!
//! The logging policy is ε-greedy, so every allowed action keeps a propensity of at least
//! ε / |actions|: any target is supported, but one far from the logging policy is supported by
//! few decisions, which the effective sample size shows and the report warns about.

pub mod estimate;
pub mod log;
pub mod policy;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use rl_v2_core::domain::agent::AgentKind;
use rl_v2_core::engine::Engine;
use rl_v2_service::checkpoint::CheckpointStore;
use rl_v2_service::settings::Settings;

pub use estimate::{best_constant, estimate, Allowed, EstimateOptions, Interval, TargetEstimate};
pub use log::{OutcomeLog, Skipped};
pub use policy::Target;

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// The outcomes could not be read.
    #[error("cannot read outcomes from {from}: {reason}")]
    Read {
        /// The file or stream.
        from: String,
        /// What went wrong.
        reason: String,
    },
    /// A checkpoint could not be loaded.
    #[error("cannot load the checkpoint {path}: {reason}")]
    Checkpoint {
        /// Where it was looked for.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The log holds no usable outcome.
    #[error("no usable outcome in {0}")]
    Empty(String),
}

/// Where the outcomes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeSource {
    /// A JSON Lines file, one outcome event per line.
    File(PathBuf),
    /// A JetStream stream capturing the outcome subject, on `nats.url`.
    Stream(String),
}

impl std::fmt::Display for OutcomeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutcomeSource::File(p) => write!(f, "{}", p.display()),
            OutcomeSource::Stream(s) => write!(f, "stream {s}"),
        }
    }
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvaluateRequest {
    /// The outcomes.
    pub source: OutcomeSource,
    /// Checkpoints whose greedy policies to evaluate (directories or `checkpoint.json` files);
    /// empty: the one in `checkpoint.dir`, when there is one. The first is the reward model of
    /// the doubly robust estimates of the other targets.
    pub checkpoints: Vec<PathBuf>,
    /// Estimator settings.
    pub options: EstimateOptions,
}

/// The result of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvaluationReport {
    /// Where the outcomes came from.
    pub source: String,
    /// Trades (closes) in the log.
    pub trades: usize,
    /// Meta-strategy decisions in the log.
    pub meta_decisions: usize,
    /// Position-sizing decisions in the log.
    pub sizing_decisions: usize,
    /// Outcomes left out, by reason.
    pub skipped: Skipped,
    /// Estimator settings.
    pub options: EstimateOptions,
    /// The checkpoint whose Q-values are the reward model of non-greedy targets' DR estimates.
    pub reward_model: Option<String>,
    /// Estimates per target, per agent.
    pub targets: Vec<TargetEstimate>,
    /// What the figures cannot say (thin support, no reward model, skipped outcomes).
    pub warnings: Vec<String>,
}

impl EvaluationReport {
    /// The estimates of the target named `name`.
    pub fn target(&self, name: &str) -> Option<&TargetEstimate> {
        self.targets.iter().find(|t| t.target == name)
    }
}

/// Estimates `targets` on `log`. `model` (named) is the reward model of the DR estimates of
/// targets that are not a checkpoint's greedy policy.
pub fn evaluate(
    source: &str,
    log: &OutcomeLog,
    targets: &[Target],
    allowed: &Allowed,
    model: Option<(&str, &Engine)>,
    options: &EstimateOptions,
) -> EvaluationReport {
    let targets = estimate(log, targets, allowed, model.map(|(_, e)| e), options);
    let mut warnings = Vec::new();
    for t in &targets {
        for a in t.agents.iter().filter(|a| a.thin_support) {
            warnings.push(format!(
                "support too thin for {} ({}): effective sample size {:.0} (threshold {}), mean weight {:.2} [{:.2}, {:.2}] (1 when supported); its figures say little",
                t.target,
                a.agent.as_str(),
                a.ess,
                options.min_ess,
                a.mean_weight.value,
                a.mean_weight.low,
                a.mean_weight.high,
            ));
        }
    }
    if model.is_none() {
        warnings
            .push("no checkpoint: no greedy target, and no DR estimate but the greedy ones".into());
    }
    let s = &log.skipped;
    let skipped = s.unreadable + s.no_propensity + s.invalid + s.not_applied + s.duplicate;
    if skipped > 0 {
        warnings.push(format!("{skipped} outcomes left out (see skipped)"));
    }
    EvaluationReport {
        source: source.to_string(),
        trades: log.trades.len(),
        meta_decisions: log.decisions(AgentKind::MetaStrategy),
        sizing_decisions: log.decisions(AgentKind::PositionSizing),
        skipped: log.skipped.clone(),
        options: options.clone(),
        reward_model: model.map(|(name, _)| name.to_string()),
        targets,
        warnings,
    }
}

/// The standard targets: the logging policy, each checkpoint's greedy policy, uniformly
/// random, and the best supported constant action pair (chosen on half the trades, estimated
/// on the other half).
pub fn standard_targets(
    log: &OutcomeLog,
    checkpoints: &[(String, Engine)],
    allowed: &Allowed,
    min_ess: f64,
) -> Vec<Target> {
    let mut targets = vec![Target::Logging];
    targets.extend(checkpoints.iter().map(|(name, engine)| Target::Greedy {
        name: name.clone(),
        engine: Box::new(engine.clone()),
    }));
    targets.push(Target::Uniform);
    if let Some((meta, sizing)) = best_constant(log, allowed, min_ess) {
        targets.push(Target::HeldOut(Box::new(Target::Constant { meta, sizing })));
    }
    targets
}

/// The actions the settings allow each agent.
pub fn allowed_by(settings: &Settings) -> Allowed {
    let engine = Engine::new(settings.engine_config());
    Allowed {
        meta: engine.state().meta.allowed().clone(),
        sizing: engine.state().sizing.allowed().clone(),
    }
}

/// Loads a checkpoint (a directory, or a `checkpoint.json` in one) with the settings.
pub fn load_checkpoint(settings: &Settings, path: &Path) -> Result<Engine, EvaluateError> {
    let dir = if path.is_file() {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        path.to_path_buf()
    };
    let failed = |reason: String| EvaluateError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    CheckpointStore::new(&dir)
        .load(&settings.engine_config())
        .map_err(|e| failed(e.to_string()))?
        .ok_or_else(|| failed("no checkpoint there".into()))
}

/// Reads the outcomes of `source`; a stream is read on the settings' `nats.url`.
pub async fn read(
    source: &OutcomeSource,
    settings: &Settings,
) -> Result<OutcomeLog, EvaluateError> {
    match source {
        OutcomeSource::File(path) => log::read_jsonl(path),
        OutcomeSource::Stream(stream) => {
            let failed = |reason: String| EvaluateError::Read {
                from: format!("stream {stream}"),
                reason,
            };
            let options = rl_v2_service::connect::options(&settings.nats, None)
                .await
                .map_err(|e| failed(e.to_string()))?
                .name("rl-v2-evaluate");
            let servers = rl_v2_service::credentials::connect_urls(&settings.nats);
            let client = options
                .connect(servers)
                .await
                .map_err(|e| failed(format!("{}: {e}", settings.nats.redacted_url())))?;
            log::read_stream(&client, stream).await
        }
    }
}

/// `rl-v2 evaluate`: reads the outcomes, loads the checkpoints and estimates the standard
/// targets.
pub async fn run(
    settings: &Settings,
    request: &EvaluateRequest,
) -> Result<EvaluationReport, EvaluateError> {
    let log = read(&request.source, settings).await?;
    if log.trades.is_empty() {
        return Err(EvaluateError::Empty(request.source.to_string()));
    }
    let mut paths = request.checkpoints.clone();
    if paths.is_empty()
        && CheckpointStore::new(&settings.checkpoint.dir)
            .checkpoint_path()
            .is_file()
    {
        paths.push(settings.checkpoint.dir.clone());
    }
    let checkpoints = paths
        .iter()
        .map(|p| Ok((p.display().to_string(), load_checkpoint(settings, p)?)))
        .collect::<Result<Vec<_>, EvaluateError>>()?;
    let allowed = allowed_by(settings);
    let targets = standard_targets(&log, &checkpoints, &allowed, request.options.min_ess);
    let model = checkpoints.first().map(|(n, e)| (n.as_str(), e));
    let mut report = evaluate(
        &request.source.to_string(),
        &log,
        &targets,
        &allowed,
        model,
        &request.options,
    );
    if !targets.iter().any(|t| matches!(t, Target::HeldOut(_))) {
        report.warnings.push(format!(
            "no constant action pair is supported (effective sample size >= {} and mean weight near 1 on half the trades): the log explores too little for one",
            request.options.min_ess
        ));
    }
    Ok(report)
}

/// The report as tables, one per agent.
pub fn render(report: &EvaluationReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "outcomes: {} trades from {} ({} meta, {} sizing decisions)",
        report.trades, report.source, report.meta_decisions, report.sizing_decisions
    );
    let _ = writeln!(
        out,
        "value per decision (mean reward), bootstrap 95 % intervals ({} resamples, seed {}); clip {}; DR reward model: {}",
        report.options.bootstrap,
        report.options.seed,
        report.options.clip,
        report.reward_model.as_deref().unwrap_or("none")
    );
    for agent in estimate::AGENTS {
        let _ = writeln!(out, "\n{}", agent.as_str());
        let _ = writeln!(
            out,
            "{:<44} {:>9} {:>8}  {:<24} {:<24} {:<24} {:<24}",
            "target", "ESS", "matched", "IPS", "clipped IPS", "SNIPS", "DR"
        );
        for t in &report.targets {
            let Some(a) = t.agent(agent) else { continue };
            let dr = a.dr.map_or("-".to_string(), |i| cell(&i));
            let _ = writeln!(
                out,
                "{:<44} {:>9.0} {:>8}  {:<24} {:<24} {:<24} {:<24}{}",
                t.target,
                a.ess,
                a.matched,
                cell(&a.ips),
                cell(&a.clipped_ips),
                cell(&a.snips),
                dr,
                if a.thin_support { "  (thin)" } else { "" }
            );
        }
    }
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

fn cell(i: &Interval) -> String {
    format!("{:.2} [{:.2}, {:.2}]", i.value, i.low, i.high)
}

/// The allowed actions of an engine (for callers that evaluate without settings).
pub fn allowed_of(engine: &Engine) -> Allowed {
    Allowed {
        meta: engine.state().meta.allowed().clone(),
        sizing: engine.state().sizing.allowed().clone(),
    }
}

/// The command line of `rl-v2 evaluate`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvaluateArgs {
    /// Outcome events, one JSON object per line (as `simulate --outcomes` writes them, or a dump
    /// of the outcome subject).
    #[arg(
        value_name = "FILE",
        required_unless_present = "stream",
        conflicts_with = "stream"
    )]
    pub file: Option<PathBuf>,
    /// Read the outcomes from this JetStream stream (one capturing `subjects.outcome`) on
    /// `nats.url` instead of a file.
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// Checkpoint whose greedy policy to evaluate (a directory or its checkpoint.json);
    /// repeatable. Default: the one in checkpoint.dir. The first is the reward model of the
    /// other targets' DR estimates.
    #[arg(long = "checkpoint", value_name = "PATH")]
    pub checkpoints: Vec<PathBuf>,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = EstimateOptions::default().bootstrap)]
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = EstimateOptions::default().seed)]
    pub seed: u64,
    /// Largest importance weight of clipped IPS.
    #[arg(long, default_value_t = EstimateOptions::default().clip)]
    pub clip: f64,
    /// Effective sample size below which a target's support counts as too thin.
    #[arg(long, default_value_t = EstimateOptions::default().min_ess)]
    pub min_ess: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl EvaluateArgs {
    /// The request, or what is wrong with the arguments.
    pub fn request(&self) -> Result<EvaluateRequest, String> {
        if self.bootstrap == 0 {
            return Err("--bootstrap must be at least 1".into());
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return Err("--clip must be a positive number".into());
        }
        if !(self.min_ess.is_finite() && self.min_ess >= 0.0) {
            return Err("--min-ess must be a number >= 0".into());
        }
        let source = match (&self.file, &self.stream) {
            (_, Some(stream)) => OutcomeSource::Stream(stream.clone()),
            (Some(file), None) => OutcomeSource::File(file.clone()),
            (None, None) => return Err("give an outcome FILE or --stream NAME".into()),
        };
        Ok(EvaluateRequest {
            source,
            checkpoints: self.checkpoints.clone(),
            options: EstimateOptions {
                bootstrap: self.bootstrap,
                seed: self.seed,
                clip: self.clip,
                min_ess: self.min_ess,
                joint: true,
            },
        })
    }
}
