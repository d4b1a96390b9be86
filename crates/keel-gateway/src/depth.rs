//! The dispatcher's L2 view of one market's book, rebuilt from the engine's events.
//!
//! `BookEvent::Accepted` names an order without repeating it, so the view remembers the orders the
//! gateway itself submitted (their side, price and quantity) and follows each through fills,
//! cancels, amendments and triggers. What it cannot know — orders that were resting before the
//! gateway started, or that someone else entered — is corrected by `Command::Depth` queries: a
//! query's answer sits at an exact point of the event stream, so the view replaces its levels with
//! it and publishes the differences as ordinary updates. Subscribers therefore see one consistent,
//! gap-free sequence of level updates either way.

use keel_types::{BookEvent, OrderId, OrderKind, Price, Qty, Side};
use std::collections::{BTreeMap, HashMap};

/// Price levels of one side, best first: (price, lots).
pub type Levels = Vec<(Price, Qty)>;

/// One level's new total, to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelChange {
    /// Depth sequence number of this change.
    pub seq: u64,
    /// The side.
    pub side: Side,
    /// The level.
    pub price: Price,
    /// Lots now at the level (zero: gone).
    pub qty: Qty,
}

/// An order of ours that is resting.
#[derive(Clone, Copy, Debug)]
struct Resting {
    side: Side,
    price: Price,
    qty: Qty,
}

/// The order being matched right now (the taker of the current command).
#[derive(Clone, Copy, Debug)]
struct Incoming {
    id: OrderId,
    side: Side,
    /// Its limit price if the rest of it may come to rest.
    rest_price: Option<Price>,
    remaining: Qty,
}

/// L2 depth of one market plus what is needed to keep it exact.
#[derive(Debug, Default)]
pub struct DepthView {
    bids: BTreeMap<Price, Qty>,
    asks: BTreeMap<Price, Qty>,
    seq: u64,
    orders: HashMap<OrderId, Resting>,
    stops: HashMap<OrderId, (Side, OrderKind, Qty)>,
    incoming: Option<Incoming>,
    /// An event touched an order the view does not know: the levels may be off until the next
    /// depth query.
    pub stale: bool,
}

impl DepthView {
    /// Sequence number of the last published change.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Bids best first and asks best first, at most `limit` per side.
    pub fn snapshot(&self, limit: usize) -> (Levels, Levels) {
        let bids = self.bids.iter().rev().take(limit).map(|(p, q)| (*p, *q)).collect();
        let asks = self.asks.iter().take(limit).map(|(p, q)| (*p, *q)).collect();
        (bids, asks)
    }

    fn levels(&mut self, side: Side) -> &mut BTreeMap<Price, Qty> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Adds `delta` lots at a level and records the change.
    fn adjust(&mut self, side: Side, price: Price, delta: i64, out: &mut Vec<LevelChange>) {
        if delta == 0 {
            return;
        }
        let levels = self.levels(side);
        let qty = levels.get(&price).map_or(0, |q| q.0) + delta;
        if qty > 0 {
            levels.insert(price, Qty(qty));
        } else {
            levels.remove(&price);
        }
        self.seq += 1;
        out.push(LevelChange { seq: self.seq, side, price, qty: Qty(qty.max(0)) });
    }

    /// The gateway is placing this order (its id comes with the `Accepted` event that follows).
    pub fn expect_order(&mut self, id: OrderId, side: Side, kind: OrderKind, qty: Qty) {
        match kind {
            OrderKind::StopMarket { .. } | OrderKind::StopLimit { .. } => {
                self.stops.insert(id, (side, kind, qty));
            }
            OrderKind::Limit { price } => {
                self.incoming = Some(Incoming { id, side, rest_price: Some(price), remaining: qty });
            }
            OrderKind::Market => {
                self.incoming = Some(Incoming { id, side, rest_price: None, remaining: qty });
            }
        }
    }

    /// Ends the current command: the unfilled rest of a limit order that was not cancelled rests.
    pub fn end_command(&mut self, out: &mut Vec<LevelChange>) {
        if let Some(incoming) = self.incoming.take()
            && let Some(price) = incoming.rest_price
            && incoming.remaining.is_positive()
        {
            self.orders.insert(incoming.id, Resting { side: incoming.side, price, qty: incoming.remaining });
            self.adjust(incoming.side, price, incoming.remaining.0, out);
        }
    }

