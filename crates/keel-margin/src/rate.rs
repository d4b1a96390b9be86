//! Rates (maintenance rates, haircuts, fees, funding) as fixed-point integers, and the rounded
//! integer division every rate application goes through.

use keel_types::{ArithmeticError, ConversionError, Money, Rounding};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use std::fmt;
use std::str::FromStr;

/// A dimensionless rate in parts per hundred million (scale [`Rate::SCALE`] = 10^8): 0.5% = 500,000.
///
/// 10^-8 is the precision venues publish funding rates in, and it represents every published
/// maintenance rate, haircut and fee exactly.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Rate(pub i64);

impl Rate {
    /// Parts per whole: `Rate(SCALE)` is 100%.
    pub const SCALE: i64 = 100_000_000;
    /// Number of decimal places of one rate unit.
    pub const DECIMALS: u32 = 8;
    /// 0%.
    pub const ZERO: Rate = Rate(0);
    /// 100%.
    pub const ONE: Rate = Rate(Self::SCALE);

    /// A decimal fraction (0.005 for 0.5%) as a rate; more than eight decimals is refused.
    pub fn from_decimal(value: Decimal) -> Result<Rate, ConversionError> {
        let step = Decimal::new(1, Self::DECIMALS);
        let parts = value.checked_div(step).ok_or(ConversionError::OutOfRange { what: "rate", value })?;
        if !parts.fract().is_zero() {
            return Err(ConversionError::OffGrid { what: "rate", value, step });
        }
        parts.to_i64().map(Rate).ok_or(ConversionError::OutOfRange { what: "rate", value })
    }

    /// The rate as a decimal fraction.
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, Self::DECIMALS)
    }

    /// `amount × rate`, exact in integers and rounded as asked.
    #[inline]
    pub fn of(self, amount: Money, rounding: Rounding) -> Result<Money, ArithmeticError> {
        mul_div(amount.0, self.0, Self::SCALE, rounding).map(Money)
    }

    /// Addition that reports overflow.
    pub fn checked_add(self, other: Rate) -> Result<Rate, ArithmeticError> {
        self.0.checked_add(other.0).map(Rate).ok_or(ArithmeticError::Overflow)
    }

    /// Subtraction that reports overflow.
    pub fn checked_sub(self, other: Rate) -> Result<Rate, ArithmeticError> {
        self.0.checked_sub(other.0).map(Rate).ok_or(ArithmeticError::Overflow)
    }

    /// `self × other` as a rate (e.g. a clamp factor of 600% times a margin spread), rounded as asked.
    pub fn times(self, other: Rate, rounding: Rounding) -> Result<Rate, ArithmeticError> {
        mul_div(self.0, other.0, Self::SCALE, rounding).map(Rate)
    }

    /// The rate bounded to `[-bound, +bound]` (`bound` is taken as a magnitude).
    pub fn clamp_abs(self, bound: Rate) -> Rate {
        let b = bound.0.saturating_abs();
        Rate(self.0.clamp(-b, b))
    }
}

impl FromStr for Rate {
    type Err = ConversionError;

    /// Parses a decimal fraction such as `"0.0125"`; anything that is not a number is out of range.
    fn from_str(s: &str) -> Result<Rate, ConversionError> {
        let value = Decimal::from_str(s.trim())
            .map_err(|_| ConversionError::OutOfRange { what: "rate", value: Decimal::ZERO })?;
        Rate::from_decimal(value)
    }
}

impl fmt::Display for Rate {
    /// Prints the rate as a percentage with six decimals, e.g. `0.500000%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", (self.to_decimal() * Decimal::ONE_HUNDRED).round_dp(6))
    }
}

pub(crate) use keel_types::div_round_i64 as div_round;
pub(crate) use keel_types::div_round_i128 as div_round_wide;

/// `a × b / den` rounded as asked, exact for all inputs.
///
/// The product almost always fits 64 bits on the hot path, where a division by the constant
/// scale compiles to a multiplication; only a product that overflows falls back to 128 bits.
#[inline]
pub(crate) fn mul_div(a: i64, b: i64, den: i64, rounding: Rounding) -> Result<i64, ArithmeticError> {
    match a.checked_mul(b) {
        Some(product) => div_round(product, den, rounding),
        None => narrow(div_round_wide(i128::from(a) * i128::from(b), i128::from(den), rounding)?),
    }
}

/// A positive divisor with its precomputed reciprocal: exact division by a run-time value (a
/// leverage, an asset's unit) with a multiply instead of a `div`, which costs several times more
/// and sits on the hot path once per position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Divisor {
    d: u64,
    /// `floor((2^64 − 1) / d)`.
    inv: u64,
}

impl Divisor {
    /// The divisor `d`; zero is refused.
    pub(crate) fn new(d: u64) -> Result<Divisor, ArithmeticError> {
        if d == 0 {
            return Err(ArithmeticError::DivisionByZero);
        }
        Ok(Divisor { d, inv: u64::MAX / d })
    }

    /// The divisor for a leverage; leverage is validated to be at least 1, so 0 is read as 1.
    pub(crate) fn leverage(leverage: u32) -> Divisor {
        let d = u64::from(leverage.max(1));
        Divisor { d, inv: u64::MAX / d }
    }

