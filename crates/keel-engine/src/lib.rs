//! Keel's exchange engine: the deterministic state machine that couples the order books, the
//! margin system and the liquidation pipeline; the sequencer thread that feeds it; and the
//! journal and snapshots that make it durable.
//!
//! The engine is `apply(command) -> events` and nothing else: no clock (time arrives in the
//! sequenced command), no randomness, no I/O, no threads. The same commands in the same order
//! give the same events and the same state, which is what journal replay, crash recovery and the
//! state digest that compares two engines all rely on.

pub mod checksum;
pub mod codec;
mod command;
mod digest;
mod engine;
mod error;
mod event;
mod invariants;
pub mod journal;
pub mod presets;
pub mod sequencer;
pub mod snapshot_file;
pub mod store;

pub use command::{Command, MarketSpec, PlaceOrder, Sequenced};
pub use engine::Engine;
pub use error::{EngineError, ErrorCode};
pub use event::Event;
pub use invariants::InvariantViolation;
