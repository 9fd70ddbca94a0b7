//! A setting of the engine that cannot be used, named by its place in [`EngineConfig`]
//! (`learning.alpha`, `discretizer.winrate`, `plausibility.max_abs_reward`, …), so a shell can
//! tell its operator which key to fix without reading the message.
//!
//! [`EngineConfig`]: crate::engine::EngineConfig

/// A value outside its domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct Invalid {
    /// Where the value sits in the engine's settings: a field of `EngineConfig`, or
    /// `<field>.<member>` for a member of one of its parts.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl Invalid {
    /// `field` (under `section`, when given) is wrong because of `problem`.
    pub fn new(section: Option<&str>, field: &str, problem: impl Into<String>) -> Self {
        Self {
            field: match section {
                Some(section) => format!("{section}.{field}"),
                None => field.to_string(),
            },
            problem: problem.into(),
        }
    }
}
