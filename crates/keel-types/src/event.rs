//! What the book reports: every acceptance, rejection, fill, cancellation, trigger and amendment,
//! in the order it happened.

use crate::{AccountId, OrderId, Price, Qty, Side};
use thiserror::Error;

/// Why the book refused a request. A rejected request changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error, serde::Serialize, serde::Deserialize)]
pub enum RejectReason {
    /// Quantity is zero or negative.
    #[error("quantity must be positive")]
    InvalidQuantity,
    /// Quantity is above the market's maximum order size.
    #[error("quantity exceeds the maximum order size")]
    QuantityTooLarge,
    /// Price (limit, trigger or amended) is zero or negative.
    #[error("price must be positive")]
    InvalidPrice,
    /// Price is above the market's maximum price.
    #[error("price exceeds the maximum price")]
    PriceOutOfRange,
    /// Another live order (resting or pending stop) already has this id.
    #[error("order id is already in use by a live order")]
    DuplicateOrderId,
    /// The id names no resting order: it was filled, cancelled or never seen.
    #[error("no live order with this id")]
    UnknownOrder,
    /// A post-only order (or an amendment of one) would have taken liquidity.
    #[error("post-only order would take liquidity")]
    PostOnlyWouldTake,
    /// A stop order whose trigger condition already holds at the current reference price.
    #[error("stop order would trigger immediately")]
    StopWouldTrigger,
    /// The time in force does not apply to this order type (a post-only market order).
    #[error("time in force is not valid for this order type")]
    InvalidTimeInForce,
    /// Pending stop orders cannot be amended; cancel and replace them instead.
    #[error("a pending stop order cannot be amended")]
    StopNotAmendable,
}

/// Why an order, or the rest of one, left the book without filling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CancelReason {
    /// The owner cancelled it.
    User,
    /// The owner cancelled all their orders at once.
    CancelAll,
    /// The engine cancelled it to liquidate the account.
    Liquidation,
    /// The engine cancelled it because a reduce-only order could no longer reduce the position.
    ReduceOnly,
    /// The unfilled rest of an immediate-or-cancel or market order.
    Unfilled,
    /// A fill-or-kill order that could not be filled whole.
    FillOrKill,
    /// A market order stopped at its protection price with quantity left.
    PriceProtection,
    /// Self-trade prevention removed it.
    SelfTrade,
}

/// The side and price at which a cancelled order was resting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Resting {
    /// The order's side.
    pub side: Side,
    /// Its limit price.
    pub price: Price,
}

/// One thing that happened in the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BookEvent {
    /// The order passed validation (stop orders: it is now pending its trigger).
    ///
    /// The event names the order rather than repeating it: the caller submitted it and has it.
    /// (Copying the 48-byte order into every event measurably slowed the add path.)
    Accepted {
        /// The order's id.
        id: OrderId,
        /// Its owner.
        account: AccountId,
    },
    /// A request was refused; nothing changed.
    Rejected {
        /// The id the request named.
        id: OrderId,
        /// Why.
        reason: RejectReason,
    },
    /// A trade between a resting (maker) order and an incoming (taker) order, at the maker's price.
    Fill {
        /// The resting order.
        maker: OrderId,
        /// Owner of the resting order.
        maker_account: AccountId,
        /// The incoming order.
        taker: OrderId,
        /// Owner of the incoming order.
        taker_account: AccountId,
        /// Side of the incoming order.
        taker_side: Side,
        /// Trade price: always the maker's limit price.
        price: Price,
        /// Traded quantity.
        qty: Qty,
        /// What remains open of the maker after this fill (zero: it left the book).
        maker_remaining: Qty,
        /// What remains unfilled of the taker after this fill.
        taker_remaining: Qty,
    },
    /// An order, or the unfilled rest of one, was cancelled.
    Cancelled {
        /// The order.
        id: OrderId,
        /// Its owner.
        account: AccountId,
        /// The quantity that was still open and is now cancelled.
        remaining: Qty,
        /// Why.
        reason: CancelReason,
        /// Where it rested, when it was a resting order; `None` for a pending stop and for the
        /// unfilled rest of an incoming order. A resting order holds margin for its open
        /// quantity at its price, and this is what a clearinghouse releases.
        resting: Option<Resting>,
    },
    /// A stop order's trigger condition was met; it now enters the book as a market or limit order.
    Triggered {
        /// The stop order.
        id: OrderId,
        /// Its owner.
        account: AccountId,
        /// The reference price that triggered it.
        reference_price: Price,
    },
    /// A resting order's price or quantity was changed.
    Amended {
        /// The order.
        id: OrderId,
        /// Its owner.
        account: AccountId,
        /// Its side.
        side: Side,
        /// Its limit price before the amendment.
        previous_price: Price,
        /// Its open quantity before the amendment.
        previous_qty: Qty,
        /// Its limit price after the amendment.
        price: Price,
        /// Its open quantity after the amendment.
        qty: Qty,
        /// True when the order kept its place in the queue (only a quantity decrease keeps it).
        priority_kept: bool,
    },
}
