//! Where an account's position in a market is, without reading its positions.
//!
//! An account keeps one position per market it has touched, in the order it touched them, and
//! every margin operation starts by finding the position of one market. Scanning for it reads the
//! market slot of every position before it, one cache line of a different 152-byte record each:
//! for an account in ten markets, up to ten lines pulled in only to be compared. The table here
//! lives in the account record itself, which the lookup has already loaded, and answers in one
//! byte for the first [`PositionSlots::DIRECT`] market slots of the clearinghouse. Markets listed
//! later, and an account's 255th position and those after it, are still found by scanning.

use crate::position::Position;

/// Market slot → index of the account's position in that market, for the first
/// [`PositionSlots::DIRECT`] market slots.
///
/// Derived state: positions are only appended (a position closed to zero stays, idle) or, right
/// after, taken back when the change that appended one is refused; the table is written at each,
/// and rebuilt from the positions when an account is restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PositionSlots([u8; PositionSlots::DIRECT]);

impl PositionSlots {
    /// Market slots below this are answered from the table.
    pub(crate) const DIRECT: usize = 16;
    /// The account has no position in this market.
    const NONE: u8 = u8::MAX;
    /// The position's index does not fit in the table: scan for it.
    const FAR: u8 = u8::MAX - 1;

    /// The table of an account with no positions.
    pub(crate) const EMPTY: PositionSlots = PositionSlots([Self::NONE; Self::DIRECT]);

    /// The table for `positions`, as appending them one by one would have left it.
    pub(crate) fn of(positions: &[Position]) -> PositionSlots {
        let mut table = PositionSlots::EMPTY;
        for (index, p) in positions.iter().enumerate() {
            table.record(p.slot, index);
        }
        table
    }

    /// Notes that the position of market slot `slot` is at `index`.
    #[inline]
    pub(crate) fn record(&mut self, slot: u32, index: usize) {
        if let Some(entry) = self.0.get_mut(slot as usize) {
            *entry = u8::try_from(index).map_or(Self::FAR, |i| i.min(Self::FAR));
        }
    }

    /// Notes that the account no longer has a position in market slot `slot` (the one just
    /// appended was taken back).
    #[inline]
    pub(crate) fn forget(&mut self, slot: u32) {
        if let Some(entry) = self.0.get_mut(slot as usize) {
            *entry = Self::NONE;
        }
    }

    /// The index in `positions` (the positions this table was kept for) of market slot `slot`'s
    /// position, if the account has one.
    #[inline]
    pub(crate) fn find(&self, slot: u32, positions: &[Position]) -> Option<usize> {
        match self.0.get(slot as usize) {
            Some(&Self::NONE) => None,
            Some(&index) if index != Self::FAR => Some(usize::from(index)),
            _ => positions.iter().position(|p| p.slot == slot),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PositionSlots;
    use crate::position::Position;
    use keel_types::MarketId;

    fn positions(slots: impl IntoIterator<Item = u32>) -> Vec<Position> {
        slots.into_iter().map(|slot| Position::new(MarketId(slot + 1), slot, 10)).collect()
    }

    fn scan(slot: u32, positions: &[Position]) -> Option<usize> {
        positions.iter().position(|p| p.slot == slot)
    }

    #[test]
    fn finds_what_a_scan_finds_in_and_beyond_the_table() {
        // Touched out of order, some slots past the table's reach, some never.
        let ps = positions([7, 0, 21, 15, 3, 16, 9]);
        let mut table = PositionSlots::EMPTY;
        for (index, p) in ps.iter().enumerate() {
            table.record(p.slot, index);
            for slot in 0..40 {
                assert_eq!(table.find(slot, &ps[..=index]), scan(slot, &ps[..=index]), "slot {slot}");
            }
        }
        assert_eq!(table, PositionSlots::of(&ps));
        assert_eq!(table.find(7, &ps), Some(0));
        assert_eq!(table.find(3, &ps), Some(4));
        assert_eq!(table.find(1, &ps), None);
        assert_eq!(table.find(16, &ps), Some(5));
    }

    #[test]
    fn an_index_too_large_for_a_byte_is_scanned_for() {
        // 300 positions in slots 100.., with slot 5 at index 253 (the last a byte holds), slot 6
        // at index 254 and slot 2 at the end.
        let mut slots: Vec<u32> = (100..400).collect();
        slots.insert(253, 5);
        slots.insert(254, 6);
        slots.push(2);
        let ps = positions(slots);
        let table = PositionSlots::of(&ps);
        assert_eq!(table.0[5], 253);
        assert_eq!(table.0[6], PositionSlots::FAR);
        assert_eq!(table.find(5, &ps), Some(253));
        assert_eq!(table.find(6, &ps), Some(254));
        assert_eq!(table.find(2, &ps), Some(302));
        assert_eq!(table.find(4, &ps), None);
        for slot in 0..420 {
            assert_eq!(table.find(slot, &ps), scan(slot, &ps), "slot {slot}");
        }
    }
}
