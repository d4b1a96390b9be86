//! The venues' own published worked examples, each reproduced through the public API.
//! Case numbers refer to the project's table of venue reference cases.

use super::*;
use crate::{FundingConfig, FundingNotional, MarginMode, PremiumAveraging};
use keel_types::{MarketId, Side};

const BTC: u32 = 1;
const ETH: u32 = 2;

/// Binance USDⓈ-M brackets in force when the FAQ example was written: BTCUSDT reaches the 2.5%
/// tier with cum 16,300 at 1M, ETHUSDT the 10% tier with cum 135,365 at 2M.
fn binance_markets() -> Vec<MarketConfig> {
    let btc = tiers(
        &[
            (0, "0.004", 125),
            (50_000, "0.005", 100),
            (250_000, "0.01", 50),
            (1_000_000, "0.025", 20),
            (10_000_000, "0.05", 10),
            (20_000_000, "0.10", 5),
            (50_000_000, "0.125", 4),
            (100_000_000, "0.15", 3),
            (200_000_000, "0.25", 2),
        ],
        300_000_000,
    );
    let eth = tiers(
        &[
            (0, "0.005", 100),
            (10_000, "0.0065", 75),
            (100_000, "0.01", 50),
            (500_000, "0.02", 25),
            (1_000_000, "0.05", 10),
            (2_000_000, "0.10", 5),
            (5_000_000, "0.125", 4),
            (10_000_000, "0.15", 3),
            (20_000_000, "0.25", 2),
        ],
        50_000_000,
    );
    assert_eq!(btc.tiers()[3].maintenance_amount, usd("16300"));
    assert_eq!(eth.tiers()[5].maintenance_amount, usd("135365"));
    vec![
        market(BTC, "0.01", "0.001", btc, MarginBasis::MarkValue),
        market(ETH, "0.01", "0.001", eth, MarginBasis::MarkValue),
    ]
}

fn binance_bench() -> Bench {
    let mut b = Bench::new(binance_markets());
    b.mark(BTC, "31967.27");
    b.mark(ETH, "1335.18");
    b
}

/// Binance FAQ example (case 1, as encoded in freqtrade's `test_liquidation_price_binance`):
/// WB 1,535,443.01, ETHUSDT long 3,683.979 @ 1,456.84, MMR 10%, cum 135,365, no other position
/// → LP 1,114.78 (tolerance 0.01).
#[test]
fn binance_case_1_eth_single_position() {
    let mut b = binance_bench();
    let a = b.account(1, "1535443.01");
    b.fill(a, ETH, Side::Buy, "3683.979", "1456.84");
    assert_close(b.liq(a, ETH), "1114.78", "0.01");
}

/// Binance FAQ example (case 2): BTCUSDT long 109.488 @ 32,481.98, MMR 2.5%, cum 16,300, the
/// whole WB 1,535,443.01 as the position's margin → LP 18,778.73 (tolerance 0.01). Run in
/// isolated mode with all of WB moved into the position, which is what TMM1 = UPNL1 = 0 models.
#[test]
fn binance_case_2_btc_isolated_with_whole_wallet() {
    let mut b = binance_bench();
    let a = b.account(1, "1535443.01");
    b.ch.set_margin_mode(a, MarketId(BTC), MarginMode::Isolated).unwrap();
    b.fill(a, BTC, Side::Buy, "109.488", "32481.98");
    let rest = b.ch.account(a).unwrap().balance();
    b.ch.add_isolated_margin(a, MarketId(BTC), rest).unwrap();
    assert_eq!(
        b.ch.account(a).unwrap().position(MarketId(BTC)).unwrap().isolated_margin(),
        usd("1535443.01")
    );
    assert_close(b.liq(a, BTC), "18778.73", "0.01");
}

