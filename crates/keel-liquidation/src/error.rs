//! The one error type of the liquidation crate.

use keel_margin::MarginError;
use keel_types::{ArithmeticError, MarketId, Money, OrderId, RejectReason};
use thiserror::Error;

/// Why a liquidation step could not be carried out. Every variant means the engine's inputs broke
/// a documented contract (a book missing for a market, an unregistered resting order) or an
/// amount left the integer range; none is a normal outcome of a cascade.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LiquidationError {
    /// The clearinghouse refused an operation.
    #[error(transparent)]
    Margin(#[from] MarginError),
    /// Checked integer arithmetic would have overflowed or divided by zero.
    #[error(transparent)]
    Arithmetic(#[from] ArithmeticError),
    /// The book set has no book for a market the account trades in.
    #[error("no order book for market {0}")]
    NoBook(MarketId),
    /// The book refused a liquidation order.
    #[error("the book refused liquidation order {id}: {reason}")]
    OrderRejected {
        /// The liquidation order.
        id: OrderId,
        /// The book's reason.
        reason: RejectReason,
    },
    /// Auto-deleveraging found no opposing position for the rest of a bankrupt close: open
    /// interest was out of balance.
    #[error("no opposing position left to deleverage in market {0}")]
    NoAdlCounterparty(MarketId),
    /// A venue deposit would take a fund pool above [`Money::DEPOSIT_CEILING`].
    #[error("a deposit may not take a fund pool above {ceiling}")]
    AboveDepositCeiling {
        /// The ceiling.
        ceiling: Money,
    },
    /// An amount for the insurance fund must be positive.
    #[error("insurance fund amount must be positive")]
    NotPositive,
}
