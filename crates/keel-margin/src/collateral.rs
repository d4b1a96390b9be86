//! Collateral assets: the settlement stablecoin plus assets valued at their price less a haircut.

use crate::MarginError;
use crate::rate::{Divisor, Rate, div_round_wide, narrow};
use keel_types::{ArithmeticError, Money, Rounding};
use std::fmt;

/// Identifies an asset an account can hold. [`AssetId::SETTLEMENT`] is the USD stablecoin.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct AssetId(pub u16);

impl AssetId {
    /// The settlement asset: margin, PnL, fees and funding are all paid in it.
    pub const SETTLEMENT: AssetId = AssetId(0);
}

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How a collateral asset is counted: its unit, its price and its haircut.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AssetConfig {
    /// Ticker shown to operators ("BTC", "stETH").
    pub symbol: String,
    /// Decimal places of one amount unit (8 for BTC in satoshis); amounts are integers of `10^-decimals`.
    pub decimals: u32,
    /// Price of one whole unit in the settlement asset.
    pub price: Money,
    /// Fraction of the value that does not count as margin (0.05 = 5%).
    pub haircut: Rate,
}

/// A registered asset with its haircut price precomputed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Asset {
    pub(crate) config: AssetConfig,
    /// `10^decimals`, with its reciprocal for the common case where the product fits 64 bits.
    unit: i128,
    unit_div: Divisor,
    /// `price × (1 − haircut)`, rounded down; what one whole unit counts for as margin.
    margin_price: Money,
}

/// The most decimals an asset may have: `10^18` still fits comfortably in `i128` arithmetic.
const MAX_DECIMALS: u32 = 18;

impl Asset {
    /// Validates a configuration into an asset.
    pub(crate) fn new(config: AssetConfig) -> Result<Asset, MarginError> {
        if config.decimals > MAX_DECIMALS {
            return Err(MarginError::InvalidConfig("asset decimals must be at most 18"));
        }
        let unit = 10i128.pow(config.decimals);
        let unit_div = Divisor::new(10u64.pow(config.decimals))?;
        let mut asset = Asset { config, unit, unit_div, margin_price: Money::ZERO };
        asset.reprice(asset.config.price, asset.config.haircut)?;
        Ok(asset)
    }

    /// Sets a new price and haircut; a depeg is just a lower price.
    pub(crate) fn reprice(&mut self, price: Money, haircut: Rate) -> Result<(), MarginError> {
        if price.is_negative() {
            return Err(MarginError::InvalidConfig("asset price must not be negative"));
        }
        if haircut.0 < 0 || haircut.0 > Rate::SCALE {
            return Err(MarginError::InvalidConfig("haircut must lie between 0 and 1"));
        }
        let margin_price = Rate(Rate::SCALE - haircut.0).of(price, Rounding::Floor)?;
        self.config.price = price;
        self.config.haircut = haircut;
        self.margin_price = margin_price;
        Ok(())
    }

    /// Margin value of `amount` units: `amount × price × (1 − haircut)`, rounded down (against the holder).
    #[inline]
    pub(crate) fn margin_value(&self, amount: i64) -> Result<Money, ArithmeticError> {
        if let Some(gross) = amount.checked_mul(self.margin_price.0) {
            return self.unit_div.divide(gross, Rounding::Floor).map(Money);
        }
        let gross = i128::from(amount) * i128::from(self.margin_price.0);
        narrow(div_round_wide(gross, self.unit, Rounding::Floor)?).map(Money)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_collateral_after_haircut_rounding_down() {
        // 0.5 BTC at 60,000 USD with a 5% haircut counts for 28,500 USD.
        let btc = Asset::new(AssetConfig {
            symbol: "BTC".into(),
            decimals: 8,
            price: Money::from_whole(60_000).unwrap(),
            haircut: "0.05".parse().unwrap(),
        })
        .unwrap();
        assert_eq!(btc.margin_value(50_000_000), Ok(Money::from_whole(28_500).unwrap()));
        // One satoshi is worth 0.00057 USD after haircut: rounds down to 0.000570.
        assert_eq!(btc.margin_value(1), Ok(Money(570)));
        // A 1-wei-style 18-decimal asset rounds a dust amount down to nothing.
        let eth = Asset::new(AssetConfig {
            symbol: "ETH".into(),
            decimals: 18,
            price: Money::from_whole(3_000).unwrap(),
            haircut: Rate::ZERO,
        })
        .unwrap();
        assert_eq!(eth.margin_value(1), Ok(Money(0)));
        assert_eq!(eth.margin_value(i64::MAX), Ok(Money(27_670_116_110)));
    }

    #[test]
    fn refuses_impossible_assets() {
        let cfg = |decimals, price, haircut| AssetConfig { symbol: "X".into(), decimals, price, haircut };
        assert!(Asset::new(cfg(19, Money(1), Rate::ZERO)).is_err());
        assert!(Asset::new(cfg(8, Money(-1), Rate::ZERO)).is_err());
        assert!(Asset::new(cfg(8, Money(1), Rate(Rate::SCALE + 1))).is_err());
        assert!(Asset::new(cfg(8, Money(1), Rate(-1))).is_err());
    }
}
