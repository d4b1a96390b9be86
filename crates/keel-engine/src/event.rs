//! What the engine reports, in the order it happened.

use crate::error::ErrorCode;
use keel_liquidation::LiquidationEvent;
use keel_margin::{AccountView, AssetId, HeatmapBucket, Liquidity, MarginMode, Rate};
use keel_types::{AccountId, BookEvent, MarketId, Money, OrderId, Price, Qty, Side};
use serde::{Deserialize, Serialize};

/// One thing that happened in the engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The command was refused and changed nothing.
    Rejected {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Operator-readable reason.
        message: String,
    },
    /// A market was listed.
    MarketCreated {
        /// Its id.
        market: MarketId,
        /// Its symbol.
        symbol: String,
    },
    /// A collateral asset was registered.
    AssetAdded {
        /// Its id.
        asset: AssetId,
    },
    /// A collateral asset was repriced.
    AssetPriced {
        /// The asset.
        asset: AssetId,
        /// New price per whole unit.
        price: Money,
    },
    /// An account was opened.
    AccountOpened {
        /// Its id.
        account: AccountId,
    },
    /// An asset was credited.
    Deposited {
        /// The account.
        account: AccountId,
        /// The asset.
        asset: AssetId,
        /// Amount in the asset's smallest unit.
        amount: i64,
    },
    /// An asset was debited.
    Withdrew {
        /// The account.
        account: AccountId,
        /// The asset.
        asset: AssetId,
        /// Amount in the asset's smallest unit.
        amount: i64,
    },
    /// An account's leverage in a market changed.
    LeverageSet {
        /// The account.
        account: AccountId,
        /// The market.
        market: MarketId,
        /// The new leverage.
        leverage: u32,
    },
    /// An account's margin mode in a market changed.
    MarginModeSet {
        /// The account.
        account: AccountId,
        /// The market.
        market: MarketId,
        /// The new mode.
        mode: MarginMode,
    },
    /// Something happened in a market's book (accepted, filled, cancelled, triggered, amended).
    Book {
        /// The market.
        market: MarketId,
        /// What happened.
        event: BookEvent,
    },
    /// One side of a trade was booked on an account.
    Settled {
        /// The market.
        market: MarketId,
        /// The account.
        account: AccountId,
        /// The account's order.
        order: OrderId,
        /// The account's side.
        side: Side,
        /// Trade price.
        price: Price,
        /// Traded lots.
        qty: Qty,
        /// Maker or taker.
        liquidity: Liquidity,
        /// PnL realized by the part that reduced the position.
        realized_pnl: Money,
        /// Fee charged (negative: rebate).
        fee: Money,
        /// Position after the trade.
        position: Qty,
        /// Settlement balance after the trade.
        balance: Money,
    },
    /// A market's index and mark prices moved.
    Mark {
        /// The market.
        market: MarketId,
        /// The index price.
        index: Price,
        /// The new mark price.
        mark: Price,
    },
    /// Funding was settled.
    Funding {
        /// The market.
        market: MarketId,
        /// The rate (positive: longs pay shorts).
        rate: Rate,
        /// The price positions were valued at.
        price: Price,
        /// Per account: received (positive) or paid (negative); sums to zero.
        payments: Vec<(AccountId, Money)>,
    },
    /// A step of the liquidation pipeline: margin call, cancellations, liquidation orders and
    /// fills, fund flows, auto-deleveraging, bankruptcy, accounts waiting on the throttle.
    Liquidation(LiquidationEvent),
    /// An account's state, on request.
    AccountView(AccountView),
    /// A market's depth, on request.
    Depth {
        /// The market.
        market: MarketId,
        /// Bids from the best down: (price, quantity).
        bids: Vec<(Price, Qty)>,
        /// Asks from the best up: (price, quantity).
        asks: Vec<(Price, Qty)>,
    },
    /// A market's liquidation heatmap, on request.
    Heatmap {
        /// The market.
        market: MarketId,
        /// Buckets from the lowest price up.
        buckets: Vec<HeatmapBucket>,
    },
    /// The state digest, on request.
    Digest {
        /// A hash of the engine's whole logical state.
        digest: u64,
    },
    /// An internal consistency failure that a correct engine never produces; reported rather than
    /// hidden so that tests and operators see it.
    Fault {
        /// What went wrong.
        message: String,
    },
}
