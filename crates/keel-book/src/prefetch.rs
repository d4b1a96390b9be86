//! Cache prefetching for a caller that knows which accounts its next commands act for.
//!
//! Resting an order appends it to its account's order list: the account's slot in the book,
//! then that list's record, two dependent loads that are cold for all but the busiest
//! accounts. A caller holding a batch of commands runs the stages below on commands a few
//! places ahead, one stage per command, so that each stage reads what the stage before brought
//! into the cache (the same scheme as the clearinghouse's account prefetch). A prefetch never
//! changes the book, and a book that is never prefetched gives the same results.

use crate::book::OrderBook;
use keel_types::AccountId;

impl OrderBook {
    /// Stage one: starts loading where `account`'s slot in this book is recorded. Reads nothing.
    #[inline]
    pub fn prefetch_account_slot(&self, account: AccountId) {
        self.account_slots.prefetch(account);
    }

    /// Stage two: starts loading `account`'s order list record. Reads the account's slot, so it
    /// pays when [`OrderBook::prefetch_account_slot`] ran for the account a little earlier.
    #[inline]
    pub fn prefetch_account_orders(&self, account: AccountId) {
        if let Some(list) =
            self.account_slots.get(account).and_then(|slot| self.account_lists.get(slot as usize))
        {
            keel_types::prefetch(list);
        }
    }
}
