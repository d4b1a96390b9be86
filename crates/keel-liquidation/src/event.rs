//! What the liquidation pipeline reports, step by step, in the order it happened.

use crate::fund::FundFlowKind;
use keel_margin::LiquidationTarget;
use keel_types::{AccountId, BookEvent, MarketId, Money, OrderId, Price, Qty, Side};
use serde::{Deserialize, Serialize};

/// Whether a liquidation order closes part of a position or all of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CloseKind {
    /// Down to the next lower risk tier, which restores maintenance; the trader keeps the rest.
    Partial,
    /// The whole position, at no worse than the bankruptcy price for the trader.
    Full,
}

/// One step of the liquidation pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LiquidationEvent {
    /// The account (or isolated position) fell to or below maintenance and entered the queue.
    MarginCall {
        /// The account.
        account: AccountId,
        /// Its cross pool or one isolated position.
        target: LiquidationTarget,
        /// Equity at the marks that triggered it.
        equity: Money,
        /// Maintenance margin at those marks.
        maintenance_margin: Money,
    },
    /// A resting order of the account was cancelled before liquidating it.
    OrderCancelled {
        /// The account.
        account: AccountId,
        /// The market.
        market: MarketId,
        /// The order.
        order: OrderId,
        /// Its side.
        side: Side,
        /// Its limit price.
        price: Price,
        /// The open quantity cancelled.
        qty: Qty,
    },
    /// After its orders were cancelled the target was above maintenance again; it left the queue.
    Recovered {
        /// The account.
        account: AccountId,
        /// The target.
        target: LiquidationTarget,
    },
    /// An immediate-or-cancel liquidation order was sent to the book.
    LiquidationOrder {
        /// The account being liquidated.
        account: AccountId,
        /// The market.
        market: MarketId,
        /// The order's id (liquidation range, see `settle::LIQUIDATION_ORDER_BIT`).
        order: OrderId,
        /// Sell to close a long, buy to close a short.
        side: Side,
        /// Quantity sent.
        qty: Qty,
        /// Limit price: the bankruptcy price, or beyond it as far as the fund can pay.
        limit: Price,
        /// The position's bankruptcy price when the order was sent.
        bankruptcy_price: Price,
        /// Partial (tier step-down) or full.
        kind: CloseKind,
    },
    /// A liquidation order traded.
    LiquidationFill {
        /// The account being liquidated.
        account: AccountId,
        /// The market.
        market: MarketId,
        /// The liquidation order.
        order: OrderId,
        /// The resting order it traded with.
        maker_order: OrderId,
        /// The resting order's owner.
        maker_account: AccountId,
        /// Trade price.
        price: Price,
        /// Traded quantity.
        qty: Qty,
    },
    /// Money moved into (positive) or out of (negative) the insurance fund.
    FundFlow {
        /// The market whose pool moved (any market's pool is the same one for a shared fund).
        market: MarketId,
        /// The account on the other side of the flow (none for a venue deposit).
        account: Option<AccountId>,
        /// Signed amount: positive into the fund.
        amount: Money,
        /// Why.
        kind: FundFlowKind,
        /// The pool's balance afterwards.
        balance_after: Money,
    },
    /// Auto-deleveraging: an opposing position was closed against the bankrupt one at the
    /// bankruptcy price, outside the book.
    Adl {
        /// The market.
        market: MarketId,
        /// The account being liquidated.
        liquidated: AccountId,
        /// The deleveraged counterparty.
        counterparty: AccountId,
        /// The liquidated account's side (the counterparty took the opposite).
        side: Side,
        /// Quantity closed on both sides.
        qty: Qty,
        /// The bankruptcy price both sides traded at.
        price: Price,
    },
    /// The account's target was closed out with its loss beyond zero equity covered by the fund
    /// or by deleveraging; it ends with zero equity (up to the rounding residue kept for it).
    Bankruptcy {
        /// The account.
        account: AccountId,
        /// The target.
        target: LiquidationTarget,
        /// Paid by the insurance fund to cover fills below the bankruptcy price and any deficit.
        fund_paid: Money,
        /// Quantity closed by deleveraging.
        adl_qty: Qty,
    },
    /// The account is still in the queue after this command: the throttle held it back.
    Waiting {
        /// The account.
        account: AccountId,
        /// The target.
        target: LiquidationTarget,
    },
    /// A book event caused by the liquidator (cancels, the liquidation order's acceptance,
    /// fills, its unfilled rest), for market data and for the engine's order bookkeeping.
    Book {
        /// The market.
        market: MarketId,
        /// The event.
        event: BookEvent,
    },
}
