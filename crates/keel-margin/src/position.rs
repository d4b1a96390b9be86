//! A position in one market: signed size, exact cost basis, realized PnL, fees, margin mode,
//! leverage, isolated margin, and the resting orders that reserve margin for it.

use crate::market::MarginBasis;
use crate::rate::{Divisor, mul_div};
use crate::tier::RiskTiers;
use crate::valuation::{ShareCache, WorstCache};
use keel_types::{ArithmeticError, MarketId, Money, Price, Qty, Rounding, Side};

/// Whether a position shares the account's equity or is fenced with its own margin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum MarginMode {
    /// One equity shared by all cross positions of the account.
    #[default]
    Cross,
    /// The position stands alone on the margin moved into it; its loss cannot exceed that margin.
    Isolated,
}

/// Resting orders on one side of one market, as the engine registered them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct OpenOrders {
    /// Total open quantity.
    pub qty: Qty,
    /// Total notional at the orders' limit prices.
    pub notional: Money,
}

/// One account's position in one market.
///
/// The entry is kept as the exact cost basis (`cost`, the signed sum of fill notionals of the
/// open part) rather than a rounded average price, so closing a whole position realizes exactly
/// what was paid and received.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub(crate) market: MarketId,
    /// Index of the market in the clearinghouse: the hot path reaches the mark without a lookup.
    pub(crate) slot: u32,
    pub(crate) size: Qty,
    pub(crate) cost: Money,
    pub(crate) mode: MarginMode,
    pub(crate) leverage: u32,
    /// `leverage` with its reciprocal, so margin needs no `div` instruction per position.
    pub(crate) lev: Divisor,
    pub(crate) isolated_margin: Money,
    pub(crate) realized_pnl: Money,
    pub(crate) fees_paid: Money,
    pub(crate) funding: Money,
    pub(crate) buys: OpenOrders,
    pub(crate) sells: OpenOrders,
    /// This position's share of the account's cross totals as last computed (see `valuation`).
    #[serde(skip)]
    pub(crate) share: ShareCache,
    /// The least this position can add to its account's `equity − maintenance` at any mark, as
    /// last computed (see `valuation`). Not state.
    #[serde(skip)]
    pub(crate) worst: WorstCache,
}

/// What one fill does to a position, computed before anything is changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FillEffect {
    pub(crate) size: Qty,
    pub(crate) cost: Money,
    pub(crate) realized: Money,
    /// Margin moved into (positive) or released from (negative) the isolated fence.
    pub(crate) isolated_delta: Money,
    pub(crate) closed: Qty,
}

/// `|x|` that reports `i64::MIN` instead of panicking.
#[inline]
pub(crate) fn abs(x: i64) -> Result<i64, ArithmeticError> {
    x.checked_abs().ok_or(ArithmeticError::Overflow)
}

/// `price × qty × k` with overflow reported.
#[inline]
pub(crate) fn notional(price: Price, qty: i64, k: i64) -> Result<i64, ArithmeticError> {
    price.0.checked_mul(qty).and_then(|v| v.checked_mul(k)).ok_or(ArithmeticError::Overflow)
}

impl Position {
    /// A flat position with the market's default leverage.
    pub(crate) fn new(market: MarketId, slot: u32, leverage: u32) -> Position {
        Position {
            market,
            slot,
            size: Qty::ZERO,
            cost: Money::ZERO,
            mode: MarginMode::Cross,
            leverage,
            lev: Divisor::leverage(leverage),
            isolated_margin: Money::ZERO,
            realized_pnl: Money::ZERO,
            fees_paid: Money::ZERO,
            funding: Money::ZERO,
            buys: OpenOrders::default(),
            sells: OpenOrders::default(),
            share: ShareCache::default(),
            worst: WorstCache::default(),
        }
    }

    /// The market.
    pub fn market(&self) -> MarketId {
        self.market
    }

    /// Signed size in lots: positive long, negative short.
    pub fn size(&self) -> Qty {
        self.size
    }

    /// Exact signed cost basis of the open size (positive for a long).
    pub fn cost_basis(&self) -> Money {
        self.cost
    }

    /// Margin mode.
    pub fn mode(&self) -> MarginMode {
        self.mode
    }

