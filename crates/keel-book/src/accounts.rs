//! Which order list belongs to which account.

use crate::hash::IdMap;
use crate::ladder::NIL;
use keel_types::AccountId;

/// Account ids below this are looked up in a flat array (4 bytes per id, 16 MiB at most).
const DIRECT_LIMIT: u32 = 1 << 22;

/// Account id → index of the account's order list.
///
/// The engine assigns account ids densely from small numbers, so a flat array indexed by id
/// answers in one load — on the add path this lookup was the single most expensive memory access
/// of a hash map. Ids beyond the array's reach still work, through a hash map.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct AccountIndex {
    /// `direct[id]` is the list index of account `id`, or `NIL`.
    direct: Vec<u32>,
    sparse: IdMap<AccountId, u32>,
    len: usize,
}

impl AccountIndex {
    /// An index with room for account ids below `capacity` without allocating.
    pub fn with_capacity(capacity: usize) -> AccountIndex {
        let direct = vec![NIL; capacity.min(DIRECT_LIMIT as usize)];
        AccountIndex { direct, sparse: IdMap::default(), len: 0 }
    }

    /// The list index of `account`, if it has one.
    #[inline]
    pub fn get(&self, account: AccountId) -> Option<u32> {
        match self.direct.get(account.0 as usize) {
            Some(&slot) => (slot != NIL).then_some(slot),
            None => self.sparse.get(&account).copied(),
        }
    }

    /// The list index of `account`, given one by `assign` if it has none yet.
    #[inline]
    pub fn get_or_assign(&mut self, account: AccountId, assign: impl FnOnce() -> u32) -> u32 {
        if let Some(slot) = self.get(account) {
            return slot;
        }
        let slot = assign();
        self.len += 1;
        if account.0 < DIRECT_LIMIT {
            let at = account.0 as usize;
            if at >= self.direct.len() {
                self.direct.resize(at + 1, NIL);
            }
            self.direct[at] = slot;
        } else {
            self.sparse.insert(account, slot);
        }
        slot
    }

    /// Number of accounts indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Every (account, list index) pair.
    pub fn iter(&self) -> impl Iterator<Item = (AccountId, u32)> + '_ {
        let direct = self
            .direct
            .iter()
            .enumerate()
            .filter(|(_, slot)| **slot != NIL)
            .map(|(id, &slot)| (AccountId(id as u32), slot));
        direct.chain(self.sparse.iter().map(|(&account, &slot)| (account, slot)))
    }
}
