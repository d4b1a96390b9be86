//! Property tests: funding is zero-sum, equity tracks the mark exactly, a round trip costs exactly
//! its fees, liquidation and bankruptcy prices are where the account evaluation says they are,
//! value is conserved, and extreme inputs never panic.

use super::*;
use crate::{AssetId, MarginError, MarginMode, OrderIntent, distribute_funding};
use keel_types::{MarketId, Side};
use proptest::prelude::*;

/// Three markets with different grids, bases and tier tables; fees include a maker rebate.
fn markets() -> Vec<MarketConfig> {
    let t1 = tiers(
        &[
            (0, "0.004", 125),
            (50_000, "0.005", 100),
            (250_000, "0.01", 50),
            (1_000_000, "0.025", 20),
            (10_000_000, "0.05", 10),
        ],
        50_000_000,
    );
    let mut m1 = market(1, "0.1", "0.001", t1, MarginBasis::MarkValue);
    m1.taker_fee = rate("0.0005");
    m1.maker_fee = rate("-0.0001");
    let t2 = tiers(&[(0, "0.01", 50), (100_000, "0.02", 25), (500_000, "0.05", 10)], 5_000_000);
    let mut m2 = market(2, "0.01", "1", t2, MarginBasis::EntryValue);
    m2.taker_fee = rate("0.0004");
    m2.maker_fee = rate("0.0002");
    let t3 = tiers(
        &[(0, "0.0125", 40), (10_000, "0.02", 25), (50_000, "0.05", 10), (100_000, "0.10", 5)],
        1_000_000,
    );
    let m3 = market(3, "0.001", "0.1", t3, MarginBasis::MarkValue);
    vec![m1, m2, m3]
}

fn side_of(long: bool) -> Side {
    if long { Side::Buy } else { Side::Sell }
}

/// A position to build: market (1..=3), side, size in lots, entry and mark in ticks.
fn position_strategy() -> impl Strategy<Value = (u32, bool, i64, i64, i64)> {
    (1u32..=3, any::<bool>(), 1i64..200_000, 1_000i64..2_000_000, 1_000i64..2_000_000)
}

/// Builds an account with a balance and positions (booked as takers), marks set as given.
fn build(
    balance: i64,
    positions: &[(u32, bool, i64, i64, i64)],
    isolated: Option<u32>,
) -> (Bench, AccountId) {
    let mut b = Bench::new(markets());
    let a = AccountId(1);
    b.ch.open_account(a).unwrap();
    b.ch.deposit(a, AssetId::SETTLEMENT, balance).unwrap();
    if let Some(m) = isolated {
        b.ch.set_margin_mode(a, MarketId(m), MarginMode::Isolated).unwrap();
    }
    for &(m, long, qty, entry, mark) in positions {
        b.ch.set_mark_price(MarketId(m), Price(mark)).unwrap();
        let fill = Fill {
            account: a,
            market: MarketId(m),
            side: side_of(long),
            qty: Qty(qty),
            price: Price(entry),
            liquidity: Liquidity::Taker,
        };
        b.ch.apply_fill(&fill).unwrap();
    }
    (b, a)
}

