//! Read-only questions the margin, risk and market-data code ask the book.

use crate::book::{Handle, OrderBook};
use crate::ladder::NIL;
use keel_types::{AccountId, NewOrder, OrderId, Price, Qty, Rounding, Side, StpMode, TimeInForce};

/// A resting order as seen from outside the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderView {
    /// The order's id.
    pub id: OrderId,
    /// Its owner.
    pub account: AccountId,
    /// Buy or sell.
    pub side: Side,
    /// Its limit price.
    pub price: Price,
    /// Its open (unfilled) quantity.
    pub qty: Qty,
    /// `Gtc` or `PostOnly`: the only kinds that rest.
    pub tif: TimeInForce,
    /// Its self-trade prevention mode.
    pub stp: StpMode,
    /// Whether it is flagged reduce-only.
    pub reduce_only: bool,
}

/// One price level as seen from outside the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LevelView {
    /// The level's price.
    pub price: Price,
    /// Total open quantity resting at it.
    pub qty: Qty,
    /// Number of orders resting at it.
    pub orders: u32,
}

/// What a taker would get by sweeping one side of the book, without changing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FillEstimate {
    /// Quantity that would fill.
    pub qty: Qty,
    /// Σ price × quantity over the fills, in tick·lots (exact; convert to money with the
    /// market's `Grid::money_per_tick_lot`).
    pub notional: i128,
    /// The last (worst) price reached, if anything filled.
    pub worst_price: Option<Price>,
    /// False when the side ran out before the asked quantity or notional was reached.
    pub complete: bool,
}

impl FillEstimate {
    /// The volume-weighted average fill price, rounded as asked; `None` if nothing would fill.
    pub fn average_price(&self, rounding: Rounding) -> Option<Price> {
        if self.qty.0 == 0 {
            return None;
        }
        let q = i128::from(self.qty.0);
        let floor = self.notional.div_euclid(q);
        let avg = match rounding {
            Rounding::Floor => floor,
            Rounding::Ceil if self.notional.rem_euclid(q) != 0 => floor + 1,
            Rounding::Ceil => floor,
        };
        Some(Price(avg as i64))
    }
}

impl OrderBook {
    /// Highest bid price.
    #[inline]
    pub fn best_bid(&self) -> Option<Price> {
        self.bids.best().map(|rung| self.bids.price(rung.key))
    }

    /// Lowest ask price.
    #[inline]
    pub fn best_ask(&self) -> Option<Price> {
        self.asks.best().map(|rung| self.asks.price(rung.key))
    }

    /// Total open quantity resting on `side` at exactly `price`.
    pub fn qty_at(&self, side: Side, price: Price) -> Qty {
        let ladder = self.ladder(side);
        ladder.level_at(ladder.key(price)).map_or(Qty::ZERO, |level| self.levels[level as usize].qty)
    }

