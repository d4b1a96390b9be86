//! One side of the book: its price levels sorted so that the best price is last.
//!
//! Almost all activity happens at or near the touch, so keeping the best level at the *end* of a
//! sorted vector makes the common inserts and removals touch only the last few elements (a short
//! `memmove`, no allocation once the vector has grown), and the best level is a single load.
//! A hash index from price to level makes joining an existing level, the commonest insert, O(1)
//! without a search through the vector; only a new level pays for the sorted insert.

use keel_types::IdMap;
use keel_types::{Price, Side};

/// Marks "no index" in the intrusive lists and ladders.
pub(crate) const NIL: u32 = u32::MAX;

/// A price level's position in the ladder and its slot in the level slab.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Rung {
    /// The price mapped so that a larger key is always a better price for this side.
    pub key: i64,
    /// Slot of the level in the book's level slab.
    pub level: u32,
}

/// The price levels of one side, sorted by [`Rung::key`] ascending: best price last.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Ladder {
    side: Side,
    rungs: Vec<Rung>,
    /// Key → level slot, for every rung.
    index: IdMap<i64, u32>,
}

/// How many rungs from the touch are scanned linearly before falling back to binary search.
const NEAR_TOUCH: usize = 8;

impl Ladder {
    pub fn with_capacity(side: Side, capacity: usize) -> Ladder {
        Ladder {
            side,
            rungs: Vec::with_capacity(capacity),
            index: IdMap::with_capacity_and_hasher(capacity, Default::default()),
        }
    }

    /// Maps a price to this side's key: bids rank high prices first, asks low prices first.
    #[inline]
    pub fn key(&self, price: Price) -> i64 {
        match self.side {
            Side::Buy => price.0,
            // Queries pass prices nobody validated: `-i64::MIN` would overflow. Saturating keeps the
            // order, and the key it gives (`i64::MAX`) belongs to no valid price.
            Side::Sell => price.0.saturating_neg(),
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

    /// The level slot of the rung with `key`, if there is one.
    #[inline]
    pub fn level_at(&self, key: i64) -> Option<u32> {
        self.index.get(&key).copied()
    }

    /// Adds a rung for a key that has none yet, in its sorted place.
    #[inline]
    pub fn insert(&mut self, rung: Rung) {
        let at = self.find(rung.key).unwrap_or_else(|at| at);
        self.rungs.insert(at, rung);
        self.index.insert(rung.key, rung.level);
    }

    /// Removes the best rung.
    #[inline]
    pub fn pop_best(&mut self) {
        if let Some(rung) = self.rungs.pop() {
            self.index.remove(&rung.key);
        }
    }

    /// Keeps only the rungs for which `keep` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Rung) -> bool) {
        let index = &mut self.index;
        self.rungs.retain(|rung| {
            let kept = keep(rung);
            if !kept {
                index.remove(&rung.key);
            }
            kept
        });
    }

    /// Checks that the index names exactly the rungs.
    pub fn check_index(&self) -> bool {
        self.index.len() == self.rungs.len()
            && self.rungs.iter().all(|rung| self.index.get(&rung.key) == Some(&rung.level))
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
