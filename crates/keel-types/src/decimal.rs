//! The edge between human decimals and the integer hot path.

use crate::{ArithmeticError, ConversionError, Money, Price, Qty};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// The largest tick or lot size accepted; it keeps every `i64` tick or lot count representable
/// as a `Decimal` when converted back.
const MAX_STEP: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

/// A market's tick and lot grid: converts decimal prices and quantities to ticks and lots and back,
/// and prices a fill in [`Money`] exactly.
///
/// The grid insists that one tick times one lot is a whole number of money units, so that the
/// notional of every fill, `price × qty × money_per_tick_lot`, is an exact integer and value is
/// conserved to the unit without rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grid {
    tick_size: Decimal,
    lot_size: Decimal,
    money_per_tick_lot: i64,
}

impl Grid {
    /// A grid with the given tick size (price step) and lot size (quantity step).
    pub fn new(tick_size: Decimal, lot_size: Decimal) -> Result<Grid, ConversionError> {
        for (what, step) in [("tick size", tick_size), ("lot size", lot_size)] {
            if step <= Decimal::ZERO {
                return Err(ConversionError::NotPositive { what, value: step });
            }
            if step > MAX_STEP {
                return Err(ConversionError::OutOfRange { what, value: step });
            }
        }
        let per_tick_lot = tick_size * lot_size * Decimal::from(Money::SCALE);
        if !per_tick_lot.fract().is_zero() {
            return Err(ConversionError::GridTooFine { tick_size, lot_size });
        }
        let money_per_tick_lot = per_tick_lot
            .to_i64()
            .ok_or(ConversionError::OutOfRange { what: "tick size x lot size", value: per_tick_lot })?;
        Ok(Grid { tick_size: tick_size.normalize(), lot_size: lot_size.normalize(), money_per_tick_lot })
    }

    /// The price step.
    pub fn tick_size(&self) -> Decimal {
        self.tick_size
    }

    /// The quantity step.
    pub fn lot_size(&self) -> Decimal {
        self.lot_size
    }

    /// Money units (10^-6) that one tick of price times one lot of quantity is worth.
    pub fn money_per_tick_lot(&self) -> i64 {
        self.money_per_tick_lot
    }

    /// A positive decimal price as ticks; off-grid, non-positive or too large values are refused.
    pub fn price(&self, value: Decimal) -> Result<Price, ConversionError> {
        positive_steps("price", value, self.tick_size).map(Price)
    }

    /// A positive decimal quantity as lots; off-grid, non-positive or too large values are refused.
    pub fn qty(&self, value: Decimal) -> Result<Qty, ConversionError> {
        positive_steps("quantity", value, self.lot_size).map(Qty)
    }

    /// A signed decimal quantity (a position size) as lots; zero is allowed.
    pub fn signed_qty(&self, value: Decimal) -> Result<Qty, ConversionError> {
        steps("quantity", value, self.lot_size).map(Qty)
    }

    /// Ticks back to a decimal price.
    pub fn price_to_decimal(&self, price: Price) -> Decimal {
        // Cannot overflow: |i64| < 9.3e18 and the step is at most 1e6, far below Decimal's 7.9e28.
        Decimal::from(price.0) * self.tick_size
    }

    /// Lots back to a decimal quantity.
    pub fn qty_to_decimal(&self, qty: Qty) -> Decimal {
        Decimal::from(qty.0) * self.lot_size
    }

    /// The exact value of `qty` at `price`, in money (negative for a negative quantity).
    #[inline]
    pub fn notional(&self, price: Price, qty: Qty) -> Result<Money, ArithmeticError> {
        // Two i64 factors always fit i128; the third may not, hence the checked multiply.
        (i128::from(price.0) * i128::from(qty.0))
            .checked_mul(i128::from(self.money_per_tick_lot))
            .and_then(|value| i64::try_from(value).ok())
            .map(Money)
            .ok_or(ArithmeticError::Overflow)
    }
}

impl Money {
    /// A decimal amount as money; more than six decimals or out of `i64` range is refused.
    pub fn from_decimal(value: Decimal) -> Result<Money, ConversionError> {
        steps("money", value, Decimal::new(1, Money::DECIMALS)).map(Money)
    }

    /// The amount as a decimal with six decimal places.
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, Money::DECIMALS)
    }
}

fn positive_steps(what: &'static str, value: Decimal, step: Decimal) -> Result<i64, ConversionError> {
    if value <= Decimal::ZERO {
        return Err(ConversionError::NotPositive { what, value });
    }
    steps(what, value, step)
}