/// Binance FAQ example (cases 3 and 4): both positions in one cross account. For ETH the BTC
/// position contributes TMM1 = 71,200.811444 and UPNL1 = −56,354.568 → LP 1,153.26; for BTC the
/// ETH position contributes TMM1 = 356,512.508 and UPNL1 = −448,192.885 → LP 26,316.89.
#[test]
fn binance_cases_3_and_4_cross_account() {
    let mut b = binance_bench();
    let a = b.account(1, "1535443.01");
    b.fill(a, BTC, Side::Buy, "109.488", "32481.98");
    b.fill(a, ETH, Side::Buy, "3683.979", "1456.84");
    let view = b.ch.account_view(a).unwrap();
    let btc = view.positions.iter().find(|p| p.market == MarketId(BTC)).unwrap();
    let eth = view.positions.iter().find(|p| p.market == MarketId(ETH)).unwrap();
    // The other-position terms of the Binance formula, as the view reports them.
    assert_close(btc.maintenance_margin.to_decimal(), "71200.811444", "0.000001");
    assert_close(btc.unrealized_pnl.to_decimal(), "-56354.568", "0.001");
    assert_close(eth.maintenance_margin.to_decimal(), "356512.508", "0.001");
    assert_close(eth.unrealized_pnl.to_decimal(), "-448192.885", "0.001");
    assert_close(b.liq(a, ETH), "1153.26", "0.01");
    assert_close(b.liq(a, BTC), "26316.89", "0.01");
    assert_close(b.to_dec(ETH, eth.liquidation_price.unwrap()), "1153.26", "0.01");
}

/// Bybit USDT perpetual, entry-value methodology, single 0.5% tier. Funding without interest and
/// capped at 1%, so that one premium sample 1% over the index makes a 1% rate.
fn bybit_bench() -> Bench {
    let t = tiers(&[(0, "0.005", 100)], 2_000_000);
    let mut cfg = market(BTC, "0.01", "0.001", t, MarginBasis::EntryValue);
    cfg.funding = FundingConfig {
        interest_rate: Rate::ZERO,
        interest_clamp: Rate::ZERO,
        cap: rate("0.01"),
        averaging: PremiumAveraging::Simple,
        ..FundingConfig::default()
    };
    let mut b = Bench::new(vec![cfg]);
    b.mark(BTC, "20000");
    b
}

/// Opens an isolated long or short of 1 BTC at `entry` and `lev` on a fresh account.
fn bybit_isolated(b: &mut Bench, id: u32, side: Side, entry: &str, lev: u32) -> AccountId {
    let a = b.account(id, "100000");
    b.ch.set_margin_mode(a, MarketId(BTC), MarginMode::Isolated).unwrap();
    b.ch.set_leverage(a, MarketId(BTC), lev).unwrap();
    b.fill(a, BTC, side, "1", entry);
    a
}

/// Bybit help "Liquidation Price (USDT Contract)" (cases 5 and 6): long 1 BTC @ 20,000 at 50x,
/// MMR 0.5% → IM 400, MM 100, LP 19,700; after 200 USDT of funding is taken from the position
/// margin, LP 19,900. The funding is settled for real against a short, at a 1% rate.
#[test]
fn bybit_cases_5_and_6_funding_moves_the_liquidation_price() {
    let mut b = bybit_bench();
    let long = bybit_isolated(&mut b, 1, Side::Buy, "20000", 50);
    let short = b.account(2, "100000");
    b.fill(short, BTC, Side::Sell, "1", "20000");
    let view = b.ch.account_view(long).unwrap();
    assert_eq!(view.positions[0].initial_margin, usd("400"));
    assert_eq!(view.positions[0].maintenance_margin, usd("100"));
    assert_eq!(view.positions[0].isolated_margin, usd("400"));
    assert_eq!(b.liq(long, BTC), dec("19700"));

    let m = MarketId(BTC);
    let index = b.price(BTC, "20000");
    b.ch.set_index_price(m, index, 0).unwrap();
    b.ch.sample_impact_prices(m, b.price(BTC, "20200"), b.price(BTC, "20300")).unwrap();
    let settlement = b.ch.settle_funding(m, 8 * 3_600_000).unwrap();
    assert_eq!(settlement.rate, rate("0.01"));
    assert_eq!(settlement.payments, vec![(long, usd("-200")), (short, usd("200"))]);
    assert_eq!(b.liq(long, BTC), dec("19900"));
}

/// Bybit help, older formula (cases 7 and 22): long 1 BTC @ 10,000 at 50x, MMR 0.5% →
/// LP = EP·(1 − IMR + MMR) = 9,850 and BP = EP·(1 − 1/lev) = 9,800.
#[test]
fn bybit_cases_7_and_22_long_liquidation_and_bankruptcy() {
    let mut b = bybit_bench();
    let a = bybit_isolated(&mut b, 1, Side::Buy, "10000", 50);
    assert_eq!(b.liq(a, BTC), dec("9850"));
    assert_eq!(b.bankrupt(a, BTC), dec("9800"));
}

