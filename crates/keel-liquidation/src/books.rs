//! How the liquidator reaches the order book of a market.

use keel_book::OrderBook;
use keel_types::MarketId;
use std::collections::BTreeMap;

/// The engine's books, looked up by market. The liquidator only ever asks for one book at a time.
pub trait BookSet {
    /// The book of `market`, if the engine runs one.
    fn book_mut(&mut self, market: MarketId) -> Option<&mut OrderBook>;
}

/// Books stored by position: the book of market `m` is element `m`.
impl BookSet for [OrderBook] {
    fn book_mut(&mut self, market: MarketId) -> Option<&mut OrderBook> {
        self.get_mut(market.0 as usize)
    }
}

/// Books stored by position: the book of market `m` is element `m`.
impl BookSet for Vec<OrderBook> {
    fn book_mut(&mut self, market: MarketId) -> Option<&mut OrderBook> {
        self.get_mut(market.0 as usize)
    }
}

/// Books stored by market id.
impl BookSet for BTreeMap<MarketId, OrderBook> {
    fn book_mut(&mut self, market: MarketId) -> Option<&mut OrderBook> {
        self.get_mut(&market)
    }
}
