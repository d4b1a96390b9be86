//! The order book: resting orders in price-time priority, and the commands that change them.

use crate::config::BookConfig;
use crate::ladder::{Ladder, NIL, Rung};
use crate::stops::{PendingStop, StopBook, is_reached, stop_params};
use keel_types::{
    AccountId, Amend, BookEvent, CancelReason, NewOrder, OrderId, OrderKind, Price, Qty, RejectReason,
    Resting, Side, StopReference, StpMode, TimeInForce,
};
use keel_types::{AccountSlots, IdMap, Paged};
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use slab::Slab;
use std::collections::hash_map::Entry;
use std::fmt;
use std::marker::PhantomData;

/// Reads a slab as `Slab`'s own serde implementation writes it (a map of slot → value), for the
/// book's slabs in a snapshot. `Slab`'s own reader reserves room for as many entries as the map
/// announces before reading any, so a snapshot damaged past its checksum or edited by hand could
/// make it reserve terabytes; this one grows with the entries actually read. Slots from `NIL` up
/// are refused: no `u32` handle can name them.
pub(crate) fn deserialize_slab<'de, D, T>(deserializer: D) -> Result<Slab<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct SlabVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for SlabVisitor<T> {
        type Value = Slab<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of slab slots to values")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slab<T>, A::Error> {
            let mut entries = Vec::new();
            while let Some((slot, value)) = map.next_entry::<usize, T>()? {
                if slot >= NIL as usize {
                    return Err(A::Error::custom(format_args!("slab slot {slot} is beyond the last handle")));
                }
                entries.push((slot, value));
            }
            // Same layout as `Slab`'s own reader: the given slots occupied, the gaps vacant.
            Ok(entries.into_iter().collect())
        }
    }

    deserializer.deserialize_map(SlabVisitor(PhantomData))
}

/// A resting limit order: a node in its level's FIFO queue and in its account's order list.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct RestingOrder {
    pub id: OrderId,
    pub price: Price,
    /// Open (unfilled) quantity.
    pub qty: Qty,
    pub account: AccountId,
    /// Index of the account's order list in `OrderBook::account_lists`.
    pub account_slot: u32,
    /// Slot of the price level in the level slab.
    pub level: u32,
    /// Neighbours in the level's FIFO queue (`NIL` at the ends).
    pub prev: u32,
    pub next: u32,
    /// Neighbours in the account's order list (`NIL` at the ends).
    pub account_prev: u32,
    pub account_next: u32,
    pub side: Side,
    pub tif: TimeInForce,
    pub stp: StpMode,
    pub reduce_only: bool,
}

impl RestingOrder {
    /// Where the order rests, as a cancellation reports it.
    fn resting(&self) -> Resting {
        Resting { side: self.side, price: self.price }
    }
}

/// A price level: the FIFO queue of the orders resting at one price.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Level {
    pub price: Price,
    /// Sum of the open quantity of the orders in the queue.
    pub qty: Qty,
    pub count: u32,
    pub head: u32,
    pub tail: u32,
}

/// The resting orders of one account, oldest first. (`Default` only fills unused room in
/// [`Paged`] storage; a list in use starts empty, with `NIL` ends.)
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct AccountOrders {
    pub head: u32,
    pub tail: u32,
    pub count: u32,
    /// How many of them are reduce-only, so the engine's reduce-only upkeep can skip the (many)
    /// accounts that have none without walking their orders.
    pub reduce_only: u32,
}

/// Where a live order id lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Handle {
    /// In the order slab, resting in the book.
    Resting(u32),
    /// In the stop book, waiting for its trigger.
    Stop(u32),
}

/// Why [`OrderBook::place_gated`] refused an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal<E> {
    /// The book's own rules (see [`OrderBook::check`]).
    Book(RejectReason),
    /// The caller's gate.
    Gate(E),
}

/// An incoming order while it takes liquidity.
struct Taker {
    id: OrderId,
    account: AccountId,
    side: Side,
    /// Worst price it may trade at.
    limit: Price,
    /// Still unfilled.
    qty: Qty,
    stp: StpMode,
}