/// Bybit help, older formula (case 8): short 1 BTC @ 8,000 at 40x, MMR 0.5% →
/// LP = EP·(1 + IMR − MMR) = 8,160.
#[test]
fn bybit_case_8_short_liquidation() {
    let mut b = bybit_bench();
    let a = bybit_isolated(&mut b, 1, Side::Sell, "8000", 40);
    assert_eq!(b.liq(a, BTC), dec("8160"));
    assert_eq!(b.bankrupt(a, BTC), dec("8200"));
}

/// BitMEX isolated/cross margin examples (case 9): wallet 10,000 USDT, buy 20 ETHUSDT @ 1,000 at
/// 50x cross, IM 2% = 400, MM 1% = 200 → bankruptcy 500, liquidation 510.
#[test]
fn bitmex_case_9_cross_long() {
    let t = tiers(&[(0, "0.01", 50)], 1_000_000);
    let mut b = Bench::new(vec![market(ETH, "0.01", "0.001", t, MarginBasis::EntryValue)]);
    b.mark(ETH, "1000");
    let a = b.account(1, "10000");
    b.ch.set_leverage(a, MarketId(ETH), 50).unwrap();
    b.fill(a, ETH, Side::Buy, "20", "1000");
    let view = b.ch.account_view(a).unwrap();
    assert_eq!(view.initial_margin, usd("400"));
    assert_eq!(view.maintenance_margin, usd("200"));
    assert_eq!(b.bankrupt(a, ETH), dec("500"));
    assert_eq!(b.liq(a, ETH), dec("510"));
}

/// dYdX v4 markets: ETH (MMF 5%) on a 0.001 tick so the docs' two-decimal figures can be
/// compared after rounding, and STRK (MMF 10%).
fn dydx_bench() -> Bench {
    let eth = market(ETH, "0.001", "0.001", tiers(&[(0, "0.05", 10)], 10_000_000), MarginBasis::MarkValue);
    let strk = market(3, "0.001", "1", tiers(&[(0, "0.10", 5)], 10_000_000), MarginBasis::MarkValue);
    Bench::new(vec![eth, strk])
}

/// dYdX v4 docs, liquidations (case 10): isolated, e = 1,000, s = −3 ETH, p = 3,000, MMF 5% →
/// p' = (e − s·p)/(|s|·MMF − s) = 3,174.60, equity at p' = 476.2.
#[test]
fn dydx_case_10_isolated_short() {
    let mut b = dydx_bench();
    b.mark(ETH, "3000");
    let a = b.account(1, "1000");
    b.ch.set_margin_mode(a, MarketId(ETH), MarginMode::Isolated).unwrap();
    b.fill(a, ETH, Side::Sell, "3", "3000");
    let rest = b.ch.account(a).unwrap().balance();
    b.ch.add_isolated_margin(a, MarketId(ETH), rest).unwrap();
    let lp = b.liq(a, ETH);
    assert_eq!(lp.round_dp(2), dec("3174.60"));
    let (equity, mm) = b.ch.isolated_equity_at(a, MarketId(ETH), b.price(ETH, &lp.to_string())).unwrap();
    assert_eq!(equity.to_decimal().round_dp(1), dec("476.2"));
    assert!(equity <= mm);
}

/// dYdX v4 docs, liquidations (case 11): cross, e = 1,000, short 1.5 ETH @ 3,000 (MMF 5%), long
/// 1,000 STRK @ 1.75 (MMF 10%) so the other positions' maintenance is 175 → p'(ETH) = 3,380.95.
#[test]
fn dydx_case_11_cross_with_another_position() {
    let mut b = dydx_bench();
    b.mark(ETH, "3000");
    b.mark(3, "1.75");
    let a = b.account(1, "1000");
    b.fill(a, ETH, Side::Sell, "1.5", "3000");
    b.fill(a, 3, Side::Buy, "1000", "1.75");
    let view = b.ch.account_view(a).unwrap();
    assert_eq!(view.equity, usd("1000"));
    let strk = view.positions.iter().find(|p| p.market == MarketId(3)).unwrap();
    assert_eq!(strk.maintenance_margin, usd("175"));
    assert_eq!(b.liq(a, ETH).round_dp(2), dec("3380.95"));
}

