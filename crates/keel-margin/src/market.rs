//! A market's margin configuration and its live price state (index, mark, samples, funding clock).

use crate::MarginError;
use crate::funding::{FundingConfig, PremiumSamples};
use crate::mark::{BasisWindow, MarkConfig};
use crate::rate::Rate;
use crate::tier::RiskTiers;
use keel_types::{Grid, MarketId, Money, Price, Qty};

/// The largest notional (in money units) one position may ever reach: 10^12 USD. Keeping every
/// per-position product below it leaves sums of many positions far from `i64::MAX`.
pub const MAX_POSITION_NOTIONAL: Money = Money(1_000_000_000_000_000_000);

/// The largest fee rate magnitude accepted (10%); anything above is a configuration mistake.
const MAX_FEE: Rate = Rate(Rate::SCALE / 10);

/// Which notional initial and maintenance margin are computed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum MarginBasis {
    /// Position value at the mark price (Binance, OKX, dYdX, Hyperliquid).
    #[default]
    MarkValue,
    /// Position value at the entry price (BitMEX and Bybit's published liquidation formulas).
    EntryValue,
}

/// Everything the margin system needs to know about a market.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MarketConfig {
    /// The market.
    pub id: MarketId,
    /// Tick and lot sizes; the notional of a fill is exact on it.
    pub grid: Grid,
    /// Risk-limit tiers.
    pub tiers: RiskTiers,
    /// Which notional margins are computed on.
    pub basis: MarginBasis,
    /// Highest price (ticks) the market accepts; bounds every notional.
    pub max_price: Price,
    /// Largest position size (lots) in either direction.
    pub max_position: Qty,
    /// Leverage of an account that has not chosen one.
    pub default_leverage: u32,
    /// Fee rate for the resting side of a fill (negative is a rebate).
    pub maker_fee: Rate,
    /// Fee rate for the incoming side of a fill.
    pub taker_fee: Rate,
    /// Mark-price rule.
    pub mark: MarkConfig,
    /// Funding rule.
    pub funding: FundingConfig,
}

impl MarketConfig {
    /// A market with Binance-like defaults: mark basis, 20x default leverage (capped by the first
    /// tier), maker 0.02% / taker 0.05%, median-of-three mark, 8-hour funding.
    pub fn new(
        id: MarketId,
        grid: Grid,
        tiers: RiskTiers,
        max_price: Price,
        max_position: Qty,
    ) -> MarketConfig {
        let default_leverage = tiers.tiers()[0].max_leverage.min(20);
        MarketConfig {
            id,
            grid,
            tiers,
            basis: MarginBasis::MarkValue,
            max_price,
            max_position,
            default_leverage,
            maker_fee: Rate(20_000),
            taker_fee: Rate(50_000),
            mark: MarkConfig::default(),
            funding: FundingConfig::default(),
        }
    }

    /// Checks the rules that keep every per-position computation inside 64-bit money.
    pub(crate) fn validate(&self) -> Result<(), MarginError> {
        if self.max_price.0 < 1 || self.max_position.0 < 1 {
            return Err(MarginError::InvalidConfig("max price and max position must be positive"));
        }
        let largest = i128::from(self.max_price.0)
            * i128::from(self.max_position.0)
            * i128::from(self.grid.money_per_tick_lot());
        if largest > i128::from(MAX_POSITION_NOTIONAL.0) {
            return Err(MarginError::InvalidConfig("max price x max position exceeds 10^12 in notional"));
        }
        if self.tiers.max_notional() > MAX_POSITION_NOTIONAL {
            return Err(MarginError::InvalidConfig("risk tiers' max notional exceeds 10^12"));
        }
        let first = self.tiers.tiers()[0].max_leverage;
        if self.default_leverage == 0 || self.default_leverage > first {
            return Err(MarginError::InvalidConfig(
                "default leverage must be within the first tier's maximum",
            ));
        }
        if self.maker_fee.0.abs() > MAX_FEE.0 || self.taker_fee.0.abs() > MAX_FEE.0 {
            return Err(MarginError::InvalidConfig("fee rates must be within ±10%"));
        }
        let f = &self.funding;
        if f.interval_ms == 0 || f.rate_divisor < 1 || f.interest_clamp.0 < 0 || f.cap.0 <= 0 {
            return Err(MarginError::InvalidConfig(
                "funding interval, divisor, clamp and cap must be positive",
            ));
        }
        if f.cap.0 > Rate::SCALE || f.interest_rate.0.abs() > Rate::SCALE {
            return Err(MarginError::InvalidConfig("funding cap and interest must be within ±100%"));
        }
        if self.mark.basis_window == 0 || self.mark.basis_window > 100_000 {
            return Err(MarginError::InvalidConfig("mark basis window must hold 1..=100,000 samples"));
        }
        Ok(())
    }
}

/// A configured market and its live prices.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Market {
    pub(crate) config: MarketConfig,
    /// Cached `grid.money_per_tick_lot()`: read on every position of every check.
    pub(crate) k: i64,
    pub(crate) index: Option<Price>,
    pub(crate) mark: Option<Price>,
    pub(crate) last_trade: Option<Price>,
    pub(crate) basis: BasisWindow,
    pub(crate) premiums: PremiumSamples,
    pub(crate) last_funding_rate: Rate,
    /// When the next funding settles; set from the first time the market hears of.
    pub(crate) next_funding_ms: Option<u64>,
}

impl Market {
    /// A validated market without prices yet.
    pub(crate) fn new(config: MarketConfig) -> Result<Market, MarginError> {
        config.validate()?;
        Ok(Market {
            k: config.grid.money_per_tick_lot(),
            basis: BasisWindow::new(config.mark.basis_window),
            config,
            index: None,
            mark: None,
            last_trade: None,
            premiums: PremiumSamples::default(),
            last_funding_rate: Rate::ZERO,
            next_funding_ms: None,
        })
    }

    /// The mark price, or an error when the market has none yet.
    #[inline]
    pub(crate) fn mark(&self) -> Result<Price, MarginError> {
        self.mark.ok_or(MarginError::NoMarkPrice(self.config.id))
    }

    /// Refuses prices outside `1..=max_price`.
    #[inline]
    pub(crate) fn check_price(&self, price: Price) -> Result<(), MarginError> {
        if price.0 < 1 || price > self.config.max_price {
            return Err(MarginError::PriceOutOfRange { price, max: self.config.max_price });
        }
        Ok(())
    }

    /// The funding boundary after `now_ms`: intervals are aligned to the epoch, as venues settle at
    /// fixed wall-clock times (00:00, 08:00, 16:00 UTC).
    pub(crate) fn boundary_after(&self, now_ms: u64) -> u64 {
        let interval = self.config.funding.interval_ms;
        (now_ms / interval).saturating_add(1).saturating_mul(interval)
    }
}
