//! Booking the book's fills into the clearinghouse: the one path by which trades become
//! positions, used by the liquidator for its own orders and by the engine for normal trading.
//!
//! **Reservation contract.** The engine registers a resting order with
//! `Clearinghouse::add_open_order` for the quantity that comes to rest after matching, and
//! unregisters with `remove_open_order` whatever it cancels itself (user cancels, cancel-all,
//! self-trade cancels of a resting maker, reduce-only cancels and amend-downs). A maker fill
//! shrinks the maker's registration inside `apply_fill` ([`settle_fills`] books makers as
//! `Liquidity::Maker`). The liquidator unregisters the resting orders it cancels for a
//! liquidation. Pending stop orders carry no reservation. Liquidation orders are immediate-or-
//! cancel, never rest and are never registered.

use crate::LiquidationError;
use keel_margin::{Clearinghouse, Fill, FillOutcome, Liquidity};
use keel_types::{AccountId, BookEvent, MarketId, OrderId, Side};

/// The order-id bit that marks a liquidation order. The engine assigns ids below 2^63 to its
/// own orders; the liquidator numbers its orders from 2^63 upwards, so the two never collide and
/// any fill can be recognised as a liquidation fill by its taker id alone.
pub const LIQUIDATION_ORDER_BIT: u64 = 1 << 63;

/// True when `id` belongs to a liquidation order.
#[inline]
pub fn is_liquidation_order(id: OrderId) -> bool {
    id.0 & LIQUIDATION_ORDER_BIT != 0
}

/// One account's side of a booked trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettledSide {
    /// The account.
    pub account: AccountId,
    /// The account's order.
    pub order: OrderId,
    /// The account's side.
    pub side: Side,
    /// Maker or taker.
    pub liquidity: Liquidity,
    /// What the fill did to the account.
    pub outcome: FillOutcome,
}

/// Books one `Fill` event on both accounts: the maker as `Maker` (its reservation shrinks), the
/// taker as `Taker` — without a trading fee when the taker is a liquidation order, whose fee goes
/// to the insurance fund instead — and records the price as the market's last trade.
/// Returns `None` for any other event.
///
/// An error leaves the maker booked if only the taker failed: the book has already matched, so
/// the caller must treat it as fatal (it can only come from a broken contract, such as a maker
/// order that was never registered, or an amount out of range).
pub fn settle_fill(
    ch: &mut Clearinghouse,
    market: MarketId,
    event: &BookEvent,
) -> Result<Option<[SettledSide; 2]>, LiquidationError> {
    let BookEvent::Fill { maker, maker_account, taker, taker_account, taker_side, price, qty, .. } = *event
    else {
        return Ok(None);
    };
    let maker_side = taker_side.opposite();
    let maker_fill =
        Fill { account: maker_account, market, side: maker_side, qty, price, liquidity: Liquidity::Maker };
    let maker_outcome = ch.apply_fill(&maker_fill)?;
    let taker_fill =
        Fill { account: taker_account, market, side: taker_side, qty, price, liquidity: Liquidity::Taker };
    let taker_outcome = if is_liquidation_order(taker) {
        ch.apply_fill_without_fee(&taker_fill)?
    } else {
        ch.apply_fill(&taker_fill)?
    };
    ch.record_trade(market, price)?;
    Ok(Some([
        SettledSide {
            account: maker_account,
            order: maker,
            side: maker_side,
            liquidity: Liquidity::Maker,
            outcome: maker_outcome,
        },
        SettledSide {
            account: taker_account,
            order: taker,
            side: taker_side,
            liquidity: Liquidity::Taker,
            outcome: taker_outcome,
        },
    ]))
}

/// Books every `Fill` in `events` (from one book command in `market`) with [`settle_fill`];
/// other events are ignored. Returns the number of fills booked.
pub fn settle_fills(
    ch: &mut Clearinghouse,
    market: MarketId,
    events: &[BookEvent],
) -> Result<usize, LiquidationError> {
    let mut fills = 0;
    for event in events {
        if settle_fill(ch, market, event)?.is_some() {
            fills += 1;
        }
    }
    Ok(fills)
}
