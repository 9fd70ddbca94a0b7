//! Q-tables in the Python version's file format: what `meta_strategy_q_table.json` and
//! `position_sizing_q_table.json` hold, written so that the Python version reads them as its own
//! and read whether the Python version or an earlier rl-v2 wrote them.
//!
//! A file is `{"q_table": {state_key: {action_key: q}}, "epsilon": e, "update_count": n}`.
//! The Python version keys an action by `json.dumps(action, sort_keys=True)`:
//! `{"model": "lstm", "strategy": "dual_momentum", "weight": 0.5}` and
//! `{"leverage": 5, "size_multiplier": 0.5}` (weights and multipliers as Python floats, leverage
//! as an integer). A row holds only the actions updated in that state, in the order they were
//! first updated; an action missing from a row is untried (Q 0 for the greedy choice, left out of
//! the next-state max under the Python semantics).
//!
//! Writing: every row lists the actions the Q-learning core recorded as stored, in that order,
//! with the Python spelling; a row from a checkpoint that predates that record lists every
//! action. States are in key order (the Python version reads them by key, so order is
//! immaterial to it). Reading accepts the Python spelling in any key order or spacing, rl-v2's
//! earlier spelling (`dual_momentum|lstm|0.5`, `0.5x|5x`) and plain action indices; a file
//! without `epsilon` keeps the configured initial ε and one without `update_count` counts 0, as
//! the Python loader does.

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

use rl_v2_core::domain::actions::{MetaAction, SizingAction, LEVERAGES, SIZE_MULTIPLIERS};
use rl_v2_core::domain::agent::{Agent, AgentKind};
use rl_v2_core::domain::state::py_float_repr;

/// One row: action key → Q, in the order the actions were first stored.
pub type PythonRow = Vec<(String, f64)>;

/// A Q-table in the Python version's format.
#[derive(Debug, Clone, PartialEq)]
pub struct PythonTable {
    /// state key → the row of that state.
    pub q_table: BTreeMap<String, PythonRow>,
    /// Exploration rate; `None` when a file did not say.
    pub epsilon: Option<f64>,
    /// Updates applied.
    pub update_count: u64,
}

/// The Python version's key of an action: `json.dumps(action, sort_keys=True)`.
pub fn python_action_key(kind: AgentKind, index: usize) -> Option<String> {
    match kind {
        AgentKind::MetaStrategy => MetaAction::from_index(index).map(|a| {
            format!(
                "{{\"model\": \"{}\", \"strategy\": \"{}\", \"weight\": {}}}",
                a.model,
                a.strategy,
                py_float_repr(a.weight)
            )
        }),
        AgentKind::PositionSizing => SizingAction::from_index(index).map(|a| {
            format!(
                "{{\"leverage\": {}, \"size_multiplier\": {}}}",
                a.leverage,
                py_float_repr(a.size_multiplier)
            )
        }),
    }
}

/// The index of an action key in any accepted spelling: the Python version's JSON object,
/// rl-v2's earlier `strategy|model|weight` / `multiplierx|leveragex`, or a plain index.
pub fn parse_action_key(kind: AgentKind, key: &str) -> Option<usize> {
    if key.trim_start().starts_with('{') {
        return parse_json_action(kind, key);
    }
    kind.parse_action_key(key).or_else(|| {
        key.parse::<usize>()
            .ok()
            .filter(|i| *i < kind.action_space_size())
    })
}

fn parse_json_action(kind: AgentKind, key: &str) -> Option<usize> {
    let serde_json::Value::Object(fields) = serde_json::from_str(key).ok()? else {
        return None;
    };
    let text = |name: &str| fields.get(name).and_then(serde_json::Value::as_str);
    let number = |name: &str| fields.get(name).and_then(serde_json::Value::as_f64);
    match kind {
        AgentKind::MetaStrategy => {
            let (strategy, model, weight) = (text("strategy")?, text("model")?, number("weight")?);
            (fields.len() == 3)
                .then(|| {
                    MetaAction::all()
                        .find(|a| a.strategy == strategy && a.model == model && a.weight == weight)
                        .map(|a| a.index())
                })
                .flatten()
        }
        AgentKind::PositionSizing => {
            let (leverage, multiplier) = (number("leverage")?, number("size_multiplier")?);
            let known = LEVERAGES.iter().any(|l| f64::from(*l) == leverage)
                && SIZE_MULTIPLIERS.contains(&multiplier);
            (fields.len() == 2 && known)
                .then(|| {
                    SizingAction::all()
                        .find(|a| {
                            f64::from(a.leverage) == leverage && a.size_multiplier == multiplier
                        })
                        .map(|a| a.index())
                })
                .flatten()
        }
    }
}

