//! One side of the book: its price levels sorted so that the best price is last.
//!
//! Almost all activity happens at or near the touch, so keeping the best level at the *end* of a
//! sorted vector makes the common inserts and removals touch only the last few elements (a short
//! `memmove`, no allocation once the vector has grown), and the best level is a single load.

use keel_types::{Price, Side};

/// Marks "no index" in the intrusive lists and ladders.
pub(crate) const NIL: u32 = u32::MAX;

/// A price level's position in the ladder and its slot in the level slab.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rung {
    /// The price mapped so that a larger key is always a better price for this side.
    pub key: i64,
    /// Slot of the level in the book's level slab.
    pub level: u32,
}

/// The price levels of one side, sorted by [`Rung::key`] ascending: best price last.
#[derive(Debug)]
pub(crate) struct Ladder {
    side: Side,
    rungs: Vec<Rung>,
}

/// How many rungs from the touch are scanned linearly before falling back to binary search.
const NEAR_TOUCH: usize = 8;

impl Ladder {
    pub fn with_capacity(side: Side, capacity: usize) -> Ladder {
        Ladder { side, rungs: Vec::with_capacity(capacity) }
    }

    /// Maps a price to this side's key: bids rank high prices first, asks low prices first.
    #[inline]
    pub fn key(&self, price: Price) -> i64 {
        match self.side {
            Side::Buy => price.0,
            Side::Sell => -price.0,
        }
    }

    /// The price a key stands for.
    #[inline]
    pub fn price(&self, key: i64) -> Price {
        match self.side {
            Side::Buy => Price(key),
            Side::Sell => Price(-key),
        }
    }

    /// The best level, if any.
    #[inline]
    pub fn best(&self) -> Option<Rung> {
        self.rungs.last().copied()
    }

    /// Where `key` is (`Ok`) or would be inserted (`Err`).
    #[inline]
    pub fn find(&self, key: i64) -> Result<usize, usize> {
        let len = self.rungs.len();
        // Most lookups are for the touch or a few ticks behind it: scan from the end first.
        let scan_from = len.saturating_sub(NEAR_TOUCH);
        for i in (scan_from..len).rev() {
            let k = self.rungs[i].key;
            if k == key {
                return Ok(i);
            }
            if k < key {
                return Err(i + 1);
            }
        }
        self.rungs[..scan_from].binary_search_by_key(&key, |r| r.key)
    }

    /// Inserts a rung at the position `find` returned.
    #[inline]
    pub fn insert(&mut self, at: usize, rung: Rung) {
        self.rungs.insert(at, rung);
    }

    /// Removes the rung with `key`; it must exist.
    #[inline]
    pub fn remove(&mut self, key: i64) {
        if let Ok(at) = self.find(key) {
            self.rungs.remove(at);
        } else {
            debug_assert!(false, "removing a level that is not in the ladder");
        }
    }

    /// Rungs from the best price outward.
    #[inline]
    pub fn iter_best_first(&self) -> impl Iterator<Item = Rung> + '_ {
        self.rungs.iter().rev().copied()
    }

    /// Rungs in ascending key order (worst price first).
    pub fn rungs(&self) -> &[Rung] {
        &self.rungs
    }

    pub fn len(&self) -> usize {
        self.rungs.len()
    }
}
