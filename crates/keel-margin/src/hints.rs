//! Where each account's positions lie in memory, kept by account id so that a prefetch can reach
//! them without first reading the account.
//!
//! Loading a cold account is a chain of dependent loads: its slot (found by id), its record
//! (found by slot), then its positions (found through the record's pointer). Each load waits for
//! the one before it, and on an account the cache has not seen for a while each one is a trip
//! to memory. [`PositionHints`] records the positions' address by id, as the slot is recorded,
//! so the slot and the address are read side by side and then the record and the positions side
//! by side: one trip to memory fewer before a command's account is in the cache.
//!
//! A hint is only ever used as a prefetch address, never read through: a stale or missing hint
//! costs a wasted prefetch or a missed one, never a wrong result.

use crate::clearinghouse::Account;
use crate::position::Position;
use keel_types::AccountId;

/// Account ids below this have a hint (8 bytes each, 32 MiB at most); the rest are prefetched
/// through their record alone.
const HINTED_IDS: usize = 1 << 22;

/// Bits of a hint that hold the address; the bits above hold the byte length.
const ADDRESS_BITS: u32 = 48;

/// Cache lines prefetched at most for one account's positions: an account in five markets. With
/// its record and the book's lines that is about as many misses as a core keeps in flight; a
/// prefetch beyond that waits for one of them to land before the command can start.
const MAX_LINES: usize = 12;

/// The address and byte length of each account's positions, by account id. Not state: a
/// snapshot does not hold it, and a clone starts without it (its positions live elsewhere).
#[derive(Debug, Default)]
pub(crate) struct PositionHints {
    /// `by_id[id]`: the address in the low [`ADDRESS_BITS`] bits, the byte length (saturated)
    /// above; 0 for none.
    by_id: Vec<u64>,
}

impl Clone for PositionHints {
    /// An empty table: a clone's positions are copies at other addresses, so the original's
    /// hints would only send its prefetches to the wrong place.
    fn clone(&self) -> PositionHints {
        PositionHints::default()
    }
}

impl PositionHints {
    /// The hints for `accounts` as they are stored now (for a restored clearinghouse).
    pub(crate) fn of(accounts: &[Account]) -> PositionHints {
        let mut hints = PositionHints::default();
        for a in accounts {
            hints.record(a.id, &a.positions);
        }
        hints
    }

    /// Records where `account`'s positions now are. Called whenever they may have moved.
    pub(crate) fn record(&mut self, account: AccountId, positions: &[Position]) {
        let at = account.0 as usize;
        if at >= HINTED_IDS {
            return;
        }
        if at >= self.by_id.len() {
            // Geometric growth, so that opening accounts one by one stays amortized O(1).
            let len = (at + 1).max(self.by_id.len() * 2).min(HINTED_IDS);
            self.by_id.resize(len, 0);
        }
        let address = positions.as_ptr() as u64;
        let bytes = std::mem::size_of_val(positions) as u64;
        // An empty list has nothing to load; an address beyond the packed range gets no hint.
        self.by_id[at] = if bytes == 0 || address >> ADDRESS_BITS != 0 {
            0
        } else {
            address | bytes.min((1 << (64 - ADDRESS_BITS)) - 1) << ADDRESS_BITS
        };
    }

    /// Starts loading `account`'s hint. Reads nothing.
    #[inline]
    pub(crate) fn prefetch_hint(&self, account: AccountId) {
        if let Some(hint) = self.by_id.get(account.0 as usize) {
            keel_types::prefetch(hint);
        }
    }

    /// True when `account` has a hint: [`PositionHints::prefetch_positions`] reaches its
    /// positions.
    #[inline]
    pub(crate) fn covers(&self, account: AccountId) -> bool {
        self.location(account).is_some()
    }

    /// Starts loading `account`'s positions where its hint says they are. Reads the hint, so it
    /// pays when [`PositionHints::prefetch_hint`] ran a little earlier.
    #[inline]
    pub(crate) fn prefetch_positions(&self, account: AccountId) {
        if let Some((address, bytes)) = self.location(account) {
            keel_types::prefetch_bytes(std::ptr::without_provenance::<u8>(address), bytes, MAX_LINES);
        }
    }

    /// The address and byte length `account`'s hint records, if it has one.
    #[inline]
    pub(crate) fn location(&self, account: AccountId) -> Option<(usize, usize)> {
        let hint = *self.by_id.get(account.0 as usize)?;
        (hint != 0).then_some(((hint & ((1 << ADDRESS_BITS) - 1)) as usize, (hint >> ADDRESS_BITS) as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(n: u32) -> Vec<Position> {
        (0..n).map(|i| Position::new(keel_types::MarketId(i + 1), i, 10)).collect()
    }

    #[test]
    fn a_hint_gives_back_where_the_positions_are() {
        let mut hints = PositionHints::default();
        let held = positions(3);
        hints.record(AccountId(7), &held);
        let expected = (held.as_ptr() as usize, 3 * std::mem::size_of::<Position>());
        assert_eq!(hints.location(AccountId(7)), Some(expected));
        // Other ids, inside and beyond the table, have none.
        assert_eq!(hints.location(AccountId(6)), None);
        assert_eq!(hints.location(AccountId(1_000)), None);
    }

    #[test]
    fn no_hint_for_nothing_to_load_an_id_out_of_range_or_a_clone() {
        let mut hints = PositionHints::default();
        hints.record(AccountId(1), &[]);
        assert!(!hints.covers(AccountId(1)));
        let held = positions(1);
        hints.record(AccountId(HINTED_IDS as u32), &held);
        assert!(!hints.covers(AccountId(HINTED_IDS as u32)));
        hints.record(AccountId(2), &held);
        assert!(hints.covers(AccountId(2)));
        assert!(!hints.clone().covers(AccountId(2)));
    }

    #[test]
    fn a_move_replaces_the_hint() {
        let mut hints = PositionHints::default();
        let mut held = positions(1);
        hints.record(AccountId(3), &held);
        held.reserve(64);
        hints.record(AccountId(3), &held);
        assert_eq!(hints.location(AccountId(3)).map(|(at, _)| at), Some(held.as_ptr() as usize));
    }
}
