//! A full structural audit of the book, for tests, fuzzing and debugging (O(orders)).

use crate::book::{Handle, OrderBook};
use crate::ladder::NIL;
use keel_types::{Qty, Side};

impl OrderBook {
    /// Checks every structural invariant and returns the first violation found.
    ///
    /// - the book is not crossed (best bid < best ask);
    /// - each side's levels are strictly sorted and its best level is not empty (empty levels are
    ///   kept only behind the touch, and counted);
    /// - each level's queue links are consistent and its quantity and count are the sums of its orders;
    /// - every order has positive open quantity, is in exactly one level and one account list, and
    ///   its id maps to it; every id maps to exactly one live order;
    /// - the stop book is consistent.
    pub fn check_invariants(&self) -> Result<(), String> {
        if let (Some(bid), Some(ask)) = (self.best_bid(), self.best_ask())
            && bid >= ask
        {
            return Err(format!("book crossed: bid {bid} >= ask {ask}"));
        }
        let mut seen_in_levels = 0usize;
        let mut empty = 0usize;
        for side in [Side::Buy, Side::Sell] {
            let ladder = self.ladder(side);
            if !ladder.rungs().windows(2).all(|w| w[0].key < w[1].key) {
                return Err(format!("{side:?} levels not strictly sorted"));
            }
            if !ladder.check_index() {
                return Err(format!("{side:?} price index does not match the levels"));
            }
            if ladder.best().is_some_and(|best| self.levels[best.level as usize].count == 0) {
                return Err(format!("{side:?} best level is empty"));
            }
            for rung in ladder.rungs() {
                let level =
                    self.levels.get(rung.level as usize).ok_or("rung points at an empty level slot")?;
                if ladder.key(level.price) != rung.key {
                    return Err(format!("level {} filed under the wrong key", level.price));
                }
                let (mut qty, mut count, mut prev, mut at) = (Qty::ZERO, 0u32, NIL, level.head);
                while at != NIL {
                    let order = self.orders.get(at as usize).ok_or("queue points at an empty order slot")?;
                    if order.prev != prev || order.level != rung.level || order.side != side {
                        return Err(format!("order {} badly linked in level {}", order.id, level.price));
                    }
                    if order.price != level.price || order.qty.0 <= 0 {
                        return Err(format!(
                            "order {} has price {} / qty {}",
                            order.id, order.price, order.qty
                        ));
                    }
                    if self.ids.get(&order.id) != Some(&Handle::Resting(at)) {
                        return Err(format!("order {} not indexed by its id", order.id));
                    }
                    qty += order.qty;
                    count += 1;
                    prev = at;
                    at = order.next;
                }
                if prev != level.tail || count != level.count || qty != level.qty {
                    return Err(format!("level {} totals or tail inconsistent", level.price));
                }
                if count == 0 {
                    empty += 1;
                }
                seen_in_levels += count as usize;
            }
        }
        if seen_in_levels != self.orders.len() || self.levels.len() != self.bids.len() + self.asks.len() {
            return Err("orders or levels outside the ladders".into());
        }
        if empty != self.empty_levels {
            return Err(format!("{empty} empty levels kept but {} counted", self.empty_levels));
        }
        if self.account_slots.len() != self.account_lists.len() {
            return Err("account index and account lists differ in size".into());
        }
        let mut listed = 0usize;
        for (account, account_slot) in self.account_slots.iter() {
            let list = self.account_lists.get(account_slot as usize).ok_or("account slot out of range")?;
            let (mut prev, mut at, mut count, mut reduce_only) = (NIL, list.head, 0u32, 0u32);
            while at != NIL {
                let order = &self.orders[at as usize];
                reduce_only += u32::from(order.reduce_only);
                if order.account != account
                    || order.account_slot != account_slot
                    || order.account_prev != prev
                {
                    return Err(format!("account {account} order list badly linked"));
                }
                count += 1;
                prev = at;
                at = order.account_next;
            }
            if prev != list.tail || count != list.count || reduce_only != list.reduce_only {
                return Err(format!("account {account} list tail or count wrong"));
            }
            listed += count as usize;
        }
        if listed != self.orders.len() {
            return Err("an order is missing from its account list".into());
        }
        let reduce_only = self.orders.iter().filter(|(_, o)| o.reduce_only).count();
        if reduce_only != self.reduce_only as usize {
            return Err(format!("{reduce_only} reduce-only orders rest but {} counted", self.reduce_only));
        }
        let stops_indexed = self.ids.values().filter(|h| matches!(h, Handle::Stop(_))).count();
        if self.ids.len() != self.orders.len() + self.stops.len() || stops_indexed != self.stops.len() {
            return Err("id index does not match the live orders".into());
        }
        for (&id, handle) in &self.ids {
            if let Handle::Stop(slot) = handle
                && self.stops.get(*slot).order.id != id
            {
                return Err(format!("stop {id} indexed to the wrong slot"));
            }
        }
        self.stops.check()
    }
}
