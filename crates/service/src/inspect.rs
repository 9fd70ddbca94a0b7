//! A readable summary of a checkpoint: what the agents learned and what they wait for.

use serde::Serialize;

use rl_v2_core::domain::agent::{Agent, AgentKind};
use rl_v2_core::engine::{Counters, EngineState};

/// One action of a state, with its Q-value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionValue {
    /// Readable action key.
    pub action: String,
    /// Q-value.
    pub q: f64,
    /// Whether the row holds the action (it was updated there or imported); an untried action
    /// counts 0.
    pub stored: bool,
}

/// One state of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateSummary {
    /// State key.
    pub state: String,
    /// Updates applied in it since rl-v2 took over (0 for a state only imported).
    pub updates: u64,
    /// Actions its row holds.
    pub stored_actions: usize,
    /// The action a greedy decision takes in it, with the agent's allowed actions.
    pub greedy: String,
    /// Its best actions, best first.
    pub top_actions: Vec<ActionValue>,
}

/// One agent's summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentSummary {
    /// Which agent.
    pub agent: AgentKind,
    /// States with a row in the table.
    pub states_visited: usize,
    /// Q-updates applied.
    pub updates: u64,
    /// Exploration rate.
    pub epsilon: f64,
    /// The most-visited states, then (for tables imported from the Python version, which do
    /// not record visits) the states with the most stored actions.
    pub most_visited: Vec<StateSummary>,
}

/// The summary of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Checkpoint format version.
    pub format_version: u32,
    /// Last sequence applied.
    pub last_applied_seq: u64,
    /// Pending meta decisions.
    pub pending_decisions: usize,
    /// Open positions.
    pub open_positions: usize,
    /// Symbols with market context.
    pub symbols: usize,
    /// The trading state the checkpoint holds.
    pub trading_state: rl_v2_core::control::TradingState,
    /// Meta-strategy agent.
    pub meta: AgentSummary,
    /// Position-sizing agent.
    pub sizing: AgentSummary,
    /// Counters.
    pub counters: Counters,
}

fn agent_summary(agent: &Agent, states: usize, actions: usize) -> AgentSummary {
    let q = agent.q();
    let kind = agent.kind();
    let stored_count =
        |state: &String, row: &Vec<f64>| q.stored_actions(state).map_or(row.len(), <[u32]>::len);
    // Visited states first, most visits first; then states with no recorded visit (imported),
    // most stored actions first; ties in key order.
    let mut ranked_states: Vec<(&String, u64, usize)> = q
        .table()
        .iter()
        .map(|(state, row)| (state, q.visits(state), stored_count(state, row)))
        .collect();
    ranked_states.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| b.2.cmp(&a.2))
            .then_with(|| a.0.cmp(b.0))
    });
    ranked_states.truncate(states);
    let most_visited = ranked_states
        .into_iter()
        .map(|(state, updates, stored_actions)| {
            let row = q.table().get(state).cloned().unwrap_or_default();
            let is_stored = |i: usize| {
                q.stored_actions(state)
                    .is_none_or(|s| s.contains(&(i as u32)))
            };
            let mut ranked: Vec<(usize, f64)> = row.iter().copied().enumerate().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            StateSummary {
                state: state.clone(),
                updates,
                stored_actions,
                greedy: kind
                    .action_key(q.greedy(state, agent.allowed()))
                    .unwrap_or_default(),
                top_actions: ranked
                    .into_iter()
                    .take(actions)
                    .filter_map(|(i, q)| {
                        kind.action_key(i).map(|action| ActionValue {
                            action,
                            q,
                            stored: is_stored(i),
                        })
                    })
                    .collect(),
            }
        })
        .collect();
    AgentSummary {
        agent: kind,
        states_visited: q.states_visited(),
        updates: q.update_count(),
        epsilon: q.epsilon(),
        most_visited,
    }
}

/// Summarises `state`, listing the `states` most-visited states per agent with their `actions`
/// best actions.
pub fn summarize(state: &EngineState, states: usize, actions: usize) -> Summary {
    Summary {
        format_version: state.format_version,
        last_applied_seq: state.last_applied_seq,
        trading_state: state.control.state,
        pending_decisions: state.pending.len(),
        open_positions: state.positions.len(),
        symbols: state.market.len(),
        meta: agent_summary(&state.meta, states, actions),
        sizing: agent_summary(&state.sizing, states, actions),
        counters: state.counters.clone(),
    }
}

