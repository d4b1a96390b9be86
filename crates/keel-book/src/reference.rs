//! A deliberately simple reference order book, written from the specification in `docs/book.md`
//! alone, to hold [`OrderBook`](crate::OrderBook) to it in the differential test and the fuzz
//! target.
//!
//! Everything here is O(n) or worse on purpose: resting orders are one flat `Vec` stamped with an
//! arrival sequence number, and every question ("what is the best ask?", "who is next in the
//! queue?") is answered by sorting or scanning that vector again. Nothing is cached, so there is no
//! index, link or level total that could drift out of step with the orders themselves.

use crate::{BookConfig, FillEstimate, LevelView, OrderView};
use keel_types::{
    AccountId, Amend, BookEvent, CancelReason, NewOrder, OrderId, OrderKind, Price, Qty, RejectReason, Side,
    StopReference, StpMode, TimeInForce,
};

/// A resting order and the moment it came to rest (its time priority within a price).
#[derive(Clone, Copy, Debug)]
struct Resting {
    seq: u64,
    view: OrderView,
}

/// An order about to take liquidity: a new limit or market order, a triggered stop or an order
/// re-entered by an amendment.
#[derive(Clone, Copy, Debug)]
struct Taker {
    id: OrderId,
    account: AccountId,
    side: Side,
    /// `None` for a market order, which gets its limit from the book on arrival.
    limit: Option<Price>,
    qty: Qty,
    tif: TimeInForce,
    stp: StpMode,
    reduce_only: bool,
}

/// The reference book: the same commands and events as the real book, none of its data structures.
#[derive(Clone, Debug)]
pub struct ReferenceBook {
    config: BookConfig,
    resting: Vec<Resting>,
    /// Pending stops in the order they were placed (which is also their trigger order).
    stops: Vec<NewOrder>,
    next_seq: u64,
    last_trade: Option<Price>,
    mark: Option<Price>,
}

/// True when a taker on `side` limited at `limit` may trade with a maker resting at `price`.
fn within_limit(side: Side, limit: Price, price: Price) -> bool {
    match side {
        Side::Buy => price <= limit,
        Side::Sell => price >= limit,
    }
}

/// True when a stop on `side` with `trigger` is reached by the reference price `price`.
fn stop_reached(side: Side, trigger: Price, price: Price) -> bool {
    match side {
        Side::Buy => price >= trigger,
        Side::Sell => price <= trigger,
    }
}

/// The trigger and reference of a stop order; `None` for limit and market orders.
fn stop_of(kind: OrderKind) -> Option<(Price, StopReference)> {
    match kind {
        OrderKind::StopMarket { trigger, reference } | OrderKind::StopLimit { trigger, reference, .. } => {
            Some((trigger, reference))
        }
        OrderKind::Limit { .. } | OrderKind::Market => None,
    }
}

impl ReferenceBook {
    /// An empty reference book enforcing the limits of `config` (capacities are irrelevant here).
    pub fn new(config: BookConfig) -> ReferenceBook {
        ReferenceBook {
            config,
            resting: Vec::new(),
            stops: Vec::new(),
            next_seq: 0,
            last_trade: None,
            mark: None,
        }
    }

    // ----- commands -----

    /// Validates a new order, then matches, rests, cancels or parks it as a stop.
    pub fn place(&mut self, order: NewOrder, out: &mut Vec<BookEvent>) -> Result<(), RejectReason> {
        if let Err(reason) = self.validate(&order) {
            out.push(BookEvent::Rejected { id: order.id, reason });
            return Err(reason);
        }
        out.push(BookEvent::Accepted { id: order.id, account: order.account });
        match order.kind {
            OrderKind::StopMarket { .. } | OrderKind::StopLimit { .. } => self.stops.push(order),
            OrderKind::Limit { price } => self.execute(Self::taker_of(&order, Some(price)), out),
            OrderKind::Market => self.execute(Self::taker_of(&order, None), out),
        }
        Ok(())
    }

    /// Whether `place` would accept `order`: its validation alone, changing nothing.
    pub fn check(&self, order: &NewOrder) -> Result<(), RejectReason> {
        self.validate(order)
    }

