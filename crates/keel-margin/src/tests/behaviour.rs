//! Clearinghouse behaviour: collateral, withdrawals, open orders, the pre-trade check, leverage,
//! margin modes, flips, mark price and the refusal paths.

use super::*;
use crate::{AssetId, MarginError, MarginMode, MarkConfig, MarkMethod, OrderIntent, PreTrade, Rejection};
use keel_types::{ArithmeticError, MarketId, Side};

const BTC: u32 = 1;

/// BTC on a 0.1 tick and 0.001 lot, Binance-like tiers, taker 0.05% / maker 0.02%.
fn btc_bench() -> Bench {
    let t = tiers(&[(0, "0.004", 125), (50_000, "0.005", 100), (250_000, "0.01", 50)], 1_000_000);
    let mut cfg = market(BTC, "0.1", "0.001", t, MarginBasis::MarkValue);
    cfg.taker_fee = rate("0.0005");
    cfg.maker_fee = rate("0.0002");
    let mut b = Bench::new(vec![cfg]);
    b.mark(BTC, "10000");
    b
}

fn intent(b: &Bench, side: Side, qty: &str, price: &str) -> OrderIntent {
    OrderIntent { market: MarketId(BTC), side, qty: b.qty(BTC, qty), price: b.price(BTC, price) }
}

#[test]
fn a_collateral_depeg_lowers_every_holder() {
    let mut b = btc_bench();
    let steth = b.collateral("stETH", "3000", "0.10");
    let x = b.account(1, "0");
    let y = b.account(2, "500");
    b.ch.deposit(x, steth, 100_000_000).unwrap(); // 1 stETH
    b.ch.deposit(y, steth, 250_000_000).unwrap(); // 2.5 stETH
    assert_eq!(b.ch.margin_summary(x).unwrap().equity, usd("2700"));
    assert_eq!(b.ch.margin_summary(y).unwrap().equity, usd("7250"));
    // Depeg to 2,400: both lose 90% of 600 per unit held.
    b.ch.set_asset_price(steth, usd("2400")).unwrap();
    assert_eq!(b.ch.margin_summary(x).unwrap().equity, usd("2160"));
    assert_eq!(b.ch.margin_summary(y).unwrap().equity, usd("5900"));
    // A harsher haircut bites the same way.
    b.ch.set_haircut(steth, rate("0.5")).unwrap();
    assert_eq!(b.ch.margin_summary(x).unwrap().collateral_value, usd("1200"));
    assert!(matches!(
        b.ch.set_asset_price(AssetId::SETTLEMENT, usd("0.9")),
        Err(MarginError::InvalidConfig(_))
    ));
}

#[test]
fn collateral_backs_positions_and_withdrawals_keep_initial_margin() {
    let mut b = btc_bench();
    let btc = b.collateral("BTC", "10000", "0.05");
    let a = b.account(1, "100");
    b.ch.deposit(a, btc, 10_000_000).unwrap(); // 0.1 BTC = 950 after haircut
    b.ch.set_leverage(a, MarketId(BTC), 10).unwrap();
    b.fill(a, BTC, Side::Buy, "0.5", "10000"); // notional 5,000, IM 500, fee 2.5
    let s = b.ch.margin_summary(a).unwrap();
    assert_eq!(s.equity, usd("1047.5"));
    assert_eq!(s.initial_margin, usd("500"));
    // Withdrawable: 547.5 of equity above IM, but the balance holds only 97.5 of settlement asset.
    assert_eq!(
        b.ch.withdraw(a, AssetId::SETTLEMENT, usd("97.6").0),
        Err(MarginError::InsufficientBalance {
            asset: AssetId::SETTLEMENT,
            held: 97_500_000,
            requested: 97_600_000
        })
    );
    b.ch.withdraw(a, AssetId::SETTLEMENT, usd("97.5").0).unwrap();
    // Now the collateral alone backs the 500 of IM: taking 0.05 BTC (475 of value) leaves 25 short,
    // while leaving 0.05263158 BTC (500.00001 of value) is just enough.
    let before = b.ch.account(a).unwrap().clone();
    let err = b.ch.withdraw(a, btc, 5_000_000).unwrap_err();
    assert_eq!(err, MarginError::InsufficientMargin { shortfall: usd("25") });
    assert_eq!(b.ch.account(a).unwrap(), &before, "a refused withdrawal changes nothing");
    b.ch.withdraw(a, btc, 4_736_842).unwrap();
    let s = b.ch.margin_summary(a).unwrap();
    assert!(s.realized_equity >= s.initial_margin);
    // Unrealized profit cannot be withdrawn: mark up 10% gives +500 of PnL but no withdrawable cash.
    b.mark(BTC, "11000");
    assert!(b.ch.margin_summary(a).unwrap().available().unwrap() > usd("400"));
    assert!(matches!(b.ch.withdraw(a, btc, 1_000), Err(MarginError::InsufficientMargin { .. })));
}