/// Why a taker stopped matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MatchEnd {
    /// Nothing left to fill.
    Filled,
    /// The best opposite price is beyond the taker's limit.
    LimitReached,
    /// No opposite orders left.
    BookEmpty,
    /// Self-trade prevention cancelled the rest of the taker.
    SelfTrade,
}

/// Empty levels tolerated behind the touch beyond half the ladder before compacting.
const COMPACTION_SLACK: usize = 256;

/// A limit or market order ready to execute (validated, stop already triggered).
#[derive(Clone, Copy)]
struct Executable {
    id: OrderId,
    account: AccountId,
    side: Side,
    /// `None` for a market order.
    limit: Option<Price>,
    qty: Qty,
    tif: TimeInForce,
    stp: StpMode,
    reduce_only: bool,
}

impl Executable {
    fn from_order(order: &NewOrder) -> Executable {
        let limit = match order.kind {
            OrderKind::Limit { price } | OrderKind::StopLimit { price, .. } => Some(price),
            OrderKind::Market | OrderKind::StopMarket { .. } => None,
        };
        Executable {
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
}

/// A price-time priority limit order book for one market.
///
/// Every command appends what happened to a caller-supplied event buffer, in order. Nothing
/// allocates while the book stays within the capacities of its [`BookConfig`] and holds no more
/// orders at once than it has before (the id index grows to that high-water mark).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct OrderBook {
    pub(crate) config: BookConfig,
    #[serde(deserialize_with = "deserialize_slab")]
    pub(crate) orders: Slab<RestingOrder>,
    #[serde(deserialize_with = "deserialize_slab")]
    pub(crate) levels: Slab<Level>,
    pub(crate) bids: Ladder,
    pub(crate) asks: Ladder,
    /// Order id → its slot. Not pre-sized to `order_capacity`: the table grows with the most
    /// orders the book has held at once, so that a book's few hundred live orders share a few
    /// dozen cache lines instead of scattering over megabytes of a table sized for the
    /// capacity, where every cancel and amend missed the cache (about a tenth of the engine's
    /// time on its benchmark flow).
    pub(crate) ids: IdMap<OrderId, Handle>,
    /// Account → index of its order list in `account_lists`. Entries are never removed, so the
    /// index a resting order records stays valid and unlinking it needs no hash lookup.
    pub(crate) account_slots: AccountSlots,
    /// Paged so that a book with orders from 100,000 accounts over its life never copies the
    /// lists to grow (a `Vec` doubling here stalled one order for up to 0.5 ms).
    pub(crate) account_lists: Paged<AccountOrders>,
    pub(crate) stops: StopBook,
    pub(crate) last_trade: Option<Price>,
    pub(crate) mark: Option<Price>,
    /// Empty levels kept behind the touch (see `retire_level`).
    pub(crate) empty_levels: usize,
    /// Resting reduce-only orders of all accounts: when none rest, the engine's reduce-only
    /// upkeep after a trade looks up no account at all.
    pub(crate) reduce_only: u32,
    /// Reused buffers, kept to avoid allocating while triggering stops and cancelling in bulk.
    /// Scratch only: not part of the book's state, so not in a snapshot.
    #[serde(skip)]
    fired: Vec<PendingStop>,
    #[serde(skip)]
    slots: Vec<u32>,
}

/// The opposite-side ladder and the level slab, borrowed together for matching.
#[inline]
fn ladder_mut<'a>(bids: &'a mut Ladder, asks: &'a mut Ladder, side: Side) -> &'a mut Ladder {
    match side {
        Side::Buy => bids,
        Side::Sell => asks,
    }
}

/// True when a taker on `side` with `limit` may trade against a resting order at `resting`.
#[inline]
fn crosses(side: Side, limit: Price, resting: Price) -> bool {
    match side {
        Side::Buy => resting <= limit,
        Side::Sell => resting >= limit,
    }
}

impl OrderBook {
    /// Bytes of one resting order's slot in the order slab; what a resting order costs beyond it
    /// is its share of the id index, the price levels and the account lists.
    pub const ORDER_SLOT_BYTES: usize = std::mem::size_of::<RestingOrder>();

