//! Keel's matching core: a price-time priority limit order book for one market.
//!
//! The book is a single-threaded, deterministic data structure. Orders are identified by ids the
//! caller assigns; prices are integer ticks and quantities integer lots. Every command reports what
//! happened as [`BookEvent`](keel_types::BookEvent)s appended to a caller-owned buffer, in the
//! order it happened.
//!
//! Layout, chosen for the matching path:
//! - resting orders live in a slab and form an intrusive doubly linked FIFO queue per price
//!   level, plus a second intrusive list per account (for cancel-all and liquidation);
//! - each side keeps its levels in a vector sorted so that the best price is last, because nearly
//!   all inserts and removals happen within a few ticks of the touch;
//! - an id → slot hash map gives O(1) cancel and amend.
//!
//! Nothing allocates while the book stays within its configured capacities. The rules (validation
//! order, self-trade prevention, stops, amend semantics) are specified in `docs/book.md`.

mod book;
mod config;
#[cfg(any(test, feature = "reference"))]
pub mod differential;
mod invariants;
mod ladder;
mod prefetch;
mod query;
#[cfg(any(test, feature = "reference"))]
pub mod reference;
mod stops;
#[cfg(test)]
mod tests;

pub use book::{OrderBook, Refusal};
pub use config::BookConfig;
pub use keel_types::{BuildIdHasher, IdHasher, IdMap};
pub use query::{FillEstimate, LevelView, OrderView};
