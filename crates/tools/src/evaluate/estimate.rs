//! The estimators: inverse propensity scoring (IPS), clipped IPS, self-normalised IPS (SNIPS)
//! and doubly robust (DR), each with a percentile bootstrap 95 % interval over trades, and the
//! effective sample size of the importance weights.
//!
//! Per agent and trade t with the agent's decision (state s, action a, logged propensity μ,
//! reward r), and w = the product over the trade's decisions of π(a | s) / μ:
//!
//! * IPS = mean of w·r; clipped IPS = mean of min(w, M)·r;
//! * SNIPS = Σ w·r / Σ w;
//! * DR = mean of Σ_a' π(a' | s)·q̂(s, a') + w·(r − q̂(s, a)), with q̂ the reward model (the
//!   target checkpoint's Q-values);
//! * ESS = (Σ w)² / Σ w².
//!
//! The bootstrap resamples whole trades with a seeded ChaCha8 generator, so the same log and
//! options always give the same intervals.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use rl_v2_core::domain::agent::AgentKind;
use rl_v2_core::domain::qlearning::ActionSet;
use rl_v2_core::engine::Engine;

use super::log::OutcomeLog;
use super::policy::Target;

/// The two agents, in report order.
pub const AGENTS: [AgentKind; 2] = [AgentKind::MetaStrategy, AgentKind::PositionSizing];

/// How to estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EstimateOptions {
    /// Bootstrap resamples.
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    pub seed: u64,
    /// Largest weight clipped IPS uses.
    pub clip: f64,
    /// Effective sample size below which an estimate is flagged as too thinly supported.
    pub min_ess: f64,
    /// Weigh a trade by both agents' ratios (the target chooses both actions); false: each
    /// agent by its own ratio, the other agent's action taken as part of its environment.
    pub joint: bool,
}

impl Default for EstimateOptions {
    fn default() -> Self {
        Self {
            bootstrap: 200,
            seed: 1,
            clip: 100.0,
            min_ess: 100.0,
            joint: true,
        }
    }
}

/// The actions each agent may choose, as the evaluated engine would: what the uniformly random
/// target draws from.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// Meta-strategy actions.
    pub meta: ActionSet,
    /// Position-sizing actions.
    pub sizing: ActionSet,
}

impl Allowed {
    fn of(&self, agent: AgentKind) -> &ActionSet {
        match agent {
            AgentKind::MetaStrategy => &self.meta,
            AgentKind::PositionSizing => &self.sizing,
        }
    }
}

/// A point estimate with its bootstrap 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// The estimate on the whole log.
    pub value: f64,
    /// 2.5th percentile of the bootstrap.
    pub low: f64,
    /// 97.5th percentile of the bootstrap.
    pub high: f64,
}

impl Interval {
    /// Whether `x` lies in the interval.
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// Every estimator's figure for one agent under one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentEstimate {
    /// The agent.
    pub agent: AgentKind,
    /// Logged decisions of the agent.
    pub decisions: usize,
    /// Decisions with a non-zero weight (the target could have taken the logged actions).
    pub matched: usize,
    /// Effective sample size of the weights.
    pub ess: f64,
    /// Mean importance weight. Its expectation under the logging policy is 1 for every
    /// target; an interval that excludes 1 means the target puts mass where the log has (almost)
    /// no decisions, which no estimator can see.
    pub mean_weight: Interval,
    /// Whether `ess` is below the threshold or `mean_weight`'s interval excludes 1: the
    /// figures say little.
    pub thin_support: bool,
    /// Inverse propensity scoring.
    pub ips: Interval,
    /// IPS with weights clipped at `clip`.
    pub clipped_ips: Interval,
    /// Self-normalised IPS.
    pub snips: Interval,
    /// Doubly robust, with the reward model's Q-values; `None` without a reward model.
    pub dr: Option<Interval>,
}

/// All agents' estimates for one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetEstimate {
    /// The target's name.
    pub target: String,
    /// Per agent (agents without logged decisions are left out).
    pub agents: Vec<AgentEstimate>,
}

impl TargetEstimate {
    /// The estimate for `agent`.
    pub fn agent(&self, agent: AgentKind) -> Option<&AgentEstimate> {
        self.agents.iter().find(|a| a.agent == agent)
    }
}

/// Per-trade terms of one agent under one target; `None` where the trade has no decision of
/// the agent.
struct Terms {
    /// (w, r, dr term) by trade.
    rows: Vec<Option<(f64, f64, f64)>>,
    has_model: bool,
}

