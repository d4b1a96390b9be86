//! Integer numbers of the hot path: prices in ticks, quantities in lots, money in fixed point.
//!
//! Prices and quantities are bounded by the book's configuration (see `keel-book`'s
//! `BookConfig`), which keeps their sums far from `i64::MAX`; they therefore offer plain
//! operators, which still trap on overflow in debug builds. Money is different: balances, PnL and
//! fees accumulate without a natural bound, so [`Money`] offers only checked arithmetic that
//! returns an [`ArithmeticError`] instead of wrapping.

use crate::ArithmeticError;
use std::fmt;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

/// A price as a whole number of ticks of its market (tick size 0.1 USD: 65,432.1 USD = 654,321).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Price(pub i64);

/// A quantity as a whole number of lots of its market (lot size 0.001 BTC: 1.5 BTC = 1,500).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Qty(pub i64);

macro_rules! integer_unit {
    ($name:ident) => {
        impl $name {
            /// Zero of this unit.
            pub const ZERO: $name = $name(0);

            /// True when strictly greater than zero.
            #[inline]
            pub const fn is_positive(self) -> bool {
                self.0 > 0
            }

            /// Addition that reports overflow instead of wrapping.
            #[inline]
            pub fn checked_add(self, other: $name) -> Result<$name, ArithmeticError> {
                self.0.checked_add(other.0).map($name).ok_or(ArithmeticError::Overflow)
            }

            /// Subtraction that reports overflow instead of wrapping.
            #[inline]
            pub fn checked_sub(self, other: $name) -> Result<$name, ArithmeticError> {
                self.0.checked_sub(other.0).map($name).ok_or(ArithmeticError::Overflow)
            }
        }

        impl Add for $name {
            type Output = $name;
            #[inline]
            fn add(self, other: $name) -> $name {
                $name(self.0 + other.0)
            }
        }

        impl Sub for $name {
            type Output = $name;
            #[inline]
            fn sub(self, other: $name) -> $name {
                $name(self.0 - other.0)
            }
        }

        impl AddAssign for $name {
            #[inline]
            fn add_assign(&mut self, other: $name) {
                self.0 += other.0;
            }
        }

        impl SubAssign for $name {
            #[inline]
            fn sub_assign(&mut self, other: $name) {
                self.0 -= other.0;
            }
        }

        impl Neg for $name {
            type Output = $name;
            #[inline]
            fn neg(self) -> $name {
                $name(-self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

integer_unit!(Price);
integer_unit!(Qty);

/// How a division that does not come out even is rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Rounding {
    /// Towards negative infinity.
    Floor,
    /// Towards positive infinity.
    Ceil,
}

/// An amount of money in the settlement asset, in millionths (scale [`Money::SCALE`] = 10^6).
///
/// Six decimals is the native precision of the USD stablecoins a venue settles in, so deposits
/// and withdrawals are exact; `i64` then holds ±9.2 trillion, enough for any single balance. Sums
/// over many accounts (value-conservation checks) are taken in `i128`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Money(pub i64);

impl Money {
    /// Money units per whole unit of the settlement asset.
    pub const SCALE: i64 = 1_000_000;
    /// Number of decimal places of one money unit.
    pub const DECIMALS: u32 = 6;
    /// Zero money.
    pub const ZERO: Money = Money(0);
    /// The most that deposits may bring a balance or an insurance pool to: 2^60 units, about
    /// 1.15 trillion of the settlement asset, an eighth of the `i64` range. What trading credits
    /// on top of a balance (profits, surpluses, fees) then has seven eighths of the range to
    /// fill before it could overflow, so a deposit can never set up a later credit to fail half
    /// way through booking a trade or a liquidation.
    pub const DEPOSIT_CEILING: Money = Money(1 << 60);

    /// A whole number of settlement-asset units (`Money::from_whole(5)` is 5.000000).
    pub fn from_whole(units: i64) -> Result<Money, ArithmeticError> {
        units.checked_mul(Self::SCALE).map(Money).ok_or(ArithmeticError::Overflow)
    }

    /// Addition that reports overflow.
    #[inline]
    pub fn checked_add(self, other: Money) -> Result<Money, ArithmeticError> {
        self.0.checked_add(other.0).map(Money).ok_or(ArithmeticError::Overflow)
    }

    /// Subtraction that reports overflow.
    #[inline]
    pub fn checked_sub(self, other: Money) -> Result<Money, ArithmeticError> {
        self.0.checked_sub(other.0).map(Money).ok_or(ArithmeticError::Overflow)
    }

    /// Negation that reports overflow (only `i64::MIN` cannot be negated).
    #[inline]
    pub fn checked_neg(self) -> Result<Money, ArithmeticError> {
        self.0.checked_neg().map(Money).ok_or(ArithmeticError::Overflow)
    }

    /// Multiplication by an integer that reports overflow.
    #[inline]
    pub fn checked_mul_int(self, factor: i64) -> Result<Money, ArithmeticError> {
        self.0.checked_mul(factor).map(Money).ok_or(ArithmeticError::Overflow)
    }

    /// `self × num / den`, computed exactly in 128 bits and rounded as asked.
    ///
    /// This is how rates are applied: a maintenance rate of 0.5% is `mul_ratio(5, 1000, Ceil)`.
    pub fn mul_ratio(self, num: i64, den: i64, rounding: Rounding) -> Result<Money, ArithmeticError> {
        div_round_i128(i128::from(self.0) * i128::from(num), i128::from(den), rounding)
            .and_then(|v| i64::try_from(v).map(Money).map_err(|_| ArithmeticError::Overflow))
    }

    /// True when strictly greater than zero.
    #[inline]
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// True when strictly less than zero.
    #[inline]
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }
}

macro_rules! rounded_division {
    ($(#[$doc:meta])* $name:ident, $int:ty) => {
        $(#[$doc])*
        #[inline]
        pub fn $name(num: $int, den: $int, rounding: Rounding) -> Result<$int, ArithmeticError> {
            if den == 0 {
                return Err(ArithmeticError::DivisionByZero);
            }
            let quotient = num.checked_div(den).ok_or(ArithmeticError::Overflow)?;
            let remainder = num % den;
            if remainder == 0 {
                return Ok(quotient);
            }
            // Truncation went towards zero; step once the other way when that is not the asked
            // direction.
            let exact_is_negative = (remainder < 0) != (den < 0);
            Ok(match (rounding, exact_is_negative) {
                (Rounding::Floor, true) => quotient - 1,
                (Rounding::Ceil, false) => quotient + 1,
                _ => quotient,
            })
        }
    };
}

rounded_division!(
    /// `num / den` in 64 bits, rounded towards negative or positive infinity.
    div_round_i64,
    i64
);
rounded_division!(
    /// `num / den` in 128 bits, rounded towards negative or positive infinity.
    div_round_i128,
    i128
);

impl fmt::Display for Money {
    /// Prints the amount with its six decimals, e.g. `-12.500000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let scale = Self::SCALE as u64;
        write!(f, "{sign}{}.{:06}", abs / scale, abs % scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_display_keeps_six_decimals_and_sign() {
        assert_eq!(Money(-12_500_000).to_string(), "-12.500000");
        assert_eq!(Money(1).to_string(), "0.000001");
        assert_eq!(Money(i64::MIN).to_string(), "-9223372036854.775808");
    }

    #[test]
    fn money_checked_arithmetic_reports_overflow() {
        assert_eq!(Money(i64::MAX).checked_add(Money(1)), Err(ArithmeticError::Overflow));
        assert_eq!(Money(i64::MIN).checked_sub(Money(1)), Err(ArithmeticError::Overflow));
        assert_eq!(Money(i64::MIN).checked_neg(), Err(ArithmeticError::Overflow));
        assert_eq!(Money(i64::MAX / 2 + 1).checked_mul_int(2), Err(ArithmeticError::Overflow));
        assert_eq!(Money::from_whole(i64::MAX / 1_000_000 + 1), Err(ArithmeticError::Overflow));
        assert_eq!(Money(3).checked_add(Money(4)), Ok(Money(7)));
    }

    #[test]
    fn mul_ratio_rounds_in_the_asked_direction() {
        // 0.5% of 1,000.000001 is 5.000000005: floor 5.000000, ceil 5.000001.
        let m = Money(1_000_000_001);
        assert_eq!(m.mul_ratio(5, 1000, Rounding::Floor), Ok(Money(5_000_000)));
        assert_eq!(m.mul_ratio(5, 1000, Rounding::Ceil), Ok(Money(5_000_001)));
        // Negative amounts round towards the infinities, not towards zero.
        let n = Money(-1_000_000_001);
        assert_eq!(n.mul_ratio(5, 1000, Rounding::Floor), Ok(Money(-5_000_001)));
        assert_eq!(n.mul_ratio(5, 1000, Rounding::Ceil), Ok(Money(-5_000_000)));
        assert_eq!(m.mul_ratio(1, 0, Rounding::Floor), Err(ArithmeticError::DivisionByZero));
        assert_eq!(Money(i64::MAX).mul_ratio(2, 1, Rounding::Floor), Err(ArithmeticError::Overflow));
        // A negative denominator is handled like a negated numerator.
        assert_eq!(Money(7).mul_ratio(1, -2, Rounding::Floor), Ok(Money(-4)));
        assert_eq!(Money(7).mul_ratio(1, -2, Rounding::Ceil), Ok(Money(-3)));
    }
}
