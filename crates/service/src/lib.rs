//! rl-v2's service: the shells around the core engine that touch the outside world.
//!
//! * [`settings`]: typed settings, layered file → environment, validated once at start-up;
//! * [`serve()`]: the NATS service — sources ([`source`], [`jetstream`]) feed one event loop that
//!   owns the engine, publishes decisions and hands snapshots to the [`checkpointer`];
//! * [`checkpoint`]: the checkpoint store on disk and the Python-format Q-tables;
//! * [`replay`] and [`inspect`]: offline tools over logs and checkpoints;
//! * [`metrics`], [`prometheus`], [`health`], [`telemetry`], [`shutdown`]: operating it;
//! * [`control`]: `rl-v2 control`, an operator's commands to the running service.

pub mod checkpoint;
pub mod checkpointer;
pub mod claim;
pub mod connect;
pub mod control;
pub mod credentials;
pub mod decide;
pub mod fault;
pub mod ha;
pub mod health;
pub mod inspect;
pub mod jetstream;
pub mod metrics;
pub mod mode;
pub mod prometheus;
pub mod python_format;
pub mod replay;
mod serve;
pub mod settings;
pub mod shadow;
pub mod shutdown;
pub mod slow_consumer;
pub mod source;
pub mod supervise;
pub mod telemetry;

pub use serve::*;