#[test]
fn pre_trade_check_reports_the_exact_shortfall() {
    let mut b = btc_bench();
    let a = b.account(1, "100");
    b.ch.set_leverage(a, MarketId(BTC), 10).unwrap();
    // 0.1 BTC @ 10,000 at 10x: IM 100 + taker fee 0.5 = 100.5 → 0.5 short.
    let order = intent(&b, Side::Buy, "0.1", "10000");
    assert_eq!(
        b.ch.pre_trade_check(a, &order),
        Ok(PreTrade::Reject(Rejection::InsufficientMargin { shortfall: usd("0.5") }))
    );
    b.ch.deposit(a, AssetId::SETTLEMENT, usd("0.5").0 - 1).unwrap();
    assert_eq!(
        b.ch.pre_trade_check(a, &order),
        Ok(PreTrade::Reject(Rejection::InsufficientMargin { shortfall: Money(1) }))
    );
    // Exactly enough is enough.
    b.ch.deposit(a, AssetId::SETTLEMENT, 1).unwrap();
    assert_eq!(b.ch.pre_trade_check(a, &order), Ok(PreTrade::Accept));
    // A buy above mark also reserves its open loss: 0.1 × (10,100 − 10,000) = 10, IM 101, fee 0.505.
    let above = intent(&b, Side::Buy, "0.1", "10100");
    assert_eq!(
        b.ch.pre_trade_check(a, &above),
        Ok(PreTrade::Reject(Rejection::InsufficientMargin { shortfall: usd("11.005") }))
    );
}

#[test]
fn reducing_orders_pass_even_when_the_account_is_under_water() {
    let mut b = btc_bench();
    let a = b.account(1, "100");
    b.ch.set_leverage(a, MarketId(BTC), 20).unwrap();
    b.fill(a, BTC, Side::Buy, "0.1", "10000");
    b.mark(BTC, "9000"); // −100 of PnL: equity is negative
    assert!(b.ch.margin_summary(a).unwrap().available().unwrap().is_negative());
    let close = intent(&b, Side::Sell, "0.1", "9000");
    assert_eq!(b.ch.pre_trade_check(a, &close), Ok(PreTrade::Accept));
    let flip = intent(&b, Side::Sell, "0.2", "9000");
    assert!(matches!(
        b.ch.pre_trade_check(a, &flip),
        Ok(PreTrade::Reject(Rejection::InsufficientMargin { .. }))
    ));
}

