//! The maintenance index: triggers sit at the liquidation price, a move that crosses nothing
//! finds nothing, a move in one market finds the multi-market cross accounts it pushed under
//! (never missing one, checked against a scan of every account), and the heatmap adds up.

use super::*;
use crate::{AssetId, LiquidationTarget, MarginCall, MarginMode};
use keel_types::{AccountId, MarketId, Side};
use proptest::prelude::*;

/// Markets with tick 1 USD and lot 1 (k = 10^6) and flat 5% maintenance.
fn bench(markets: u32) -> Bench {
    let ms = (0..markets)
        .map(|m| market(m, "1", "1", tiers(&[(0, "0.05", 10)], 1_000_000_000), MarginBasis::MarkValue))
        .collect();
    let mut b = Bench::new(ms);
    for m in 0..markets {
        b.mark(m, "100");
    }
    b
}

fn collect(b: &mut Bench) -> Vec<MarginCall> {
    let mut out = Vec::new();
    b.ch.collect_margin_calls(&mut out).unwrap();
    out
}

#[test]
fn a_single_position_is_indexed_at_its_liquidation_price_and_found_exactly_there() {
    let mut b = bench(1);
    let a = b.account(1, "1000");
    let s = b.account(2, "100000");
    b.fill(a, 0, Side::Buy, "100", "100");
    b.fill(s, 0, Side::Sell, "100", "100");
    assert!(collect(&mut b).is_empty());
    // E = 100p − 9,000 ≤ MM = 5p up to p = 94.
    assert_eq!(b.ch.liquidation_price(a, MarketId(0)).unwrap(), Some(Price(94)));
    let (long, short) = b.ch.maintenance_triggers(MarketId(0)).unwrap();
    assert_eq!(long, Some(Price(94)));
    // The short (100,000 against 100 lots) is liquidated only at 1,047: E = 110,000 − 100p ≤ 5p.
    assert_eq!(short, b.ch.liquidation_price(s, MarketId(0)).unwrap());
    assert_eq!(b.ch.indexed_positions(), 2);

    b.mark(0, "95");
    assert!(collect(&mut b).is_empty());
    assert_eq!(b.ch.indexed_positions(), 2);
    b.mark(0, "94");
    let calls = collect(&mut b);
    assert_eq!(
        calls,
        vec![MarginCall {
            account: a,
            target: LiquidationTarget::Cross,
            equity: usd("400"),
            maintenance_margin: usd("470"),
        }]
    );
    // Parked until touched: not reported twice.
    assert!(collect(&mut b).is_empty());
    assert_eq!(b.ch.indexed_positions(), 1);
    b.ch.deposit(a, AssetId::SETTLEMENT, usd("1000").0).unwrap();
    assert!(collect(&mut b).is_empty());
    assert_eq!(b.ch.indexed_positions(), 2);
}

#[test]
fn an_isolated_position_is_indexed_on_its_own_margin() {
    let mut b = bench(1);
    let a = b.account(1, "10000");
    let s = b.account(2, "100000");
    b.ch.set_margin_mode(a, MarketId(0), MarginMode::Isolated).unwrap();
    b.ch.set_leverage(a, MarketId(0), 10).unwrap();
    b.fill(a, 0, Side::Buy, "100", "100");
    b.fill(s, 0, Side::Sell, "100", "100");
    // Fenced 1,000: E = 1,000 + 100(p − 100) ≤ 5p up to 94, whatever the 9,000 left in the balance.
    assert!(collect(&mut b).is_empty());
    assert_eq!(b.ch.maintenance_triggers(MarketId(0)).unwrap().0, Some(Price(94)));
    b.mark(0, "94");
    let calls = collect(&mut b);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].target, LiquidationTarget::Isolated(MarketId(0)));
}