/// Each visited state of `agent` with the actions stored in it as (index, Q), in the order they
/// were first stored (every action for a row from a checkpoint that predates that record).
fn stored_rows(agent: &Agent) -> impl Iterator<Item = (&String, Vec<(usize, f64)>)> {
    let q = agent.q();
    q.table().iter().map(move |(state, row)| {
        let entries = match q.stored_actions(state) {
            Some(stored) => stored
                .iter()
                .filter_map(|&a| Some((a as usize, *row.get(a as usize)?)))
                .collect(),
            None => row.iter().copied().enumerate().collect(),
        };
        (state, entries)
    })
}

/// The Python version's keys of every action of `kind`, by index.
fn action_keys(kind: AgentKind) -> Vec<String> {
    (0..kind.action_space_size())
        .map_while(|i| python_action_key(kind, i))
        .collect()
}

/// An agent's table serialised in the Python version's format straight from the agent, one row
/// at a time: the same bytes as [`PythonTable::of`] without a copy of the whole table, so a
/// checkpoint of a large table streams to disk in constant extra memory.
pub struct PythonTableView<'a> {
    agent: &'a Agent,
    keys: Vec<String>,
}

impl<'a> PythonTableView<'a> {
    /// The view of `agent`'s table.
    pub fn of(agent: &'a Agent) -> Self {
        Self {
            agent,
            keys: action_keys(agent.kind()),
        }
    }
}

/// One row of a [`PythonTableView`].
struct ViewRow<'a> {
    keys: &'a [String],
    entries: Vec<(usize, f64)>,
}

impl Serialize for ViewRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (i, q) in &self.entries {
            if let Some(key) = self.keys.get(*i) {
                map.serialize_entry(key, q)?;
            }
        }
        map.end()
    }
}

/// The `q_table` object of a [`PythonTableView`].
struct ViewTable<'a>(&'a PythonTableView<'a>);

impl Serialize for ViewTable<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.agent.q().table().len()))?;
        for (state, entries) in stored_rows(self.0.agent) {
            let row = ViewRow {
                keys: &self.0.keys,
                entries,
            };
            map.serialize_entry(state, &row)?;
        }
        map.end()
    }
}

impl Serialize for PythonTableView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let q = self.agent.q();
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("q_table", &ViewTable(self))?;
        map.serialize_entry("epsilon", &q.epsilon())?;
        map.serialize_entry("update_count", &q.update_count())?;
        map.end()
    }
}

impl PythonTable {
    /// The table of `agent`: each visited state with the actions stored in it, in the order
    /// they were first stored, keyed as the Python version keys them.
    pub fn of(agent: &Agent) -> Self {
        let keys = action_keys(agent.kind());
        let q_table = stored_rows(agent)
            .map(|(state, entries)| {
                let row = entries
                    .into_iter()
                    .filter_map(|(i, q)| Some((keys.get(i)?.clone(), q)))
                    .collect();
                (state.clone(), row)
            })
            .collect();
        let q = agent.q();
        Self {
            q_table,
            epsilon: Some(q.epsilon()),
            update_count: q.update_count(),
        }
    }

    /// Loads this table into `agent`, replacing rows of the same states, and restores ε (kept
    /// when the file had none) and the update count. Returns the number of states loaded.
    pub fn load_into(&self, agent: &mut Agent) -> Result<usize, String> {
        let kind = agent.kind();
        for (state, actions) in &self.q_table {
            let entries = actions
                .iter()
                .map(|(key, q)| {
                    parse_action_key(kind, key)
                        .map(|i| (i, *q))
                        .ok_or_else(|| format!("unknown {} action `{key}`", kind.as_str()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            agent
                .q_mut()
                .insert_stored(state.clone(), &entries)
                .map_err(|e| format!("state `{state}`: {e}"))?;
        }
        let epsilon = self.epsilon.unwrap_or_else(|| agent.q().epsilon());
        agent.q_mut().restore_schedule(epsilon, self.update_count);
        Ok(self.q_table.len())
    }
}

/// Serializes a row as a JSON object in stored order.
struct RowRef<'a>(&'a PythonRow);

impl Serialize for RowRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (action, q) in self.0 {
            map.serialize_entry(action, q)?;
        }
        map.end()
    }
}

/// Serializes the states in key order, each row in stored order.
struct TableRef<'a>(&'a BTreeMap<String, PythonRow>);

impl Serialize for TableRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (state, row) in self.0 {
            map.serialize_entry(state, &RowRef(row))?;
        }
        map.end()
    }
}

