//! The insurance fund: what liquidations earn above the bankruptcy price and the liquidation fee
//! flow in; the shortfall of closes filled below the bankruptcy price flows out.

use crate::LiquidationError;
use keel_types::{MarketId, Money};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Whether one fund backs every market or each market has its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum FundScope {
    /// One fund for all markets (Binance, Bybit's USDT contracts).
    #[default]
    Shared,
    /// A separate fund per market (BitMEX, Bybit's isolated insurance pools): a crash in one
    /// market cannot drain the protection of another.
    PerMarket,
}

/// Why money moved into or out of the fund.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FundFlowKind {
    /// The venue seeded or topped up the fund.
    Deposit,
    /// The fee charged on a partial liquidation.
    LiquidationFee,
    /// What a full close earned above the bankruptcy price (the liquidation fee is part of it).
    Surplus,
    /// Paid to an account whose close filled below its bankruptcy price.
    Shortfall,
    /// Paid to an account left with negative equity after all its positions were closed.
    Deficit,
}

/// The insurance fund's balances.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsuranceFund {
    scope: FundScope,
    /// The shared pool (used when the scope is shared).
    shared: Money,
    /// One pool per market (used when the scope is per market).
    per_market: BTreeMap<MarketId, Money>,
    /// Deposits by the venue since the start.
    deposits: i128,
}

impl InsuranceFund {
    /// An empty fund.
    pub fn new(scope: FundScope) -> InsuranceFund {
        InsuranceFund { scope, ..InsuranceFund::default() }
    }

    /// Shared or per market.
    pub fn scope(&self) -> FundScope {
        self.scope
    }

    /// The venue seeds the pool that backs `market` (any market for a shared fund).
    pub fn deposit(&mut self, market: MarketId, amount: Money) -> Result<Money, LiquidationError> {
        if !amount.is_positive() {
            return Err(LiquidationError::NotPositive);
        }
        if self.balance(market).checked_add(amount)? > Money::DEPOSIT_CEILING {
            return Err(LiquidationError::AboveDepositCeiling { ceiling: Money::DEPOSIT_CEILING });
        }
        let after = self.credit(market, amount)?;
        self.deposits += i128::from(amount.0);
        Ok(after)
    }

    /// The balance of the pool that backs `market`.
    pub fn balance(&self, market: MarketId) -> Money {
        match self.scope {
            FundScope::Shared => self.shared,
            FundScope::PerMarket => self.per_market.get(&market).copied().unwrap_or(Money::ZERO),
        }
    }

    /// Sum of all pools.
    pub fn total(&self) -> i128 {
        i128::from(self.shared.0) + self.per_market.values().map(|m| i128::from(m.0)).sum::<i128>()
    }

    /// Venue deposits since the start.
    pub fn deposits(&self) -> i128 {
        self.deposits
    }

    fn pool_mut(&mut self, market: MarketId) -> &mut Money {
        match self.scope {
            FundScope::Shared => &mut self.shared,
            FundScope::PerMarket => self.per_market.entry(market).or_insert(Money::ZERO),
        }
    }

    /// Adds to the pool backing `market`; returns its new balance.
    pub(crate) fn credit(&mut self, market: MarketId, amount: Money) -> Result<Money, LiquidationError> {
        let pool = self.pool_mut(market);
        *pool = pool.checked_add(amount)?;
        Ok(*pool)
    }

    /// Takes from the pool backing `market`; returns its new balance. The callers never take
    /// more than the balance except to cover a residual deficit, which may overdraw the pool
    /// (the venue's own capital stands behind it) and is reported as such.
    pub(crate) fn debit(&mut self, market: MarketId, amount: Money) -> Result<Money, LiquidationError> {
        let pool = self.pool_mut(market);
        *pool = pool.checked_sub(amount)?;
        Ok(*pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_venue_deposit_may_not_take_a_pool_above_the_ceiling() {
        for scope in [FundScope::Shared, FundScope::PerMarket] {
            let mut fund = InsuranceFund::new(scope);
            let market = MarketId(1);
            fund.deposit(market, Money(1_000)).unwrap();
            let room = Money(Money::DEPOSIT_CEILING.0 - 1_000);
            assert!(matches!(
                fund.deposit(market, Money(room.0 + 1)),
                Err(LiquidationError::AboveDepositCeiling { .. })
            ));
            assert_eq!(
                (fund.balance(market), fund.deposits()),
                (Money(1_000), 1_000),
                "a refusal changed the pool"
            );
            assert_eq!(fund.deposit(market, room).unwrap(), Money::DEPOSIT_CEILING);
            // What liquidations credit on top still fits.
            assert!(fund.credit(market, Money(1 << 62)).is_ok());
        }
    }
}