    /// Sets the leverage and its reciprocal together.
    pub(crate) fn set_leverage(&mut self, leverage: u32) {
        self.leverage = leverage;
        self.lev = Divisor::leverage(leverage);
    }

    /// Leverage chosen for this market.
    pub fn leverage(&self) -> u32 {
        self.leverage
    }

    /// Margin fenced in this position (zero in cross mode).
    pub fn isolated_margin(&self) -> Money {
        self.isolated_margin
    }

    /// PnL realized over the life of this position slot.
    pub fn realized_pnl(&self) -> Money {
        self.realized_pnl
    }

    /// Fees paid (rebates negative) over the life of this position slot.
    pub fn fees_paid(&self) -> Money {
        self.fees_paid
    }

    /// Funding received (positive) or paid over the life of this position slot.
    pub fn funding(&self) -> Money {
        self.funding
    }

    /// Registered resting buy orders.
    pub fn open_buys(&self) -> OpenOrders {
        self.buys
    }

    /// Registered resting sell orders.
    pub fn open_sells(&self) -> OpenOrders {
        self.sells
    }

    /// True when the slot holds nothing worth keeping: no size, no orders, no fenced margin.
    pub(crate) fn is_idle(&self) -> bool {
        self.size.0 == 0 && self.buys.qty.0 == 0 && self.sells.qty.0 == 0 && self.isolated_margin.0 == 0
    }

    /// Unrealized PnL at `mark`: `size × mark − cost`, exact.
    #[inline]
    pub(crate) fn unrealized_pnl(&self, mark: Price, k: i64) -> Result<Money, ArithmeticError> {
        Money(notional(mark, self.size.0, k)?).checked_sub(self.cost)
    }

    /// Unrealized PnL and margin notional together, valuing the position at mark once.
    #[inline]
    pub(crate) fn valuation(
        &self,
        mark: Price,
        k: i64,
        basis: MarginBasis,
    ) -> Result<(Money, Money), ArithmeticError> {
        let value = notional(mark, self.size.0, k)?;
        let upnl = value.checked_sub(self.cost.0).ok_or(ArithmeticError::Overflow)?;
        let margin_notional = match basis {
            MarginBasis::MarkValue => abs(value)?,
            MarginBasis::EntryValue => abs(self.cost.0)?,
        };
        Ok((Money(upnl), Money(margin_notional)))
    }

    /// The notional margins are computed on, per the market's basis (always non-negative).
    #[inline]
    pub(crate) fn margin_notional(
        &self,
        mark: Price,
        k: i64,
        basis: MarginBasis,
    ) -> Result<Money, ArithmeticError> {
        match basis {
            MarginBasis::MarkValue => Ok(Money(abs(notional(mark, self.size.0, k)?)?)),
            MarginBasis::EntryValue => Ok(Money(abs(self.cost.0)?)),
        }
    }

    /// Initial margin of the position: margin notional / leverage, rounded up.
    #[inline]
    pub(crate) fn initial_margin(&self, margin_notional: Money) -> Result<Money, ArithmeticError> {
        self.lev.divide(margin_notional.0, Rounding::Ceil).map(Money)
    }

    /// Maintenance margin of the position from the tier its margin notional falls in.
    #[inline]
    pub(crate) fn maintenance_margin(
        &self,
        margin_notional: Money,
        tiers: &RiskTiers,
    ) -> Result<Money, ArithmeticError> {
        if self.size.0 == 0 {
            return Ok(Money::ZERO);
        }
        tiers.maintenance_margin(margin_notional)
    }

    /// Margin reserved by the resting orders, and the notional of their opening part.
    ///
    /// Each side reserves only for the quantity that would open or extend exposure: buys first
    /// close a short, sells first close a long, and only the rest needs margin (Binance). The
    /// reservation of a side is the initial margin of that opening notional plus its "open loss"
    /// (a buy above mark or a sell below mark is immediately under water by the difference). Both
    /// sides cannot add exposure at once, so the larger side is reserved (Bybit's rule).
    #[inline]
    pub(crate) fn order_reservation(&self, mark: Price, k: i64) -> Result<Money, ArithmeticError> {
        // Most positions have no resting orders: skip the two-sided computation entirely.
        if self.buys.qty.0 == 0 && self.sells.qty.0 == 0 {
            return Ok(Money::ZERO);
        }
        reservation(self.size.0, self.buys, self.sells, mark, k, self.lev).map(|(r, _)| r)
    }