impl Serialize for PythonTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("q_table", &TableRef(&self.q_table))?;
        if let Some(epsilon) = self.epsilon {
            map.serialize_entry("epsilon", &epsilon)?;
        }
        map.serialize_entry("update_count", &self.update_count)?;
        map.end()
    }
}

/// A row read in file order; a repeated action keeps its first place and its last value, as a
/// Python dict does.
struct OrderedRow(PythonRow);

impl<'de> Deserialize<'de> for OrderedRow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = OrderedRow;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of action key → Q-value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<OrderedRow, A::Error> {
                let mut row: PythonRow = Vec::new();
                while let Some((key, q)) = access.next_entry::<String, f64>()? {
                    match row.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = q,
                        None => row.push((key, q)),
                    }
                }
                Ok(OrderedRow(row))
            }
        }
        deserializer.deserialize_map(RowVisitor)
    }
}

/// The file's fields; anything else in the file is ignored, as the Python loader ignores it.
#[derive(Deserialize)]
struct RawTable {
    #[serde(default)]
    q_table: BTreeMap<String, OrderedRow>,
    #[serde(default)]
    epsilon: Option<f64>,
    #[serde(default)]
    update_count: u64,
}

impl<'de> Deserialize<'de> for PythonTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawTable::deserialize(deserializer)?;
        if let Some(e) = raw.epsilon.filter(|e| !e.is_finite()) {
            return Err(de::Error::custom(format!("epsilon {e} is not finite")));
        }
        Ok(Self {
            q_table: raw.q_table.into_iter().map(|(k, r)| (k, r.0)).collect(),
            epsilon: raw.epsilon,
            update_count: raw.update_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rl_v2_core::domain::actions::{META_ACTIONS, SIZING_ACTIONS};

    #[test]
    fn keys_are_spelled_as_json_dumps_sort_keys() {
        assert_eq!(
            python_action_key(AgentKind::MetaStrategy, 0).unwrap(),
            r#"{"model": "lstm", "strategy": "dual_momentum", "weight": 0.5}"#
        );
        assert_eq!(
            python_action_key(AgentKind::MetaStrategy, 2).unwrap(),
            r#"{"model": "lstm", "strategy": "dual_momentum", "weight": 1.0}"#
        );
        assert_eq!(
            python_action_key(AgentKind::PositionSizing, 32).unwrap(),
            r#"{"leverage": 5, "size_multiplier": 2.0}"#
        );
        assert_eq!(python_action_key(AgentKind::PositionSizing, 40), None);
    }

    #[test]
    fn every_spelling_parses_to_the_same_index() {
        for (kind, n) in [
            (AgentKind::MetaStrategy, META_ACTIONS),
            (AgentKind::PositionSizing, SIZING_ACTIONS),
        ] {
            for i in 0..n {
                let python = python_action_key(kind, i).unwrap();
                assert_eq!(parse_action_key(kind, &python), Some(i));
                let earlier = kind.action_key(i).unwrap();
                assert_eq!(parse_action_key(kind, &earlier), Some(i));
                assert_eq!(parse_action_key(kind, &i.to_string()), Some(i));
            }
        }
        // Another key order, other spacing, an integral weight written as an integer.
        assert_eq!(
            parse_action_key(
                AgentKind::MetaStrategy,
                r#"{"weight":1,"strategy":"momentum_flip","model":"gru"}"#
            ),
            Some(47)
        );
        for bad in [
            r#"{"model": "lstm", "strategy": "dual_momentum", "weight": 0.6}"#,
            r#"{"model": "lstm", "strategy": "dual_momentum"}"#,
            r#"{"model": "lstm", "strategy": "dual_momentum", "weight": 0.5, "x": 1}"#,
            r#"{"model": "lstm""#,
            "60",
        ] {
            assert_eq!(
                parse_action_key(AgentKind::MetaStrategy, bad),
                None,
                "{bad}"
            );
        }
        assert_eq!(
            parse_action_key(
                AgentKind::PositionSizing,
                r#"{"leverage": 7, "size_multiplier": 0.5}"#
            ),
            None
        );
    }

    #[test]
    fn rows_keep_file_order_and_missing_fields_default() {
        let table: PythonTable = serde_json::from_str(
            r#"{"q_table": {"s": {"b": 1.0, "a": 2, "b": 3.5}}, "extra": true}"#,
        )
        .unwrap();
        assert_eq!(
            table.q_table["s"],
            vec![("b".to_string(), 3.5), ("a".to_string(), 2.0)]
        );
        assert_eq!(table.epsilon, None);
        assert_eq!(table.update_count, 0);
        let text = serde_json::to_string(&table).unwrap();
        assert_eq!(
            text,
            r#"{"q_table":{"s":{"b":3.5,"a":2.0}},"update_count":0}"#
        );
    }
}
