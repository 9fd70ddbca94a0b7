//! rl-v2's pure core: everything that decides and learns, and nothing that touches the outside
//! world.
//!
//! * [`domain`]: the RL domain (actions, market tools, states, rewards, Q-learning, episodes,
//!   agents);
//! * [`event`] and [`decision`]: what comes in and what goes out;
//! * [`control`]: the trading state, operator commands, the risk gate and circuit breakers;
//! * [`audit`]: what one message did — decisions, Q-updates with their rewards, expiries;
//! * [`outcome`]: the outcome event published per Q-update, the logged-bandit record;
//! * [`engine`]: a deterministic state machine that applies events and holds all learned state,
//!   bounded by [`plausibility`] (what an event may claim) and [`capacity`] (what it keeps).
//!
//! This crate does no I/O: it depends on no async runtime, no NATS client and no file system,
//! reads no clock and no global random generator. Time and sequence numbers come in with the
//! events, so the same events always give the same decisions and the same bytes.

pub mod audit;
pub mod capacity;
pub mod control;
pub mod decision;
pub mod domain;
pub mod engine;
pub mod event;
pub mod invalid;
pub mod outcome;
pub mod plausibility;