/// `ceil(notional × rate)` computed independently in 128 bits.
fn fee_of(price: i64, qty: i64, k: i64, parts: i64) -> i64 {
    let n = i128::from(price) * i128::from(qty) * i128::from(k) * i128::from(parts);
    let d = i128::from(Rate::SCALE);
    (n.div_euclid(d) + i128::from(n.rem_euclid(d) != 0)) as i64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Funding payments sum to exactly zero; payers pay their due rounded up, receivers get their
    /// pro-rata share of the collected total within one unit.
    #[test]
    fn funding_sums_to_zero(
        holders in prop::collection::vec((1u32..50, -1_000_000i64..1_000_000), 1..20),
        price in 1i64..10_000_000,
        k in prop::sample::select(vec![1i64, 10, 100, 10_000]),
        parts in -2_000_000i64..2_000_000,
    ) {
        // One position per account.
        let mut seen = std::collections::BTreeMap::new();
        for (id, size) in holders { seen.insert(id, size); }
        let holders: Vec<(AccountId, i64)> = seen.into_iter().map(|(id, s)| (AccountId(id), s)).collect();
        let r = Rate(parts);
        match distribute_funding(MarketId(1), &holders, Price(price), k, r) {
            Ok(pays) => {
                let total: i128 = pays.iter().map(|p| i128::from(p.1.0)).sum();
                prop_assert_eq!(total, 0);
                let collected: i128 = pays.iter().filter(|p| p.1.0 < 0).map(|p| -i128::from(p.1.0)).sum();
                let weight: i128 = holders.iter().filter(|h| h.1.signum() == -parts.signum()).map(|h| i128::from(h.1.abs())).sum();
                for (id, amount) in &pays {
                    let size = holders.iter().find(|h| h.0 == *id).unwrap().1;
                    if size.signum() == parts.signum() {
                        prop_assert_eq!(-amount.0, fee_of(price, size.abs(), k, parts.abs()));
                    } else {
                        let fair = collected * i128::from(size.abs()) / weight;
                        prop_assert!(i128::from(amount.0) - fair >= 0 && i128::from(amount.0) - fair <= 1);
                    }
                }
            }
            Err(e) => {
                prop_assert_eq!(e, MarginError::FundingWithoutCounterparty(MarketId(1)));
                prop_assert!(holders.iter().all(|h| h.1 == 0 || h.1.signum() == parts.signum()));
            }
        }
    }

    /// Through the clearinghouse, with balanced open interest, funding moves money only between
    /// accounts: total balances are unchanged and value is conserved.
    #[test]
    fn settled_funding_conserves_value(
        sizes in prop::collection::vec((1i64..100_000, any::<bool>()), 2..8),
        bid_offset in -500i64..500,
        isolated_mask in any::<u8>(),
    ) {
        let mut b = Bench::new(markets());
        let m = MarketId(1);
        b.ch.set_mark_price(m, Price(300_000)).unwrap();
        let mut net = 0i64;
        let n = sizes.len() as u32;
        for (i, &(qty, long)) in sizes.iter().enumerate() {
            let a = AccountId(i as u32 + 1);
            b.ch.open_account(a).unwrap();
            b.ch.deposit(a, AssetId::SETTLEMENT, 1_000_000_000_000).unwrap();
            if isolated_mask & (1 << i) != 0 {
                b.ch.set_margin_mode(a, m, MarginMode::Isolated).unwrap();
            }
            let side = side_of(long);
            net += side.sign() * qty;
            b.ch.apply_fill(&Fill { account: a, market: m, side, qty: Qty(qty), price: Price(300_000), liquidity: Liquidity::Taker }).unwrap();
        }
        // One more account takes the other side of the net so open interest balances.
        if net != 0 {
            let a = AccountId(n + 1);
            b.ch.open_account(a).unwrap();
            b.ch.deposit(a, AssetId::SETTLEMENT, 1_000_000_000_000).unwrap();
            let side = if net > 0 { Side::Sell } else { Side::Buy };
            b.ch.apply_fill(&Fill { account: a, market: m, side, qty: Qty(net.abs()), price: Price(300_000), liquidity: Liquidity::Taker }).unwrap();
        }
        b.ch.set_index_price(m, Price(300_000), 0).unwrap();
        b.ch.sample_impact_prices(m, Price(300_000 + bid_offset), Price(300_000 + bid_offset + 10)).unwrap();
        let before = b.ch.settlement_held();
        let s = b.ch.settle_funding(m, 8 * 3_600_000).unwrap();
        prop_assert_eq!(s.payments.iter().map(|p| i128::from(p.1.0)).sum::<i128>(), 0);
        prop_assert_eq!(b.ch.settlement_held(), before);
        prop_assert_eq!(b.ch.settlement_held(), b.ch.net_deposits());
    }

    /// Equity moves by exactly size × mark change (cross), whatever else the account holds.
    #[test]
    fn equity_moves_by_size_times_mark_change(
        positions in prop::collection::vec(position_strategy(), 1..4),
        new_mark in 1i64..3_000_000,
    ) {
        let (b, a) = build(1_000_000_000_000, &positions, None);
        let (m, ..) = positions[0];
        let size = b.ch.account(a).unwrap().position(MarketId(m)).unwrap().size().0;
        let k = b.grid(m).money_per_tick_lot();
        let old_mark = b.ch.mark_price(MarketId(m)).unwrap();
        let before = b.ch.margin_summary(a).unwrap().equity;
        let after = b.ch.margin_summary_at(a, MarketId(m), Price(new_mark)).unwrap().equity;
        prop_assert_eq!(i128::from(after.0 - before.0), i128::from(size) * i128::from(new_mark - old_mark.0) * i128::from(k));
    }

    /// Opening and closing at the same price changes the balance by exactly the two fees, in
    /// cross and isolated mode, as maker or taker, at any leverage.
    #[test]
    fn round_trip_at_one_price_costs_exactly_the_fees(
        m in 1u32..=3,
        long in any::<bool>(),
        qty in 1i64..1_000_000,
        price in 1i64..5_000_000,
        lev_pick in 0u32..200,
        isolated in any::<bool>(),
        open_maker in any::<bool>(),
        close_maker in any::<bool>(),
    ) {
        let mut b = Bench::new(markets());
        let a = AccountId(1);
        let market = MarketId(m);
        let deposit = 1_000_000_000_000_000i64;
        b.ch.open_account(a).unwrap();
        b.ch.deposit(a, AssetId::SETTLEMENT, deposit).unwrap();
        b.ch.set_mark_price(market, Price(price)).unwrap();
        if isolated {
            b.ch.set_margin_mode(a, market, MarginMode::Isolated).unwrap();
        }
        let max_lev = b.ch.market(market).unwrap().tiers.tiers()[0].max_leverage;
        b.ch.set_leverage(a, market, 1 + lev_pick % max_lev).unwrap();
        let cfg = b.ch.market(market).unwrap().clone();
        let k = cfg.grid.money_per_tick_lot();
        let mut fees = 0i64;
        for (side, maker) in [(side_of(long), open_maker), (side_of(!long), close_maker)] {
            let liquidity = if maker {
                b.ch.add_open_order(a, market, side, Qty(qty), Price(price)).unwrap();
                Liquidity::Maker
            } else {
                Liquidity::Taker
            };
            let parts = if maker { cfg.maker_fee.0 } else { cfg.taker_fee.0 };
            fees += fee_of(price, qty, k, parts);
            b.ch.apply_fill(&Fill { account: a, market, side, qty: Qty(qty), price: Price(price), liquidity }).unwrap();
        }
        let acc = b.ch.account(a).unwrap();
        let p = acc.position(market).unwrap();
        prop_assert_eq!(p.size().0, 0);
        prop_assert_eq!(p.isolated_margin().0, 0);
        prop_assert_eq!(p.open_buys().qty.0 + p.open_sells().qty.0, 0);
        prop_assert_eq!(acc.balance().0, deposit - fees);
        prop_assert_eq!(b.ch.settlement_held(), b.ch.net_deposits());
    }

    /// The liquidation price is the mark at which equity meets maintenance margin: liquidatable
    /// there, not one tick on the safe side. Same for bankruptcy with equity and zero.
    #[test]
    fn liquidation_and_bankruptcy_prices_agree_with_the_account(
        positions in prop::collection::vec(position_strategy(), 1..4),
        balance in 1i64..2_000_000_000_000,
        isolated in any::<bool>(),
    ) {
        let target = positions[0].0;
        let (mut b, a) = build(balance, &positions, isolated.then_some(target));
        let m = MarketId(target);
        if isolated {
            // Fence a random share of the remaining balance on top of the locked initial margin.
            let extra = b.ch.account(a).unwrap().balance().0 / 3;
            if extra > 0 {
                let _ = b.ch.add_isolated_margin(a, m, Money(extra));
            }
        }
        let size = b.ch.account(a).unwrap().position(m).unwrap().size().0;
        let max = b.ch.market(m).unwrap().max_price.0;
        let liquidatable = |p: i64| -> bool {
            if isolated {
                let (e, mm) = b.ch.isolated_equity_at(a, m, Price(p)).unwrap();
                e <= mm
            } else {
                b.ch.margin_summary_at(a, m, Price(p)).unwrap().liquidatable()
            }
        };
        let equity = |p: i64| -> i64 {
            if isolated {
                b.ch.isolated_equity_at(a, m, Price(p)).unwrap().0.0
            } else {
                b.ch.margin_summary_at(a, m, Price(p)).unwrap().equity.0
            }
        };
        let safe_step = if size > 0 { 1 } else { -1 };
        match b.ch.liquidation_price(a, m).unwrap() {
            Some(lp) => {
                prop_assert!(liquidatable(lp.0), "not liquidatable at its liquidation price {}", lp);
                let next = lp.0 + safe_step;
                if (1..=max).contains(&next) {
                    prop_assert!(!liquidatable(next), "liquidatable one tick inside safety at {}", next);
                }
            }
            None => {
                // Never liquidated within the price range: check both ends.
                prop_assert!(!liquidatable(1) && !liquidatable(max));
            }
        }
        if let Some(bp) = b.ch.bankruptcy_price(a, m).unwrap() {
            if (1..=max).contains(&bp.0) {
                prop_assert!(equity(bp.0) >= 0);
                let beyond = bp.0 - safe_step;
                if (1..=max).contains(&beyond) {
                    prop_assert!(equity(beyond) < 0);
                }
            }
        }
        // The view shows the same prices.
        let view = b.ch.account_view(a).unwrap();
        let pv = view.positions.iter().find(|p| p.market == m).unwrap();
        prop_assert_eq!(pv.liquidation_price, b.ch.liquidation_price(a, m).unwrap());
    }

    /// Two-sided trading among a few accounts conserves value to the unit, and open interest balances.
    #[test]
    fn trading_conserves_value(
        trades in prop::collection::vec((0u32..4, 0u32..4, 1u32..=3, any::<bool>(), 1i64..50_000, 1_000i64..2_000_000), 1..30),
    ) {
        let mut b = Bench::new(markets());
        for id in 0..4 {
            b.ch.open_account(AccountId(id)).unwrap();
            b.ch.deposit(AccountId(id), AssetId::SETTLEMENT, 10_000_000_000_000).unwrap();
            if id == 3 {
                b.ch.set_margin_mode(AccountId(id), MarketId(1), MarginMode::Isolated).unwrap();
            }
        }
        for (maker, taker, m, taker_buys, qty, price) in trades {
            if maker == taker { continue; }
            let market = MarketId(m);
            let side = side_of(taker_buys);
            b.ch.add_open_order(AccountId(maker), market, side.opposite(), Qty(qty), Price(price)).unwrap();
            b.ch.apply_fill(&Fill { account: AccountId(maker), market, side: side.opposite(), qty: Qty(qty), price: Price(price), liquidity: Liquidity::Maker }).unwrap();
            b.ch.apply_fill(&Fill { account: AccountId(taker), market, side, qty: Qty(qty), price: Price(price), liquidity: Liquidity::Taker }).unwrap();
            // PnL one side realized may still be unrealized on the other: with balanced open
            // interest the unrealized PnL of all positions sums to −Σ cost basis at any mark, so
            // money held minus the open cost basis is what was deposited.
            let open_cost: i128 = b.ch.accounts().iter().flat_map(|a| a.positions()).map(|p| i128::from(p.cost_basis().0)).sum();
            prop_assert_eq!(b.ch.settlement_held() - open_cost, b.ch.net_deposits());
        }
        // Open interest balances in every market.
        for m in 1..=3 {
            let net: i64 = b.ch.accounts().iter().filter_map(|a| a.position(MarketId(m))).map(|p| p.size().0).sum();
            prop_assert_eq!(net, 0);
        }
    }

    /// Extreme but legal inputs — prices at the bounds, sizes at the limit, maximum leverage, the
    /// top tier — produce numbers or typed errors, never a panic or a half-applied change.
    #[test]
    fn extreme_inputs_never_panic(
        m in 1u32..=3,
        price_pick in prop_oneof![Just(1i64), Just(2i64), Just(i64::MAX), 1i64..=i64::MAX],
        qty_pick in prop_oneof![Just(1i64), Just(i64::MAX), 1i64..=i64::MAX],
        balance in prop_oneof![Just(1i64), Just(Money::DEPOSIT_CEILING.0), 1i64..=Money::DEPOSIT_CEILING.0],
        lev_pick in any::<u32>(),
        isolated in any::<bool>(),
    ) {
        let mut b = Bench::new(markets());
        let market = MarketId(m);
        let cfg = b.ch.market(market).unwrap().clone();
        let price = Price(1 + price_pick % cfg.max_price.0);
        let qty = Qty(1 + qty_pick % cfg.max_position.0);
        let a = AccountId(1);
        b.ch.open_account(a).unwrap();
        b.ch.deposit(a, AssetId::SETTLEMENT, balance).unwrap();
        b.ch.set_mark_price(market, price).unwrap();
        if isolated {
            b.ch.set_margin_mode(a, market, MarginMode::Isolated).unwrap();
        }
        let _ = b.ch.set_leverage(a, market, lev_pick % 130);
        let order = OrderIntent { market, side: Side::Buy, qty, price };
        let _ = b.ch.pre_trade_check(a, &order);
        let _ = b.ch.add_open_order(a, market, Side::Sell, qty, price);
        let before = b.ch.account(a).unwrap().clone();
        for side in [Side::Buy, Side::Sell, Side::Sell] {
            let fill = Fill { account: a, market, side, qty, price, liquidity: Liquidity::Taker };
            if b.ch.apply_fill(&fill).is_err() {
                prop_assert_eq!(b.ch.account(a).unwrap(), &before);
                break;
            }
        }
        for mark in [Price(1), cfg.max_price, price] {
            b.ch.set_mark_price(market, mark).unwrap();
            let _ = b.ch.account_view(a);
            let _ = b.ch.liquidation_price(a, market);
            let _ = b.ch.bankruptcy_price(a, market);
            let _ = b.ch.pre_trade_check(a, &order);
        }
        let _ = b.ch.withdraw(a, AssetId::SETTLEMENT, balance);
    }
}