    /// Cancels a resting order or a pending stop with the caller's reason.
    pub fn cancel(
        &mut self,
        id: OrderId,
        reason: CancelReason,
        out: &mut Vec<BookEvent>,
    ) -> Result<(), RejectReason> {
        if let Some(at) = self.resting.iter().position(|r| r.view.id == id) {
            let gone = self.resting.remove(at).view;
            let resting = Some(keel_types::Resting { side: gone.side, price: gone.price });
            out.push(BookEvent::Cancelled {
                id,
                account: gone.account,
                remaining: gone.qty,
                reason,
                resting,
            });
            return Ok(());
        }
        if let Some(at) = self.stops.iter().position(|s| s.id == id) {
            let gone = self.stops.remove(at);
            out.push(BookEvent::Cancelled {
                id,
                account: gone.account,
                remaining: gone.qty,
                reason,
                resting: None,
            });
            return Ok(());
        }
        out.push(BookEvent::Rejected { id, reason: RejectReason::UnknownOrder });
        Err(RejectReason::UnknownOrder)
    }

    /// Cancels the account's resting orders (oldest first), then its pending stops (oldest first);
    /// returns how many were cancelled.
    pub fn cancel_all(
        &mut self,
        account: AccountId,
        reason: CancelReason,
        out: &mut Vec<BookEvent>,
    ) -> usize {
        let mut ids: Vec<OrderId> = self.account_orders(account).iter().map(|o| o.id).collect();
        ids.extend(self.stops.iter().filter(|s| s.account == account).map(|s| s.id));
        for &id in &ids {
            // Every id was just listed as live and nothing else runs in between.
            let _ = self.cancel(id, reason, out);
        }
        ids.len()
    }

    /// Changes a resting order's price and/or open quantity.
    pub fn amend(&mut self, amend: Amend, out: &mut Vec<BookEvent>) -> Result<(), RejectReason> {
        let reject = |reason: RejectReason, out: &mut Vec<BookEvent>| {
            out.push(BookEvent::Rejected { id: amend.id, reason });
            Err(reason)
        };
        let Some(at) = self.resting.iter().position(|r| r.view.id == amend.id) else {
            let reason = if self.stops.iter().any(|s| s.id == amend.id) {
                RejectReason::StopNotAmendable
            } else {
                RejectReason::UnknownOrder
            };
            return reject(reason, out);
        };
        if let Err(reason) = self.check_qty(amend.qty) {
            return reject(reason, out);
        }
        if let Some(price) = amend.price
            && let Err(reason) = self.check_price(price)
        {
            return reject(reason, out);
        }
        let current = self.resting[at].view;
        let price = amend.price.unwrap_or(current.price);
        let keeps_place = price == current.price && amend.qty <= current.qty;
        if !keeps_place && current.tif == TimeInForce::PostOnly && self.would_take(current.side, price) {
            return reject(RejectReason::PostOnlyWouldTake, out);
        }
        if keeps_place {
            self.resting[at].view.qty = amend.qty;
            out.push(BookEvent::Amended {
                id: current.id,
                account: current.account,
                side: current.side,
                previous_price: current.price,
                previous_qty: current.qty,
                price,
                qty: amend.qty,
                priority_kept: true,
            });
            return Ok(());
        }
        self.resting.remove(at);
        out.push(BookEvent::Amended {
            id: current.id,
            account: current.account,
            side: current.side,
            previous_price: current.price,
            previous_qty: current.qty,
            price,
            qty: amend.qty,
            priority_kept: false,
        });
        self.execute(
            Taker {
                id: current.id,
                account: current.account,
                side: current.side,
                limit: Some(price),
                qty: amend.qty,
                tif: current.tif,
                stp: current.stp,
                reduce_only: current.reduce_only,
            },
            out,
        );
        Ok(())
    }

