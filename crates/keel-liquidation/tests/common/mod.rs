//! A small world for the liquidation tests: one clearinghouse, one book per market, a
//! liquidator, and shortcuts in whole dollars (tick 1 USD, lot 1 unit, so k = 10^6).

#![allow(dead_code)]

use keel_book::{BookConfig, OrderBook};
use keel_liquidation::{LiquidationConfig, LiquidationEvent, Liquidator, ValueCheck, settle_fills};
use keel_margin::{AssetId, Clearinghouse, Fill, Liquidity, MarketConfig, Rate, RiskTierSpec, RiskTiers};
use keel_types::{AccountId, Grid, MarketId, Money, NewOrder, OrderId, Price, Qty, Side};
use rust_decimal::Decimal;

/// Whole dollars as money.
pub fn usd(x: i64) -> Money {
    Money(x * 1_000_000)
}

/// Tiers from `(floor in USD, rate in 10^-8, max leverage)`.
pub fn tiers(rows: &[(i64, i64, u32)]) -> RiskTiers {
    let specs: Vec<RiskTierSpec> = rows
        .iter()
        .map(|&(floor, mmr, lev)| RiskTierSpec {
            floor: usd(floor),
            maintenance_rate: Rate(mmr),
            max_leverage: lev,
        })
        .collect();
    RiskTiers::new(&specs, usd(1_000_000_000)).unwrap()
}

/// One flat 5% maintenance tier (max 10x).
pub fn flat_tiers() -> RiskTiers {
    tiers(&[(0, 5_000_000, 10)])
}

pub struct World {
    pub ch: Clearinghouse,
    pub books: Vec<OrderBook>,
    pub liq: Liquidator,
    pub next_id: u64,
    pub events: Vec<LiquidationEvent>,
}

impl World {
    /// `markets` fee-free markets with the given tiers, tick 1 USD and lot 1 unit.
    pub fn new(markets: u32, tiers: RiskTiers, config: LiquidationConfig) -> World {
        let mut ch = Clearinghouse::new();
        let mut books = Vec::new();
        for m in 0..markets {
            let grid = Grid::new(Decimal::ONE, Decimal::ONE).unwrap();
            let mut cfg =
                MarketConfig::new(MarketId(m), grid, tiers.clone(), Price(1_000_000), Qty(1_000_000));
            cfg.maker_fee = Rate::ZERO;
            cfg.taker_fee = Rate::ZERO;
            ch.add_market(cfg).unwrap();
            ch.set_mark_price(MarketId(m), Price(100)).unwrap();
            let book_cfg = BookConfig {
                max_price: Price(1_000_000),
                max_qty: Qty(1_000_000),
                order_capacity: 1024,
                level_capacity: 256,
                account_capacity: 256,
                ..BookConfig::default()
            };
            books.push(OrderBook::new(book_cfg));
        }
        World { ch, books, liq: Liquidator::new(config), next_id: 1, events: Vec::new() }
    }

    /// Opens an account with a settlement deposit in whole dollars.
    pub fn account(&mut self, id: u32, deposit: i64) -> AccountId {
        let a = AccountId(id);
        self.ch.open_account(a).unwrap();
        if deposit > 0 {
            self.ch.deposit(a, AssetId::SETTLEMENT, usd(deposit).0).unwrap();
        }
        a
    }

    /// A trade between two accounts outside the book (how positions were built before the test).
    pub fn trade(&mut self, market: u32, long: AccountId, short: AccountId, qty: i64, price: i64) {
        for (account, side) in [(long, Side::Buy), (short, Side::Sell)] {
            self.ch
                .apply_fill(&Fill {
                    account,
                    market: MarketId(market),
                    side,
                    qty: Qty(qty),
                    price: Price(price),
                    liquidity: Liquidity::Taker,
                })
                .unwrap();
        }
    }

    /// A resting limit order, registered with the clearinghouse as the engine would.
    pub fn rest(&mut self, market: u32, account: AccountId, side: Side, qty: i64, price: i64) -> OrderId {
        let id = OrderId(self.next_id);
        self.next_id += 1;
        let mut ev = Vec::new();
        let book = &mut self.books[market as usize];
        book.place(NewOrder::limit(id, account, side, Price(price), Qty(qty)), &mut ev).unwrap();
        settle_fills(&mut self.ch, MarketId(market), &ev).unwrap();
        if let Some(o) = self.books[market as usize].order(id) {
            self.ch.add_open_order(account, MarketId(market), side, o.qty, o.price).unwrap();
        }
        id
    }

    pub fn mark(&mut self, market: u32, price: i64) {
        self.ch.set_mark_price(MarketId(market), Price(price)).unwrap();
    }

    /// Runs the liquidator and returns this run's events.
    pub fn run(&mut self, now: u64) -> Vec<LiquidationEvent> {
        let mut out = Vec::new();
        self.liq.run(now, &mut self.books, &mut self.ch, &mut out).unwrap();
        self.events.extend_from_slice(&out);
        assert!(ValueCheck::of(&self.ch, self.liq.fund()).holds(), "value not conserved");
        out
    }

    pub fn balance(&self, a: AccountId) -> Money {
        self.ch.account(a).unwrap().balance()
    }

    pub fn size(&self, market: u32, a: AccountId) -> i64 {
        self.ch.account(a).unwrap().position(MarketId(market)).map_or(0, |p| p.size().0)
    }

    pub fn fund(&self) -> Money {
        self.liq.fund().balance(MarketId(0))
    }

    /// Σ long size = Σ short size in every market.
    pub fn open_interest_balanced(&self) -> bool {
        (0..self.books.len() as u32).all(|m| {
            let sum: i64 =
                self.ch.accounts().iter().map(|a| a.position(MarketId(m)).map_or(0, |p| p.size().0)).sum();
            sum == 0
        })
    }
}
