//! Lookups for the integer ids the engine assigns: a fast hasher, and a flat id → slot index.
//!
//! The std `SipHash` defends hash tables against adversarial keys at ~20 ns a lookup. Order,
//! market and account ids are assigned by the engine, not chosen by traders, so that defence buys
//! nothing here; [`IdHasher`] keeps consecutive ids next to each other in the table instead.

use crate::AccountId;
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

/// Account ids below this are looked up in a flat array (4 bytes per id, 16 MiB at most).
const DIRECT_LIMIT: u32 = 1 << 22;

/// The "no slot" marker of the flat array.
const NONE: u32 = u32::MAX;

/// Account id → a dense slot (an index into the owner's own per-account storage).
///
/// The engine assigns account ids densely from small numbers, so a flat array indexed by id
/// answers in one load; with 100,000 accounts a hash map's bucket is one more cache miss on every
/// order. Ids beyond the array's reach still work, through a hash map.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct AccountSlots {
    /// `direct[id]` is the slot of account `id`, or `NONE`.
    direct: Vec<u32>,
    sparse: IdMap<AccountId, u32>,
    len: usize,
}

impl AccountSlots {
    /// An index with room for account ids below `capacity` without allocating.
    pub fn with_capacity(capacity: usize) -> AccountSlots {
        let direct = vec![NONE; capacity.min(DIRECT_LIMIT as usize)];
        AccountSlots { direct, sparse: IdMap::default(), len: 0 }
    }

    /// The slot of `account`, if it has one.
    #[inline]
    pub fn get(&self, account: AccountId) -> Option<u32> {
        match self.direct.get(account.0 as usize) {
            Some(&slot) => (slot != NONE).then_some(slot),
            None if account.0 < DIRECT_LIMIT => None,
            None => self.sparse.get(&account).copied(),
        }
    }

    /// Starts loading the entry [`Self::get`] will read for `account`, when it is in the flat
    /// array (the only part worth it: one line, one load). Changes nothing.
    #[inline]
    pub fn prefetch(&self, account: AccountId) {
        if let Some(entry) = self.direct.get(account.0 as usize) {
            crate::prefetch(entry);
        }
    }

    /// True when `account` has a slot.
    #[inline]
    pub fn contains(&self, account: AccountId) -> bool {
        self.get(account).is_some()
    }

    /// Gives `account` the slot `slot`, replacing any slot it had. `slot` must not be `u32::MAX`.
    pub fn insert(&mut self, account: AccountId, slot: u32) {
        debug_assert_ne!(slot, NONE, "u32::MAX marks an empty entry");
        let previous = if account.0 < DIRECT_LIMIT {
            let at = account.0 as usize;
            if at >= self.direct.len() {
                // Grow geometrically so that opening accounts one by one stays amortized O(1).
                let len = (at + 1).max(self.direct.len() * 2).min(DIRECT_LIMIT as usize);
                self.direct.resize(len, NONE);
            }
            std::mem::replace(&mut self.direct[at], slot) != NONE
        } else {
            self.sparse.insert(account, slot).is_some()
        };
        if !previous {
            self.len += 1;
        }
    }

    /// The slot of `account`, given one by `assign` if it has none yet.
    #[inline]
    pub fn get_or_assign(&mut self, account: AccountId, assign: impl FnOnce() -> u32) -> u32 {
        if let Some(slot) = self.get(account) {
            return slot;
        }
        let slot = assign();
        self.insert(account, slot);
        slot
    }

    /// Number of accounts with a slot.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no account has a slot.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every (account, slot) pair: the flat part in id order, then the rest.
    pub fn iter(&self) -> impl Iterator<Item = (AccountId, u32)> + '_ {
        let direct = self
            .direct
            .iter()
            .enumerate()
            .filter(|(_, slot)| **slot != NONE)
            .map(|(id, &slot)| (AccountId(id as u32), slot));
        direct.chain(self.sparse.iter().map(|(&account, &slot)| (account, slot)))
    }
}

impl FromIterator<(AccountId, u32)> for AccountSlots {
    fn from_iter<I: IntoIterator<Item = (AccountId, u32)>>(iter: I) -> AccountSlots {
        let mut slots = AccountSlots::default();
        for (account, slot) in iter {
            slots.insert(account, slot);
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
