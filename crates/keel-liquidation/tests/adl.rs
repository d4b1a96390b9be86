//! ADL ordering against the venues' ranking formula.
//!
//! Binance USDⓈ-M ("What is Auto-Deleveraging", ADL ranking) and Bybit ("Auto-Deleveraging
//! (ADL)") rank positions by `PnL% × effective leverage` when profitable and `PnL% / effective
//! leverage` otherwise, with PnL% = unrealized PnL / |entry value| and effective leverage =
//! |mark value| / equity. The expected order below is computed from that formula in exact
//! decimals, independently of the integer implementation.

mod common;

use common::*;
use keel_liquidation::{ADL_SCORE_SCALE, LiquidationConfig, RefreshBudget, adl_score};
use keel_margin::{AssetConfig, Rate};
use keel_types::{AccountId, MarketId, Money};
use rust_decimal::Decimal;

/// (deposit, short qty, entry) for shorts against one long whale; the mark then falls to 90.
const SHORTS: [(i64, i64, i64); 6] =
    [(600, 60, 100), (4_000, 40, 100), (1_000, 50, 90), (300, 10, 120), (2_000, 80, 95), (900, 30, 85)];

fn venue_score(deposit: i64, qty: i64, entry: i64, mark: i64) -> Decimal {
    let pnl = Decimal::from((entry - mark) * qty);
    let entry_value = Decimal::from(entry * qty);
    let mark_value = Decimal::from(mark * qty);
    let equity = Decimal::from(deposit) + pnl;
    let pnl_pct = pnl / entry_value;
    let leverage = mark_value / equity;
    if pnl > Decimal::ZERO { pnl_pct * leverage } else { pnl_pct / leverage }
}

#[test]
fn shorts_rank_by_profit_percentage_times_effective_leverage_as_binance_and_bybit_do() {
    let mut w = World::new(1, flat_tiers(), LiquidationConfig::default());
    let whale = w.account(100, 10_000_000);
    let mut ids = Vec::new();
    for (i, &(deposit, qty, entry)) in SHORTS.iter().enumerate() {
        let a = w.account(i as u32 + 1, deposit);
        w.trade(0, whale, a, qty, entry);
        ids.push(a);
    }
    w.mark(0, 90);
    w.liq.refresh_adl_ranking(&mut w.ch).unwrap();

    let mut expected: Vec<(Decimal, AccountId)> =
        SHORTS.iter().zip(&ids).map(|(&(d, q, e), &a)| (venue_score(d, q, e, 90), a)).collect();
    expected.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    let ranked: Vec<AccountId> =
        w.liq.adl_ranking().ranked(MarketId(0), false).into_iter().map(|(a, _)| a).collect();
    assert_eq!(ranked, expected.iter().map(|e| e.1).collect::<Vec<_>>());
    // Profitable first: every loser is behind every winner.
    let winners = expected.iter().filter(|e| e.0 > Decimal::ZERO).count();
    assert!(expected[winners..].iter().all(|e| e.0 <= Decimal::ZERO));

    // Each integer score is the venue's score rounded down at 10^-8.
    for (a, score) in w.liq.adl_ranking().ranked(MarketId(0), false) {
        let exact = expected.iter().find(|e| e.1 == a).unwrap().0 * Decimal::from(ADL_SCORE_SCALE as i64);
        let diff = exact - Decimal::from(score);
        assert!(diff >= Decimal::ZERO && diff < Decimal::ONE, "{a}: {score} vs {exact}");
    }

    // Quantiles as venues show them: the first fifth 5, the last fifth 1 (six shorts: ranks
    // 0 | 1 2 | 3 | 4 | 5 → 5, 4, 4, 3, 2, 1 with cut points at ceil(6q/5) − 1 = 1, 2, 3, 4).
    let quantiles: Vec<u8> = expected
        .iter()
        .map(|e| {
            let view = w.liq.account_view(&w.ch, e.1).unwrap();
            view.positions[0].adl_quantile.unwrap()
        })
        .collect();
    assert_eq!(quantiles, vec![5, 5, 4, 3, 2, 1]);
}

#[test]
fn the_score_follows_the_formula_and_saturates_instead_of_overflowing() {
    // 10% profit at 5x effective leverage: 0.5.
    assert_eq!(adl_score(1_000, 10_000, 11_000, 2_200), 50_000_000);
    // 10% loss at 5x: −0.02.
    assert_eq!(adl_score(-1_000, 10_000, 9_000, 1_800), -2_000_000);
    // No positive equity: last.
    assert_eq!(adl_score(-1_000, 10_000, 9_000, 0), i64::MIN);
    // Huge values saturate rather than wrap.
    assert_eq!(adl_score(i128::from(i64::MAX), 1, i128::from(i64::MAX), 1), i64::MAX);
}

