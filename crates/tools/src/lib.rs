//! rl-v2's tools, built on the core and the service: the seeded market [`simulate`]or and the
//! [`bench`]mark that runs the service in-process against bare async-nats baselines, and the
//! throw-away [`nats_server`]s that the benchmark and the integration tests run against.

pub mod bench;
pub mod evaluate;
pub mod nats_server;
pub mod simulate;