    /// Records a reference price and triggers, in placement order, every stop on that reference it
    /// reaches; returns how many triggered.
    pub fn trigger_stops(
        &mut self,
        reference: StopReference,
        price: Price,
        out: &mut Vec<BookEvent>,
    ) -> usize {
        if reference == StopReference::Mark {
            self.mark = Some(price);
        }
        let (fired, kept): (Vec<NewOrder>, Vec<NewOrder>) = self.stops.iter().partition(|s| {
            stop_of(s.kind).is_some_and(|(trigger, watched)| {
                watched == reference && stop_reached(s.side, trigger, price)
            })
        });
        self.stops = kept;
        for stop in &fired {
            out.push(BookEvent::Triggered { id: stop.id, account: stop.account, reference_price: price });
            let limit = match stop.kind {
                OrderKind::StopLimit { price, .. } => Some(price),
                _ => None,
            };
            self.execute(Self::taker_of(stop, limit), out);
        }
        fired.len()
    }

    // ----- queries -----

    /// Highest bid price.
    pub fn best_bid(&self) -> Option<Price> {
        self.best(Side::Buy)
    }

    /// Lowest ask price.
    pub fn best_ask(&self) -> Option<Price> {
        self.best(Side::Sell)
    }

    /// The resting orders of `side` in priority order: best price first, then oldest first.
    pub fn orders(&self, side: Side) -> Vec<OrderView> {
        let mut list: Vec<Resting> = self.resting.iter().filter(|r| r.view.side == side).copied().collect();
        list.sort_by_key(|r| {
            let rank = match side {
                Side::Buy => -r.view.price.0,
                Side::Sell => r.view.price.0,
            };
            (rank, r.seq)
        });
        list.into_iter().map(|r| r.view).collect()
    }

    /// The price levels of `side` from the best price outward.
    pub fn levels(&self, side: Side) -> Vec<LevelView> {
        let mut levels: Vec<LevelView> = Vec::new();
        for order in self.orders(side) {
            match levels.last_mut() {
                Some(level) if level.price == order.price => {
                    level.qty += order.qty;
                    level.orders += 1;
                }
                _ => levels.push(LevelView { price: order.price, qty: order.qty, orders: 1 }),
            }
        }
        levels
    }

    /// Total open quantity resting on `side` at exactly `price`.
    pub fn qty_at(&self, side: Side, price: Price) -> Qty {
        self.orders(side).iter().filter(|o| o.price == price).fold(Qty::ZERO, |sum, o| sum + o.qty)
    }

    /// Total open quantity resting on `side` within `distance` ticks of `reference`, inclusive.
    pub fn qty_within(&self, side: Side, reference: Price, distance: i64) -> Qty {
        self.orders(side)
            .iter()
            .filter(|o| (i128::from(o.price.0) - i128::from(reference.0)).abs() <= i128::from(distance))
            .fold(Qty::ZERO, |sum, o| sum + o.qty)
    }

    /// What a taker on `taker_side` would get for `qty` by sweeping the opposite side.
    pub fn estimate_fill_qty(&self, taker_side: Side, qty: Qty) -> FillEstimate {
        let mut estimate = FillEstimate { qty: Qty::ZERO, notional: 0, worst_price: None, complete: false };
        for order in self.orders(taker_side.opposite()) {
            let take = (qty - estimate.qty).0.min(order.qty.0);
            if take <= 0 {
                break;
            }
            estimate.qty.0 += take;
            estimate.notional += i128::from(take) * i128::from(order.price.0);
            estimate.worst_price = Some(order.price);
        }
        estimate.complete = estimate.qty == qty;
        estimate
    }

