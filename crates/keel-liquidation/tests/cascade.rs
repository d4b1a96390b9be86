//! Cascades with hand-checked numbers. Prices are whole dollars (tick 1, lot 1), fees are zero
//! unless stated, maintenance is a flat 5% unless stated.
//!
//! Setup shared by the scenarios: account A deposits 1,000 and is long 100 @ 100, so
//! `E(p) = 1,000 + 100·(p − 100)` and `MM(p) = 5% · 100·p = 5p`. Liquidation: `95p = 9,000`,
//! p = 94.74, so the highest liquidating mark is **94** (E 400 ≤ MM 470; at 95, E 500 > MM 475).
//! Bankruptcy: `E(p) = 0` at **90**.

mod common;

use common::*;
use keel_liquidation::{CloseKind, FundFlowKind, LiquidationConfig, LiquidationEvent};
use keel_margin::LiquidationTarget;
use keel_types::{AccountId, MarketId, Money, Price, Qty, Side};

fn fund_flows(events: &[LiquidationEvent]) -> Vec<(FundFlowKind, Money)> {
    events
        .iter()
        .filter_map(|e| match e {
            LiquidationEvent::FundFlow { kind, amount, .. } => Some((*kind, *amount)),
            _ => None,
        })
        .collect()
}

fn margin_calls(events: &[LiquidationEvent]) -> Vec<AccountId> {
    events
        .iter()
        .filter_map(|e| match e {
            LiquidationEvent::MarginCall { account, .. } => Some(*account),
            _ => None,
        })
        .collect()
}

#[test]
fn a_shock_liquidates_one_account_and_the_fund_keeps_what_the_close_earns_above_bankruptcy() {
    let mut w = World::new(1, flat_tiers(), LiquidationConfig::default());
    let a = w.account(1, 1_000);
    let s = w.account(2, 100_000);
    let m = w.account(3, 100_000);
    let b = w.account(4, 3_000); // long 100 @ 100 with 3,000: liquidated only below 73
    w.trade(0, a, s, 100, 100);
    w.trade(0, b, s, 100, 100);
    w.rest(0, m, Side::Buy, 50, 92);
    w.rest(0, m, Side::Buy, 100, 90);
    assert_eq!(w.ch.liquidation_price(a, MarketId(0)).unwrap(), Some(Price(94)));
    assert_eq!(w.ch.bankruptcy_price(a, MarketId(0)).unwrap(), Some(Price(90)));

    w.mark(0, 95);
    assert!(margin_calls(&w.run(1)).is_empty(), "95 is above A's liquidation price");

    w.mark(0, 94);
    let ev = w.run(2);
    assert_eq!(margin_calls(&ev), vec![a]);
    assert!(ev.contains(&LiquidationEvent::MarginCall {
        account: a,
        target: LiquidationTarget::Cross,
        equity: usd(400),
        maintenance_margin: usd(470),
    }));
    // Full close (one tier, nothing to step down to): sell 100 at limit = bankruptcy price 90.
    assert!(ev.iter().any(|e| matches!(e,
        LiquidationEvent::LiquidationOrder { account, side: Side::Sell, qty: Qty(100), limit: Price(90),
            bankruptcy_price: Price(90), kind: CloseKind::Full, .. } if *account == a)));
    // Fills 50 @ 92 and 50 @ 90; the fund takes (92 − 90)·50 = 100 above bankruptcy.
    assert_eq!(fund_flows(&ev), vec![(FundFlowKind::Surplus, usd(100))]);
    assert_eq!(w.fund(), usd(100));
    // A: 1,000 + (4,600 + 4,500 − 10,000) − 100 = 0.
    assert_eq!(w.balance(a), Money::ZERO);
    assert_eq!(w.size(0, a), 0);
    assert_eq!(w.size(0, m), 100);
    assert_eq!(w.ch.account(m).unwrap().position(MarketId(0)).unwrap().cost_basis(), usd(9_100));
    // Nobody paid for A: no bankruptcy event; B is untouched.
    assert!(!ev.iter().any(|e| matches!(e, LiquidationEvent::Bankruptcy { .. })));
    assert_eq!(w.size(0, b), 100);
    assert!(w.open_interest_balanced());
    assert_eq!(w.liq.queue().count(), 0);
}

