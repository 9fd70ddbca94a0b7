//! The RL domain: actions, market tools, states, rewards, the Q-learning core, episodes and the
//! agents. Nothing here knows about NATS, files or tokio; the [`crate::engine`] composes it.

pub mod actions;
pub mod agent;
pub mod episode;
pub mod market;
pub mod profile;
pub mod python_compat;
pub mod qlearning;
pub mod reward;
pub mod state;