/// One step of the valuation-cache property: anything that can change an account or a price.
#[derive(Clone, Debug)]
enum Step {
    Deposit(u8, i64),
    Withdraw(u8, i64),
    Order(u8, u32, bool, i64, i64),
    Unorder(u8, u32, bool, i64, i64),
    Fill(u8, u32, bool, i64, i64, bool),
    Mark(u32, i64),
    Leverage(u8, u32, u32),
    Isolate(u8, u32, bool),
    AddIsolated(u8, u32, i64),
    /// A deposit of the collateral asset (id 1), in its smallest unit.
    DepositCollateral(u8, i64),
    /// The collateral asset's new price, in money units.
    CollateralPrice(i64),
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let acc = 0u8..2;
    let m = 1u32..=3;
    let price = 900_000i64..1_100_000;
    prop_oneof![
        (acc.clone(), 1i64..1_000_000_000).prop_map(|(a, x)| Step::Deposit(a, x)),
        (acc.clone(), 1i64..1_000_000_000).prop_map(|(a, x)| Step::Withdraw(a, x)),
        (acc.clone(), m.clone(), any::<bool>(), 1i64..500, price.clone())
            .prop_map(|(a, m, b, q, p)| Step::Order(a, m, b, q, p)),
        (acc.clone(), m.clone(), any::<bool>(), 1i64..500, price.clone())
            .prop_map(|(a, m, b, q, p)| Step::Unorder(a, m, b, q, p)),
        (acc.clone(), m.clone(), any::<bool>(), 1i64..500, price.clone(), any::<bool>())
            .prop_map(|(a, m, b, q, p, maker)| Step::Fill(a, m, b, q, p, maker)),
        (m.clone(), price).prop_map(|(m, p)| Step::Mark(m, p)),
        (acc.clone(), m.clone(), 1u32..130).prop_map(|(a, m, l)| Step::Leverage(a, m, l)),
        (acc.clone(), m.clone(), any::<bool>()).prop_map(|(a, m, i)| Step::Isolate(a, m, i)),
        (acc.clone(), m, 1i64..100_000_000).prop_map(|(a, m, x)| Step::AddIsolated(a, m, x)),
        (acc, 1i64..1_000_000_000).prop_map(|(a, x)| Step::DepositCollateral(a, x)),
        (1i64..5_000_000_000).prop_map(Step::CollateralPrice),
    ]
}

