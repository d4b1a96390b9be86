//! Liquidation pipeline: a mark tick over a million indexed positions that crosses nothing, and
//! cascades of 1,000 / 10,000 / 100,000 liquidated accounts with their book sweeps, fund flows
//! and auto-deleveraging, to show how the cost grows with the accounts liquidated.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use keel_book::{BookConfig, OrderBook};
use keel_liquidation::{LiquidationConfig, LiquidationEvent, Liquidator, settle_fills};
use keel_margin::{AssetId, Clearinghouse, Fill, Liquidity, MarketConfig, Rate, RiskTierSpec, RiskTiers};
use keel_types::{AccountId, Grid, MarketId, Money, NewOrder, OrderId, Price, Qty, Side};
use rust_decimal::Decimal;
use std::hint::black_box;
use std::time::Duration;

fn usd(x: i64) -> i64 {
    x * 1_000_000
}

/// Tick 1 USD, lot 1 unit, 5% flat maintenance, no fees.
fn clearinghouse(markets: u32) -> Clearinghouse {
    let mut ch = Clearinghouse::new();
    let tiers = RiskTiers::new(
        &[RiskTierSpec { floor: Money::ZERO, maintenance_rate: Rate(5_000_000), max_leverage: 10 }],
        Money(usd(1_000_000_000)),
    )
    .unwrap();
    for m in 0..markets {
        let grid = Grid::new(Decimal::ONE, Decimal::ONE).unwrap();
        let mut cfg = MarketConfig::new(MarketId(m), grid, tiers.clone(), Price(1_000_000), Qty(1_000_000));
        cfg.maker_fee = Rate::ZERO;
        cfg.taker_fee = Rate::ZERO;
        ch.add_market(cfg).unwrap();
        ch.set_mark_price(MarketId(m), Price(100)).unwrap();
    }
    ch
}

fn fill(ch: &mut Clearinghouse, account: AccountId, market: u32, side: Side, qty: i64, price: i64) {
    ch.apply_fill(&Fill {
        account,
        market: MarketId(market),
        side,
        qty: Qty(qty),
        price: Price(price),
        liquidity: Liquidity::Taker,
    })
    .unwrap();
}

fn book(orders: usize) -> OrderBook {
    OrderBook::new(BookConfig {
        max_price: Price(1_000_000),
        max_qty: Qty(1_000_000_000),
        order_capacity: orders + 16,
        level_capacity: 256,
        account_capacity: 16,
        ..BookConfig::default()
    })
}

/// 100,000 accounts with a cross position in each of 10 markets (1,000,000 positions), every one
/// indexed; a whale holds the other side.
fn million_positions() -> (Clearinghouse, Vec<OrderBook>, Liquidator) {
    const MARKETS: u32 = 10;
    let mut ch = clearinghouse(MARKETS);
    let whale = AccountId(0);
    ch.open_account(whale).unwrap();
    ch.deposit(whale, AssetId::SETTLEMENT, usd(1_000_000_000)).unwrap();
    for i in 1..=100_000u32 {
        let a = AccountId(i);
        ch.open_account(a).unwrap();
        ch.deposit(a, AssetId::SETTLEMENT, usd(2_000 + i64::from(i % 1_000))).unwrap();
        for m in 0..MARKETS {
            let long = (i + m) % 2 == 0;
            let (x, y) = if long { (Side::Buy, Side::Sell) } else { (Side::Sell, Side::Buy) };
            fill(&mut ch, a, m, x, 10, 100);
            fill(&mut ch, whale, m, y, 10, 100);
        }
    }
    let books = (0..MARKETS).map(|_| book(16)).collect();
    let mut liq = Liquidator::new(LiquidationConfig::default());
    let mut out = Vec::new();
    let mut books_v: Vec<OrderBook> = books;
    liq.run(0, &mut books_v, &mut ch, &mut out).unwrap();
    assert!(out.is_empty());
    assert!(ch.indexed_positions() >= 1_000_000);
    (ch, books_v, liq)
}

fn mark_tick(c: &mut Criterion) {
    let (mut ch, mut books, mut liq) = million_positions();
    let mut out: Vec<LiquidationEvent> = Vec::with_capacity(16);
    let mut up = false;
    c.bench_function("liquidation/mark_tick_1m_positions_none_crossing", |b| {
        b.iter(|| {
            up = !up;
            let price = if up { Price(101) } else { Price(100) };
            ch.set_mark_price(MarketId(3), price).unwrap();
            out.clear();
            let report = liq.run(1, &mut books, &mut ch, &mut out).unwrap();
            black_box(report);
        })
    });
    assert!(out.is_empty());
}

/// `victims` accounts long 10 @ 100 with 60–139 of margin (liquidation prices 90–99); shorts
/// of 100 lots against them; a maker bidding half the victims' size from 95 down to 80; a fund
/// that covers only part of the shortfall. The shock to 85 liquidates every victim.
fn cascade_world(victims: u32) -> (Clearinghouse, Vec<OrderBook>, Liquidator) {
    let mut ch = clearinghouse(1);
    let maker = AccountId(u32::MAX);
    ch.open_account(maker).unwrap();
    ch.deposit(maker, AssetId::SETTLEMENT, usd(1_000_000_000)).unwrap();
    let shorts = victims / 10;
    for s in 0..shorts {
        let a = AccountId(1_000_000 + s);
        ch.open_account(a).unwrap();
        ch.deposit(a, AssetId::SETTLEMENT, usd(5_000 + i64::from(s % 3_000))).unwrap();
    }
    for v in 0..victims {
        let a = AccountId(v);
        ch.open_account(a).unwrap();
        ch.deposit(a, AssetId::SETTLEMENT, usd(60 + i64::from(v % 80))).unwrap();
        fill(&mut ch, a, 0, Side::Buy, 10, 100);
        fill(&mut ch, AccountId(1_000_000 + v / 10), 0, Side::Sell, 10, 100);
    }
    let orders = (victims / 10) as usize;
    let mut b = book(orders);
    let mut ev = Vec::new();
    for i in 0..orders {
        let price = 95 - (i % 16) as i64;
        let id = OrderId(i as u64 + 1);
        b.place(NewOrder::limit(id, maker, Side::Buy, Price(price), Qty(50)), &mut ev).unwrap();
        ch.add_open_order(maker, MarketId(0), Side::Buy, Qty(50), Price(price)).unwrap();
    }
    settle_fills(&mut ch, MarketId(0), &ev).unwrap();
    let mut books = vec![b];
    let mut liq = Liquidator::new(LiquidationConfig::default());
    let mut out = Vec::new();
    liq.deposit_to_fund(MarketId(0), Money(usd(i64::from(victims) * 2)), &mut out).unwrap();
    liq.run(0, &mut books, &mut ch, &mut out).unwrap();
    ch.set_mark_price(MarketId(0), Price(85)).unwrap();
    (ch, books, liq)
}

fn cascade(c: &mut Criterion) {
    let mut group = c.benchmark_group("liquidation/cascade");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(2));
    for victims in [1_000u32, 10_000, 100_000] {
        group.bench_function(format!("{victims}_accounts"), |b| {
            b.iter_batched(
                || (cascade_world(victims), Vec::with_capacity(victims as usize * 16)),
                |((mut ch, mut books, mut liq), mut out)| {
                    let report = liq.run(1, &mut books, &mut ch, &mut out).unwrap();
                    assert!(report.completed >= victims as usize);
                    (ch, books, liq, out)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = mark_tick, cascade
}
criterion_main!(benches);