/// The quantile every position of `accounts` shows in `market` (`None` when unranked).
fn quantiles(
    w: &World,
    liq: &keel_liquidation::Liquidator,
    accounts: &[AccountId],
    market: u32,
) -> Vec<Option<u8>> {
    accounts
        .iter()
        .map(|&a| {
            let view = liq.account_view(&w.ch, a).unwrap();
            view.positions.iter().find(|p| p.market == MarketId(market)).and_then(|p| p.adl_quantile)
        })
        .collect()
}

#[test]
fn a_rolling_refresh_spread_over_many_steps_shows_the_quantiles_of_a_full_ranking() {
    // Two markets, both sides ranked, sides of different sizes (cut points fall unevenly).
    let mut w = World::new(2, flat_tiers(), LiquidationConfig::default());
    let whale = w.account(1_000, 100_000_000);
    let mut traders = Vec::new();
    for i in 0..41u32 {
        let a = w.account(i + 1, 500 + i64::from(i * 37 % 23) * 100);
        let (qty, entry) = (5 + i64::from(i % 7) * 3, 95 + i64::from(i % 11));
        if i % 3 == 0 {
            w.trade(0, a, whale, qty, entry)
        } else {
            w.trade(0, whale, a, qty, entry)
        }
        if i % 2 == 0 {
            w.trade(1, whale, a, qty + 1, entry - 2);
        }
        traders.push(a);
    }
    w.mark(0, 97);
    w.mark(1, 101);

    let mut full = w.liq.clone();
    full.refresh_adl_ranking(&mut w.ch).unwrap();
    let expected: Vec<_> = (0..2).map(|m| quantiles(&w, &full, &traders, m)).collect();
    assert!(expected[0].iter().all(Option::is_some), "every trader is ranked: {expected:?}");
    // Only the even traders hold the second market.
    assert!(expected[1].iter().enumerate().all(|(i, q)| q.is_some() == (i % 2 == 0)), "{expected:?}");
    assert!(expected[0].contains(&Some(5)) && expected[0].contains(&Some(1)));

    for budget in [RefreshBudget { accounts: 1, entries: 1 }, RefreshBudget { accounts: 3, entries: 7 }] {
        let mut rolling = w.liq.clone();
        assert_eq!(quantiles(&w, &rolling, &traders, 0), vec![None; traders.len()], "nothing ranked yet");
        rolling.start_adl_refresh(0);
        let mut steps = 0;
        while rolling.adl_ranking().refreshing() {
            rolling.step_adl_refresh(&w.ch, budget).unwrap();
            steps += 1;
            assert!(steps < 10_000, "the refresh ends");
        }
        // 42 accounts re-scored, then four sides walked to 80 % of their ranks.
        assert!(steps >= 42 / budget.accounts as usize, "{steps} steps");
        for m in 0..2 {
            assert_eq!(quantiles(&w, &rolling, &traders, m), expected[m as usize], "market {m}, {budget:?}");
        }
        // The same scores as the full ranking, in the same order.
        for long in [true, false] {
            assert_eq!(
                rolling.adl_ranking().ranked(MarketId(0), long),
                full.adl_ranking().ranked(MarketId(0), long)
            );
        }
    }
}

#[test]
fn a_running_refresh_is_not_restarted_and_an_idle_one_does_nothing() {
    let mut w = World::new(1, flat_tiers(), LiquidationConfig::default());
    let whale = w.account(100, 10_000_000);
    let a = w.account(1, 1_000);
    let b = w.account(2, 1_000);
    w.trade(0, whale, a, 10, 100);
    w.trade(0, whale, b, 10, 110);
    w.mark(0, 100);
    let one = RefreshBudget { accounts: 1, entries: 1 };
    let idle = w.liq.clone();
    w.liq.step_adl_refresh(&w.ch, one).unwrap();
    assert_eq!(w.liq.adl_ranking(), idle.adl_ranking(), "no sweep, no change");
    w.liq.start_adl_refresh(0);
    w.liq.step_adl_refresh(&w.ch, one).unwrap();
    let midway = w.liq.clone();
    w.liq.start_adl_refresh(0);
    assert_eq!(w.liq.adl_ranking(), midway.adl_ranking(), "starting again keeps the sweep's place");
    while w.liq.adl_ranking().refreshing() {
        w.liq.step_adl_refresh(&w.ch, one).unwrap();
    }
    // A side of two has its cut points at ranks 0, 0, 1, 1: b (short from 110, in profit) first,
    // a (flat) at the third and fourth cut; the lone long is first in line.
    assert_eq!(quantiles(&w, &w.liq, &[whale, b, a], 0), vec![Some(5), Some(5), Some(3)]);
    let mut full = w.liq.clone();
    full.refresh_adl_ranking(&mut w.ch).unwrap();
    assert_eq!(quantiles(&w, &full, &[whale, b, a], 0), vec![Some(5), Some(5), Some(3)]);
}