#[test]
fn liquidation_sells_sweep_the_book_and_the_move_liquidates_the_next_layer() {
    let mut w = World::new(1, flat_tiers(), LiquidationConfig::default());
    let a = w.account(1, 1_000); // LP 94, BP 90
    let b = w.account(2, 1_300); // E = 100p − 8,700, MM = 5p: LP 91 (E 400 ≤ 455), BP 87
    let c = w.account(3, 3_000); // LP 73
    let s = w.account(4, 1_000_000);
    let m = w.account(5, 1_000_000);
    for x in [a, b, c] {
        w.trade(0, x, s, 100, 100);
    }
    w.rest(0, m, Side::Buy, 60, 93);
    w.rest(0, m, Side::Buy, 40, 89);
    w.rest(0, m, Side::Buy, 100, 88);
    w.rest(0, m, Side::Buy, 200, 80);
    assert_eq!(w.ch.liquidation_price(b, MarketId(0)).unwrap(), Some(Price(91)));
    assert_eq!(w.ch.bankruptcy_price(b, MarketId(0)).unwrap(), Some(Price(87)));

    // Layer 1: the shock to 94 reaches A only.
    w.mark(0, 94);
    let ev = w.run(1);
    assert_eq!(margin_calls(&ev), vec![a]);
    // 60 fill @ 93 at the bankruptcy limit 90: surplus 3·60 = 180 to the fund. The 40 left go
    // beyond bankruptcy as far as the fund pays: 40 @ 89 costs it 1·40 = 40.
    assert_eq!(fund_flows(&ev), vec![(FundFlowKind::Surplus, usd(180)), (FundFlowKind::Shortfall, usd(-40))]);
    assert!(ev.iter().any(|e| matches!(
        e,
        LiquidationEvent::LiquidationOrder {
            qty: Qty(40),
            limit: Price(89),
            bankruptcy_price: Price(90),
            ..
        }
    )));
    // A: 1,000 + (5,580 + 3,560 − 10,000) − 180 + 40 = 0, bankrupt with 40 paid by the fund.
    assert_eq!(w.balance(a), Money::ZERO);
    assert!(ev.contains(&LiquidationEvent::Bankruptcy {
        account: a,
        target: LiquidationTarget::Cross,
        fund_paid: usd(40),
        adl_qty: Qty(0),
    }));
    assert_eq!(w.fund(), usd(140));
    assert_eq!(w.books[0].last_trade_price(), Some(Price(89)));

    // The sweep printed 89; the engine's mark follows the trades down (a last-price mark here).
    w.mark(0, 89);
    let ev = w.run(2);
    // Layer 2: B (LP 91) is reached, C (LP 73) is not. E = 200, MM = 445.
    assert_eq!(margin_calls(&ev), vec![b]);
    assert!(ev.contains(&LiquidationEvent::MarginCall {
        account: b,
        target: LiquidationTarget::Cross,
        equity: usd(200),
        maintenance_margin: usd(445),
    }));
    // Sell 100 at limit 87: fills 100 @ 88, surplus 1·100 = 100.
    assert_eq!(fund_flows(&ev), vec![(FundFlowKind::Surplus, usd(100))]);
    assert_eq!(w.balance(b), Money::ZERO);
    assert_eq!(w.fund(), usd(240));
    assert_eq!(w.size(0, c), 100);
    assert_eq!(w.size(0, m), 200);
    assert!(w.open_interest_balanced());
}