#[test]
fn open_orders_reserve_for_the_side_that_adds_exposure() {
    let mut b = btc_bench();
    let a = b.account(1, "1000");
    b.ch.set_leverage(a, MarketId(BTC), 10).unwrap();
    b.fill(a, BTC, Side::Buy, "0.2", "10000"); // long 0.2, IM 200, fee 1
    let m = MarketId(BTC);
    let base = b.ch.margin_summary(a).unwrap().initial_margin;
    // A sell of 0.2 only closes: no reservation.
    b.ch.add_open_order(a, m, Side::Sell, b.qty(BTC, "0.2"), b.price(BTC, "10500")).unwrap();
    assert_eq!(b.ch.margin_summary(a).unwrap().initial_margin, base);
    // Another 0.1 sells past flat: 0.1 × 10,500 / 10 = 105.
    b.ch.add_open_order(a, m, Side::Sell, b.qty(BTC, "0.1"), b.price(BTC, "10500")).unwrap();
    assert_eq!(b.ch.margin_summary(a).unwrap().initial_margin, base.checked_add(usd("105")).unwrap());
    // Buys of 0.05 reserve 50, less than the sell side's 105: the larger side counts.
    b.ch.add_open_order(a, m, Side::Buy, b.qty(BTC, "0.05"), b.price(BTC, "10000")).unwrap();
    assert_eq!(b.ch.margin_summary(a).unwrap().initial_margin, base.checked_add(usd("105")).unwrap());
    // A maker fill of 0.1 of the sells shrinks the reservation and the position.
    let fill = Fill {
        account: a,
        market: m,
        side: Side::Sell,
        qty: b.qty(BTC, "0.1"),
        price: b.price(BTC, "10500"),
        liquidity: Liquidity::Maker,
    };
    let out = b.ch.apply_fill(&fill).unwrap();
    assert_eq!(out.realized_pnl, usd("50"));
    assert_eq!(out.fee, usd("0.21"));
    let p = b.ch.account(a).unwrap().position(m).unwrap();
    assert_eq!(p.open_sells().qty, b.qty(BTC, "0.2"));
    // Cancelling more than is registered is refused and changes nothing.
    let err = b.ch.remove_open_order(a, m, Side::Buy, b.qty(BTC, "0.06"), b.price(BTC, "10000"));
    assert_eq!(err, Err(MarginError::OpenOrderUnderflow(m)));
    b.ch.remove_open_order(a, m, Side::Buy, b.qty(BTC, "0.05"), b.price(BTC, "10000")).unwrap();
    assert_eq!(b.ch.account(a).unwrap().position(m).unwrap().open_buys().qty.0, 0);
}

/// PnL on a flip: long 2 @ 100 and 1 @ 103, then sell 5 @ 110 realizes +27 on the 3 closed and
/// opens a short of 2 with entry exactly 110 (the closed part's cost leaves the basis exactly).
#[test]
fn a_flip_realizes_the_closed_part_and_reopens_at_the_fill() {
    let mut b = btc_bench();
    let a = b.account(1, "100000");
    b.fill(a, BTC, Side::Buy, "2", "100");
    b.fill(a, BTC, Side::Buy, "1", "103");
    let fill = Fill {
        account: a,
        market: MarketId(BTC),
        side: Side::Sell,
        qty: b.qty(BTC, "5"),
        price: b.price(BTC, "110"),
        liquidity: Liquidity::Taker,
    };
    let out = b.ch.apply_fill(&fill).unwrap();
    // Closed 3 with basis 303 at 330: +27.
    assert_eq!(out.realized_pnl, usd("27"));
    assert_eq!(out.closed, b.qty(BTC, "3"));
    assert_eq!(out.size, Qty(-b.qty(BTC, "2").0));
    assert_eq!(out.fee, usd("0.275"));
    let view = b.ch.account_view(a).unwrap();
    assert_eq!(view.positions[0].entry_price, dec("110"));
    // Fees: 0.1 + 0.0515 + 0.275.
    assert_eq!(view.positions[0].fees_paid, usd("0.4265"));
    assert_eq!(b.ch.account(a).unwrap().balance(), usd("100026.5735"));
}

#[test]
fn leverage_is_bounded_by_the_tier_of_the_position() {
    let mut b = btc_bench();
    let a = b.account(1, "1000000");
    let m = MarketId(BTC);
    assert!(matches!(
        b.ch.set_leverage(a, m, 0),
        Err(MarginError::LeverageOutOfRange { requested: 0, max: 125 })
    ));
    assert!(matches!(b.ch.set_leverage(a, m, 126), Err(MarginError::LeverageOutOfRange { .. })));
    b.ch.set_leverage(a, m, 125).unwrap();
    // At 125x the position may not exceed 50,000 of notional.
    let big = intent(&b, Side::Buy, "6", "10000");
    assert_eq!(
        b.ch.pre_trade_check(a, &big),
        Ok(PreTrade::Reject(Rejection::RiskLimit { notional: usd("60000"), max_notional: usd("50000") }))
    );
    b.ch.set_leverage(a, m, 100).unwrap();
    b.fill(a, BTC, Side::Buy, "6", "10000");
    assert_eq!(
        b.ch.set_leverage(a, m, 125),
        Err(MarginError::LeverageOutOfRange { requested: 125, max: 100 })
    );
    // Lowering leverage is refused when the account cannot carry the larger margin.
    let poor = b.account(2, "700");
    b.ch.set_leverage(poor, m, 100).unwrap();
    b.fill(poor, BTC, Side::Buy, "6", "10000"); // IM 600, fee 30
    assert_eq!(
        b.ch.set_leverage(poor, m, 50),
        Err(MarginError::InsufficientMargin { shortfall: usd("530") })
    );
    assert_eq!(b.ch.account(poor).unwrap().position(m).unwrap().leverage(), 100);
}

