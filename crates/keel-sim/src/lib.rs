//! Simulation tools for Keel.
//!
//! - [`flow`]: a deterministic generator of realistic order flow (many accounts; resting limits,
//!   IOC takers, market orders, cancels and reprices around a random-walk mid) in calm, volatile
//!   and crash regimes.
//! - [`adversary`]: arbitrary bytes as a hostile command stream, checked against the exchange's
//!   invariants after every command (the driver of a fuzz target and a property test).
//! - [`harness`]: replays a generated flow through an `OrderBook`, measuring throughput and
//!   per-operation latency with an HDR histogram.

pub mod adversary;
pub mod engine_flow;
pub mod flow;
pub mod harness;
mod rng;
pub mod scenario;

pub use rng::Rng;
