//! `simulate`: the quick start that needs no broker. A seeded synthetic market trains the engine
//! in-process.
//!
//! * [`market`] draws the market: symbols whose regimes change over time, the price window each
//!   signal carries (recognised by the engine's own regime detector), and a P&L model in which
//!   the best strategy per regime and the best leverage per volatility level are known.
//! * [`events`] writes the JSON payloads a trading stack would publish for each trade.

pub mod events;
pub mod market;