#[test]
fn a_paced_refresh_owes_accounts_in_the_first_half_of_its_span_and_walks_in_the_second() {
    let mut w = World::new(1, flat_tiers(), LiquidationConfig::default());
    let whale = w.account(100, 10_000_000);
    for i in 1..=9 {
        let a = w.account(i, 1_000);
        w.trade(0, whale, a, 10, 100 + i64::from(i));
    }
    w.mark(0, 100);
    let span = 1_000;
    assert_eq!(w.liq.adl_refresh_due(&w.ch, 0, span), RefreshBudget::NONE, "idle owes nothing");
    w.liq.start_adl_refresh(5_000);
    assert_eq!(w.liq.adl_refresh_due(&w.ch, 5_000, span), RefreshBudget::NONE);
    // A quarter of the span in: half of the ten accounts.
    let due = w.liq.adl_refresh_due(&w.ch, 5_250, span);
    assert_eq!(due, RefreshBudget { accounts: 5, entries: 0 });
    w.liq.step_adl_refresh(&w.ch, due).unwrap();
    assert_eq!(w.liq.adl_refresh_due(&w.ch, 5_250, span), RefreshBudget::NONE, "paid up");
    let due = w.liq.adl_refresh_due(&w.ch, 5_500, span);
    assert_eq!(due.accounts, 5);
    w.liq.step_adl_refresh(&w.ch, due).unwrap();
    // Every account re-scored; the walks (ceil(4 × 1 / 5) + ceil(4 × 9 / 5) = 1 + 8 ranks) are
    // owed over the second half, and the sweep is not over until they are done.
    w.liq.step_adl_refresh(&w.ch, RefreshBudget { accounts: 0, entries: 0 }).unwrap();
    assert!(w.liq.adl_ranking().refreshing());
    assert_eq!(w.liq.adl_refresh_due(&w.ch, 5_750, span), RefreshBudget { accounts: 0, entries: 5 });
    let due = w.liq.adl_refresh_due(&w.ch, 9_999, span);
    assert_eq!(due, RefreshBudget { accounts: 0, entries: 9 }, "late: everything owed, no more");
    w.liq.step_adl_refresh(&w.ch, due).unwrap();
    assert!(!w.liq.adl_ranking().refreshing());
}

#[test]
fn a_position_whose_pool_cannot_be_valued_is_still_ranked_last_for_deleveraging() {
    let mut w = World::new(1, flat_tiers(), LiquidationConfig::default());
    let whale = w.account(100, 10_000_000);
    let short = w.account(1, 1_000);
    let valued = w.account(2, 1_000);
    w.trade(0, whale, short, 10, 100);
    w.trade(0, whale, valued, 10, 100);
    // The short also holds a collateral asset that the venue then prices at the end of the
    // range: its cross equity no longer fits the arithmetic, so its pool cannot be valued.
    let asset = w
        .ch
        .add_asset(AssetConfig { symbol: "X".to_string(), decimals: 0, price: usd(1), haircut: Rate::ZERO })
        .unwrap();
    w.ch.deposit(short, asset, 1_000_000).unwrap();
    w.ch.set_asset_price(asset, Money(i64::MAX)).unwrap();
    assert!(w.ch.margin_summary(short).is_err(), "the test needs a pool that cannot be valued");
    w.mark(0, 90);
    w.liq.refresh_adl_ranking(&mut w.ch).unwrap();

    // Both shorts stay in line, the one that cannot be scored behind the one that can: a
    // deleveraging of the whale's long finds a counterparty for every lot of open interest.
    let ranked = w.liq.adl_ranking().ranked(MarketId(0), false);
    assert_eq!(ranked.iter().map(|&(a, _)| a).collect::<Vec<_>>(), vec![valued, short]);
    assert_eq!(ranked[1].1, i64::MIN);
    assert_eq!(w.liq.adl_ranking().first(MarketId(0), false, valued), Some(short));
}
