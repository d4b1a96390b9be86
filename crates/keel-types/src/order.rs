//! What a trader asks the book for: new orders and amendments.

use crate::{AccountId, OrderId, Price, Qty};

/// The side of an order or of a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Side {
    /// Buy: bids in the book, long positions.
    Buy,
    /// Sell: asks in the book, short positions.
    Sell,
}

impl Side {
    /// The other side.
    #[inline]
    pub const fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// +1 for buy, −1 for sell: the sign a fill of this side gives to a position.
    #[inline]
    pub const fn sign(self) -> i64 {
        match self {
            Side::Buy => 1,
            Side::Sell => -1,
        }
    }
}

/// How long an order may stay in the book and how much of it must fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum TimeInForce {
    /// Good till cancelled: whatever does not fill at once rests in the book.
    #[default]
    Gtc,
    /// Immediate or cancel: fill what can be filled now, cancel the rest.
    Ioc,
    /// Fill or kill: fill the whole quantity now or nothing at all.
    Fok,
    /// Post only: rest in the book as a maker; rejected if any part would take liquidity.
    PostOnly,
}

/// What happens when an order would trade against another order of the same account.
///
/// The mode of the incoming (taking) order decides, as on the major venues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum StpMode {
    /// Cancel the rest of the incoming order; the resting order stays.
    #[default]
    CancelNewest,
    /// Cancel the resting order and keep matching the incoming one.
    CancelOldest,
    /// Cancel both the resting order and the rest of the incoming one.
    CancelBoth,
}

/// Which reference price a stop order watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum StopReference {
    /// The mark price (the fair price margin is computed on).
    Mark,
    /// The last trade price in this book.
    Last,
}

/// The type of an order and its price parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum OrderKind {
    /// A limit order: trades at its limit price or better.
    Limit {
        /// The worst price the order accepts.
        price: Price,
    },
    /// A market order: trades at the best prices available, but never further from the best
    /// opposite price at arrival than the book's configured protection distance.
    Market,
    /// Becomes a market order when the reference price reaches the trigger price.
    StopMarket {
        /// The reference price at which the order triggers.
        trigger: Price,
        /// Which reference price is watched.
        reference: StopReference,
    },
    /// Becomes a limit order at `price` when the reference price reaches the trigger price.
    StopLimit {
        /// The reference price at which the order triggers.
        trigger: Price,
        /// The limit price of the order once triggered.
        price: Price,
        /// Which reference price is watched.
        reference: StopReference,
    },
}

/// A request to enter an order into the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NewOrder {
    /// The order's id, assigned by the caller; must not belong to another live order.
    pub id: OrderId,
    /// The account that owns the order.
    pub account: AccountId,
    /// Buy or sell.
    pub side: Side,
    /// Limit, market or stop, with its prices.
    pub kind: OrderKind,
    /// Quantity in lots; must be positive.
    pub qty: Qty,
    /// Time in force (ignored by market orders except `Fok`; `PostOnly` is invalid for them).
    pub tif: TimeInForce,
    /// Self-trade prevention mode.
    pub stp: StpMode,
    /// The order may only reduce a position. The book only carries this flag; the engine
    /// enforces it (and shrinks or cancels the order through the book when the position shrinks).
    pub reduce_only: bool,
}

impl NewOrder {
    /// A good-till-cancelled limit order with the default self-trade prevention.
    pub fn limit(id: OrderId, account: AccountId, side: Side, price: Price, qty: Qty) -> NewOrder {
        NewOrder {
            id,
            account,
            side,
            kind: OrderKind::Limit { price },
            qty,
            tif: TimeInForce::Gtc,
            stp: StpMode::default(),
            reduce_only: false,
        }
    }

    /// A market order with the default self-trade prevention.
    pub fn market(id: OrderId, account: AccountId, side: Side, qty: Qty) -> NewOrder {
        NewOrder {
            id,
            account,
            side,
            kind: OrderKind::Market,
            qty,
            tif: TimeInForce::Ioc,
            stp: StpMode::default(),
            reduce_only: false,
        }
    }

    /// The same order with another time in force.
    pub fn with_tif(mut self, tif: TimeInForce) -> NewOrder {
        self.tif = tif;
        self
    }

    /// The same order with another self-trade prevention mode.
    pub fn with_stp(mut self, stp: StpMode) -> NewOrder {
        self.stp = stp;
        self
    }

    /// The same order flagged reduce-only.
    pub fn reduce_only(mut self) -> NewOrder {
        self.reduce_only = true;
        self
    }
}

/// A request to change a resting order's price and/or remaining quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Amend {
    /// The resting order to change.
    pub id: OrderId,
    /// The new limit price; `None` keeps the current one.
    pub price: Option<Price>,
    /// The new remaining (open) quantity; must be positive.
    pub qty: Qty,
}
