//! rl-v2: the learning brain of a crypto-futures trading stack.
//!
//! Trading events come in over NATS, two tabular Q-learning agents turn them into decisions, and
//! every closed position teaches both agents. The crate is layered:
//!
//! * [`domain`]: the pure RL domain (actions, market tools, states, rewards, Q-learning,
//!   episodes, agents);
//! * [`event`] and [`decision`]: what comes in and what goes out;
//! * [`engine`]: a deterministic state machine that applies events and holds all learned state,
//!   bounded by [`plausibility`] (what an event may claim) and [`capacity`] (what it keeps);
//! * [`checkpoint`]: durable, atomic snapshots of the engine;
//! * the shells around the engine (the NATS service, the command line).

pub mod bench;
pub mod capacity;
pub mod checkpoint;
pub mod cli;
pub mod decision;
pub mod domain;
pub mod engine;
pub mod event;
pub mod inspect;
pub mod plausibility;
pub mod replay;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod simulate;
pub mod telemetry;
