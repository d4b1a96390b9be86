//! The account view: the numbers a trader sees on a venue's account and position screens.

use crate::position::MarginMode;
use crate::rate::Rate;
use keel_types::{AccountId, MarketId, Money, Price, Qty};
use rust_decimal::Decimal;

/// An account at the current marks.
///
/// `equity`, `initial_margin` and `maintenance_margin` cover the whole account (cross plus
/// isolated positions); `available` and `margin_ratio` are those of the cross pool, which is what
/// new orders draw on and what cross liquidation watches.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountView {
    /// The account.
    pub account: AccountId,
    /// Settlement-asset wallet balance.
    pub balance: Money,
    /// Collateral value after haircuts.
    pub collateral_value: Money,
    /// Balance + collateral + all unrealized PnL + isolated margins.
    pub equity: Money,
    /// Cross equity minus cross initial margin (positions and open orders).
    pub available: Money,
    /// Initial margin of all positions plus open-order reservations.
    pub initial_margin: Money,
    /// Maintenance margin of all positions.
    pub maintenance_margin: Money,
    /// Cross maintenance margin over cross equity; `None` when cross equity is not positive.
    pub margin_ratio: Option<Rate>,
    /// Positions with size, open orders or fenced margin.
    pub positions: Vec<PositionView>,
}

/// One position at the current mark.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PositionView {
    /// The market.
    pub market: MarketId,
    /// Cross or isolated.
    pub mode: MarginMode,
    /// Signed size in lots.
    pub size: Qty,
    /// Average entry price (cost basis / size), exact as a decimal in the market's price unit.
    pub entry_price: Decimal,
    /// Mark price.
    pub mark_price: Price,
    /// Unrealized PnL at mark.
    pub unrealized_pnl: Money,
    /// PnL realized so far in this market.
    pub realized_pnl: Money,
    /// Fees paid so far in this market (negative: net rebates).
    pub fees_paid: Money,
    /// Funding received (positive) or paid so far in this market.
    pub funding: Money,
    /// Leverage set for this market.
    pub leverage: u32,
    /// Initial margin of the position.
    pub initial_margin: Money,
    /// Maintenance margin of the position.
    pub maintenance_margin: Money,
    /// Margin fenced in the position (isolated mode).
    pub isolated_margin: Money,
    /// The account's cross ratio, or the isolated position's own.
    pub margin_ratio: Option<Rate>,
    /// Mark at which the position is liquidated; `None` if no mark in range does.
    pub liquidation_price: Option<Price>,
    /// Mark at which the position's equity reaches zero.
    pub bankruptcy_price: Option<Price>,
    /// Auto-deleveraging quantile, 1 (last in line) to 5 (first in line), as venues show it;
    /// `None` from the margin crate alone, filled in by the liquidation crate's ADL ranking.
    pub adl_quantile: Option<u8>,
}
