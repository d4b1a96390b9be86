//! Tests across modules: the venues' published worked examples (`venues`), behaviour of the
//! clearinghouse (`behaviour`) and property tests (`props`).

mod behaviour;
mod maintenance;
mod props;
mod venues;

use crate::{Clearinghouse, Fill, Liquidity, MarginBasis, MarketConfig, Rate, RiskTierSpec, RiskTiers};
use keel_types::{AccountId, Grid, MarketId, Money, Price, Qty, Side};
use rust_decimal::Decimal;
use std::str::FromStr;

/// A decimal literal.
pub(crate) fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// An amount of the settlement asset from its decimal text.
pub(crate) fn usd(s: &str) -> Money {
    Money::from_decimal(dec(s)).unwrap()
}

/// A rate from its decimal text.
pub(crate) fn rate(s: &str) -> Rate {
    s.parse().unwrap()
}

/// Risk tiers from `(floor, mmr, max leverage)` rows in whole USD.
pub(crate) fn tiers(rows: &[(i64, &str, u32)], cap: i64) -> RiskTiers {
    let specs: Vec<RiskTierSpec> = rows
        .iter()
        .map(|&(floor, mmr, lev)| RiskTierSpec {
            floor: Money::from_whole(floor).unwrap(),
            maintenance_rate: rate(mmr),
            max_leverage: lev,
        })
        .collect();
    RiskTiers::new(&specs, Money::from_whole(cap).unwrap()).unwrap()
}

/// A fee-free market (venue examples leave fees out) on the given grid.
pub(crate) fn market(id: u32, tick: &str, lot: &str, tiers: RiskTiers, basis: MarginBasis) -> MarketConfig {
    let grid = Grid::new(dec(tick), dec(lot)).unwrap();
    // Price and size bounds: 10^7 units of price, 10^7 units of size, within the notional limit.
    let max_price = grid.price(dec("10000000")).unwrap();
    let max_position = Qty(1_000_000_000_000_000_000 / (max_price.0 * grid.money_per_tick_lot()));
    let mut cfg = MarketConfig::new(MarketId(id), grid, tiers, max_price, max_position);
    cfg.basis = basis;
    cfg.maker_fee = Rate::ZERO;
    cfg.taker_fee = Rate::ZERO;
    cfg
}

/// A test bench: a clearinghouse and shortcuts in decimal terms.
pub(crate) struct Bench {
    pub(crate) ch: Clearinghouse,
}

impl Bench {
    pub(crate) fn new(markets: Vec<MarketConfig>) -> Bench {
        let mut ch = Clearinghouse::new();
        for m in markets {
            ch.add_market(m).unwrap();
        }
        Bench { ch }
    }

    pub(crate) fn grid(&self, market: u32) -> Grid {
        self.ch.market(MarketId(market)).unwrap().grid
    }

    pub(crate) fn price(&self, market: u32, p: &str) -> Price {
        self.grid(market).price(dec(p)).unwrap()
    }

    pub(crate) fn qty(&self, market: u32, q: &str) -> Qty {
        self.grid(market).qty(dec(q)).unwrap()
    }

    pub(crate) fn to_dec(&self, market: u32, p: Price) -> Decimal {
        self.grid(market).price_to_decimal(p)
    }

    pub(crate) fn account(&mut self, id: u32, deposit: &str) -> AccountId {
        let a = AccountId(id);
        self.ch.open_account(a).unwrap();
        if usd(deposit).is_positive() {
            self.ch.deposit(a, crate::AssetId::SETTLEMENT, usd(deposit).0).unwrap();
        }
        a
    }

    pub(crate) fn fill(&mut self, account: AccountId, market: u32, side: Side, qty: &str, price: &str) {
        let fill = Fill {
            account,
            market: MarketId(market),
            side,
            qty: self.qty(market, qty),
            price: self.price(market, price),
            liquidity: Liquidity::Taker,
        };
        self.ch.apply_fill(&fill).unwrap();
    }

    /// Registers a collateral asset with eight decimals, its price in USD and its haircut.
    pub(crate) fn collateral(&mut self, symbol: &str, price: &str, haircut: &str) -> crate::AssetId {
        let config = crate::AssetConfig {
            symbol: symbol.into(),
            decimals: 8,
            price: usd(price),
            haircut: rate(haircut),
        };
        self.ch.add_asset(config).unwrap()
    }

    pub(crate) fn mark(&mut self, market: u32, p: &str) {
        let price = self.price(market, p);
        self.ch.set_mark_price(MarketId(market), price).unwrap();
    }

    pub(crate) fn liq(&self, account: AccountId, market: u32) -> Decimal {
        let p = self.ch.liquidation_price(account, MarketId(market)).unwrap().expect("a liquidation price");
        self.to_dec(market, p)
    }

    pub(crate) fn bankrupt(&self, account: AccountId, market: u32) -> Decimal {
        let p = self.ch.bankruptcy_price(account, MarketId(market)).unwrap().expect("a bankruptcy price");
        self.to_dec(market, p)
    }
}

/// Asserts `|actual − expected| ≤ tolerance`.
pub(crate) fn assert_close(actual: Decimal, expected: &str, tolerance: &str) {
    let diff = (actual - dec(expected)).abs();
    assert!(diff <= dec(tolerance), "{actual} is not {expected} within {tolerance}");
}
