//! The one error type of the margin crate: every refusal says what was wrong, in a venue's words.

use crate::AssetId;
use keel_types::{AccountId, ArithmeticError, ConversionError, MarketId, Money, Price, Qty};
use thiserror::Error;

/// Why a margin operation was refused. The state is unchanged whenever one is returned.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MarginError {
    /// Checked integer arithmetic would have overflowed or divided by zero.
    #[error(transparent)]
    Arithmetic(#[from] ArithmeticError),
    /// A decimal from configuration does not fit the integer representation.
    #[error(transparent)]
    Conversion(#[from] ConversionError),
    /// A deposit would take a balance above [`Money::DEPOSIT_CEILING`].
    #[error("a deposit may not take a balance above {ceiling}")]
    AboveDepositCeiling {
        /// The ceiling.
        ceiling: Money,
    },
    /// The account has not been opened.
    #[error("account {0} does not exist")]
    UnknownAccount(AccountId),
    /// The account id is already in use.
    #[error("account {0} already exists")]
    DuplicateAccount(AccountId),
    /// The market has not been configured.
    #[error("market {0} does not exist")]
    UnknownMarket(MarketId),
    /// The market id is already configured.
    #[error("market {0} is already configured")]
    DuplicateMarket(MarketId),
    /// The asset has not been registered.
    #[error("asset {0} does not exist")]
    UnknownAsset(AssetId),
    /// A configuration value breaks a rule stated in the message.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// An amount, quantity or price that must be strictly positive was not.
    #[error("{0} must be positive")]
    NotPositive(&'static str),
    /// A price lies outside the market's configured range.
    #[error("price {price} is outside the market's range 1..={max}")]
    PriceOutOfRange {
        /// The offending price.
        price: Price,
        /// The market's highest allowed price.
        max: Price,
    },
    /// The market has no mark price yet, so nothing can be margined in it.
    #[error("market {0} has no mark price yet")]
    NoMarkPrice(MarketId),
    /// The market has no index price yet, so no mark or premium can be derived.
    #[error("market {0} has no index price yet")]
    NoIndexPrice(MarketId),
    /// The requested leverage is zero or above what the risk tier of the position allows.
    #[error("leverage {requested}x is outside 1..={max}x for this position size")]
    LeverageOutOfRange {
        /// The leverage asked for.
        requested: u32,
        /// The highest leverage the position's risk tier allows.
        max: u32,
    },
    /// The operation would leave the account below its initial margin.
    #[error("insufficient margin: short by {shortfall}")]
    InsufficientMargin {
        /// How much more equity the operation needs.
        shortfall: Money,
    },
    /// A withdrawal or transfer asks for more of an asset than the account holds.
    #[error("insufficient balance of asset {asset}: holds {held}, asked {requested}")]
    InsufficientBalance {
        /// The asset.
        asset: AssetId,
        /// The amount held, in the asset's units.
        held: i64,
        /// The amount asked for.
        requested: i64,
    },
    /// The margin mode can only change while the position is flat and has no open orders.
    #[error("margin mode of market {0} can only change while flat and without open orders")]
    ModeChangeWithExposure(MarketId),
    /// Isolated-margin operations on a position that is in cross mode.
    #[error("the position in market {0} is not in isolated margin mode")]
    NotIsolated(MarketId),
    /// The engine tried to unregister more open-order quantity than it registered.
    #[error("removing more open-order quantity than is registered in market {0}")]
    OpenOrderUnderflow(MarketId),
    /// The position would grow beyond the market's size limit.
    #[error("position size {size} would exceed the market's limit {max}")]
    PositionLimit {
        /// The size the position would reach.
        size: Qty,
        /// The market's largest allowed position.
        max: Qty,
    },
    /// Funding was asked for before it is due.
    #[error("funding for market {market} is not due before {next_ms} ms")]
    FundingNotDue {
        /// The market.
        market: MarketId,
        /// When the next funding is due.
        next_ms: u64,
    },
    /// One side of the market holds positions and the other none, so funding has nobody to pay.
    #[error("funding in market {0} has payers but no receivers (open interest is unbalanced)")]
    FundingWithoutCounterparty(MarketId),
}