#[test]
fn a_close_that_drains_the_fund_deleverages_the_most_profitable_leveraged_shorts() {
    let mut w = World::new(1, flat_tiers(), LiquidationConfig::default());
    let a = w.account(1, 1_000); // long 100 @ 100: LP 94, BP 90
    let s1 = w.account(2, 600); // short 60 @ 100
    let s2 = w.account(3, 4_000); // short 40 @ 100
    let s3 = w.account(4, 1_000); // short 50 @ 90: losing at 94
    let l3 = w.account(5, 1_000_000);
    let m = w.account(6, 1_000_000);
    w.trade(0, a, s1, 60, 100);
    w.trade(0, a, s2, 40, 100);
    w.trade(0, l3, s3, 50, 90);
    w.rest(0, m, Side::Buy, 20, 89);
    w.rest(0, m, Side::Buy, 100, 80);
    let mut seed = Vec::new();
    w.liq.deposit_to_fund(MarketId(0), usd(50), &mut seed).unwrap();

    w.mark(0, 94);
    let ev = w.run(1);
    assert_eq!(margin_calls(&ev), vec![a]);
    // Nothing bids at or above 90. The fund's 50 pays for 20 @ 89 (1 each) and 3 @ 80 (10 each).
    assert!(
        ev.iter()
            .any(|e| matches!(e, LiquidationEvent::LiquidationOrder { qty: Qty(23), limit: Price(80), .. }))
    );
    assert_eq!(
        fund_flows(&ev),
        vec![(FundFlowKind::Shortfall, usd(-20)), (FundFlowKind::Shortfall, usd(-30))]
    );
    assert_eq!(w.fund(), Money::ZERO);
    // The remaining 77 are deleveraged at 90. At mark 94 the shorts rank:
    //   S1: PnL 360 / 6,000 = 6%, leverage 5,640 / 960 = 5.875   -> 0.3525
    //   S2: PnL 240 / 4,000 = 6%, leverage 3,760 / 4,240 = 0.887 -> 0.0532
    //   S3: losing (PnL −200), ranked after every winner.
    let adl: Vec<(AccountId, Qty, Price)> = ev
        .iter()
        .filter_map(|e| match e {
            LiquidationEvent::Adl { counterparty, qty, price, liquidated, side: Side::Sell, .. }
                if *liquidated == a =>
            {
                Some((*counterparty, *qty, *price))
            }
            _ => None,
        })
        .collect();
    assert_eq!(adl, vec![(s1, Qty(60), Price(90)), (s2, Qty(17), Price(90))]);
    assert!(ev.contains(&LiquidationEvent::Bankruptcy {
        account: a,
        target: LiquidationTarget::Cross,
        fund_paid: usd(50),
        adl_qty: Qty(77),
    }));
    // A: 1,000 + (1,780 + 240 + 6,930 − 10,000) + 50 = 0.
    assert_eq!(w.balance(a), Money::ZERO);
    // S1 closed 60 @ 90: +600. S2 closed 17 @ 90: +170 and keeps 23 short.
    assert_eq!(w.balance(s1), usd(1_200));
    assert_eq!(w.size(0, s1), 0);
    assert_eq!(w.balance(s2), usd(4_170));
    assert_eq!(w.size(0, s2), -23);
    assert_eq!(w.size(0, s3), -50);
    assert_eq!(w.size(0, m), 23);
    assert!(w.open_interest_balanced());
}

#[test]
fn a_tier_step_down_that_restores_maintenance_closes_only_part_and_pays_the_fee() {
    // Tiers: 1% up to 10,000 notional, 2.5% above (cum 150). 0.5% liquidation fee.
    let mut w =
        World::new(1, tiers(&[(0, 1_000_000, 50), (10_000, 2_500_000, 20)]), LiquidationConfig::default());
    let p = w.account(1, 1_150); // long 200 @ 100: E = 200p − 18,850, MM = 5p − 150: LP 95
    let s = w.account(2, 1_000_000);
    let m = w.account(3, 1_000_000);
    w.trade(0, p, s, 200, 100);
    w.rest(0, m, Side::Buy, 200, 95);
    assert_eq!(w.ch.liquidation_price(p, MarketId(0)).unwrap(), Some(Price(95)));

    w.mark(0, 95);
    let ev = w.run(1);
    assert_eq!(margin_calls(&ev), vec![p]);
    // Down to tier 0 the notional must be below 10,000: keep 105 (9,975), close 95. At mark with
    // the fee of 0.5% · 9,025 = 45.125: E 104.875 > MM 99.75, so the step-down suffices.
    // Bankruptcy: (20,000 − 1,150) / 200 = 94.25, rounded up to 95 for a long.
    assert!(ev.iter().any(|e| matches!(
        e,
        LiquidationEvent::LiquidationOrder { qty: Qty(95), limit: Price(95), kind: CloseKind::Partial, .. }
    )));
    assert_eq!(fund_flows(&ev), vec![(FundFlowKind::LiquidationFee, Money(45_125_000))]);
    assert_eq!(w.size(0, p), 105);
    // 1,150 − 475 realized − 45.125 fee.
    assert_eq!(w.balance(p), Money(629_875_000));
    let after = w.ch.margin_summary(p).unwrap();
    assert_eq!(after.equity, Money(104_875_000));
    assert_eq!(after.maintenance_margin, Money(99_750_000));
    assert_eq!(w.liq.queue().count(), 0);
    // Back in the index, at its new liquidation price.
    assert!(w.ch.maintenance_triggers(MarketId(0)).unwrap().0.is_some());
}

