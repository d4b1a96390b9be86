//! Pending stop orders, waiting for their reference price.
//!
//! Each (reference, side) pair keeps its stops sorted so that the ones a price move reaches first
//! sit at the end: triggering pops from the back and never scans stops that stay pending.

use crate::ladder::NIL;
use keel_types::{AccountId, NewOrder, OrderKind, Price, Side, StopReference};
use slab::Slab;

/// A stop order waiting for its trigger, with its arrival sequence for deterministic ordering.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct PendingStop {
    pub order: NewOrder,
    pub seq: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct StopEntry {
    /// Larger key = reached earlier by a move in the triggering direction.
    key: i64,
    seq: u64,
    slot: u32,
}

/// All pending stop orders of one book.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct StopBook {
    #[serde(deserialize_with = "crate::book::deserialize_slab")]
    orders: Slab<PendingStop>,
    /// Indexed by [`queue_index`]: (mark, buy), (mark, sell), (last, buy), (last, sell).
    queues: [Vec<StopEntry>; 4],
    next_seq: u64,
}

/// The trigger price and reference of a stop order kind (`None` for limit and market orders).
pub(crate) fn stop_params(kind: OrderKind) -> Option<(Price, StopReference)> {
    match kind {
        OrderKind::StopMarket { trigger, reference } | OrderKind::StopLimit { trigger, reference, .. } => {
            Some((trigger, reference))
        }
        OrderKind::Limit { .. } | OrderKind::Market => None,
    }
}

fn queue_index(reference: StopReference, side: Side) -> usize {
    match (reference, side) {
        (StopReference::Mark, Side::Buy) => 0,
        (StopReference::Mark, Side::Sell) => 1,
        (StopReference::Last, Side::Buy) => 2,
        (StopReference::Last, Side::Sell) => 3,
    }
}

/// Buy stops trigger when the reference rises to the trigger, sell stops when it falls to it;
/// this key makes "reached" mean `key(trigger) >= key(reference)` for both sides.
fn trigger_key(side: Side, price: Price) -> i64 {
    match side {
        // Reference prices are not validated: `-i64::MIN` would overflow (and wrap to a key that
        // every buy stop reaches). Saturating keeps the order, and no valid trigger reaches it.
        Side::Buy => price.0.saturating_neg(),
        Side::Sell => price.0,
    }
}

/// True when a stop of `side` with `trigger` fires at reference price `reference`.
pub(crate) fn is_reached(side: Side, trigger: Price, reference: Price) -> bool {
    trigger_key(side, trigger) >= trigger_key(side, reference)
}

impl StopBook {
    pub fn with_capacity(capacity: usize) -> StopBook {
        StopBook {
            orders: Slab::with_capacity(capacity),
            queues: std::array::from_fn(|_| Vec::with_capacity(capacity / 4)),
            next_seq: 0,
        }
    }

    /// Stores a validated stop order; returns its slot.
    pub fn insert(&mut self, order: NewOrder) -> u32 {
        let (trigger, reference) = stop_params(order.kind).expect("insert takes stop orders only");
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = self.orders.insert(PendingStop { order, seq }) as u32;
        let entry = StopEntry { key: trigger_key(order.side, trigger), seq, slot };
        let queue = &mut self.queues[queue_index(reference, order.side)];
        let at = queue.binary_search(&entry).unwrap_or_else(|at| at);
        queue.insert(at, entry);
        slot
    }

    /// Removes a pending stop by slot and returns it.
    pub fn remove(&mut self, slot: u32) -> PendingStop {
        let stop = self.orders.remove(slot as usize);
        let (trigger, reference) = stop_params(stop.order.kind).expect("only stops are stored");
        let entry = StopEntry { key: trigger_key(stop.order.side, trigger), seq: stop.seq, slot };
        let queue = &mut self.queues[queue_index(reference, stop.order.side)];
        if let Ok(at) = queue.binary_search(&entry) {
            queue.remove(at);
        }
        stop
    }

    /// The pending stop in `slot`.
    pub fn get(&self, slot: u32) -> &PendingStop {
        &self.orders[slot as usize]
    }

    /// Removes every stop watching `reference` that `price` reaches and appends them to `fired`
    /// in arrival order (the order in which they were placed).
    pub fn take_reached(&mut self, reference: StopReference, price: Price, fired: &mut Vec<PendingStop>) {
        let start = fired.len();
        for side in [Side::Buy, Side::Sell] {
            let threshold = trigger_key(side, price);
            let queue = &mut self.queues[queue_index(reference, side)];
            while let Some(&entry) = queue.last() {
                if entry.key < threshold {
                    break;
                }
                queue.pop();
                fired.push(self.orders.remove(entry.slot as usize));
            }
        }
        fired[start..].sort_unstable_by_key(|stop| stop.seq);
    }

    /// Slots of `account`'s pending stops, in arrival order, appended to `slots`.
    pub fn slots_of(&self, account: AccountId, slots: &mut Vec<u32>) {
        let start = slots.len();
        slots.extend(
            self.orders.iter().filter(|(_, stop)| stop.order.account == account).map(|(slot, _)| slot as u32),
        );
        slots[start..].sort_unstable_by_key(|&slot| self.orders[slot as usize].seq);
    }

    /// All pending stops, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = &PendingStop> {
        let mut all: Vec<&PendingStop> = self.orders.iter().map(|(_, stop)| stop).collect();
        all.sort_unstable_by_key(|stop| stop.seq);
        all.into_iter()
    }

    pub fn len(&self) -> usize {
        self.orders.len()
    }

    /// Checks that every stored stop is queued exactly once, in sorted order.
    pub fn check(&self) -> Result<(), String> {
        let mut queued = 0;
        for queue in &self.queues {
            if !queue.windows(2).all(|w| w[0] < w[1]) {
                return Err("stop queue not strictly sorted".into());
            }
            for entry in queue {
                let stop =
                    self.orders.get(entry.slot as usize).ok_or("stop queue points at an empty slot")?;
                if stop.seq != entry.seq || entry.slot == NIL {
                    return Err("stop queue entry does not match its slot".into());
                }
            }
            queued += queue.len();
        }
        if queued != self.orders.len() {
            return Err(format!("{} stops stored but {queued} queued", self.orders.len()));
        }
        Ok(())
    }
}
