//! Typed identifiers: an order id can never be passed where an account id is expected.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// Identifies an order. Assigned by the engine; free for reuse once the order has left the book.
    OrderId(u64)
);
id_type!(
    /// Identifies a trading account (one trader, one margin balance).
    AccountId(u32)
);
id_type!(
    /// Identifies a market (one perpetual contract, one order book).
    MarketId(u32)
);