/// The product over the trade's decisions of π / μ.
fn trade_weight(
    target: &Target,
    t: &super::log::Trade,
    allowed: &Allowed,
    only: Option<AgentKind>,
) -> f64 {
    if matches!(target, Target::Logging) {
        return 1.0;
    }
    AGENTS
        .iter()
        .filter(|&&a| only.is_none_or(|o| o == a))
        .filter_map(|&agent| {
            t.of(agent)
                .map(|d| target.probability(agent, d, allowed.of(agent)) / d.propensity)
        })
        .product()
}

fn terms(
    log: &OutcomeLog,
    target: &Target,
    agent: AgentKind,
    allowed: &Allowed,
    model: Option<&Engine>,
    joint: bool,
) -> Terms {
    let model = match target {
        Target::Greedy { engine, .. } => Some(engine.as_ref()),
        _ => model,
    };
    let rows = log
        .trades
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if !target.uses_trade(i) {
                return None;
            }
            let d = t.of(agent)?;
            let w = trade_weight(target, t, allowed, (!joint).then_some(agent));
            let dr = match (target, model) {
                (Target::Logging, _) | (_, None) => w * d.reward,
                (_, Some(m)) => {
                    let q = super::policy::agent_of(m, agent).q();
                    let q_logged = q.q(&d.state_key, d.action);
                    target.expected(agent, d, allowed.of(agent), m) + w * (d.reward - q_logged)
                }
            };
            Some((w, d.reward, dr))
        })
        .collect();
    Terms {
        rows,
        has_model: model.is_some() && !matches!(target, Target::Logging),
    }
}

/// Sums of one resample (or of the whole log, every count 1).
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    n: f64,
    w: f64,
    w2: f64,
    wr: f64,
    clipped: f64,
    dr: f64,
}

impl Sums {
    fn of(terms: &Terms, counts: Option<&[u32]>, clip: f64) -> Self {
        let mut s = Sums::default();
        for (i, row) in terms.rows.iter().enumerate() {
            let Some((w, r, dr)) = *row else { continue };
            let c = counts.map_or(1.0, |c| f64::from(c[i]));
            if c == 0.0 {
                continue;
            }
            s.n += c;
            s.w += c * w;
            s.w2 += c * w * w;
            s.wr += c * w * r;
            s.clipped += c * w.min(clip) * r;
            s.dr += c * dr;
        }
        s
    }

    /// IPS, clipped IPS, SNIPS, DR, mean weight.
    fn estimates(&self) -> [f64; 5] {
        let n = self.n.max(1.0);
        let snips = if self.w > 0.0 {
            self.wr / self.w
        } else {
            f64::NAN
        };
        [
            self.wr / n,
            self.clipped / n,
            snips,
            self.dr / n,
            self.w / n,
        ]
    }
}

/// The 2.5th and 97.5th percentiles of the finite values.
fn percentiles(mut values: Vec<f64>) -> (f64, f64) {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    values.sort_by(f64::total_cmp);
    let at =
        |q: f64| values[((q * (values.len() - 1) as f64).round() as usize).min(values.len() - 1)];
    (at(0.025), at(0.975))
}

/// Estimates every target's value per agent.
pub fn estimate(
    log: &OutcomeLog,
    targets: &[Target],
    allowed: &Allowed,
    model: Option<&Engine>,
    options: &EstimateOptions,
) -> Vec<TargetEstimate> {
    let all: Vec<Vec<(AgentKind, Terms)>> = targets
        .iter()
        .map(|target| {
            AGENTS
                .iter()
                .filter(|&&agent| log.decisions(agent) > 0)
                .map(|&agent| {
                    (
                        agent,
                        terms(log, target, agent, allowed, model, options.joint),
                    )
                })
                .collect()
        })
        .collect();
    // Bootstrap: the same resamples of trades for every target and agent.
    let n = log.trades.len();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut draws: Vec<Vec<Vec<[f64; 5]>>> = all
        .iter()
        .map(|agents| vec![Vec::with_capacity(options.bootstrap); agents.len()])
        .collect();
    let mut counts = vec![0u32; n];
    for _ in 0..options.bootstrap {
        counts.iter_mut().for_each(|c| *c = 0);
        for _ in 0..n {
            counts[rng.random_range(0..n)] += 1;
        }
        for (t, agents) in all.iter().enumerate() {
            for (a, (_, terms)) in agents.iter().enumerate() {
                let sums = Sums::of(terms, Some(&counts), options.clip);
                draws[t][a].push(sums.estimates());
            }
        }
    }
    targets
        .iter()
        .zip(all.iter().zip(draws))
        .map(|(target, (agents, draws))| TargetEstimate {
            target: target.name(),
            agents: agents
                .iter()
                .zip(draws)
                .map(|((agent, terms), draws)| summarise(*agent, terms, &draws, options))
                .collect(),
        })
        .collect()
}