    /// The position after one fill of `qty` lots at `price` on `side`, without changing anything.
    ///
    /// Reduce: the closed share of the cost basis is `cost × closed / |size|`, rounded up, so the
    /// realized PnL (`±exit notional − closed cost`) rounds down for long and short alike and the
    /// residue stays in the remaining basis, to be realized when the position closes. Flip: the
    /// whole position closes exactly and the remainder opens at the fill price.
    pub(crate) fn fill_effect(
        &self,
        side: Side,
        qty: Qty,
        price: Price,
        k: i64,
    ) -> Result<FillEffect, ArithmeticError> {
        let size = self.size.0;
        let signed_qty = side.sign() * qty.0;
        let (mut new_size, mut new_cost, mut realized, mut closed) = (size, self.cost.0, 0i64, 0i64);
        let mut isolated_delta = 0i64;
        let mut opened = qty.0;
        if size != 0 && size.signum() != signed_qty.signum() {
            let held = abs(size)?;
            closed = qty.0.min(held);
            opened = qty.0 - closed;
            let closed_cost = if closed == held {
                self.cost.0
            } else {
                mul_div(self.cost.0, closed, held, Rounding::Ceil)?
            };
            let exit = notional(price, closed, k)?;
            realized = (size.signum() * exit).checked_sub(closed_cost).ok_or(ArithmeticError::Overflow)?;
            new_cost = new_cost.checked_sub(closed_cost).ok_or(ArithmeticError::Overflow)?;
            new_size = size + side.sign() * closed;
            if self.mode == MarginMode::Isolated {
                // The remaining share of fenced margin is kept rounded up, the released share down.
                let released = if closed == held {
                    self.isolated_margin.0
                } else {
                    mul_div(self.isolated_margin.0, closed, held, Rounding::Floor)?
                };
                isolated_delta = -released;
            }
        }
        if opened > 0 {
            let added = notional(price, opened, k)?;
            new_cost = new_cost.checked_add(side.sign() * added).ok_or(ArithmeticError::Overflow)?;
            new_size = new_size.checked_add(side.sign() * opened).ok_or(ArithmeticError::Overflow)?;
            if self.mode == MarginMode::Isolated {
                let locked = self.lev.divide(added, Rounding::Ceil)?;
                isolated_delta = isolated_delta.checked_add(locked).ok_or(ArithmeticError::Overflow)?;
            }
        }
        // `i64::MIN` has no magnitude; refusing it keeps every later `|size|` and negation safe.
        abs(new_size)?;
        Ok(FillEffect {
            size: Qty(new_size),
            cost: Money(new_cost),
            realized: Money(realized),
            isolated_delta: Money(isolated_delta),
            closed: Qty(closed),
        })
    }
}

/// Open-order reservation for a position of `size` with resting `buys` and `sells` (see
/// [`Position::order_reservation`]); also returns the opening notional of the reserved side.
#[inline]
pub(crate) fn reservation(
    size: i64,
    buys: OpenOrders,
    sells: OpenOrders,
    mark: Price,
    k: i64,
    leverage: Divisor,
) -> Result<(Money, Money), ArithmeticError> {
    let short = size.checked_neg().ok_or(ArithmeticError::Overflow)?.max(0);
    let (buy, buy_notional) = side_reservation(buys, short, mark, k, leverage, Side::Buy)?;
    let (sell, sell_notional) = side_reservation(sells, size.max(0), mark, k, leverage, Side::Sell)?;
    Ok(if buy >= sell { (Money(buy), Money(buy_notional)) } else { (Money(sell), Money(sell_notional)) })
}