    /// `floor(n / d)` for `n ≥ 0`, and the remainder.
    ///
    /// `n·inv / 2^64` undershoots `n/d` by less than `n / 2^64 < 1/2`, so the estimate is the true
    /// quotient or one less; one comparison corrects it.
    #[inline]
    fn div_rem(self, n: u64) -> (u64, u64) {
        let mut q = ((u128::from(n) * u128::from(self.inv)) >> 64) as u64;
        let mut r = n - q * self.d;
        if r >= self.d {
            q += 1;
            r -= self.d;
        }
        (q, r)
    }

    /// `n / d` rounded as asked; negative `n` takes the plain division path.
    #[inline]
    pub(crate) fn divide(self, n: i64, rounding: Rounding) -> Result<i64, ArithmeticError> {
        match u64::try_from(n) {
            Ok(u) if u < (1 << 63) => {
                let (q, r) = self.div_rem(u);
                let up = rounding == Rounding::Ceil && r != 0;
                // q ≤ n < 2^63, and q + 1 ≤ n when it applies: both fit.
                Ok((q + u64::from(up)) as i64)
            }
            _ => {
                let d = i64::try_from(self.d).map_err(|_| ArithmeticError::Overflow)?;
                div_round(n, d, rounding)
            }
        }
    }
}

/// An `i128` intermediate back to `i64`, or an overflow error.
#[inline]
pub(crate) fn narrow(value: i128) -> Result<i64, ArithmeticError> {
    i64::try_from(value).map_err(|_| ArithmeticError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints_published_rates() {
        assert_eq!("0.005".parse::<Rate>(), Ok(Rate(500_000)));
        assert_eq!("-0.00184".parse::<Rate>(), Ok(Rate(-184_000)));
        assert!(matches!("0.000000001".parse::<Rate>(), Err(ConversionError::OffGrid { .. })));
        assert!("abc".parse::<Rate>().is_err());
        assert_eq!(Rate(500_000).to_string(), "0.500000%");
    }

    #[test]
    fn reciprocal_division_at_the_edges() {
        for d in [1u64, 2, 3, 7, 125, u64::from(u32::MAX), 1 << 62, u64::MAX] {
            let div = Divisor::new(d).unwrap();
            for n in [0i64, 1, 2, i64::MAX - 1, i64::MAX, -1, i64::MIN] {
                for rounding in [Rounding::Floor, Rounding::Ceil] {
                    let expected = div_round_wide(i128::from(n), i128::from(d), rounding).unwrap();
                    let got = div.divide(n, rounding).map(i128::from);
                    // A divisor beyond i64 only fails on negative numerators, with a typed error.
                    if d > i64::MAX as u64 && n < 0 {
                        assert_eq!(got, Err(ArithmeticError::Overflow));
                    } else {
                        assert_eq!(got, Ok(expected), "{n} / {d} {rounding:?}");
                    }
                }
            }
        }
        assert_eq!(Divisor::new(0), Err(ArithmeticError::DivisionByZero));
    }

    #[test]
    fn applies_rates_with_the_asked_rounding() {
        // 0.5% of 0.000199 is 0.000000995: one money unit up, zero down.
        assert_eq!(Rate(500_000).of(Money(199), Rounding::Ceil), Ok(Money(1)));
        assert_eq!(Rate(500_000).of(Money(199), Rounding::Floor), Ok(Money(0)));
        assert_eq!(Rate(500_000).of(Money(-199), Rounding::Floor), Ok(Money(-1)));
        // A product beyond 64 bits still comes out exact through the wide path.
        assert_eq!(Rate(Rate::SCALE).of(Money(i64::MAX), Rounding::Floor), Ok(Money(i64::MAX)));
        assert_eq!(
            Rate(2 * Rate::SCALE).of(Money(i64::MAX), Rounding::Floor),
            Err(ArithmeticError::Overflow)
        );
    }

    proptest! {
        #[test]
        fn reciprocal_division_is_exact(n in prop_oneof![0i64..1_000_000, any::<i64>()], d in prop_oneof![1u64..200, 1u64..=u64::from(u32::MAX), 1u64..=1_000_000_000_000_000_000]) {
            let div = Divisor::new(d).unwrap();
            for rounding in [Rounding::Floor, Rounding::Ceil] {
                let expected = div_round_wide(i128::from(n), i128::from(d), rounding).unwrap();
                prop_assert_eq!(div.divide(n, rounding).map(i128::from), Ok(expected));
            }
        }

        #[test]
        fn mul_div_matches_wide_reference(a in any::<i64>(), b in -(1i64 << 40)..(1i64 << 40), den in 1i64..(1 << 40)) {
            let wide = div_round_wide(i128::from(a) * i128::from(b), i128::from(den), Rounding::Floor).unwrap();
            let expected = i64::try_from(wide).map_err(|_| ArithmeticError::Overflow);
            prop_assert_eq!(mul_div(a, b, den, Rounding::Floor), expected);
            let wide_ceil = div_round_wide(i128::from(a) * i128::from(b), i128::from(den), Rounding::Ceil).unwrap();
            prop_assert!(wide_ceil - wide <= 1);
        }
    }
}
