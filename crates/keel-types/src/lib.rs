//! The shared vocabulary of Keel.
//!
//! Every other crate speaks in these types: prices in integer ticks ([`Price`]), quantities in
//! integer lots ([`Qty`]), money as a fixed-point integer ([`Money`]), typed ids, order
//! descriptions and the events the matching core emits. Nothing here allocates or touches
//! `Decimal` on the hot path; [`Grid`] converts between the human decimal world (configuration,
//! scenarios, reports) and the integer world at the edges, and refuses values that do not fit.

mod decimal;
mod error;
mod event;
mod ids;
mod index;
mod num;
mod order;
mod paged;
mod prefetch;

pub use decimal::Grid;
pub use error::{ArithmeticError, ConversionError};
pub use event::{BookEvent, CancelReason, RejectReason, Resting};
pub use ids::{AccountId, MarketId, OrderId};
pub use index::{AccountSlots, BuildIdHasher, DenseId, IdHasher, IdMap, IdSlots, MarketSlots};
pub use num::{Money, Price, Qty, Rounding, div_round_i64, div_round_i128};
pub use order::{Amend, NewOrder, OrderKind, Side, StopReference, StpMode, TimeInForce};
pub use paged::Paged;
pub use prefetch::{prefetch, prefetch_bytes};