    /// The levels of `side` from the best price outward (L2 depth: take the first N).
    pub fn levels(&self, side: Side) -> impl Iterator<Item = LevelView> + '_ {
        // Empty levels kept behind the touch (see `OrderBook::retire_level`) are not depth.
        self.ladder(side).iter_best_first().filter_map(|rung| {
            let level = &self.levels[rung.level as usize];
            (level.count != 0).then_some(LevelView {
                price: level.price,
                qty: level.qty,
                orders: level.count,
            })
        })
    }

    /// Number of price levels on `side`.
    pub fn level_count(&self, side: Side) -> usize {
        self.levels(side).count()
    }

    /// What a taker on `taker_side` would get for `qty` by sweeping the opposite side (the impact
    /// price for a quantity).
    pub fn estimate_fill_qty(&self, taker_side: Side, qty: Qty) -> FillEstimate {
        let mut estimate = FillEstimate { qty: Qty::ZERO, notional: 0, worst_price: None, complete: false };
        let mut left = qty.0;
        for level in self.levels(taker_side.opposite()) {
            if left == 0 {
                break;
            }
            let take = left.min(level.qty.0);
            left -= take;
            estimate.qty.0 += take;
            estimate.notional += i128::from(take) * i128::from(level.price.0);
            estimate.worst_price = Some(level.price);
        }
        estimate.complete = left == 0;
        estimate
    }

    /// What a taker on `taker_side` would get by spending `notional` (in tick·lots) on the opposite
    /// side, in whole lots (the impact price for a notional, as venues define impact bid/ask).
    pub fn estimate_fill_notional(&self, taker_side: Side, notional: i128) -> FillEstimate {
        let mut estimate = FillEstimate { qty: Qty::ZERO, notional: 0, worst_price: None, complete: false };
        let mut left = notional.max(0);
        for level in self.levels(taker_side.opposite()) {
            let price = i128::from(level.price.0);
            let level_notional = price * i128::from(level.qty.0);
            // Whole levels are taken without dividing; only the level the notional runs out in
            // needs the division (the impact-price sampling walks dozens of levels per index update).
            let take = if left >= level_notional { i128::from(level.qty.0) } else { left / price };
            if take > 0 {
                left -= take * price;
                estimate.qty.0 += take as i64;
                estimate.notional += take * price;
                estimate.worst_price = Some(level.price);
            }
            if take < i128::from(level.qty.0) {
                // Not even one more lot is affordable at this level: the notional is spent.
                estimate.complete = true;
                break;
            }
        }
        estimate
    }

    /// Total open quantity resting on `side` at prices within `distance` ticks of `reference`
    /// (inclusive): the depth that stands in front of a move of that size.
    pub fn qty_within(&self, side: Side, reference: Price, distance: i64) -> Qty {
        let low = reference.0.saturating_sub(distance);
        let high = reference.0.saturating_add(distance);
        let mut total = Qty::ZERO;
        for level in self.levels(side) {
            let inside = (low..=high).contains(&level.price.0);
            let beyond = match side {
                Side::Buy => level.price.0 < low,
                Side::Sell => level.price.0 > high,
            };
            if beyond {
                break;
            }
            if inside {
                total += level.qty;
            }
        }
        total
    }

    /// A live order by id: resting orders only (pending stops are listed by [`Self::pending_stops`]).
    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        match self.ids.get(&id) {
            Some(Handle::Resting(slot)) => Some(self.view(*slot)),
            _ => None,
        }
    }

    /// True when `id` names a live order: resting or a pending stop.
    pub fn is_live(&self, id: OrderId) -> bool {
        self.ids.contains_key(&id)
    }

    /// The resting orders of `side` in priority order: best price first, FIFO within a level.
    pub fn orders(&self, side: Side) -> impl Iterator<Item = OrderView> + '_ {
        self.ladder(side).iter_best_first().flat_map(move |rung| {
            let mut at = self.levels[rung.level as usize].head;
            std::iter::from_fn(move || {
                (at != NIL).then(|| {
                    let view = self.view(at);
                    at = self.orders[at as usize].next;
                    view
                })
            })
        })
    }

    /// The resting orders of `account`, in the order they came to rest.
    pub fn account_orders(&self, account: AccountId) -> impl Iterator<Item = OrderView> + '_ {
        let mut at =
            self.account_slots.get(account).map_or(NIL, |slot| self.account_lists[slot as usize].head);
        std::iter::from_fn(move || {
            (at != NIL).then(|| {
                let view = self.view(at);
                at = self.orders[at as usize].account_next;
                view
            })
        })
    }

    /// How many reduce-only orders rest in the book, of all accounts (O(1)).
    pub fn reduce_only_total(&self) -> u32 {
        self.reduce_only
    }

    /// How many reduce-only orders `account` has resting (O(1)).
    pub fn reduce_only_count(&self, account: AccountId) -> u32 {
        self.account_slots.get(account).map_or(0, |slot| self.account_lists[slot as usize].reduce_only)
    }

    /// The pending stop orders, in the order they were placed (and will trigger on one update).
    pub fn pending_stops(&self) -> impl Iterator<Item = NewOrder> + '_ {
        self.stops.iter().map(|stop| stop.order)
    }

    /// Number of resting orders.
    pub fn resting_count(&self) -> usize {
        self.orders.len()
    }

    /// Number of pending stop orders.
    pub fn stop_count(&self) -> usize {
        self.stops.len()
    }

    /// Price of the last trade in this book.
    pub fn last_trade_price(&self) -> Option<Price> {
        self.last_trade
    }

    /// The last mark price fed to [`OrderBook::trigger_stops`].
    pub fn mark_price(&self) -> Option<Price> {
        self.mark
    }

    fn view(&self, slot: u32) -> OrderView {
        let o = &self.orders[slot as usize];
        OrderView {
            id: o.id,
            account: o.account,
            side: o.side,
            price: o.price,
            qty: o.qty,
            tif: o.tif,
            stp: o.stp,
            reduce_only: o.reduce_only,
        }
    }
}