    /// An empty book with the given limits and pre-sized capacities.
    pub fn new(config: BookConfig) -> OrderBook {
        OrderBook {
            config,
            orders: Slab::with_capacity(config.order_capacity),
            levels: Slab::with_capacity(config.level_capacity),
            bids: Ladder::with_capacity(Side::Buy, config.level_capacity / 2),
            asks: Ladder::with_capacity(Side::Sell, config.level_capacity / 2),
            ids: IdMap::default(),
            account_slots: AccountSlots::with_capacity(config.account_capacity),
            account_lists: Paged::with_capacity(config.account_capacity),
            stops: StopBook::with_capacity(config.order_capacity / 16),
            last_trade: None,
            mark: None,
            empty_levels: 0,
            reduce_only: 0,
            fired: Vec::with_capacity(64),
            slots: Vec::with_capacity(64),
        }
    }

    /// The limits this book enforces.
    pub fn config(&self) -> &BookConfig {
        &self.config
    }

    #[inline]
    pub(crate) fn ladder(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    // ----- commands -----

    /// Enters a new order: validates it, then matches, rests, cancels or parks it as a stop.
    ///
    /// Returns the rejection reason if the order was refused (a `Rejected` event says the same).
    pub fn place(&mut self, order: NewOrder, out: &mut Vec<BookEvent>) -> Result<(), RejectReason> {
        if let Err(reason) = self.check(&order) {
            out.push(BookEvent::Rejected { id: order.id, reason });
            return Err(reason);
        }
        self.enter(order, out);
        Ok(())
    }

    /// Enters a new order after a gate of the caller's (an account's margin check): the book's
    /// own checks first, as [`OrderBook::check`] runs them, then `gate`, then the order enters as
    /// [`OrderBook::place`] enters it.
    ///
    /// Unlike `place`, a refusal emits no event: the book is unchanged and the caller reports it.
    /// (Checking with `check` and then calling `place` would run the book's checks twice.)
    pub fn place_gated<E>(
        &mut self,
        order: NewOrder,
        out: &mut Vec<BookEvent>,
        gate: impl FnOnce(&Self, &NewOrder) -> Result<(), E>,
    ) -> Result<(), Refusal<E>> {
        self.check(&order).map_err(Refusal::Book)?;
        gate(self, &order).map_err(Refusal::Gate)?;
        self.enter(order, out);
        Ok(())
    }

    /// Enters an order that passed [`OrderBook::check`]: matches, rests, cancels or parks it.
    fn enter(&mut self, order: NewOrder, out: &mut Vec<BookEvent>) {
        out.push(BookEvent::Accepted { id: order.id, account: order.account });
        if stop_params(order.kind).is_some() {
            let slot = self.stops.insert(order);
            self.ids.insert(order.id, Handle::Stop(slot));
        } else {
            self.execute(Executable::from_order(&order), out);
        }
    }

    /// Cancels a resting order or a pending stop.
    pub fn cancel(
        &mut self,
        id: OrderId,
        reason: CancelReason,
        out: &mut Vec<BookEvent>,
    ) -> Result<(), RejectReason> {
        match self.ids.remove(&id) {
            Some(handle) => {
                self.cancel_handle(handle, reason, out);
                Ok(())
            }
            None => {
                out.push(BookEvent::Rejected { id, reason: RejectReason::UnknownOrder });
                Err(RejectReason::UnknownOrder)
            }
        }
    }

    /// Cancels a resting order or a pending stop of `account`'s. An order of another account is
    /// refused as if its id were unknown (an owner may not learn of others' orders), and a
    /// refusal, unlike [`OrderBook::cancel`]'s, emits no event: the book is unchanged and the
    /// caller reports it. One id look-up, where checking the owner first would take two.
    pub fn cancel_of(
        &mut self,
        account: AccountId,
        id: OrderId,
        reason: CancelReason,
        out: &mut Vec<BookEvent>,
    ) -> Result<(), RejectReason> {
        let Entry::Occupied(entry) = self.ids.entry(id) else {
            return Err(RejectReason::UnknownOrder);
        };
        let owner = match *entry.get() {
            Handle::Resting(slot) => self.orders[slot as usize].account,
            Handle::Stop(slot) => self.stops.get(slot).order.account,
        };
        if owner != account {
            return Err(RejectReason::UnknownOrder);
        }
        let handle = entry.remove();
        self.cancel_handle(handle, reason, out);
        Ok(())
    }

    /// Cancels the order at `handle`, whose id has left the id map.
    fn cancel_handle(&mut self, handle: Handle, reason: CancelReason, out: &mut Vec<BookEvent>) {
        match handle {
            Handle::Resting(slot) => {
                let order = self.unlink_resting(slot);
                self.push_cancel(order.id, order.account, order.qty, reason, Some(order.resting()), out);
            }
            Handle::Stop(slot) => self.cancel_stop(slot, reason, out),
        }
    }

    /// Cancels every resting order and pending stop of `account` (resting orders first, each group
    /// oldest first). Returns how many were cancelled.
    pub fn cancel_all(
        &mut self,
        account: AccountId,
        reason: CancelReason,
        out: &mut Vec<BookEvent>,
    ) -> usize {
        let mut cancelled = 0;
        if let Some(account_slot) = self.account_slots.get(account) {
            let mut at = self.account_lists[account_slot as usize].head;
            while at != NIL {
                let next = self.orders[at as usize].account_next;
                self.cancel_resting(at, reason, out);
                cancelled += 1;
                at = next;
            }
        }
        let mut slots = std::mem::take(&mut self.slots);
        slots.clear();
        self.stops.slots_of(account, &mut slots);
        for &slot in &slots {
            self.ids.remove(&self.stops.get(slot).order.id);
            self.cancel_stop(slot, reason, out);
            cancelled += 1;
        }
        self.slots = slots;
        cancelled
    }

    /// Changes a resting order's price and/or open quantity.
    ///
    /// A pure quantity decrease keeps the order's place in its queue. A price change or a
    /// quantity increase takes the order out and enters it again at the back of its new level;
    /// if the new price crosses the spread it trades first, at the resting orders' prices.
    pub fn amend(&mut self, amend: Amend, out: &mut Vec<BookEvent>) -> Result<(), RejectReason> {
        let slot = match self.validate_amend(&amend) {
            Ok(slot) => slot,
            Err(reason) => {
                out.push(BookEvent::Rejected { id: amend.id, reason });
                return Err(reason);
            }
        };
        let order = self.orders[slot as usize];
        let price = amend.price.unwrap_or(order.price);
        if price == order.price && amend.qty <= order.qty {
            let reduced_by = order.qty - amend.qty;
            self.orders[slot as usize].qty = amend.qty;
            self.levels[order.level as usize].qty -= reduced_by;
            out.push(BookEvent::Amended {
                id: order.id,
                account: order.account,
                side: order.side,
                previous_price: order.price,
                previous_qty: order.qty,
                price,
                qty: amend.qty,
                priority_kept: true,
            });
            return Ok(());
        }
        // The order is entered again below; its id is free until it rests.
        self.unlink_resting(slot);
        self.ids.remove(&order.id);
        out.push(BookEvent::Amended {
            id: order.id,
            account: order.account,
            side: order.side,
            previous_price: order.price,
            previous_qty: order.qty,
            price,
            qty: amend.qty,
            priority_kept: false,
        });
        self.execute(
            Executable {
                id: order.id,
                account: order.account,
                side: order.side,
                limit: Some(price),
                qty: amend.qty,
                tif: order.tif,
                stp: order.stp,
                reduce_only: order.reduce_only,
            },
            out,
        );
        Ok(())
    }

    /// Feeds a new value of a reference price and triggers every stop order watching it that the
    /// price has reached, in the order the stops were placed; each then executes as a market or
    /// limit order.
    ///
    /// The book records its own last trade price (see [`OrderBook::last_trade_price`]) but does not
    /// trigger last-price stops by itself: the caller decides when (the engine does so after each
    /// command), which keeps one command's consequences in one well-defined order.
    pub fn trigger_stops(
        &mut self,
        reference: StopReference,
        price: Price,
        out: &mut Vec<BookEvent>,
    ) -> usize {
        if reference == StopReference::Mark {
            self.mark = Some(price);
        }
        let mut fired = std::mem::take(&mut self.fired);
        fired.clear();
        self.stops.take_reached(reference, price, &mut fired);
        for stop in &fired {
            let order = stop.order;
            self.ids.remove(&order.id);
            out.push(BookEvent::Triggered { id: order.id, account: order.account, reference_price: price });
            self.execute(Executable::from_order(&order), out);
        }
        let count = fired.len();
        self.fired = fired;
        count
    }

    // ----- validation -----

    fn validate_qty(&self, qty: Qty) -> Result<(), RejectReason> {
        if qty.0 <= 0 {
            Err(RejectReason::InvalidQuantity)
        } else if qty > self.config.max_qty {
            Err(RejectReason::QuantityTooLarge)
        } else {
            Ok(())
        }
    }

    fn validate_price(&self, price: Price) -> Result<(), RejectReason> {
        if price.0 <= 0 {
            Err(RejectReason::InvalidPrice)
        } else if price > self.config.max_price {
            Err(RejectReason::PriceOutOfRange)
        } else {
            Ok(())
        }
    }

    /// Whether `place` would accept `order`, without changing anything: the checks of a new order,
    /// in their documented order (see `docs/book.md`). Lets a caller run its own checks (margin)
    /// only on orders the book would take.
    pub fn check(&self, order: &NewOrder) -> Result<(), RejectReason> {
        self.validate_qty(order.qty)?;
        match order.kind {
            OrderKind::Limit { price } => self.validate_price(price)?,
            OrderKind::Market => {}
            OrderKind::StopMarket { trigger, .. } => self.validate_price(trigger)?,
            OrderKind::StopLimit { trigger, price, .. } => {
                self.validate_price(price)?;
                self.validate_price(trigger)?;
            }
        }
        let post_only_allowed = matches!(order.kind, OrderKind::Limit { .. });
        if order.tif == TimeInForce::PostOnly && !post_only_allowed {
            return Err(RejectReason::InvalidTimeInForce);
        }
        if self.ids.contains_key(&order.id) {
            return Err(RejectReason::DuplicateOrderId);
        }
        match order.kind {
            OrderKind::Limit { price }
                if order.tif == TimeInForce::PostOnly && self.would_take(order.side, price) =>
            {
                return Err(RejectReason::PostOnlyWouldTake);
            }
            OrderKind::StopMarket { trigger, reference }
            | OrderKind::StopLimit { trigger, reference, .. } => {
                let current = match reference {
                    StopReference::Mark => self.mark,
                    StopReference::Last => self.last_trade,
                };
                if current.is_some_and(|current| is_reached(order.side, trigger, current)) {
                    return Err(RejectReason::StopWouldTrigger);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The checks of an amendment; returns the order's slot.
    fn validate_amend(&self, amend: &Amend) -> Result<u32, RejectReason> {
        let slot = match self.ids.get(&amend.id) {
            Some(Handle::Resting(slot)) => *slot,
            Some(Handle::Stop(_)) => return Err(RejectReason::StopNotAmendable),
            None => return Err(RejectReason::UnknownOrder),
        };
        self.validate_qty(amend.qty)?;
        if let Some(price) = amend.price {
            self.validate_price(price)?;
        }
        let order = &self.orders[slot as usize];
        let price = amend.price.unwrap_or(order.price);
        let keeps_place = price == order.price && amend.qty <= order.qty;
        if !keeps_place && order.tif == TimeInForce::PostOnly && self.would_take(order.side, price) {
            return Err(RejectReason::PostOnlyWouldTake);
        }
        Ok(slot)
    }

    /// True when an order on `side` limited at `price` would trade at once.
    #[inline]
    fn would_take(&self, side: Side, price: Price) -> bool {
        let opposite = self.ladder(side.opposite());
        opposite.best().is_some_and(|best| crosses(side, price, opposite.price(best.key)))
    }

    // ----- execution -----

    /// Matches a validated limit or market order, then rests or cancels what is left.
    fn execute(&mut self, order: Executable, out: &mut Vec<BookEvent>) {
        let limit = match order.limit {
            Some(limit) => limit,
            None => match self.protection_limit(order.side) {
                Some(limit) => limit,
                None => {
                    self.push_cancel(order.id, order.account, order.qty, CancelReason::Unfilled, None, out);
                    return;
                }
            },
        };
        if order.tif == TimeInForce::Fok && !self.can_fill_whole(&order, limit) {
            self.push_cancel(order.id, order.account, order.qty, CancelReason::FillOrKill, None, out);
            return;
        }
        let mut taker = Taker {
            id: order.id,
            account: order.account,
            side: order.side,
            limit,
            qty: order.qty,
            stp: order.stp,
        };
        let end = self.match_taker(&mut taker, out);
        if taker.qty.0 == 0 {
            return;
        }
        let reason = match (end, order.limit, order.tif) {
            (MatchEnd::SelfTrade, _, _) => CancelReason::SelfTrade,
            (MatchEnd::LimitReached, None, _) => CancelReason::PriceProtection,
            (_, None, _) | (_, Some(_), TimeInForce::Ioc | TimeInForce::Fok) => CancelReason::Unfilled,
            (_, Some(price), TimeInForce::Gtc | TimeInForce::PostOnly) => {
                self.rest(order, price, taker.qty);
                return;
            }
        };
        self.push_cancel(order.id, order.account, taker.qty, reason, None, out);
    }

    /// The worst price a market order on `side` may reach now: the best opposite price moved by
    /// the configured protection distance. `None` when the opposite side is empty.
    pub fn protection_limit(&self, side: Side) -> Option<Price> {
        let opposite = self.ladder(side.opposite());
        let best = opposite.price(opposite.best()?.key);
        let bps = i128::from(self.config.market_protection_bps);
        // A distance beyond i64 (huge prices and protection) must clamp, not truncate into garbage.
        let distance = i64::try_from(i128::from(best.0) * bps / 10_000).unwrap_or(i64::MAX);
        Some(match side {
            Side::Buy => Price(best.0.saturating_add(distance)),
            Side::Sell => Price((best.0 - distance).max(1)),
        })
    }

    /// Whether a fill-or-kill order would fill completely: walks the opposite side up to `limit`
    /// the way matching will, applying the order's self-trade prevention mode.
    fn can_fill_whole(&self, order: &Executable, limit: Price) -> bool {
        let opposite = self.ladder(order.side.opposite());
        let mut available = 0i64;
        for rung in opposite.iter_best_first() {
            let level = &self.levels[rung.level as usize];
            if !crosses(order.side, limit, level.price) {
                return false;
            }
            let mut at = level.head;
            while at != NIL {
                let maker = &self.orders[at as usize];
                if maker.account == order.account {
                    if order.stp != StpMode::CancelOldest {
                        // Matching would cancel the taker here, before it is filled.
                        return false;
                    }
                } else {
                    available += maker.qty.0;
                    if available >= order.qty.0 {
                        return true;
                    }
                }
                at = maker.next;
            }
        }
        false
    }

    /// Trades `taker` against the opposite side in price-time priority until it is filled, its
    /// limit is reached, the side is empty or self-trade prevention stops it.
    fn match_taker(&mut self, taker: &mut Taker, out: &mut Vec<BookEvent>) -> MatchEnd {
        loop {
            let opposite = self.ladder(taker.side.opposite());
            let Some(best) = opposite.best() else {
                return MatchEnd::BookEmpty;
            };
            let level_price = self.levels[best.level as usize].price;
            if !crosses(taker.side, taker.limit, level_price) {
                return MatchEnd::LimitReached;
            }
            let mut at = self.levels[best.level as usize].head;
            while at != NIL {
                let maker = self.orders[at as usize];
                let next = maker.next;
                if maker.account == taker.account {
                    match taker.stp {
                        StpMode::CancelNewest => return MatchEnd::SelfTrade,
                        StpMode::CancelOldest => {
                            self.cancel_resting(at, CancelReason::SelfTrade, out);
                            at = next;
                            continue;
                        }
                        StpMode::CancelBoth => {
                            self.cancel_resting(at, CancelReason::SelfTrade, out);
                            return MatchEnd::SelfTrade;
                        }
                    }
                }
                let qty = maker.qty.min(taker.qty);
                taker.qty -= qty;
                let maker_remaining = maker.qty - qty;
                out.push(BookEvent::Fill {
                    maker: maker.id,
                    maker_account: maker.account,
                    taker: taker.id,
                    taker_account: taker.account,
                    taker_side: taker.side,
                    price: level_price,
                    qty,
                    maker_remaining,
                    taker_remaining: taker.qty,
                });
                self.last_trade = Some(level_price);
                if maker_remaining.0 == 0 {
                    self.unlink_resting(at);
                    self.ids.remove(&maker.id);
                } else {
                    self.orders[at as usize].qty = maker_remaining;
                    self.levels[best.level as usize].qty -= qty;
                }
                if taker.qty.0 == 0 {
                    return MatchEnd::Filled;
                }
                at = next;
            }
        }
    }

    // ----- structure maintenance -----

    /// Puts the open rest of an order at the back of its price level.
    fn rest(&mut self, order: Executable, price: Price, qty: Qty) {
        let ladder = ladder_mut(&mut self.bids, &mut self.asks, order.side);
        let key = ladder.key(price);
        let level = match ladder.level_at(key) {
            Some(level) => {
                if self.levels[level as usize].count == 0 {
                    self.empty_levels -= 1;
                }
                level
            }
            None => {
                let level =
                    self.levels.insert(Level { price, qty: Qty::ZERO, count: 0, head: NIL, tail: NIL })
                        as u32;
                ladder.insert(Rung { key, level });
                level
            }
        };
        let account_lists = &mut self.account_lists;
        let account_slot = self.account_slots.get_or_assign(order.account, || {
            account_lists.push(AccountOrders { head: NIL, tail: NIL, count: 0, reduce_only: 0 });
            (account_lists.len() - 1) as u32
        });
        let account_list = &mut self.account_lists[account_slot as usize];
        let level_tail = self.levels[level as usize].tail;
        let account_tail = account_list.tail;
        let slot = self.orders.insert(RestingOrder {
            id: order.id,
            price,
            qty,
            account: order.account,
            account_slot,
            level,
            prev: level_tail,
            next: NIL,
            account_prev: account_tail,
            account_next: NIL,
            side: order.side,
            tif: order.tif,
            stp: order.stp,
            reduce_only: order.reduce_only,
        }) as u32;
        // Link into the account's list.
        if account_tail == NIL {
            account_list.head = slot;
        } else {
            self.orders[account_tail as usize].account_next = slot;
        }
        account_list.tail = slot;
        account_list.count += 1;
        account_list.reduce_only += u32::from(order.reduce_only);
        self.reduce_only += u32::from(order.reduce_only);
        // Link at the back of the level's queue.
        if level_tail == NIL {
            self.levels[level as usize].head = slot;
        } else {
            self.orders[level_tail as usize].next = slot;
        }
        let lvl = &mut self.levels[level as usize];
        lvl.tail = slot;
        lvl.qty += qty;
        lvl.count += 1;
        self.ids.insert(order.id, Handle::Resting(slot));
    }

    /// Takes a resting order out of its level, its account list and the slab. The caller removes
    /// its id from the index (it often has just looked it up there).
    fn unlink_resting(&mut self, slot: u32) -> RestingOrder {
        let order = self.orders.remove(slot as usize);
        // Level queue.
        let level = &mut self.levels[order.level as usize];
        level.qty -= order.qty;
        level.count -= 1;
        if order.prev == NIL {
            level.head = order.next;
        } else {
            self.orders[order.prev as usize].next = order.next;
        }
        let level = &mut self.levels[order.level as usize];
        if order.next == NIL {
            level.tail = order.prev;
        } else {
            self.orders[order.next as usize].prev = order.prev;
        }
        if self.levels[order.level as usize].count == 0 {
            self.retire_level(order.side, order.level);
        }
        // Account list.
        let list = &mut self.account_lists[order.account_slot as usize];
        if order.account_prev == NIL {
            list.head = order.account_next;
        } else {
            self.orders[order.account_prev as usize].account_next = order.account_next;
        }
        let list = &mut self.account_lists[order.account_slot as usize];
        if order.account_next == NIL {
            list.tail = order.account_prev;
        } else {
            self.orders[order.account_next as usize].account_prev = order.account_prev;
        }
        let list = &mut self.account_lists[order.account_slot as usize];
        list.count -= 1;
        list.reduce_only -= u32::from(order.reduce_only);
        self.reduce_only -= u32::from(order.reduce_only);
        order
    }

    /// Deals with a level that just became empty.
    ///
    /// At the touch it is dropped at once, with any empty levels behind it, so the best rung of a
    /// side is always a live level. Deeper in the book it is left in place, empty: removing a rung
    /// from the middle of the ladder moves every rung behind it, and the price is likely to be
    /// quoted again. Once empty rungs outnumber live ones (plus some slack) the ladders are
    /// compacted in one pass, which bounds the memory kept and amortises the cost.
    fn retire_level(&mut self, side: Side, level: u32) {
        let ladder = ladder_mut(&mut self.bids, &mut self.asks, side);
        if ladder.best().map(|rung| rung.level) != Some(level) {
            self.empty_levels += 1;
            if self.empty_levels > (self.bids.len() + self.asks.len()) / 2 + COMPACTION_SLACK {
                self.compact_levels();
            }
            return;
        }
        while let Some(best) = ladder.best() {
            if self.levels[best.level as usize].count != 0 {
                break;
            }
            ladder.pop_best();
            self.levels.remove(best.level as usize);
            if best.level != level {
                self.empty_levels -= 1;
            }
        }
    }

    /// Drops every empty level from both ladders.
    fn compact_levels(&mut self) {
        let levels = &mut self.levels;
        for ladder in [&mut self.bids, &mut self.asks] {
            ladder.retain(|rung| {
                let live = levels[rung.level as usize].count != 0;
                if !live {
                    levels.remove(rung.level as usize);
                }
                live
            });
        }
        self.empty_levels = 0;
    }

    fn cancel_resting(&mut self, slot: u32, reason: CancelReason, out: &mut Vec<BookEvent>) {
        let order = self.unlink_resting(slot);
        self.ids.remove(&order.id);
        self.push_cancel(order.id, order.account, order.qty, reason, Some(order.resting()), out);
    }

    /// Removes a pending stop; the caller has removed its id from the index.
    fn cancel_stop(&mut self, slot: u32, reason: CancelReason, out: &mut Vec<BookEvent>) {
        let stop = self.stops.remove(slot);
        self.push_cancel(stop.order.id, stop.order.account, stop.order.qty, reason, None, out);
    }

    #[inline]
    fn push_cancel(
        &self,
        id: OrderId,
        account: AccountId,
        remaining: Qty,
        reason: CancelReason,
        resting: Option<Resting>,
        out: &mut Vec<BookEvent>,
    ) {
        out.push(BookEvent::Cancelled { id, account, remaining, reason, resting });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{Error as ValueError, MapAccessDeserializer};
    use serde::de::{DeserializeSeed, IntoDeserializer};

    /// A map that announces far more entries than it holds, as a forged length prefix does.
    struct ForgedLength {
        entries: std::vec::IntoIter<(usize, u32)>,
        value: Option<u32>,
    }

    impl<'de> MapAccess<'de> for ForgedLength {
        type Error = ValueError;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, ValueError> {
            let Some((slot, value)) = self.entries.next() else { return Ok(None) };
            self.value = Some(value);
            seed.deserialize(slot.into_deserializer()).map(Some)
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ValueError> {
            seed.deserialize(self.value.take().expect("a key comes before its value").into_deserializer())
        }

        fn size_hint(&self) -> Option<usize> {
            Some(usize::MAX)
        }
    }

    fn read(entries: Vec<(usize, u32)>) -> Result<Slab<u32>, ValueError> {
        deserialize_slab(MapAccessDeserializer::new(ForgedLength {
            entries: entries.into_iter(),
            value: None,
        }))
    }

    #[test]
    fn a_slab_with_a_forged_length_reads_what_is_there() {
        // `Slab`'s own reader reserved `usize::MAX` entries here and aborted.
        let mut slab = read(vec![(3, 9), (0, 7)]).unwrap();
        assert_eq!(slab.len(), 2);
        assert_eq!([0, 1, 2, 3].map(|slot| slab.get(slot).copied()), [Some(7), None, None, Some(9)]);
        // The gaps are free slots, reused before the slab grows.
        let (a, b) = (slab.insert(1), slab.insert(2));
        assert!([a, b].iter().all(|&slot| slot == 1 || slot == 2) && a != b);
        assert_eq!(slab.insert(3), 4);
    }

    #[test]
    fn a_slab_slot_no_handle_can_name_is_refused() {
        assert!(read(vec![(0, 1), (NIL as usize, 2)]).is_err());
        assert!(read(vec![(usize::MAX, 1)]).is_err());
    }
}