/// dYdX docs, deleveraging (case 24): B deposits $100 and shorts 500 ABC @ $1 → bankruptcy price
/// $1.20; when the price jumps, A's long is closed against B at 1.20: A gains $100, B ends at 0.
#[test]
fn dydx_case_24_deleveraging_at_bankruptcy() {
    let abc = market(4, "0.01", "1", tiers(&[(0, "0.03", 10)], 1_000_000), MarginBasis::MarkValue);
    let mut b = Bench::new(vec![abc]);
    b.mark(4, "1");
    let a = b.account(1, "100");
    let bb = b.account(2, "100");
    b.fill(a, 4, Side::Buy, "500", "1");
    b.fill(bb, 4, Side::Sell, "500", "1");
    assert_eq!(b.bankrupt(bb, 4), dec("1.2"));
    b.mark(4, "2");
    b.fill(a, 4, Side::Sell, "500", "1.20");
    b.fill(bb, 4, Side::Buy, "500", "1.20");
    assert_eq!(b.ch.account(a).unwrap().balance(), usd("200"));
    assert_eq!(b.ch.account(bb).unwrap().balance(), usd("0"));
    assert_eq!(b.ch.account(a).unwrap().position(MarketId(4)).unwrap().realized_pnl(), usd("100"));
}

/// dYdX docs, insurance-fund example (case 57): A deposits $100, long 500 ABC @ $1, MMF 3% (MM
/// $15). At $0.801 equity is $0.50 and A is liquidatable; the liquidation fill at $0.77 realizes
/// −$115, leaving the account $15 short — the amount the insurance fund contributes.
#[test]
fn dydx_case_57_liquidation_below_bankruptcy() {
    let abc = market(4, "0.001", "1", tiers(&[(0, "0.03", 10)], 1_000_000), MarginBasis::MarkValue);
    let mut b = Bench::new(vec![abc]);
    b.mark(4, "1");
    let a = b.account(1, "100");
    b.fill(a, 4, Side::Buy, "500", "1");
    assert_eq!(b.ch.account_view(a).unwrap().maintenance_margin, usd("15"));
    b.mark(4, "0.801");
    let s = b.ch.margin_summary(a).unwrap();
    assert_eq!(s.equity, usd("0.5"));
    assert!(b.ch.is_cross_liquidatable(a).unwrap());
    let before = b.ch.account(a).unwrap().balance();
    b.fill(a, 4, Side::Sell, "500", "0.77");
    let after = b.ch.account(a).unwrap().balance();
    assert_eq!(after.checked_sub(before).unwrap(), usd("-115"));
    assert_eq!(after, usd("-15"));
}

/// Hyperliquid funding (case 94), end to end: I = 0.01% per 8h, impact bid 10,100 over oracle
/// 10,000 → P = 1%, F = 0.95% per 8h, paid hourly as size × oracle × F / 8 (valued at the oracle,
/// not the mark).
#[test]
fn hyperliquid_case_94_hourly_payment_at_oracle() {
    let mut cfg = market(BTC, "1", "0.001", tiers(&[(0, "0.0125", 40)], 10_000_000), MarginBasis::MarkValue);
    cfg.funding = FundingConfig {
        interval_ms: 3_600_000,
        interest_rate: rate("0.0001"),
        interest_clamp: rate("0.0005"),
        cap: rate("0.04"),
        rate_divisor: 8,
        averaging: PremiumAveraging::Simple,
        notional: FundingNotional::Index,
    };
    let mut b = Bench::new(vec![cfg]);
    b.mark(BTC, "10050");
    let long = b.account(1, "10000");
    let short = b.account(2, "10000");
    b.fill(long, BTC, Side::Buy, "2", "10000");
    b.fill(short, BTC, Side::Sell, "2", "10000");
    let m = MarketId(BTC);
    b.ch.set_index_price(m, b.price(BTC, "10000"), 0).unwrap();
    for _ in 0..60 {
        b.ch.sample_impact_prices(m, b.price(BTC, "10100"), b.price(BTC, "10150")).unwrap();
    }
    assert_eq!(b.ch.predicted_funding_rate(m), Ok(rate("0.0011875")));
    let s = b.ch.settle_funding(m, 3_600_000).unwrap();
    // 2 × 10,000 × 0.95% / 8 = 23.75.
    assert_eq!(s.payments, vec![(long, usd("-23.75")), (short, usd("23.75"))]);
    assert_eq!(b.ch.account(long).unwrap().balance(), usd("9976.25"));
}