#[test]
fn margin_mode_and_isolated_margin_rules() {
    let mut b = btc_bench();
    let a = b.account(1, "1000");
    let m = MarketId(BTC);
    b.ch.set_margin_mode(a, m, MarginMode::Isolated).unwrap();
    b.ch.set_leverage(a, m, 10).unwrap();
    b.fill(a, BTC, Side::Buy, "0.1", "10000"); // 100 locked, fee 0.5
    assert_eq!(b.ch.account(a).unwrap().balance(), usd("899.5"));
    assert_eq!(b.ch.set_margin_mode(a, m, MarginMode::Cross), Err(MarginError::ModeChangeWithExposure(m)));
    b.ch.add_isolated_margin(a, m, usd("50")).unwrap();
    // Removing may not take the fence below the position's initial margin (100).
    assert_eq!(
        b.ch.remove_isolated_margin(a, m, usd("60")),
        Err(MarginError::InsufficientMargin { shortfall: usd("10") })
    );
    b.ch.remove_isolated_margin(a, m, usd("50")).unwrap();
    // A loss of 20 must be covered too: 99 − 20 against an IM at mark of 98.
    b.mark(BTC, "9800");
    assert_eq!(
        b.ch.remove_isolated_margin(a, m, usd("1")),
        Err(MarginError::InsufficientMargin { shortfall: usd("19") })
    );
    assert!(!b.ch.is_isolated_liquidatable(a, m).unwrap());
    // Equity 100 + 0.1·(p − 10,000) meets MM 0.4% · 0.1 · p at 9,036.14.
    b.mark(BTC, "9036.2");
    assert!(!b.ch.is_isolated_liquidatable(a, m).unwrap());
    b.mark(BTC, "9036.1");
    assert!(b.ch.is_isolated_liquidatable(a, m).unwrap());
    // Closing releases the fence and settles the loss of 96.39 and the fee of 0.451805.
    b.fill(a, BTC, Side::Sell, "0.1", "9036.1");
    let acc = b.ch.account(a).unwrap();
    assert_eq!(acc.position(m).unwrap().isolated_margin(), usd("0"));
    assert_eq!(acc.balance(), usd("902.658195"));
}

#[test]
fn binance_mark_is_the_median_of_carried_index_basis_and_last_trade() {
    let b = btc_bench();
    let m = MarketId(BTC);
    let mut cfg = b.ch.market(m).unwrap().clone();
    cfg.mark = MarkConfig { method: MarkMethod::MedianOfThree, basis_window: 30 };
    let mut b2 = Bench::new(vec![cfg]);
    b2.ch.set_index_price(m, b.price(BTC, "10000"), 0).unwrap();
    // Impact mid 10,002 over the index: price 2 = 10,002. No funding yet: price 1 = 10,000.
    b2.ch.sample_impact_prices(m, b.price(BTC, "10001"), b.price(BTC, "10003")).unwrap();
    b2.ch.record_trade(m, b.price(BTC, "12000")).unwrap();
    assert_eq!(b2.ch.update_mark_price(m, 1_000).unwrap(), b.price(BTC, "10002"));
    // A last trade below the index pulls the median to the carried index.
    b2.ch.record_trade(m, b.price(BTC, "9000")).unwrap();
    assert_eq!(b2.ch.update_mark_price(m, 2_000).unwrap(), b.price(BTC, "10000"));
}

#[test]
fn funding_refuses_early_settlement_and_keeps_state() {
    let mut b = btc_bench();
    let m = MarketId(BTC);
    assert_eq!(b.ch.settle_funding(m, 0), Err(MarginError::NoIndexPrice(m)));
    b.ch.set_index_price(m, b.price(BTC, "10000"), 1_000).unwrap();
    assert_eq!(
        b.ch.settle_funding(m, 5_000),
        Err(MarginError::FundingNotDue { market: m, next_ms: 28_800_000 })
    );
    // Nobody holds a position: settles nothing, and the clock moves on.
    let s = b.ch.settle_funding(m, 28_800_000).unwrap();
    assert!(s.payments.is_empty());
    assert!(matches!(b.ch.settle_funding(m, 28_800_001), Err(MarginError::FundingNotDue { .. })));
}