    /// Applies one book event of this market.
    pub fn apply(&mut self, event: &BookEvent, out: &mut Vec<LevelChange>) {
        match *event {
            BookEvent::Accepted { id, .. } => {
                // A stop is only pending; an order we did not submit is matched but never rests
                // as far as we know (liquidation orders are immediate-or-cancel).
                if self.incoming.is_some_and(|i| i.id != id) {
                    self.end_command(out);
                }
                if self.incoming.is_none() && !self.stops.contains_key(&id) {
                    self.incoming =
                        Some(Incoming { id, side: Side::Buy, rest_price: None, remaining: Qty(0) });
                }
            }
            BookEvent::Triggered { id, .. } => {
                self.end_command(out);
                if let Some((side, kind, qty)) = self.stops.remove(&id) {
                    let rest_price = match kind {
                        OrderKind::StopLimit { price, .. } => Some(price),
                        _ => None,
                    };
                    self.incoming = Some(Incoming { id, side, rest_price, remaining: qty });
                } else {
                    self.stale = true;
                }
            }
            BookEvent::Fill {
                maker,
                taker,
                taker_side,
                price,
                qty,
                maker_remaining,
                taker_remaining,
                ..
            } => {
                self.adjust(taker_side.opposite(), price, -qty.0, out);
                if maker_remaining.is_positive() {
                    if let Some(order) = self.orders.get_mut(&maker) {
                        order.qty = maker_remaining;
                    }
                } else {
                    self.orders.remove(&maker);
                }
                match self.incoming.as_mut() {
                    Some(incoming) if incoming.id == taker => incoming.remaining = taker_remaining,
                    _ => {
                        // A resting order that was amended across the spread trades as a taker.
                        if let Some(order) = self.orders.get(&taker).copied() {
                            self.adjust(order.side, order.price, taker_remaining.0 - order.qty.0, out);
                            if taker_remaining.is_positive() {
                                self.orders.insert(taker, Resting { qty: taker_remaining, ..order });
                            } else {
                                self.orders.remove(&taker);
                            }
                        }
                    }
                }
            }
            BookEvent::Cancelled { id, remaining, .. } => {
                if let Some(incoming) = self.incoming.as_mut().filter(|i| i.id == id) {
                    incoming.remaining = Qty(0);
                } else if let Some(order) = self.orders.remove(&id) {
                    self.adjust(order.side, order.price, -order.qty.0, out);
                    self.stale |= order.qty != remaining;
                } else if self.stops.remove(&id).is_none() {
                    self.stale = true;
                }
            }
            BookEvent::Amended { id, price, qty, .. } => {
                if let Some(order) = self.orders.get(&id).copied() {
                    self.adjust(order.side, order.price, -order.qty.0, out);
                    self.adjust(order.side, price, qty.0, out);
                    self.orders.insert(id, Resting { side: order.side, price, qty });
                } else {
                    self.stale = true;
                }
            }
            BookEvent::Rejected { .. } => {}
        }
    }

    /// Replaces the levels with the engine's (from a `Depth` query at this point of the stream)
    /// and records the differences as changes.
    pub fn reconcile(&mut self, bids: &[(Price, Qty)], asks: &[(Price, Qty)], out: &mut Vec<LevelChange>) {
        self.end_command(out);
        for (side, truth) in [(Side::Buy, bids), (Side::Sell, asks)] {
            let truth: BTreeMap<Price, Qty> = truth.iter().copied().collect();
            let ours = std::mem::take(self.levels(side));
            for price in ours.keys() {
                if !truth.contains_key(price) {
                    self.seq += 1;
                    out.push(LevelChange { seq: self.seq, side, price: *price, qty: Qty(0) });
                }
            }
            for (price, qty) in &truth {
                if ours.get(price) != Some(qty) {
                    self.seq += 1;
                    out.push(LevelChange { seq: self.seq, side, price: *price, qty: *qty });
                }
            }
            *self.levels(side) = truth;
        }
        // Orders we track whose level vanished are gone (cancelled or filled out of our sight).
        let (bids, asks) = (&self.bids, &self.asks);
        self.orders.retain(|_, o| match o.side {
            Side::Buy => bids.contains_key(&o.price),
            Side::Sell => asks.contains_key(&o.price),
        });
        self.stale = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::AccountId;

    fn fill(maker: u64, taker: u64, taker_side: Side, price: i64, qty: i64, mr: i64, tr: i64) -> BookEvent {
        BookEvent::Fill {
            maker: OrderId(maker),
            maker_account: AccountId(1),
            taker: OrderId(taker),
            taker_account: AccountId(2),
            taker_side,
            price: Price(price),
            qty: Qty(qty),
            maker_remaining: Qty(mr),
            taker_remaining: Qty(tr),
        }
    }

    #[test]
    fn resting_rest_fills_and_cancels_follow_the_book() {
        let mut view = DepthView::default();
        let mut out = Vec::new();
        view.expect_order(OrderId(1), Side::Sell, OrderKind::Limit { price: Price(100) }, Qty(5));
        view.apply(&BookEvent::Accepted { id: OrderId(1), account: AccountId(1) }, &mut out);
        view.end_command(&mut out);
        assert_eq!(view.snapshot(10).1, vec![(Price(100), Qty(5))]);
        // A buy of 7 at 101 takes 5 and rests 2 at 101.
        view.expect_order(OrderId(2), Side::Buy, OrderKind::Limit { price: Price(101) }, Qty(7));
        view.apply(&BookEvent::Accepted { id: OrderId(2), account: AccountId(2) }, &mut out);
        view.apply(&fill(1, 2, Side::Buy, 100, 5, 0, 2), &mut out);
        view.end_command(&mut out);
        assert_eq!(view.snapshot(10), (vec![(Price(101), Qty(2))], vec![]));
        view.apply(
            &BookEvent::Cancelled {
                id: OrderId(2),
                account: AccountId(2),
                remaining: Qty(2),
                reason: keel_types::CancelReason::User,
                resting: Some(keel_types::Resting { side: Side::Buy, price: Price(101) }),
            },
            &mut out,
        );
        assert_eq!(view.snapshot(10), (vec![], vec![]));
        let seqs: Vec<u64> = out.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "consecutive");
        assert!(!view.stale);
    }

    #[test]
    fn reconcile_publishes_only_the_differences() {
        let mut view = DepthView::default();
        let mut out = Vec::new();
        view.reconcile(&[(Price(10), Qty(1))], &[(Price(12), Qty(3))], &mut out);
        assert_eq!(out.len(), 2);
        out.clear();
        view.reconcile(&[(Price(10), Qty(1))], &[(Price(13), Qty(3))], &mut out);
        assert_eq!(
            out,
            vec![
                LevelChange { seq: 3, side: Side::Sell, price: Price(12), qty: Qty(0) },
                LevelChange { seq: 4, side: Side::Sell, price: Price(13), qty: Qty(3) },
            ]
        );
    }
}
