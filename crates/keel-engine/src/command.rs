//! What the engine is asked to do. Commands are integer-level (ticks, lots, money units) and
//! self-contained, so that a journal of them replays to the same state anywhere.

use keel_book::BookConfig;
use keel_margin::{AssetConfig, AssetId, MarginMode, MarketConfig};
use keel_types::{AccountId, MarketId, Money, OrderId, OrderKind, Price, Qty, Side, StpMode, TimeInForce};
use serde::{Deserialize, Serialize};

/// A command with the sequence number and time the sequencer stamped on it.
///
/// Time enters the engine only here: the engine never reads a clock, so replaying the same
/// sequenced commands reproduces the same state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sequenced {
    /// Position in the journal: consecutive from 1.
    pub seq: u64,
    /// Milliseconds since the Unix epoch, as stamped by the sequencer.
    pub time_ms: u64,
    /// The command.
    pub command: Command,
}

/// A market listing: its margin parameters and its book's limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarketSpec {
    /// Display name ("BTC-PERP").
    pub symbol: String,
    /// Grid, tiers, fees, mark and funding rules (its `id` is the market's id).
    pub margin: MarketConfig,
    /// Book limits and capacities.
    pub book: BookConfig,
    /// Notional, in money, that the impact bid and ask are measured for (Binance's "impact
    /// margin notional"); mark and funding sample the book at this depth.
    pub impact_notional: Money,
    /// The impact prices are sampled on the first index update in each window of this many
    /// milliseconds of engine time, not on every update (Binance samples its premium index
    /// every 5 s). Zero samples on every index update.
    pub impact_sample_ms: u64,
}

/// A new order as a trader submits it; the engine assigns its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    /// The owner.
    pub account: AccountId,
    /// The market.
    pub market: MarketId,
    /// Buy or sell.
    pub side: Side,
    /// Limit, market or stop.
    pub kind: OrderKind,
    /// Lots.
    pub qty: Qty,
    /// Time in force.
    pub tif: TimeInForce,
    /// Self-trade prevention.
    pub stp: StpMode,
    /// May only reduce the account's position.
    pub reduce_only: bool,
}

/// Everything the engine can be asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Lists a market (boxed: a listing is large and rare, and every other command is small).
    CreateMarket(Box<MarketSpec>),
    /// Registers a collateral asset (the settlement asset, id 0, always exists).
    AddAsset(AssetConfig),
    /// Reprices a collateral asset (price per whole unit, in money).
    SetAssetPrice {
        /// The asset.
        asset: AssetId,
        /// New price per whole unit.
        price: Money,
    },
    /// Opens an account.
    OpenAccount {
        /// The new account's id.
        account: AccountId,
    },
    /// Credits an asset to an account.
    Deposit {
        /// The account.
        account: AccountId,
        /// The asset.
        asset: AssetId,
        /// Amount in the asset's smallest unit.
        amount: i64,
    },
    /// Debits an asset from an account if it stays above initial margin.
    Withdraw {
        /// The account.
        account: AccountId,
        /// The asset.
        asset: AssetId,
        /// Amount in the asset's smallest unit.
        amount: i64,
    },
    /// Sets an account's leverage in a market.
    SetLeverage {
        /// The account.
        account: AccountId,
        /// The market.
        market: MarketId,
        /// Leverage (1 = no leverage).
        leverage: u32,
    },
    /// Switches a market between cross and isolated margin for an account.
    SetMarginMode {
        /// The account.
        account: AccountId,
        /// The market.
        market: MarketId,
        /// Cross or isolated.
        mode: MarginMode,
    },
    /// Enters a new order.
    Place(PlaceOrder),
    /// Cancels one of the account's orders.
    Cancel {
        /// The owner (an account can cancel only its own orders).
        account: AccountId,
        /// The market.
        market: MarketId,
        /// The order.
        id: OrderId,
    },
    /// Changes one of the account's resting orders.
    Amend {
        /// The owner.
        account: AccountId,
        /// The market.
        market: MarketId,
        /// The order.
        id: OrderId,
        /// New limit price (`None` keeps it).
        price: Option<Price>,
        /// New open quantity.
        qty: Qty,
    },
    /// Cancels all of an account's orders, in one market or in all.
    CancelAll {
        /// The owner.
        account: AccountId,
        /// One market, or every market when `None`.
        market: Option<MarketId>,
    },
    /// A new index (spot) price: samples the book's impact prices, updates the mark, triggers
    /// mark stops and checks maintenance margin.
    IndexPrice {
        /// The market.
        market: MarketId,
        /// The index price.
        price: Price,
    },
    /// The venue seeds or tops up the insurance fund (the pool backing `market`; with a shared
    /// fund any market id names the one pool).
    FundDeposit {
        /// The market whose pool receives the deposit.
        market: MarketId,
        /// Amount in money units.
        amount: Money,
    },
    /// Settles the market's funding interval now (if it is due).
    SettleFunding {
        /// The market.
        market: MarketId,
    },
    /// Lets time pass: settles every market whose funding interval has elapsed.
    Tick,
    /// Reports an account's equity, margins and positions (changes nothing).
    AccountView {
        /// The account.
        account: AccountId,
    },
    /// Reports a market's book depth (changes nothing).
    Depth {
        /// The market.
        market: MarketId,
        /// Levels per side.
        levels: u32,
    },
    /// Reports the market's liquidation heatmap: the notional that would be liquidated if the mark
    /// reached each price bucket, from the maintenance index (changes nothing).
    Heatmap {
        /// The market.
        market: MarketId,
        /// Bucket width in ticks.
        bucket_ticks: i64,
    },
    /// Reports the state digest (changes nothing).
    Digest,
}

impl Command {
    /// True for commands that only report and never change state.
    pub fn is_query(&self) -> bool {
        matches!(
            self,
            Command::AccountView { .. } | Command::Depth { .. } | Command::Heatmap { .. } | Command::Digest
        )
    }

    /// The market an order command acts in, if it names one (used to prefetch the account's
    /// orders there).
    pub fn order_market(&self) -> Option<MarketId> {
        match self {
            Command::Place(place) => Some(place.market),
            Command::Cancel { market, .. } | Command::Amend { market, .. } => Some(*market),
            _ => None,
        }
    }

    /// The account a trading command acts for, if it names one (used to prefetch it).
    pub fn trading_account(&self) -> Option<AccountId> {
        match self {
            Command::Place(place) => Some(place.account),
            Command::Cancel { account, .. }
            | Command::Amend { account, .. }
            | Command::CancelAll { account, .. }
            | Command::Deposit { account, .. }
            | Command::Withdraw { account, .. }
            | Command::SetLeverage { account, .. }
            | Command::SetMarginMode { account, .. } => Some(*account),
            _ => None,
        }
    }
}
