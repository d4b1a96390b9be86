//! Lookups for the integer ids the engine assigns: a fast hasher, and a flat id → slot index.
//!
//! The std `SipHash` defends hash tables against adversarial keys at ~20 ns a lookup. Order,
//! market and account ids are assigned by the engine, not chosen by traders, so that defence buys
//! nothing here; [`IdHasher`] keeps consecutive ids next to each other in the table instead.

use crate::{AccountId, MarketId};
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes one integer key by a folded multiply.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-integer keys, which the engine never uses; still hash them properly.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    /// The key itself in the low bits, mixed bits in the top seven.
    ///
    /// The table picks a bucket from the low bits and filters candidates by the top seven, so
    /// consecutive ids (the engine numbers orders and accounts sequentially, and prices near the
    /// touch are consecutive ticks) land in consecutive buckets: the recent orders a flow keeps
    /// touching share cache lines, and a new id probes next to the last one instead of at a
    /// random, cold place. The cost is that keys sharing their low bits collide (ids on a large
    /// power-of-two stride), which engine-assigned ids never do.
    #[inline]
    fn write_u64(&mut self, n: u64) {
        const K: u128 = 0x9E37_79B9_7F4A_7C15;
        // A multi-part key folds the earlier parts in.
        let key = n ^ self.0.rotate_left(29);
        let product = u128::from(key) * K;
        let tag = (product as u64) ^ ((product >> 64) as u64);
        self.0 = key ^ (tag & (0x7F << 57));
    }
}

/// `BuildHasher` for [`IdHasher`].
pub type BuildIdHasher = BuildHasherDefault<IdHasher>;

/// A hash map keyed by ids, hashed with [`IdHasher`].
pub type IdMap<K, V> = std::collections::HashMap<K, V, BuildIdHasher>;

/// An id the engine assigns densely from small numbers, so that a flat array indexed by it is
/// the fastest map from it (see [`IdSlots`]).
pub trait DenseId: Copy + Eq + std::hash::Hash {
    /// Ids below this are looked up in the flat array, at 4 bytes per id up to the largest id
    /// seen; larger ids go to a hash map.
    const DIRECT_LIMIT: u32;
    /// The id as an index.
    fn index(self) -> u32;
    /// The id of an index.
    fn from_index(index: u32) -> Self;
}

impl DenseId for AccountId {
    /// 16 MiB at most: a venue's account ids run into the millions.
    const DIRECT_LIMIT: u32 = 1 << 22;
    #[inline]
    fn index(self) -> u32 {
        self.0
    }
    #[inline]
    fn from_index(index: u32) -> AccountId {
        AccountId(index)
    }
}

impl DenseId for MarketId {
    /// 256 KiB at most: a venue lists hundreds of markets, not millions.
    const DIRECT_LIMIT: u32 = 1 << 16;
    #[inline]
    fn index(self) -> u32 {
        self.0
    }
    #[inline]
    fn from_index(index: u32) -> MarketId {
        MarketId(index)
    }
}

/// The "no slot" marker of the flat array.
const NONE: u32 = u32::MAX;

/// Id → a dense slot (an index into the owner's own per-account or per-market storage).
///
/// The engine assigns ids densely from small numbers, so a flat array indexed by id answers in
/// one load: with 100,000 accounts a hash map's bucket is one more cache miss on every order,
/// and even with ten markets hashing and probing cost more than the load. Ids beyond the
/// array's reach ([`DenseId::DIRECT_LIMIT`]) still work, through a hash map.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(bound(serialize = "K: serde::Serialize", deserialize = "K: serde::Deserialize<'de>"))]
pub struct IdSlots<K: DenseId> {
    /// `direct[id]` is the slot of `id`, or `NONE`.
    direct: Vec<u32>,
    sparse: IdMap<K, u32>,
    len: usize,
}

/// Account id → the account's slot.
pub type AccountSlots = IdSlots<AccountId>;

/// Market id → the market's slot.
pub type MarketSlots = IdSlots<MarketId>;

impl<K: DenseId> Default for IdSlots<K> {
    fn default() -> IdSlots<K> {
        IdSlots { direct: Vec::new(), sparse: IdMap::default(), len: 0 }
    }
}

impl<K: DenseId> IdSlots<K> {
    /// An index with room for ids below `capacity` without allocating.
    pub fn with_capacity(capacity: usize) -> IdSlots<K> {
        let direct = vec![NONE; capacity.min(K::DIRECT_LIMIT as usize)];
        IdSlots { direct, sparse: IdMap::default(), len: 0 }
    }

    /// The slot of `id`, if it has one.
    #[inline]
    pub fn get(&self, id: K) -> Option<u32> {
        match self.direct.get(id.index() as usize) {
            Some(&slot) => (slot != NONE).then_some(slot),
            None if id.index() < K::DIRECT_LIMIT => None,
            None => self.sparse.get(&id).copied(),
        }
    }