#[test]
fn extreme_inputs_give_typed_errors_not_panics() {
    let mut b = btc_bench();
    let a = b.account(1, "0");
    b.ch.deposit(a, AssetId::SETTLEMENT, Money::DEPOSIT_CEILING.0).unwrap();
    assert_eq!(
        b.ch.deposit(a, AssetId::SETTLEMENT, 1),
        Err(MarginError::AboveDepositCeiling { ceiling: Money::DEPOSIT_CEILING })
    );
    assert_eq!(
        b.ch.deposit(a, AssetId::SETTLEMENT, i64::MAX),
        Err(MarginError::Arithmetic(ArithmeticError::Overflow))
    );
    assert_eq!(b.ch.deposit(a, AssetId(9), 1), Err(MarginError::UnknownAsset(AssetId(9))));
    assert_eq!(b.ch.deposit(a, AssetId::SETTLEMENT, 0), Err(MarginError::NotPositive("deposit amount")));
    let max = b.ch.market(MarketId(BTC)).unwrap().max_price;
    let too_high = Price(max.0 + 1);
    let order = OrderIntent { market: MarketId(BTC), side: Side::Buy, qty: Qty(1), price: too_high };
    assert!(matches!(b.ch.pre_trade_check(a, &order), Err(MarginError::PriceOutOfRange { .. })));
    assert!(matches!(b.ch.pre_trade_check(AccountId(77), &order), Err(MarginError::UnknownAccount(_))));
    // A market whose bounds would let one position's notional leave 64 bits is refused.
    let mut cfg = b.ch.market(MarketId(BTC)).unwrap().clone();
    cfg.id = MarketId(2);
    cfg.max_position = Qty(i64::MAX / 2);
    assert!(matches!(b.ch.add_market(cfg), Err(MarginError::InvalidConfig(_))));
    assert_eq!(b.ch.open_account(a), Err(MarginError::DuplicateAccount(a)));
}

#[test]
fn a_size_without_magnitude_is_refused_and_changes_nothing() {
    // One tick times one lot is one money unit, so a fill of 2^62 lots at one tick still fits.
    let fine = market(9, "0.001", "0.001", tiers(&[(0, "0.01", 10)], 1_000_000), MarginBasis::MarkValue);
    let mut b = Bench::new(vec![fine]);
    b.mark(9, "1");
    let a = b.account(1, "0");
    let fill = Fill {
        account: a,
        market: MarketId(9),
        side: Side::Sell,
        qty: Qty(1 << 62),
        price: Price(1),
        liquidity: Liquidity::Taker,
    };
    b.ch.apply_fill(&fill).unwrap();
    let before = b.ch.account(a).unwrap().clone();
    // A second one would make the size i64::MIN, which has no absolute value.
    assert_eq!(b.ch.apply_fill(&fill), Err(MarginError::Arithmetic(ArithmeticError::Overflow)));
    assert_eq!(b.ch.account(a).unwrap(), &before);
    // Valuing 2^62 lots at a mark of 1,000 ticks leaves 64 bits: a typed error, not a panic.
    assert_eq!(b.ch.account_view(a), Err(MarginError::Arithmetic(ArithmeticError::Overflow)));
}

#[test]
fn a_deposit_may_not_take_a_balance_above_the_ceiling() {
    let mut b = btc_bench();
    let a = b.account(1, "100");
    let room = Money::DEPOSIT_CEILING.0 - usd("100").0;
    assert_eq!(
        b.ch.deposit(a, AssetId::SETTLEMENT, room + 1),
        Err(MarginError::AboveDepositCeiling { ceiling: Money::DEPOSIT_CEILING })
    );
    assert_eq!(b.ch.account(a).unwrap().balance(), usd("100"), "a refused deposit changed the balance");
    b.ch.deposit(a, AssetId::SETTLEMENT, room).unwrap();
    assert_eq!(b.ch.account(a).unwrap().balance(), Money::DEPOSIT_CEILING);
    assert_eq!(
        b.ch.deposit(a, AssetId::SETTLEMENT, i64::MAX),
        Err(MarginError::Arithmetic(ArithmeticError::Overflow))
    );
}
