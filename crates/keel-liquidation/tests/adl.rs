//! ADL ordering against the venues' ranking formula.
//!
//! Binance USDⓈ-M ("What is Auto-Deleveraging", ADL ranking) and Bybit ("Auto-Deleveraging
//! (ADL)") rank positions by `PnL% × effective leverage` when profitable and `PnL% / effective
//! leverage` otherwise, with PnL% = unrealized PnL / |entry value| and effective leverage =
//! |mark value| / equity. The expected order below is computed from that formula in exact
//! decimals, independently of the integer implementation.

mod common;

use common::*;
use keel_liquidation::{ADL_SCORE_SCALE, LiquidationConfig, adl_score};
use keel_types::{AccountId, MarketId};
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