fn summarise(
    agent: AgentKind,
    terms: &Terms,
    draws: &[[f64; 5]],
    options: &EstimateOptions,
) -> AgentEstimate {
    let whole = Sums::of(terms, None, options.clip);
    let point = whole.estimates();
    let interval = |k: usize| {
        let (low, high) = percentiles(draws.iter().map(|d| d[k]).collect());
        Interval {
            value: point[k],
            low,
            high,
        }
    };
    let ess = if whole.w2 > 0.0 {
        whole.w * whole.w / whole.w2
    } else {
        0.0
    };
    AgentEstimate {
        agent,
        decisions: whole.n as usize,
        matched: terms
            .rows
            .iter()
            .filter(|r| r.is_some_and(|(w, _, _)| w > 0.0))
            .count(),
        ess,
        thin_support: ess < options.min_ess || !interval(4).contains(1.0),
        mean_weight: interval(4),
        ips: interval(0),
        clipped_ips: interval(1),
        snips: interval(2),
        dr: terms.has_model.then(|| interval(3)),
    }
}

/// Weighted sums of one agent under a constant target.
#[derive(Debug, Default, Clone, Copy)]
struct Agg {
    w: f64,
    w2: f64,
    wr: f64,
}

impl Agg {
    fn add(&mut self, w: f64, r: f64) {
        self.w += w;
        self.w2 += w * w;
        self.wr += w * r;
    }

    fn merged(self, other: Option<&Agg>) -> Agg {
        let o = other.copied().unwrap_or_default();
        Agg {
            w: self.w + o.w,
            w2: self.w2 + o.w2,
            wr: self.wr + o.wr,
        }
    }
}

/// The constant (meta, sizing) pair with the highest sum of both agents' SNIPS values on the
/// even-numbered trades, among those whose effective sample size there reaches `min_ess` for
/// every agent in the log; `None` when no pair does. Estimate it as a [`Target::HeldOut`], on
/// the odd-numbered trades.
pub fn best_constant(log: &OutcomeLog, allowed: &Allowed, min_ess: f64) -> Option<(usize, usize)> {
    use std::collections::BTreeMap;
    // A constant target gives weight 1/μ to a decision whose action it is, 0 to any other.
    let mut both: BTreeMap<(usize, usize), [Agg; 2]> = BTreeMap::new();
    let mut meta_only: BTreeMap<usize, Agg> = BTreeMap::new();
    let mut sizing_only: BTreeMap<usize, Agg> = BTreeMap::new();
    let mut n = [0.0f64; 2];
    for t in log.trades.iter().step_by(2) {
        n[0] += f64::from(u8::from(t.meta.is_some()));
        n[1] += f64::from(u8::from(t.sizing.is_some()));
        match (&t.meta, &t.sizing) {
            (Some(m), Some(s)) => {
                let w = 1.0 / (m.propensity * s.propensity);
                let e = both.entry((m.action, s.action)).or_default();
                e[0].add(w, m.reward);
                e[1].add(w, s.reward);
            }
            (Some(m), None) => meta_only
                .entry(m.action)
                .or_default()
                .add(1.0 / m.propensity, m.reward),
            (None, Some(s)) => sizing_only
                .entry(s.action)
                .or_default()
                .add(1.0 / s.propensity, s.reward),
            (None, None) => {}
        }
    }
    let present = [
        log.decisions(AgentKind::MetaStrategy) > 0,
        log.decisions(AgentKind::PositionSizing) > 0,
    ];
    let mut best: Option<((usize, usize), f64)> = None;
    for &cm in allowed.meta.indices() {
        for &cs in allowed.sizing.indices() {
            let pair = both.get(&(cm, cs)).copied().unwrap_or_default();
            let aggs = [
                pair[0].merged(meta_only.get(&cm)),
                pair[1].merged(sizing_only.get(&cs)),
            ];
            let mut value = 0.0;
            let mut supported = true;
            for ((agg, present), n) in aggs.iter().zip(present).zip(n) {
                if !present {
                    continue;
                }
                let ess = if agg.w2 > 0.0 {
                    agg.w * agg.w / agg.w2
                } else {
                    0.0
                };
                // A supported target's weights average 1 (their expectation under the
                // logging policy); far from it, the pair's mass sits on trades not logged.
                let mean_weight = agg.w / n.max(1.0);
                supported &= ess >= min_ess && (0.5..=2.0).contains(&mean_weight);
                value += agg.wr / agg.w.max(f64::MIN_POSITIVE);
            }
            if supported && best.is_none_or(|(_, v)| value > v) {
                best = Some(((cm, cs), value));
            }
        }
    }
    best.map(|(pair, _)| pair)
}
