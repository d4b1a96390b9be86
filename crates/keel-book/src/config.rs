//! The limits a book enforces and the sizes it pre-allocates.

use keel_types::{Price, Qty};

/// A book's limits and pre-sized capacities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BookConfig {
    /// Highest accepted limit or trigger price, in ticks (the lowest is one tick).
    pub max_price: Price,
    /// Largest accepted order quantity, in lots. Keeping it far below `i64::MAX` is what lets
    /// level totals and notional sums stay in plain integer arithmetic.
    pub max_qty: Qty,
    /// How far a market order may walk beyond the best opposite price it found on arrival, in
    /// basis points of that price (rounded down to whole ticks). What is left beyond is cancelled.
    pub market_protection_bps: u32,
    /// Resting and pending orders the order store holds without allocating. The id index is
    /// not pre-sized to it: it grows to the most orders the book has held at once, so that it
    /// stays as dense, and as cached, as the book's live orders are.
    pub order_capacity: usize,
    /// Price levels (both sides) the book holds without allocating.
    pub level_capacity: usize,
    /// Accounts with resting orders the book tracks without allocating.
    pub account_capacity: usize,
}

impl Default for BookConfig {
    fn default() -> BookConfig {
        BookConfig {
            max_price: Price(1_000_000_000_000),
            max_qty: Qty(1_000_000_000),
            market_protection_bps: 500,
            order_capacity: 1 << 16,
            level_capacity: 1 << 12,
            account_capacity: 1 << 12,
        }
    }
}
