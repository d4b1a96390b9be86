//! Errors of the shared types: arithmetic that would overflow, and decimals that do not fit the grid.

use rust_decimal::Decimal;
use thiserror::Error;

/// Checked integer arithmetic that would have overflowed or divided by zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error, serde::Serialize, serde::Deserialize)]
pub enum ArithmeticError {
    /// The result does not fit the integer type.
    #[error("arithmetic overflow")]
    Overflow,
    /// A division by zero was attempted.
    #[error("division by zero")]
    DivisionByZero,
}

/// A decimal value from configuration or a scenario that cannot become a tick, lot or money amount.
#[derive(Clone, Debug, PartialEq, Eq, Error, serde::Serialize, serde::Deserialize)]
pub enum ConversionError {
    /// The value is not a whole multiple of the grid step (tick size, lot size or money unit).
    #[error("{what} {value} is not a multiple of the {what} step {step}")]
    OffGrid {
        /// Which quantity was being converted ("price", "quantity", "money").
        what: &'static str,
        /// The offending value.
        value: Decimal,
        /// The step it had to be a multiple of.
        step: Decimal,
    },
    /// The value is zero or negative where only a strictly positive value makes sense.
    #[error("{what} {value} must be positive")]
    NotPositive {
        /// Which quantity was being converted.
        what: &'static str,
        /// The offending value.
        value: Decimal,
    },
    /// The value is negative where zero or more is required.
    #[error("{what} {value} must not be negative")]
    Negative {
        /// Which quantity was being converted.
        what: &'static str,
        /// The offending value.
        value: Decimal,
    },
    /// The value is on the grid but too large for the 64-bit integer it has to fit.
    #[error("{what} {value} is out of range")]
    OutOfRange {
        /// Which quantity was being converted.
        what: &'static str,
        /// The offending value.
        value: Decimal,
    },
    /// A market's tick and lot sizes are so fine that one tick times one lot is less than one
    /// money unit, so fills could not be settled exactly in integers.
    #[error("tick size {tick_size} x lot size {lot_size} is not a whole number of money units (1e-6)")]
    GridTooFine {
        /// The market's tick size.
        tick_size: Decimal,
        /// The market's lot size.
        lot_size: Decimal,
    },
}