/// The summary as plain-text tables.
pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "checkpoint format {}  last_applied_seq {}  pending decisions {}  open positions {}  symbols {}  trading state {}\n",
        s.format_version, s.last_applied_seq, s.pending_decisions, s.open_positions, s.symbols, s.trading_state
    ));
    let c = &s.counters;
    out.push_str(&format!(
        "events {}  rejects {}  updates {}  refused {}  superseded {}  expired {}+{}  closes without decision {}\n",
        c.events.values().sum::<u64>(),
        c.rejects.values().sum::<u64>(),
        c.updates,
        c.refused_updates,
        c.superseded_pending,
        c.expired_pending,
        c.expired_positions,
        c.closes_without_decision
    ));
    for a in [&s.meta, &s.sizing] {
        out.push_str(&format!(
            "\n{}: {} states, {} updates, epsilon {:.4}\n",
            a.agent.as_str(),
            a.states_visited,
            a.updates,
            a.epsilon
        ));
        if a.most_visited.is_empty() {
            out.push_str("  (nothing learned yet)\n");
            continue;
        }
        let width = a
            .most_visited
            .iter()
            .map(|v| v.state.len())
            .max()
            .unwrap_or(5)
            .max(5);
        out.push_str(&format!(
            "  {:<width$}  {:>7}  {:>6}  greedy; top actions (Q, * = untried)\n",
            "state", "updates", "stored"
        ));
        for v in &a.most_visited {
            let actions: Vec<String> = v
                .top_actions
                .iter()
                .map(|x| {
                    format!(
                        "{} ({:.4}{})",
                        x.action,
                        x.q,
                        if x.stored { "" } else { "*" }
                    )
                })
                .collect();
            out.push_str(&format!(
                "  {:<width$}  {:>7}  {:>6}  {}; {}\n",
                v.state,
                v.updates,
                v.stored_actions,
                v.greedy,
                actions.join(", ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rl_v2_core::engine::{Engine, EngineConfig};
    use rl_v2_core::event::EventKind;

    #[test]
    fn summary_lists_most_visited_states_with_their_best_actions() {
        let mut e = Engine::new(EngineConfig::default());
        let mut seq = 0;
        let mut feed = |kind, raw: &str| {
            seq += 1;
            e.ingest(seq, kind, raw.as_bytes(), 0.0, 65536);
        };
        for _ in 0..3 {
            feed(
                EventKind::PredictionGenerated,
                r#"{"symbol":"A","confidence":0.9}"#,
            );
            feed(EventKind::TradeExecuted, r#"{"symbol":"A"}"#);
            feed(EventKind::PositionClosed, r#"{"symbol":"A","pnl_pct":2}"#);
        }
        let s = summarize(e.state(), 5, 2);
        assert_eq!(s.last_applied_seq, 9);
        assert_eq!(s.meta.updates, 3);
        let visited: u64 = s.meta.most_visited.iter().map(|v| v.updates).sum();
        assert_eq!(visited, 3);
        let top = &s.meta.most_visited[0];
        assert_eq!(top.top_actions.len(), 2);
        assert!(top.top_actions[0].q >= top.top_actions[1].q);
        assert!(top.top_actions[0].q > 0.0);
        let text = render(&s);
        assert!(text.contains("meta_strategy: ") && text.contains(&top.state));
        assert_eq!(top.greedy, top.top_actions[0].action);
    }

    #[test]
    fn imported_states_are_listed_with_their_greedy_action() {
        let mut state = Engine::new(EngineConfig::default()).state().clone();
        let q = state.meta.q_mut();
        q.insert_stored("few".into(), &[(3, -0.5)]).unwrap();
        q.insert_stored("many".into(), &[(0, -0.2), (1, 0.4)])
            .unwrap();
        let s = summarize(&state, 5, 2);
        let listed: Vec<&str> = s
            .meta
            .most_visited
            .iter()
            .map(|v| v.state.as_str())
            .collect();
        assert_eq!(listed, ["many", "few"]);
        let many = &s.meta.most_visited[0];
        assert_eq!((many.updates, many.stored_actions), (0, 2));
        assert_eq!(many.greedy, "dual_momentum|lstm|0.75");
        // Every untried action counts 0, above the stored -0.5: the greedy choice is action 0.
        let few = &s.meta.most_visited[1];
        assert_eq!(few.greedy, "dual_momentum|lstm|0.5");
        assert!(!few.top_actions[0].stored);
        assert!(render(&s).contains("(0.0000*)"));
    }
}