    /// A resting order by id.
    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        self.resting.iter().find(|r| r.view.id == id).map(|r| r.view)
    }

    /// True when `id` names a resting order or a pending stop.
    pub fn is_live(&self, id: OrderId) -> bool {
        self.order(id).is_some() || self.stops.iter().any(|s| s.id == id)
    }

    /// The resting orders of `account`, in the order they came to rest.
    pub fn account_orders(&self, account: AccountId) -> Vec<OrderView> {
        let mut list: Vec<Resting> =
            self.resting.iter().filter(|r| r.view.account == account).copied().collect();
        list.sort_by_key(|r| r.seq);
        list.into_iter().map(|r| r.view).collect()
    }

    /// The pending stops, in the order they were placed.
    pub fn pending_stops(&self) -> Vec<NewOrder> {
        self.stops.clone()
    }

    /// Number of resting orders.
    pub fn resting_count(&self) -> usize {
        self.resting.len()
    }

    /// Number of pending stops.
    pub fn stop_count(&self) -> usize {
        self.stops.len()
    }

    /// Price of the last trade.
    pub fn last_trade_price(&self) -> Option<Price> {
        self.last_trade
    }

    /// The last mark price fed to [`ReferenceBook::trigger_stops`].
    pub fn mark_price(&self) -> Option<Price> {
        self.mark
    }

    // ----- the rules -----

    fn best(&self, side: Side) -> Option<Price> {
        self.orders(side).first().map(|o| o.price)
    }

    fn check_qty(&self, qty: Qty) -> Result<(), RejectReason> {
        if qty.0 <= 0 {
            Err(RejectReason::InvalidQuantity)
        } else if qty > self.config.max_qty {
            Err(RejectReason::QuantityTooLarge)
        } else {
            Ok(())
        }
    }

    fn check_price(&self, price: Price) -> Result<(), RejectReason> {
        if price.0 <= 0 {
            Err(RejectReason::InvalidPrice)
        } else if price > self.config.max_price {
            Err(RejectReason::PriceOutOfRange)
        } else {
            Ok(())
        }
    }

    /// True when an order on `side` at `price` crosses the best opposite price.
    fn would_take(&self, side: Side, price: Price) -> bool {
        self.best(side.opposite()).is_some_and(|best| within_limit(side, price, best))
    }

    /// The validation steps of `docs/book.md`, in their order.
    fn validate(&self, order: &NewOrder) -> Result<(), RejectReason> {
        self.check_qty(order.qty)?;
        let (limit, trigger) = match order.kind {
            OrderKind::Limit { price } => (Some(price), None),
            OrderKind::Market => (None, None),
            OrderKind::StopMarket { trigger, .. } => (None, Some(trigger)),
            OrderKind::StopLimit { trigger, price, .. } => (Some(price), Some(trigger)),
        };
        for price in [limit, trigger].into_iter().flatten() {
            self.check_price(price)?;
        }
        let plain_limit = matches!(order.kind, OrderKind::Limit { .. });
        if order.tif == TimeInForce::PostOnly && !plain_limit {
            return Err(RejectReason::InvalidTimeInForce);
        }
        if self.is_live(order.id) {
            return Err(RejectReason::DuplicateOrderId);
        }
        if let OrderKind::Limit { price } = order.kind
            && order.tif == TimeInForce::PostOnly
            && self.would_take(order.side, price)
        {
            return Err(RejectReason::PostOnlyWouldTake);
        }
        if let Some((trigger, reference)) = stop_of(order.kind) {
            let current = match reference {
                StopReference::Mark => self.mark,
                StopReference::Last => self.last_trade,
            };
            if current.is_some_and(|price| stop_reached(order.side, trigger, price)) {
                return Err(RejectReason::StopWouldTrigger);
            }
        }
        Ok(())
    }

    fn taker_of(order: &NewOrder, limit: Option<Price>) -> Taker {
        Taker {
            id: order.id,
            account: order.account,
            side: order.side,
            limit,
            qty: order.qty,
            tif: order.tif,
            stp: order.stp,
            reduce_only: order.reduce_only,
        }
    }

    /// The protection limit of a market order on `side` that found `best` on the other side.
    fn protection_limit(&self, side: Side, best: Price) -> Price {
        let distance = i128::from(best.0) * i128::from(self.config.market_protection_bps) / 10_000;
        let distance = i64::try_from(distance).unwrap_or(i64::MAX);
        match side {
            Side::Buy => Price(best.0.saturating_add(distance)),
            Side::Sell => Price(best.0.saturating_sub(distance).max(1)),
        }
    }

    /// Fill or kill: whether walking the opposite side up to `limit`, as matching would, reaches the
    /// whole quantity before the side runs out or an own maker would stop the order.
    fn fills_whole(&self, taker: &Taker, limit: Price) -> bool {
        let mut count = Qty::ZERO;
        for maker in self.orders(taker.side.opposite()) {
            if count >= taker.qty || !within_limit(taker.side, limit, maker.price) {
                break;
            }
            if maker.account == taker.account {
                if taker.stp == StpMode::CancelOldest {
                    continue;
                }
                return false;
            }
            count += maker.qty;
        }
        count >= taker.qty
    }

    fn cancel_taker(taker: &Taker, remaining: Qty, reason: CancelReason, out: &mut Vec<BookEvent>) {
        out.push(BookEvent::Cancelled {
            id: taker.id,
            account: taker.account,
            remaining,
            reason,
            resting: None,
        });
    }

    /// Executes a limit or market order: matching, then resting or cancelling what is left.
    fn execute(&mut self, taker: Taker, out: &mut Vec<BookEvent>) {
        let opposite = taker.side.opposite();
        let is_market = taker.limit.is_none();
        let limit = match taker.limit {
            Some(limit) => limit,
            None => match self.best(opposite) {
                Some(best) => self.protection_limit(taker.side, best),
                None => return Self::cancel_taker(&taker, taker.qty, CancelReason::Unfilled, out),
            },
        };
        if taker.tif == TimeInForce::Fok && !self.fills_whole(&taker, limit) {
            return Self::cancel_taker(&taker, taker.qty, CancelReason::FillOrKill, out);
        }
        let mut left = taker.qty;
        let mut stopped_by_self_trade = false;
        while left.is_positive() {
            let Some(maker) = self.orders(opposite).first().copied() else { break };
            if !within_limit(taker.side, limit, maker.price) {
                break;
            }
            let at = self.resting.iter().position(|r| r.view.id == maker.id).expect("listed maker rests");
            if maker.account == taker.account {
                if taker.stp != StpMode::CancelNewest {
                    self.resting.remove(at);
                    out.push(BookEvent::Cancelled {
                        id: maker.id,
                        account: maker.account,
                        remaining: maker.qty,
                        reason: CancelReason::SelfTrade,
                        resting: Some(keel_types::Resting { side: maker.side, price: maker.price }),
                    });
                }
                if taker.stp == StpMode::CancelOldest {
                    continue;
                }
                stopped_by_self_trade = true;
                break;
            }
            let qty = left.0.min(maker.qty.0);
            left.0 -= qty;
            let maker_remaining = Qty(maker.qty.0 - qty);
            if maker_remaining.is_positive() {
                self.resting[at].view.qty = maker_remaining;
            } else {
                self.resting.remove(at);
            }
            self.last_trade = Some(maker.price);
            out.push(BookEvent::Fill {
                maker: maker.id,
                maker_account: maker.account,
                taker: taker.id,
                taker_account: taker.account,
                taker_side: taker.side,
                price: maker.price,
                qty: Qty(qty),
                maker_remaining,
                taker_remaining: left,
            });
        }
        if !left.is_positive() {
            return;
        }
        let reason = if stopped_by_self_trade {
            CancelReason::SelfTrade
        } else if is_market {
            if self.best(opposite).is_some() { CancelReason::PriceProtection } else { CancelReason::Unfilled }
        } else {
            match taker.tif {
                TimeInForce::Ioc | TimeInForce::Fok => CancelReason::Unfilled,
                TimeInForce::Gtc | TimeInForce::PostOnly => {
                    self.rest(&taker, limit, left);
                    return;
                }
            }
        };
        Self::cancel_taker(&taker, left, reason, out);
    }

    /// Puts the open rest of an order at the back of its price level.
    fn rest(&mut self, taker: &Taker, price: Price, qty: Qty) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.resting.push(Resting {
            seq,
            view: OrderView {
                id: taker.id,
                account: taker.account,
                side: taker.side,
                price,
                qty,
                tif: taker.tif,
                stp: taker.stp,
                reduce_only: taker.reduce_only,
            },
        });
    }
}