#[test]
fn the_throttle_holds_the_rest_of_a_cascade_for_later_slices_and_reports_who_waits() {
    use keel_liquidation::Throttle;
    // At most 5,000 of notional at mark per market per second.
    let config = LiquidationConfig {
        throttle: Some(Throttle { slice_ms: 1_000, max_notional: usd(5_000) }),
        ..LiquidationConfig::default()
    };
    let mut w = World::new(1, flat_tiers(), config);
    let a = w.account(1, 1_000); // LP 94
    let b = w.account(2, 1_000); // LP 94
    let s = w.account(3, 1_000_000);
    let m = w.account(4, 1_000_000);
    w.trade(0, a, s, 100, 100);
    w.trade(0, b, s, 100, 100);
    w.rest(0, m, Side::Buy, 1_000, 93);

    w.mark(0, 93);
    let ev = w.run(10_000);
    // 5,000 / 93 = 53 lots may go to the book in this slice: all of it to the first in the queue.
    let sent: Vec<(AccountId, Qty)> = ev
        .iter()
        .filter_map(|e| match e {
            LiquidationEvent::LiquidationOrder { account, qty, .. } => Some((*account, *qty)),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![(a, Qty(53))]);
    assert!(ev.contains(&LiquidationEvent::Waiting { account: a, target: LiquidationTarget::Cross }));
    assert!(ev.contains(&LiquidationEvent::Waiting { account: b, target: LiquidationTarget::Cross }));
    assert_eq!(w.size(0, a), 47);

    // Same slice: nothing more.
    let ev = w.run(10_999);
    assert!(!ev.iter().any(|e| matches!(e, LiquidationEvent::LiquidationOrder { .. })));
    assert_eq!(ev.iter().filter(|e| matches!(e, LiquidationEvent::Waiting { .. })).count(), 2);

    // Next slice: A's remaining 47 and 6 of B's.
    let ev = w.run(11_000);
    let sent: Vec<(AccountId, Qty)> = ev
        .iter()
        .filter_map(|e| match e {
            LiquidationEvent::LiquidationOrder { account, qty, .. } => Some((*account, *qty)),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![(a, Qty(47)), (b, Qty(6))]);
    assert_eq!(w.size(0, a), 0);
    assert_eq!(w.size(0, b), 94);
    assert!(w.open_interest_balanced());
}

#[test]
fn open_orders_are_cancelled_and_unregistered_before_the_close() {
    let mut w = World::new(1, flat_tiers(), LiquidationConfig::default());
    let a = w.account(1, 1_000);
    let s = w.account(2, 1_000_000);
    let m = w.account(3, 1_000_000);
    w.trade(0, a, s, 100, 100);
    let ask = w.rest(0, a, Side::Sell, 10, 120);
    w.rest(0, m, Side::Buy, 100, 92);
    w.mark(0, 94);
    let ev = w.run(1);
    assert!(ev.contains(&LiquidationEvent::OrderCancelled {
        account: a,
        market: MarketId(0),
        order: ask,
        side: Side::Sell,
        price: Price(120),
        qty: Qty(10),
    }));
    let first_cancel = ev.iter().position(|e| matches!(e, LiquidationEvent::OrderCancelled { .. })).unwrap();
    let first_order = ev.iter().position(|e| matches!(e, LiquidationEvent::LiquidationOrder { .. })).unwrap();
    assert!(first_cancel < first_order);
    assert!(w.books[0].order(ask).is_none());
    assert_eq!(w.ch.account(a).unwrap().position(MarketId(0)).unwrap().open_sells().qty, Qty(0));
}
