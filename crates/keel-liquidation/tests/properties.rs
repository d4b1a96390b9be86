//! Property test over random populations, order flow and mark paths in two markets (cross and
//! isolated accounts, a market maker, optional throttle). After every command and liquidator run:
//!
//! - value is conserved exactly: Σ balances + Σ isolated margins + fees + fund − Σ cost bases =
//!   deposits − withdrawals + fund deposits (`ValueCheck`, asserted inside `World::run`);
//! - long open interest equals short open interest in each market;
//! - every cross pool or isolated position at or below maintenance is in the liquidation queue —
//!   found through the maintenance index, checked here against a scan of every account — and
//!   without a throttle the queue is empty, so no such account is left;
//! - no account keeps negative equity unless it is queued: every loss beyond zero was covered by
//!   the fund or by deleveraging.

mod common;

use common::*;
use keel_liquidation::{LiquidationConfig, Throttle, settle_fills};
use keel_margin::{LiquidationTarget, MarginMode, OrderIntent, PreTrade};
use keel_types::{AccountId, MarketId, NewOrder, OrderId, Price, Qty, Side, TimeInForce};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Cmd {
    /// Move a market's mark by this many percent.
    Mark(u32, i64),
    /// An order from a trader: market, trader index, buy?, limit offset from mark (ticks), qty, IOC?
    Order(u32, usize, bool, i64, i64, bool),
}

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        2 => (0u32..2, -12i64..=12).prop_map(|(m, d)| Cmd::Mark(m, d)),
        3 => (0u32..2, 0usize..12, any::<bool>(), -6i64..=6, 1i64..60, any::<bool>())
            .prop_map(|(m, t, b, o, q, ioc)| Cmd::Order(m, t, b, o, q, ioc)),
    ]
}

/// A trader: deposit, whether market 1 is isolated, and positions (market, long?, qty) opened at 100.
type Trader = (i64, bool, Vec<(u32, bool, i64)>);

fn trader() -> impl Strategy<Value = Trader> {
    (500i64..5_000, any::<bool>(), prop::collection::vec((0u32..2, any::<bool>(), 1i64..40), 0..3))
}

fn place(w: &mut World, market: u32, account: AccountId, side: Side, price: i64, qty: i64, ioc: bool) {
    // As the engine does: no trading where the account waits to be liquidated.
    if w.liq.in_liquidation(&w.ch, account, MarketId(market)).is_some() {
        return;
    }
    let intent = OrderIntent { market: MarketId(market), side, qty: Qty(qty), price: Price(price) };
    match w.ch.pre_trade_check(account, &intent) {
        Ok(PreTrade::Accept) => {}
        _ => return,
    }
    let id = OrderId(w.next_id);
    w.next_id += 1;
    let mut order = NewOrder::limit(id, account, side, Price(price), Qty(qty));
    if ioc {
        order = order.with_tif(TimeInForce::Ioc);
    }
    let mut ev = Vec::new();
    if w.books[market as usize].place(order, &mut ev).is_err() {
        return;
    }
    settle_fills(&mut w.ch, MarketId(market), &ev).unwrap();
    if let Some(o) = w.books[market as usize].order(id) {
        w.ch.add_open_order(account, MarketId(market), side, o.qty, o.price).unwrap();
    }
}

fn check(w: &World, traders: &[AccountId], throttled: bool) -> Result<(), TestCaseError> {
    prop_assert!(w.open_interest_balanced());
    if !throttled {
        prop_assert_eq!(w.liq.queue().count(), 0);
    }
    for &a in traders {
        let queued = |t: LiquidationTarget| w.liq.queue().any(|e| e.account == a && e.target == t);
        let cross = w.ch.margin_summary(a).unwrap();
        if cross.liquidatable() {
            prop_assert!(queued(LiquidationTarget::Cross), "account {a} below maintenance and not queued");
        }
        if cross.equity.is_negative() {
            prop_assert!(queued(LiquidationTarget::Cross), "account {a} negative and not queued");
        }
        for p in w.ch.account(a).unwrap().positions() {
            if p.mode() == MarginMode::Isolated && p.size().0 != 0 {
                let t = LiquidationTarget::Isolated(p.market());
                let (equity, mm) = w.ch.target_margin(a, t).unwrap();
                if mm.is_positive() && equity <= mm {
                    prop_assert!(queued(t), "isolated position of {a} below maintenance and not queued");
                }
            }
        }
    }
    Ok(())
}

fn scenario(traders: Vec<Trader>, cmds: Vec<Cmd>, fund: i64, throttle: bool) -> Result<(), TestCaseError> {
    let config = LiquidationConfig {
        throttle: throttle.then_some(Throttle { slice_ms: 1_000, max_notional: usd(3_000) }),
        ..LiquidationConfig::default()
    };
    let mut w = World::new(2, tiers(&[(0, 1_000_000, 50), (4_000, 2_500_000, 20)]), config);
    let maker = w.account(1_000, 10_000_000);
    let whale = w.account(1_001, 10_000_000);
    let mut ids = Vec::new();
    for (i, (deposit, isolated, positions)) in traders.iter().enumerate() {
        let a = w.account(i as u32 + 1, *deposit);
        if *isolated {
            w.ch.set_margin_mode(a, MarketId(1), MarginMode::Isolated).unwrap();
        }
        for &(m, long, qty) in positions {
            // Keep each opening within what the account can margin at 20x (cross) or 10x fenced.
            let qty = qty.min(deposit / 40).max(1);
            if long { w.trade(m, a, whale, qty, 100) } else { w.trade(m, whale, a, qty, 100) }
        }
        ids.push(a);
    }
    for m in 0..2 {
        for step in 1..=8 {
            place(&mut w, m, maker, Side::Buy, 100 - 2 * step, 30, false);
            place(&mut w, m, maker, Side::Sell, 100 + 2 * step, 30, false);
        }
    }
    if fund > 0 {
        let mut ev = Vec::new();
        w.liq.deposit_to_fund(MarketId(0), usd(fund), &mut ev).unwrap();
    }
    let mut marks = [100i64, 100];
    let mut now = 0u64;
    w.run(now);
    check(&w, &ids, throttle)?;
    for c in cmds {
        now += 400;
        match c {
            Cmd::Mark(m, pct) => {
                let p = (marks[m as usize] * (100 + pct) / 100).clamp(40, 200);
                marks[m as usize] = p;
                w.mark(m, p);
            }
            Cmd::Order(m, t, buy, offset, qty, ioc) => {
                let a = ids[t % ids.len()];
                let side = if buy { Side::Buy } else { Side::Sell };
                let price = (marks[m as usize] + offset).max(1);
                place(&mut w, m, a, side, price, qty, ioc);
            }
        }
        w.run(now);
        check(&w, &ids, throttle)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn liquidation_conserves_value_and_leaves_nobody_below_maintenance(
        traders in prop::collection::vec(trader(), 2..10),
        cmds in prop::collection::vec(cmd(), 1..40),
        fund in prop_oneof![Just(0i64), 1i64..2_000],
        throttle in any::<bool>(),
    ) {
        scenario(traders, cmds, fund, throttle)?;
    }
}