#[inline]
fn side_reservation(
    orders: OpenOrders,
    closable: i64,
    mark: Price,
    k: i64,
    leverage: Divisor,
    side: Side,
) -> Result<(i64, i64), ArithmeticError> {
    let opening = orders.qty.0.saturating_sub(closable);
    if opening <= 0 {
        return Ok((0, 0));
    }
    // The opening part is valued at the side's average limit price, rounded up against the trader.
    let opening_notional = if opening == orders.qty.0 {
        orders.notional.0
    } else {
        mul_div(orders.notional.0, opening, orders.qty.0, Rounding::Ceil)?
    };
    let at_mark = notional(mark, opening, k)?;
    let open_loss = match side {
        Side::Buy => opening_notional - at_mark,
        Side::Sell => at_mark - opening_notional,
    }
    .max(0);
    let im = leverage.divide(opening_notional, Rounding::Ceil)?;
    Ok((im.checked_add(open_loss).ok_or(ArithmeticError::Overflow)?, opening_notional))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos() -> Position {
        Position::new(MarketId(1), 0, 10)
    }

    fn apply(p: &mut Position, side: Side, qty: i64, price: i64) -> FillEffect {
        let e = p.fill_effect(side, Qty(qty), Price(price), 1).unwrap();
        p.size = e.size;
        p.cost = e.cost;
        p.isolated_margin = Money(p.isolated_margin.0 + e.isolated_delta.0);
        e
    }

    #[test]
    fn averages_in_and_realizes_on_reduce() {
        let mut p = pos();
        apply(&mut p, Side::Buy, 2, 100);
        apply(&mut p, Side::Buy, 1, 130);
        assert_eq!((p.size, p.cost), (Qty(3), Money(330)));
        // Sell 1 of 3: closed cost 110, exit 150 → +40.
        let e = apply(&mut p, Side::Sell, 1, 150);
        assert_eq!((e.realized, e.closed, p.size, p.cost), (Money(40), Qty(1), Qty(2), Money(220)));
    }

    #[test]
    fn partial_close_rounds_realized_down_and_keeps_residue() {
        let mut p = pos();
        apply(&mut p, Side::Buy, 3, 100);
        p.cost = Money(301); // an odd basis: 100.333 per lot
        // Closing 1 lot at 100: exact PnL −0.333 rounds down to −1; the basis keeps 200.
        let e = apply(&mut p, Side::Sell, 1, 100);
        assert_eq!((e.realized, p.cost), (Money(-1), Money(200)));
        let e = apply(&mut p, Side::Sell, 2, 100);
        assert_eq!((e.realized, p.cost, p.size), (Money(0), Money(0), Qty(0)));
        // Short side: basis −301 for 3 lots (entry 100.333); buy back 1 at 100 → +0.333 → 0.
        let mut s = pos();
        apply(&mut s, Side::Sell, 3, 100);
        s.cost = Money(-301);
        let e = apply(&mut s, Side::Buy, 1, 100);
        assert_eq!((e.realized, s.cost), (Money(0), Money(-201)));
    }

    #[test]
    fn isolated_margin_locks_on_open_and_releases_pro_rata() {
        let mut p = pos();
        p.mode = MarginMode::Isolated;
        let e = apply(&mut p, Side::Sell, 3, 1_001);
        // 3,003 / 10x = 300.3 → 301 locked.
        assert_eq!(e.isolated_delta, Money(301));
        let e = apply(&mut p, Side::Buy, 1, 1_001);
        assert_eq!(e.isolated_delta, Money(-100));
        assert_eq!(p.isolated_margin, Money(201));
        // A flip releases everything and locks for the new side.
        let e = apply(&mut p, Side::Buy, 4, 1_000);
        assert_eq!((e.isolated_delta, p.size, p.cost), (Money(-201 + 200), Qty(2), Money(2_000)));
    }

    #[test]
    fn reducing_orders_reserve_nothing() {
        let buys = OpenOrders { qty: Qty(5), notional: Money(500) };
        let none = OpenOrders::default();
        // Short 5: buying 5 only closes.
        assert_eq!(
            reservation(-5, buys, none, Price(100), 1, Divisor::leverage(10)),
            Ok((Money(0), Money(0)))
        );
        // Short 2: 3 of the 5 open a long; 300 / 10 = 30.
        assert_eq!(
            reservation(-2, buys, none, Price(100), 1, Divisor::leverage(10)),
            Ok((Money(30), Money(300)))
        );
        // A buy above mark adds its open loss: 5 × (100 − 90) = 50.
        assert_eq!(
            reservation(0, buys, none, Price(90), 1, Divisor::leverage(10)),
            Ok((Money(100), Money(500)))
        );
        // Both sides: the larger one counts.
        let sells = OpenOrders { qty: Qty(8), notional: Money(880) };
        assert_eq!(
            reservation(0, buys, sells, Price(100), 1, Divisor::leverage(10)),
            Ok((Money(88), Money(880)))
        );
    }
}