/// Two accounts of 5,000 each in the three markets, every mark at 1,000,000 ticks, and a
/// collateral asset (id 1) at 3,000 with a 10 % haircut.
fn two_funded_accounts() -> (Bench, [AccountId; 2]) {
    let mut b = Bench::new(markets());
    let asset = b.collateral("ETH", "3000", "0.10");
    assert_eq!(asset, COLLATERAL);
    let accounts = [AccountId(1), AccountId(2)];
    for &a in &accounts {
        b.ch.open_account(a).unwrap();
        b.ch.deposit(a, AssetId::SETTLEMENT, 5_000_000_000).unwrap();
    }
    for m in 1..=3 {
        b.ch.set_mark_price(MarketId(m), Price(1_000_000)).unwrap();
    }
    (b, accounts)
}

/// The collateral asset of [`two_funded_accounts`].
const COLLATERAL: AssetId = AssetId(1);

/// Applies one generated change; a change the clearinghouse refuses changes nothing.
fn apply_step(ch: &mut Clearinghouse, accounts: &[AccountId; 2], step: Step) {
    let _ = match step {
        Step::Deposit(a, x) => ch.deposit(accounts[a as usize], AssetId::SETTLEMENT, x),
        Step::Withdraw(a, x) => ch.withdraw(accounts[a as usize], AssetId::SETTLEMENT, x),
        Step::Order(a, m, buy, q, p) => {
            ch.add_open_order(accounts[a as usize], MarketId(m), side_of(buy), Qty(q), Price(p))
        }
        Step::Unorder(a, m, buy, q, p) => {
            ch.remove_open_order(accounts[a as usize], MarketId(m), side_of(buy), Qty(q), Price(p))
        }
        Step::Fill(a, m, buy, q, p, maker) => ch
            .apply_fill(&Fill {
                account: accounts[a as usize],
                market: MarketId(m),
                side: side_of(buy),
                qty: Qty(q),
                price: Price(p),
                liquidity: if maker { Liquidity::Maker } else { Liquidity::Taker },
            })
            .map(|_| ()),
        Step::Mark(m, p) => ch.set_mark_price(MarketId(m), Price(p)),
        Step::Leverage(a, m, l) => ch.set_leverage(accounts[a as usize], MarketId(m), l),
        Step::Isolate(a, m, isolated) => ch.set_margin_mode(
            accounts[a as usize],
            MarketId(m),
            if isolated { MarginMode::Isolated } else { MarginMode::Cross },
        ),
        Step::AddIsolated(a, m, x) => ch.add_isolated_margin(accounts[a as usize], MarketId(m), Money(x)),
        Step::DepositCollateral(a, x) => ch.deposit(accounts[a as usize], COLLATERAL, x),
        Step::CollateralPrice(p) => ch.set_asset_price(COLLATERAL, Money(p)),
    };
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The per-account valuation cache never changes an answer: after every kind of change, the
    /// pre-trade check and the margin summary of each account equal those of a copy whose caches
    /// are empty (a clone starts without them), asked twice so the second answer is a cache hit.
    #[test]
    fn cached_valuations_answer_like_fresh_ones(steps in proptest::collection::vec(step_strategy(), 1..60)) {
        let (mut b, accounts) = two_funded_accounts();
        for step in steps {
            apply_step(&mut b.ch, &accounts, step);
            let fresh = b.ch.clone();
            for &a in &accounts {
                for m in 1..=3 {
                    let intent =
                        OrderIntent { market: MarketId(m), side: Side::Buy, qty: Qty(10), price: Price(1_000_000) };
                    let expected = fresh.clone().pre_trade_check(a, &intent);
                    prop_assert_eq!(&b.ch.pre_trade_check(a, &intent), &expected);
                    prop_assert_eq!(&b.ch.pre_trade_check(a, &intent), &expected);
                }
                let expected = fresh.clone().margin_summary(a);
                prop_assert_eq!(&b.ch.margin_summary(a), &expected);
                prop_assert_eq!(&b.ch.margin_summary(a), &expected);
                // The prefetch address of the account's positions followed every move.
                prop_assert!(b.ch.position_hint_is_current(a));
                // So did the table of where each market's position is, through refused changes.
                prop_assert!(b.ch.position_slots_are_current(a));
            }
        }
    }

    /// The pre-trade check's floor under available margin is sound and tight: after every kind
    /// of change, with position shares cached at marks that have moved since, it is never above
    /// the exact available margin (equity − initial margin, from a copy without caches), and
    /// once the account has been valued at the current marks it equals it.
    #[test]
    fn available_floor_never_exceeds_available(steps in proptest::collection::vec(step_strategy(), 1..60)) {
        let (mut b, accounts) = two_funded_accounts();
        for step in steps {
            apply_step(&mut b.ch, &accounts, step);
            for (acc, &a) in accounts.iter().enumerate() {
                let exact = b.ch.clone().margin_summary(a).unwrap();
                let exact = i128::from(exact.equity.0) - i128::from(exact.initial_margin.0);
                prop_assert!(b.ch.available_floor(acc).unwrap() <= exact);
                // Valued at the current marks (the cached totals forgotten, so the floor adds up
                // the positions' shares): the floor is the exact value.
                b.ch.margin_summary(a).unwrap();
                b.ch.accounts[acc].summary.clear();
                prop_assert_eq!(b.ch.available_floor(acc).unwrap(), exact);
            }
        }
    }
}