    /// Starts loading the entry [`Self::get`] will read for `id`, when it is in the flat array
    /// (the only part worth it: one line, one load). Changes nothing.
    #[inline]
    pub fn prefetch(&self, id: K) {
        if let Some(entry) = self.direct.get(id.index() as usize) {
            crate::prefetch(entry);
        }
    }

    /// True when `id` has a slot.
    #[inline]
    pub fn contains(&self, id: K) -> bool {
        self.get(id).is_some()
    }

    /// Gives `id` the slot `slot`, replacing any slot it had. `slot` must not be `u32::MAX`.
    pub fn insert(&mut self, id: K, slot: u32) {
        debug_assert_ne!(slot, NONE, "u32::MAX marks an empty entry");
        let previous = if id.index() < K::DIRECT_LIMIT {
            let at = id.index() as usize;
            if at >= self.direct.len() {
                // Grow geometrically so that adding ids one by one stays amortized O(1).
                let len = (at + 1).max(self.direct.len() * 2).min(K::DIRECT_LIMIT as usize);
                self.direct.resize(len, NONE);
            }
            std::mem::replace(&mut self.direct[at], slot) != NONE
        } else {
            self.sparse.insert(id, slot).is_some()
        };
        if !previous {
            self.len += 1;
        }
    }

    /// The slot of `id`, given one by `assign` if it has none yet.
    #[inline]
    pub fn get_or_assign(&mut self, id: K, assign: impl FnOnce() -> u32) -> u32 {
        if let Some(slot) = self.get(id) {
            return slot;
        }
        let slot = assign();
        self.insert(id, slot);
        slot
    }

    /// Number of ids with a slot.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no id has a slot.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every (id, slot) pair: the flat part in id order, then the rest.
    pub fn iter(&self) -> impl Iterator<Item = (K, u32)> + '_ {
        let direct = self
            .direct
            .iter()
            .enumerate()
            .filter(|(_, slot)| **slot != NONE)
            .map(|(id, &slot)| (K::from_index(id as u32), slot));
        direct.chain(self.sparse.iter().map(|(&id, &slot)| (id, slot)))
    }
}

impl<K: DenseId> FromIterator<(K, u32)> for IdSlots<K> {
    fn from_iter<I: IntoIterator<Item = (K, u32)>>(iter: I) -> IdSlots<K> {
        let mut slots = IdSlots::default();
        for (id, slot) in iter {
            slots.insert(id, slot);
        }
        slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_ids_both_resolve() {
        let mut slots = AccountSlots::with_capacity(4);
        slots.insert(AccountId(2), 0);
        slots.insert(AccountId(1_000), 1);
        slots.insert(AccountId(u32::MAX - 1), 2);
        assert_eq!(slots.get(AccountId(2)), Some(0));
        assert_eq!(slots.get(AccountId(1_000)), Some(1));
        assert_eq!(slots.get(AccountId(u32::MAX - 1)), Some(2));
        assert_eq!(slots.get(AccountId(3)), None);
        assert_eq!(slots.get(AccountId(5_000_000)), None);
        assert_eq!(slots.len(), 3);
        slots.insert(AccountId(2), 7);
        assert_eq!((slots.get(AccountId(2)), slots.len()), (Some(7), 3));
        let mut all: Vec<_> = slots.iter().collect();
        all.sort();
        assert_eq!(all, vec![(AccountId(2), 7), (AccountId(1_000), 1), (AccountId(u32::MAX - 1), 2)]);
    }

    #[test]
    fn market_ids_past_their_smaller_flat_reach_go_to_the_map() {
        let mut slots = MarketSlots::default();
        slots.insert(MarketId(1), 0);
        slots.insert(MarketId(70_000), 1);
        assert_eq!(slots.direct.len(), 2, "a market id past 65,535 must not grow the flat array");
        assert_eq!(slots.get(MarketId(1)), Some(0));
        assert_eq!(slots.get(MarketId(70_000)), Some(1));
        assert_eq!(slots.get(MarketId(2)), None);
        assert_eq!(slots.get(MarketId(65_535)), None);
        assert_eq!(slots.get(MarketId(70_001)), None);
        assert_eq!(slots.len(), 2);
    }

    #[test]
    fn get_or_assign_assigns_once() {
        let mut slots = AccountSlots::default();
        let mut next = 0;
        for id in [5, 9, 5, 9, 1] {
            slots.get_or_assign(AccountId(id), || {
                next += 1;
                next - 1
            });
        }
        assert_eq!(next, 3);
        assert_eq!(slots.get(AccountId(1)), Some(2));
    }
}