#[test]
fn a_move_in_one_market_finds_the_multi_market_account_it_pushed_under() {
    let mut b = bench(2);
    let a = b.account(1, "1000");
    let s = b.account(2, "1000000");
    // Long 50 in each market at 100: E = 1,000 + 50(p0 − 100) + 50(p1 − 100), MM = 2.5(p0 + p1).
    for m in 0..2 {
        b.fill(a, m, Side::Buy, "50", "100");
        b.fill(s, m, Side::Sell, "50", "100");
    }
    assert!(collect(&mut b).is_empty());
    // Headroom 1,000 − 500 = 500, split 250 / 250: each trigger is where its own market alone
    // has lost 250 of `uPnL − MM`: 50(p − 100) − 2.5p + 250 = −250 → p = 94.7, trigger 94.
    assert_eq!(b.ch.maintenance_triggers(MarketId(0)).unwrap().0, Some(Price(94)));
    assert_eq!(b.ch.maintenance_triggers(MarketId(1)).unwrap().0, Some(Price(94)));
    // Market 1 falls to 94: a false alarm (E 700 > MM 485): re-indexed with headroom 215.
    b.mark(1, "94");
    assert!(collect(&mut b).is_empty());
    // Market 0 then takes it under: at 96, E = 500 > MM = 475; at 95, E = 450 ≤ MM = 472.5.
    b.mark(0, "96");
    assert!(!b.ch.is_cross_liquidatable(a).unwrap());
    assert!(collect(&mut b).is_empty());
    b.mark(0, "95");
    assert!(b.ch.is_cross_liquidatable(a).unwrap());
    let calls = collect(&mut b);
    assert_eq!(calls.iter().map(|c| c.account).collect::<Vec<_>>(), vec![a]);
}

#[test]
fn the_heatmap_buckets_notional_at_the_liquidation_prices() {
    let mut b = bench(1);
    let whale = b.account(9, "10000000");
    // Longs of 100 @ 100 with 1,000 / 1,300 / 1,400: liquidation prices 94, 91, 90.
    for (id, deposit) in [(1, "1000"), (2, "1300"), (3, "1400")] {
        let a = b.account(id, deposit);
        b.fill(a, 0, Side::Buy, "100", "100");
        b.fill(whale, 0, Side::Sell, "100", "100");
    }
    assert!(collect(&mut b).is_empty());
    let lps: Vec<_> =
        (1..=3).map(|i| b.ch.liquidation_price(AccountId(i), MarketId(0)).unwrap().unwrap().0).collect();
    assert_eq!(lps, vec![94, 91, 90]);
    let map = b.ch.liquidation_heatmap(MarketId(0), 5).unwrap();
    let longs: Vec<(i64, i64, Money)> =
        map.iter().filter(|x| x.long_qty.0 > 0).map(|x| (x.price.0, x.long_qty.0, x.long_notional)).collect();
    // Bucket [90, 95): 94, 91 and 90: 9,400 + 9,100 + 9,000.
    assert_eq!(longs, vec![(90, 300, usd("27500"))]);
    assert_eq!(b.ch.notional_liquidated_at(MarketId(0), Price(91)).unwrap(), usd("18500"));
    assert_eq!(b.ch.notional_liquidated_at(MarketId(0), Price(95)).unwrap(), Money::ZERO);
}

/// Accounts with positions in three markets, cross or isolated in market 2.
#[test]
fn an_account_no_mark_can_liquidate_is_not_indexed_and_one_unit_less_is() {
    // A long of 1 lot bought at 100 loses 99 at a mark of 1 (the lowest), where its maintenance
    // is 5 % of 1: with 99.05 it is exactly at maintenance there, with one money unit more never.
    for (deposit, liquidatable_at_lowest) in [("99.05", true), ("99.050001", false)] {
        let mut b = bench(1);
        // Funded so that even the highest mark cannot liquidate its short: never indexed.
        let whale = b.account(10_000, "100000000");
        let a = b.account(1, deposit);
        b.fill(a, 0, Side::Buy, "1", "100");
        b.fill(whale, 0, Side::Sell, "1", "100");
        assert!(collect(&mut b).is_empty());
        assert_eq!(b.ch.indexed_positions(), usize::from(liquidatable_at_lowest), "deposit {deposit}");
        b.mark(0, "1");
        let calls = collect(&mut b);
        assert_eq!(b.ch.is_cross_liquidatable(a).unwrap(), liquidatable_at_lowest, "deposit {deposit}");
        assert_eq!(calls.iter().any(|c| c.account == a), liquidatable_at_lowest, "deposit {deposit}");
        assert!(!calls.iter().any(|c| c.account == whale));
    }
}

