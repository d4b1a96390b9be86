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
use keel_margin::{Clearinghouse, Fill, Liquidity};
use keel_types::{BookEvent, MarketId, OrderId};

/// The order-id bit that marks a liquidation order. The engine assigns ids below 2^63 to its
/// own orders; the liquidator numbers its orders from 2^63 upwards, so the two never collide and
/// any fill can be recognised as a liquidation fill by its taker id alone.
pub const LIQUIDATION_ORDER_BIT: u64 = 1 << 63;

/// True when `id` belongs to a liquidation order.
#[inline]
pub fn is_liquidation_order(id: OrderId) -> bool {
    id.0 & LIQUIDATION_ORDER_BIT != 0
}

/// Books every `Fill` in `events` (from one book command in `market`) on both accounts: the
/// maker as `Maker` (its reservation shrinks), the taker as `Taker`. A liquidation order's
/// taker side pays no trading fee: the liquidation fee goes to the insurance fund instead.
/// The last fill's price is recorded as the market's last trade for the mark rule.
///
/// Other events are ignored. An error leaves the fills before it booked: the book has already
/// matched, so the engine must treat it as fatal (it can only come from a broken contract, such
/// as a maker order that was never registered, or an amount out of range).
pub fn settle_fills(
    ch: &mut Clearinghouse,
    market: MarketId,
    events: &[BookEvent],
) -> Result<usize, LiquidationError> {
    let mut fills = 0;
    for event in events {
        if let BookEvent::Fill { maker_account, taker, taker_account, taker_side, price, qty, .. } = *event {
            let maker = Fill {
                account: maker_account,
                market,
                side: taker_side.opposite(),
                qty,
                price,
                liquidity: Liquidity::Maker,
            };
            ch.apply_fill(&maker)?;
            let taker_fill = Fill {
                account: taker_account,
                market,
                side: taker_side,
                qty,
                price,
                liquidity: Liquidity::Taker,
            };
            if is_liquidation_order(taker) {
                ch.apply_fill_without_fee(&taker_fill)?;
            } else {
                ch.apply_fill(&taker_fill)?;
            }
            ch.record_trade(market, price)?;
            fills += 1;
        }
    }
    Ok(fills)
}
