//! Why the engine refused a command.

use keel_margin::{LiquidationTarget, MarginError, Rejection};
use keel_types::{AccountId, MarketId, OrderId, Qty, RejectReason};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A refused command. The engine's state is exactly as it was before the command.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum EngineError {
    /// No market with this id.
    #[error("unknown market {0}")]
    UnknownMarket(MarketId),
    /// A market with this id already exists.
    #[error("market {0} already exists")]
    DuplicateMarket(MarketId),
    /// No account with this id.
    #[error("unknown account {0}")]
    UnknownAccount(AccountId),
    /// The order is not a live order of this account in this market.
    #[error("order {0} is not a live order of this account in this market")]
    UnknownOrder(OrderId),
    /// The book refused the order or request.
    #[error("order refused: {0}")]
    Book(RejectReason),
    /// The pre-trade margin check refused the order.
    #[error("{}", describe_rejection(.0))]
    Margin(Rejection),
    /// A reduce-only order that would not reduce the position (or exceeds it).
    #[error("reduce-only order of {qty} lots would not reduce the position of {position} lots")]
    ReduceOnly {
        /// The order's quantity.
        qty: Qty,
        /// The account's signed position.
        position: Qty,
    },
    /// The account's margin in this market is being liquidated (its liquidation waits in the
    /// queue): it may not trade there until the liquidation is done.
    #[error("account {account} is being liquidated ({}): no orders until the liquidation is done", describe_target(.target))]
    InLiquidation {
        /// The account.
        account: AccountId,
        /// Its cross pool or the isolated position being liquidated.
        target: LiquidationTarget,
    },
    /// The margin system refused the operation.
    #[error("{0}")]
    MarginSystem(MarginError),
    /// The liquidation pipeline refused the operation.
    #[error("{0}")]
    Liquidation(String),
}

impl From<MarginError> for EngineError {
    fn from(error: MarginError) -> EngineError {
        // Unknown ids are the caller's mistake whichever part of the engine noticed them.
        match error {
            MarginError::UnknownAccount(account) => EngineError::UnknownAccount(account),
            MarginError::UnknownMarket(market) => EngineError::UnknownMarket(market),
            error => EngineError::MarginSystem(error),
        }
    }
}

/// The margin check's verdict in an operator's words.
fn describe_rejection(rejection: &Rejection) -> String {
    match rejection {
        Rejection::InsufficientMargin { shortfall } => {
            format!("insufficient margin: the account is short {shortfall} of initial margin and fees")
        }
        Rejection::RiskLimit { notional, max_notional } => format!(
            "risk limit: the position could reach a notional of {notional}, above {max_notional} at this leverage"
        ),
        Rejection::PositionLimit { size, max } => {
            format!("position limit: the position could reach {size} lots, above the market's {max}")
        }
    }
}

/// A liquidation target in an operator's words.
fn describe_target(target: &LiquidationTarget) -> String {
    match target {
        LiquidationTarget::Cross => "cross margin".to_string(),
        LiquidationTarget::Isolated(market) => format!("isolated position in market {market}"),
    }
}

/// A stable, machine-readable code for each kind of [`EngineError`], for wire protocols and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// [`EngineError::UnknownMarket`].
    UnknownMarket,
    /// [`EngineError::DuplicateMarket`].
    DuplicateMarket,
    /// [`EngineError::UnknownAccount`].
    UnknownAccount,
    /// [`EngineError::UnknownOrder`].
    UnknownOrder,
    /// [`EngineError::Book`].
    Book(RejectReason),
    /// [`EngineError::Margin`].
    InsufficientMargin,
    /// [`EngineError::ReduceOnly`].
    ReduceOnly,
    /// [`EngineError::MarginSystem`].
    MarginSystem,
    /// [`EngineError::Liquidation`].
    Liquidation,
    /// [`EngineError::InLiquidation`].
    InLiquidation,
}

impl EngineError {
    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::UnknownMarket(_) => ErrorCode::UnknownMarket,
            EngineError::DuplicateMarket(_) => ErrorCode::DuplicateMarket,
            EngineError::UnknownAccount(_) => ErrorCode::UnknownAccount,
            EngineError::UnknownOrder(_) => ErrorCode::UnknownOrder,
            EngineError::Book(reason) => ErrorCode::Book(*reason),
            EngineError::Margin(_) => ErrorCode::InsufficientMargin,
            EngineError::ReduceOnly { .. } => ErrorCode::ReduceOnly,
            EngineError::InLiquidation { .. } => ErrorCode::InLiquidation,
            EngineError::MarginSystem(_) => ErrorCode::MarginSystem,
            EngineError::Liquidation(_) => ErrorCode::Liquidation,
        }
    }
}
