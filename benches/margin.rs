//! Margin hot path: the pre-trade check and the position update on a fill, for an account holding
//! ten cross positions (with resting orders in some markets) across ten markets. The check is
//! measured three ways: with the account's valuation cached (no mark moved since its last order);
//! right after one market's mark moved (that position re-priced, the other nine from their cached
//! shares); and, the worst case, after every mark moved (all ten re-priced).

use criterion::{Criterion, criterion_group, criterion_main};
use keel_margin::{
    AssetConfig, AssetId, Clearinghouse, Fill, Liquidity, MarketConfig, OrderIntent, PreTrade, Rate,
    RiskTierSpec, RiskTiers,
};
use keel_types::{AccountId, Grid, MarketId, Money, Price, Qty, Side};
use rust_decimal::Decimal;
use std::hint::black_box;
use std::time::Duration;

const MARKETS: u32 = 10;

fn tiers() -> RiskTiers {
    let rows =
        [(0, 400_000, 125), (50_000, 500_000, 100), (250_000, 1_000_000, 50), (1_000_000, 2_500_000, 20)];
    let specs: Vec<RiskTierSpec> = rows
        .iter()
        .map(|&(floor, mmr, lev)| RiskTierSpec {
            floor: Money::from_whole(floor).unwrap(),
            maintenance_rate: Rate(mmr),
            max_leverage: lev,
        })
        .collect();
    RiskTiers::new(&specs, Money::from_whole(10_000_000).unwrap()).unwrap()
}

/// A clearinghouse with ten markets and one account holding a position in each, some of them
/// with resting orders, plus a collateral asset; every mark set.
fn setup() -> (Clearinghouse, AccountId) {
    let mut ch = Clearinghouse::new();
    let grid = Grid::new(Decimal::new(1, 1), Decimal::new(1, 3)).unwrap();
    for m in 0..MARKETS {
        let cfg = MarketConfig::new(MarketId(m), grid, tiers(), Price(100_000_000), Qty(100_000_000));
        ch.add_market(cfg).unwrap();
        ch.set_mark_price(MarketId(m), Price(300_000 + 1_000 * i64::from(m))).unwrap();
    }
    let btc = ch
        .add_asset(AssetConfig {
            symbol: "BTC".into(),
            decimals: 8,
            price: Money(60_000_000_000),
            haircut: Rate(5_000_000),
        })
        .unwrap();
    let a = AccountId(7);
    ch.open_account(a).unwrap();
    ch.deposit(a, AssetId::SETTLEMENT, 1_000_000_000_000).unwrap();
    ch.deposit(a, btc, 50_000_000).unwrap();
    for m in 0..MARKETS {
        let side = if m % 2 == 0 { Side::Buy } else { Side::Sell };
        let fill = Fill {
            account: a,
            market: MarketId(m),
            side,
            qty: Qty(1_000 + 100 * i64::from(m)),
            price: Price(300_000 + 500 * i64::from(m)),
            liquidity: Liquidity::Taker,
        };
        ch.apply_fill(&fill).unwrap();
        if m % 3 == 0 {
            ch.add_open_order(a, MarketId(m), Side::Buy, Qty(500), Price(295_000)).unwrap();
            ch.add_open_order(a, MarketId(m), Side::Sell, Qty(700), Price(310_000)).unwrap();
        }
    }
    (ch, a)
}

fn bench_margin(c: &mut Criterion) {
    let mut group = c.benchmark_group("margin");

    let (ch, a) = setup();
    let order = OrderIntent { market: MarketId(4), side: Side::Buy, qty: Qty(250), price: Price(305_000) };
    assert_eq!(ch.pre_trade_check(a, &order), Ok(PreTrade::Accept));
    group.bench_function("pre_trade_check_10_positions", |b| {
        b.iter(|| black_box(ch.pre_trade_check(black_box(a), black_box(&order))))
    });

    // The same check right after a mark move, the move included in the time: the account's
    // cached totals are stale, so the position in the moved market is re-priced and the other
    // nine are added up from their cached shares (an account's first order after a mark update).
    let (mut ch, a) = setup();
    let mut up = false;
    group.bench_function("pre_trade_check_10_positions_after_mark_move", |b| {
        b.iter(|| {
            up = !up;
            let mark = Price(if up { 309_001 } else { 309_000 });
            ch.set_mark_price(MarketId(9), mark).unwrap();
            black_box(ch.pre_trade_check(black_box(a), black_box(&order)))
        })
    });

    // The worst case: every mark moved since the account was last valued, so all ten positions
    // are re-priced. The ten mark moves are included in the time.
    let (mut ch, a) = setup();
    let mut step = 0i64;
    group.bench_function("pre_trade_check_10_positions_all_marks_moved", |b| {
        b.iter(|| {
            step = 1 - step;
            for m in 0..MARKETS {
                ch.set_mark_price(MarketId(m), Price(300_000 + 1_000 * i64::from(m) + step)).unwrap();
            }
            black_box(ch.pre_trade_check(black_box(a), black_box(&order)))
        })
    });

    // A mark update on its own (what the two cases above include once and ten times).
    let (mut ch, _) = setup();
    let mut up = false;
    group.bench_function("set_mark_price", |b| {
        b.iter(|| {
            up = !up;
            ch.set_mark_price(black_box(MarketId(9)), Price(if up { 309_001 } else { 309_000 }))
        })
    });

    let (mut ch, a) = setup();
    let mut buy = true;
    group.bench_function("fill_update_10_positions", |b| {
        b.iter(|| {
            // Alternating sides keeps the position (and so the work per fill) stable: one fill
            // increases the position, the next reduces it and realizes PnL.
            let side = if buy { Side::Buy } else { Side::Sell };
            buy = !buy;
            let fill = Fill {
                account: a,
                market: MarketId(5),
                side,
                qty: Qty(10),
                price: Price(305_100),
                liquidity: Liquidity::Taker,
            };
            black_box(ch.apply_fill(black_box(&fill)))
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_margin
}
criterion_main!(benches);