type Holder = (i64, bool, Vec<(u32, bool, i64)>);

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The index never misses an account: after every mark move, every target a full scan finds
    /// at or below maintenance has been reported (now or earlier, and not touched since).
    #[test]
    fn the_index_reports_every_account_a_full_scan_finds_under_maintenance(
        holders in prop::collection::vec(
            (200i64..5_000, any::<bool>(), prop::collection::vec((0u32..3, any::<bool>(), 1i64..60), 1..4)),
            1..12,
        ),
        moves in prop::collection::vec((0u32..3, -8i64..=8), 1..40),
    ) {
        let holders: Vec<Holder> = holders;
        let mut b = bench(3);
        let whale = b.account(10_000, "100000000");
        let mut ids = Vec::new();
        for (i, (deposit, isolated, positions)) in holders.iter().enumerate() {
            let a = b.account(i as u32 + 1, &deposit.to_string());
            if *isolated {
                b.ch.set_margin_mode(a, MarketId(2), MarginMode::Isolated).unwrap();
            }
            for &(m, long, qty) in positions {
                let (x, y) = if long { (Side::Buy, Side::Sell) } else { (Side::Sell, Side::Buy) };
                b.fill(a, m, x, &qty.to_string(), "100");
                b.fill(whale, m, y, &qty.to_string(), "100");
            }
            ids.push(a);
        }
        let mut reported: Vec<(AccountId, LiquidationTarget)> = Vec::new();
        let mut marks = [100i64; 3];
        for (m, pct) in moves {
            marks[m as usize] = (marks[m as usize] * (100 + pct) / 100).clamp(1, 10_000);
            b.mark(m, &marks[m as usize].to_string());
            reported.extend(collect(&mut b).into_iter().map(|c| (c.account, c.target)));
            for &a in &ids {
                if b.ch.is_cross_liquidatable(a).unwrap() {
                    prop_assert!(reported.contains(&(a, LiquidationTarget::Cross)), "missed {a}");
                }
                if b.ch.account(a).unwrap().position(MarketId(2)).is_some_and(|p| p.mode() == MarginMode::Isolated && p.size().0 != 0)
                    && b.ch.is_isolated_liquidatable(a, MarketId(2)).unwrap()
                {
                    prop_assert!(reported.contains(&(a, LiquidationTarget::Isolated(MarketId(2)))));
                }
            }
        }
    }
}

/// One step of the trading property below.
#[derive(Clone, Debug)]
enum Step {
    /// Market `m`'s mark moves by this many percent.
    Move(u32, i64),
    /// Holder `h` trades `qty` in market `m` (buys when `long`) at this many percent off the mark,
    /// against the whale.
    Trade { h: usize, m: u32, long: bool, qty: i64, off: i64 },
}

fn trading_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        ((0u32..3), -8i64..=8).prop_map(|(m, pct)| Step::Move(m, pct)),
        ((0u32..3), -60i64..=60).prop_map(|(m, pct)| Step::Move(m, pct)),
        ((0usize..12), (0u32..3), any::<bool>(), 1i64..40, -6i64..=6)
            .prop_map(|(h, m, long, qty, off)| Step::Trade { h, m, long, qty, off }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Fills re-index only the positions they change (`reindex_traded`), keeping the others'
    /// triggers: interleaving trades at prices off the mark with mark moves, the index still
    /// reports every cross account a full scan finds under maintenance, at the collection after
    /// the step that put it there.
    #[test]
    fn trades_between_moves_never_hide_an_account_under_maintenance(
        deposits in prop::collection::vec(300i64..5_000, 1..12),
        steps in prop::collection::vec(trading_step(), 1..80),
    ) {
        let mut b = bench(3);
        let whale = b.account(10_000, "100000000");
        let ids: Vec<AccountId> =
            deposits.iter().enumerate().map(|(i, d)| b.account(i as u32 + 1, &d.to_string())).collect();
        let mut marks = [100i64; 3];
        // Reported and not traded since: parked with the (absent) liquidation queue.
        let mut reported: Vec<AccountId> = Vec::new();
        for step in steps {
            match step {
                Step::Move(m, pct) => {
                    marks[m as usize] = (marks[m as usize] * (100 + pct) / 100).clamp(1, 10_000);
                    b.mark(m, &marks[m as usize].to_string());
                }
                Step::Trade { h, m, long, qty, off } => {
                    let a = ids[h % ids.len()];
                    let price = (marks[m as usize] * (100 + off) / 100).max(1).to_string();
                    let (x, y) = if long { (Side::Buy, Side::Sell) } else { (Side::Sell, Side::Buy) };
                    b.fill(a, m, x, &qty.to_string(), &price);
                    b.fill(whale, m, y, &qty.to_string(), &price);
                    // A fill touches both accounts: they are re-indexed and reported afresh.
                    reported.retain(|&r| r != a && r != whale);
                }
            }
            reported.extend(
                collect(&mut b).into_iter().filter(|c| c.target == LiquidationTarget::Cross).map(|c| c.account),
            );
            for &a in ids.iter().chain([&whale]) {
                if b.ch.is_cross_liquidatable(a).unwrap() {
                    prop_assert!(reported.contains(&a), "missed {a} after {step:?}");
                }
            }
        }
    }
}