fn steps(what: &'static str, value: Decimal, step: Decimal) -> Result<i64, ConversionError> {
    let count = value.checked_div(step).ok_or(ConversionError::OutOfRange { what, value })?;
    // Division can round when the quotient needs more than 28 digits; check by multiplying back.
    if !count.fract().is_zero() || count.checked_mul(step) != Some(value) {
        return Err(ConversionError::OffGrid { what, value, step });
    }
    count.to_i64().ok_or(ConversionError::OutOfRange { what, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn btc() -> Grid {
        Grid::new(dec("0.1"), dec("0.001")).unwrap()
    }

    #[test]
    fn converts_on_grid_values_both_ways() {
        let g = btc();
        assert_eq!(g.price(dec("65432.1")), Ok(Price(654_321)));
        assert_eq!(g.qty(dec("1.5")), Ok(Qty(1_500)));
        assert_eq!(g.price_to_decimal(Price(654_321)), dec("65432.1"));
        assert_eq!(g.qty_to_decimal(Qty(1_500)), dec("1.5"));
        assert_eq!(g.money_per_tick_lot(), 100);
        // 1.5 BTC at 65,432.1 = 98,148.15 USD.
        assert_eq!(g.notional(Price(654_321), Qty(1_500)), Ok(Money(98_148_150_000)));
    }

    #[test]
    fn says_which_rule_a_value_breaks() {
        let g = btc();
        assert!(matches!(g.price(dec("65432.15")), Err(ConversionError::OffGrid { what: "price", .. })));
        assert!(matches!(g.qty(dec("0.0005")), Err(ConversionError::OffGrid { what: "quantity", .. })));
        assert!(matches!(g.price(dec("0")), Err(ConversionError::NotPositive { what: "price", .. })));
        assert!(matches!(g.qty(dec("-1")), Err(ConversionError::NotPositive { what: "quantity", .. })));
        assert!(matches!(
            g.price(dec("1000000000000000000000")),
            Err(ConversionError::OutOfRange { what: "price", .. })
        ));
        assert_eq!(g.signed_qty(dec("-0.25")), Ok(Qty(-250)));
        assert_eq!(g.signed_qty(dec("0")), Ok(Qty(0)));
    }

    #[test]
    fn money_conversion_is_exact_to_six_decimals() {
        assert_eq!(Money::from_decimal(dec("-12.5")), Ok(Money(-12_500_000)));
        assert!(matches!(Money::from_decimal(dec("0.0000001")), Err(ConversionError::OffGrid { .. })));
        assert!(matches!(
            Money::from_decimal(dec("10000000000000")),
            Err(ConversionError::OutOfRange { .. })
        ));
        assert_eq!(Money(1).to_decimal(), dec("0.000001"));
    }

    #[test]
    fn refuses_grids_that_cannot_settle_exactly() {
        assert!(matches!(Grid::new(dec("0.01"), dec("0.00001")), Err(ConversionError::GridTooFine { .. })));
        assert!(matches!(Grid::new(dec("0"), dec("1")), Err(ConversionError::NotPositive { .. })));
        assert!(matches!(Grid::new(dec("1"), dec("10000000")), Err(ConversionError::OutOfRange { .. })));
        assert!(Grid::new(dec("0.01"), dec("0.0001")).is_ok());
    }

    #[test]
    fn notional_reports_overflow() {
        let g = btc();
        assert_eq!(g.notional(Price(i64::MAX), Qty(i64::MAX)), Err(ArithmeticError::Overflow));
        assert_eq!(g.notional(Price(10), Qty(-3)), Ok(Money(-3_000)));
    }

    proptest! {
        #[test]
        fn round_trips_every_tick_and_lot(ticks in 1i64..i64::MAX / 10, lots in 1i64..i64::MAX / 1000) {
            let g = btc();
            prop_assert_eq!(g.price(g.price_to_decimal(Price(ticks))), Ok(Price(ticks)));
            prop_assert_eq!(g.qty(g.qty_to_decimal(Qty(lots))), Ok(Qty(lots)));
        }

        #[test]
        fn off_grid_prices_are_refused(ticks in 1i64..1_000_000_000, frac in 1i64..10) {
            // A value between two ticks (by a hundredth of a tick) is never accepted.
            let g = btc();
            let value = g.price_to_decimal(Price(ticks)) + Decimal::new(frac, 2);
            let refused = matches!(g.price(value), Err(ConversionError::OffGrid { .. }));
            prop_assert!(refused);
        }
    }
}
