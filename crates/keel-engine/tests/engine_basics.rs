//! The engine couples book and margin: trades settle on both accounts, reservations follow the
//! orders, and every refused command leaves the state exactly as it was.

use keel_engine::{Command, Engine, ErrorCode, Event, PlaceOrder, Sequenced, presets};
use keel_margin::AssetId;
use keel_types::{
    AccountId, MarketId, Money, OrderId, OrderKind, Price, Qty, RejectReason, Side, StpMode, TimeInForce,
};

const BTC: MarketId = MarketId(1);
const ALICE: AccountId = AccountId(1);
const BOB: AccountId = AccountId(2);

struct Harness {
    engine: Engine,
    seq: u64,
}

impl Harness {
    fn new() -> Harness {
        let mut h = Harness { engine: Engine::new(), seq: 0 };
        h.ok(Command::CreateMarket(Box::new(presets::btc_perp(BTC.0))));
        for account in [ALICE, BOB] {
            h.ok(Command::OpenAccount { account });
            h.ok(Command::Deposit { account, asset: AssetId::SETTLEMENT, amount: 100_000 * Money::SCALE });
        }
        h.ok(Command::IndexPrice { market: BTC, price: Price(650_000) });
        h
    }

    fn run(&mut self, command: Command) -> Vec<Event> {
        self.seq += 1;
        let mut out = Vec::new();
        self.engine.apply(&Sequenced { seq: self.seq, time_ms: 1_000 * self.seq, command }, &mut out);
        out
    }

    fn ok(&mut self, command: Command) -> Vec<Event> {
        let events = self.run(command.clone());
        assert!(
            !events.iter().any(|e| matches!(e, Event::Rejected { .. } | Event::Fault { .. })),
            "{command:?}: {events:?}"
        );
        events
    }

    /// Runs a command that must be refused; checks nothing changed but the sequence number.
    fn refused(&mut self, command: Command) -> ErrorCode {
        let before = self.state();
        let events = self.run(command);
        assert_eq!(self.state(), before, "a refused command changed the state");
        match events.as_slice() {
            [Event::Rejected { code, .. }] => *code,
            other => panic!("expected one rejection, got {other:?}"),
        }
    }

    /// Everything but the sequence number and time, which every command advances.
    fn state(&mut self) -> (Vec<Event>, Vec<Event>) {
        let views = [ALICE, BOB].map(|account| self.query(Command::AccountView { account }));
        let depth = self.query(Command::Depth { market: BTC, levels: 100 });
        (views.concat(), depth)
    }

    fn query(&mut self, command: Command) -> Vec<Event> {
        let mut out = Vec::new();
        self.engine.apply(&Sequenced { seq: self.seq, time_ms: 1_000 * self.seq, command }, &mut out);
        out
    }

    fn limit(&mut self, account: AccountId, side: Side, price: i64, qty: i64) -> Vec<Event> {
        self.ok(Command::Place(order(account, side, OrderKind::Limit { price: Price(price) }, qty)))
    }

    fn position(&self, account: AccountId) -> i64 {
        self.engine.clearinghouse().account(account).and_then(|a| a.position(BTC)).map_or(0, |p| p.size().0)
    }

    fn balance(&self, account: AccountId) -> i64 {
        self.engine.clearinghouse().account(account).unwrap().balance().0
    }
}

fn order(account: AccountId, side: Side, kind: OrderKind, qty: i64) -> PlaceOrder {
    PlaceOrder {
        account,
        market: BTC,
        side,
        kind,
        qty: Qty(qty),
        tif: TimeInForce::Gtc,
        stp: StpMode::CancelNewest,
        reduce_only: false,
    }
}

fn settled(events: &[Event]) -> Vec<(AccountId, Side, i64, i64, i64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Settled { account, side, price, qty, fee, .. } => {
                Some((*account, *side, price.0, qty.0, fee.0))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_trade_settles_on_both_accounts_with_maker_and_taker_fees() {
    let mut h = Harness::new();
    h.limit(ALICE, Side::Sell, 650_000, 1_000); // 1 BTC at 65,000.0
    let events = h.ok(Command::Place(order(BOB, Side::Buy, OrderKind::Market, 400)));
    // 0.4 BTC at 65,000 = 26,000 USD: maker fee 0.02% = 5.2, taker fee 0.05% = 13.
    assert_eq!(
        settled(&events),
        vec![(ALICE, Side::Sell, 650_000, 400, 5_200_000), (BOB, Side::Buy, 650_000, 400, 13_000_000)]
    );
    assert_eq!((h.position(ALICE), h.position(BOB)), (-400, 400));
    assert_eq!(h.balance(ALICE), 100_000_000_000 - 5_200_000);
    assert_eq!(h.balance(BOB), 100_000_000_000 - 13_000_000);
    // The rest of Alice's order still rests and still reserves margin; cancelling releases it.
    let reserved = h.engine.clearinghouse().margin_summary(ALICE).unwrap().initial_margin;
    let resting = h.engine.book(BTC).unwrap().orders(Side::Sell).next().unwrap();
    assert_eq!(resting.qty, Qty(600));
    h.ok(Command::Cancel { account: ALICE, market: BTC, id: resting.id });
    let after = h.engine.clearinghouse().margin_summary(ALICE).unwrap().initial_margin;
    assert!(after < reserved, "cancelling must release the reservation ({reserved} -> {after})");
}

#[test]
fn refused_commands_change_nothing() {
    let mut h = Harness::new();
    let sell = h.limit(ALICE, Side::Sell, 650_000, 1_000);
    let alice_order = sell
        .iter()
        .find_map(|e| match e {
            Event::Book { event: keel_types::BookEvent::Accepted { id, .. }, .. } => Some(*id),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        h.refused(Command::Cancel { account: BOB, market: BTC, id: alice_order }),
        ErrorCode::UnknownOrder
    );
    assert_eq!(
        h.refused(Command::Amend { account: BOB, market: BTC, id: alice_order, price: None, qty: Qty(1) }),
        ErrorCode::UnknownOrder
    );
    assert_eq!(
        h.refused(Command::Cancel { account: ALICE, market: BTC, id: OrderId(999) }),
        ErrorCode::UnknownOrder
    );
    assert_eq!(
        h.refused(Command::Place(order(AccountId(77), Side::Buy, OrderKind::Market, 1))),
        ErrorCode::UnknownAccount
    );
    let mut wrong_market = order(BOB, Side::Buy, OrderKind::Market, 1);
    wrong_market.market = MarketId(9);
    assert_eq!(h.refused(Command::Place(wrong_market)), ErrorCode::UnknownMarket);
    assert_eq!(
        h.refused(Command::Place(order(BOB, Side::Buy, OrderKind::Limit { price: Price(600_000) }, 0))),
        ErrorCode::Book(RejectReason::InvalidQuantity)
    );
    // 100,000 USD cannot margin 100 BTC (6.5M USD) at the default 20x.
    assert_eq!(
        h.refused(Command::Place(order(BOB, Side::Buy, OrderKind::Limit { price: Price(600_000) }, 100_000))),
        ErrorCode::InsufficientMargin
    );
    let mut reduce = order(BOB, Side::Sell, OrderKind::Limit { price: Price(700_000) }, 1);
    reduce.reduce_only = true;
    assert_eq!(h.refused(Command::Place(reduce)), ErrorCode::ReduceOnly);
    assert_eq!(
        h.refused(Command::Withdraw {
            account: BOB,
            asset: AssetId::SETTLEMENT,
            amount: 200_000 * Money::SCALE
        }),
        ErrorCode::MarginSystem
    );
}

#[test]
fn reduce_only_orders_shrink_with_the_position() {
    let mut h = Harness::new();
    h.limit(ALICE, Side::Sell, 650_000, 1_000);
    h.ok(Command::Place(order(BOB, Side::Buy, OrderKind::Market, 1_000)));
    assert_eq!(h.position(BOB), 1_000);
    // Bob's reduce-only sell for his whole position rests above the market.
    let mut take_profit = order(BOB, Side::Sell, OrderKind::Limit { price: Price(700_000) }, 1_000);
    take_profit.reduce_only = true;
    h.ok(Command::Place(take_profit));
    // Bob sells 600 with a normal order into Alice's new bid: only 400 is left to reduce.
    h.limit(ALICE, Side::Buy, 649_000, 600);
    h.ok(Command::Place(order(BOB, Side::Sell, OrderKind::Market, 600)));
    assert_eq!(h.position(BOB), 400);
    let resting: Vec<_> =
        h.engine.book(BTC).unwrap().account_orders(BOB).map(|o| (o.qty.0, o.reduce_only)).collect();
    assert_eq!(resting, vec![(400, true)]);
    // Nor can it be amended back above the position.
    let id = h.engine.book(BTC).unwrap().account_orders(BOB).next().unwrap().id;
    assert_eq!(
        h.refused(Command::Amend { account: BOB, market: BTC, id, price: None, qty: Qty(401) }),
        ErrorCode::ReduceOnly
    );
}

#[test]
fn the_digest_depends_on_state_not_on_history_of_queries() {
    let mut a = Harness::new();
    let mut b = Harness::new();
    a.limit(ALICE, Side::Sell, 650_000, 10);
    b.limit(ALICE, Side::Sell, 650_000, 10);
    b.query(Command::Depth { market: BTC, levels: 3 });
    assert_eq!(a.engine.digest(), b.engine.digest());
    b.limit(BOB, Side::Buy, 640_000, 10);
    assert_ne!(a.engine.digest(), b.engine.digest());
}

/// The predicted funding rate after each index update of `updates` (milliseconds after a time on
/// a 5-second boundary, index price), on a book whose impact bid sits far above every index, so
/// that each premium sample moves the average. The book's orders rest just before update
/// number `book_from`; before that the book is empty, too thin to sample.
fn predicted_rates(impact_sample_ms: u64, updates: &[(u64, i64)], book_from: usize) -> Vec<i64> {
    const START_MS: u64 = 1_700_000_000_000;
    let mut engine = Engine::new();
    let mut seq = 0;
    let mut apply = |engine: &mut Engine, time_ms: u64, command: Command| {
        seq += 1;
        let mut out = Vec::new();
        engine.apply(&Sequenced { seq, time_ms, command: command.clone() }, &mut out);
        assert!(!out.iter().any(|e| matches!(e, Event::Rejected { .. })), "{command:?}: {out:?}");
    };
    let mut spec = presets::btc_perp(BTC.0);
    spec.impact_sample_ms = impact_sample_ms;
    apply(&mut engine, START_MS - 1, Command::CreateMarket(Box::new(spec)));
    for account in [ALICE, BOB] {
        apply(&mut engine, START_MS - 1, Command::OpenAccount { account });
        let amount = 1_000_000 * Money::SCALE;
        apply(&mut engine, START_MS - 1, Command::Deposit { account, asset: AssetId::SETTLEMENT, amount });
    }
    apply(&mut engine, START_MS - 1, Command::IndexPrice { market: BTC, price: Price(650_000) });
    // One BTC on each side, about 0.2 % above the index (under the funding cap): the impact bid
    // and ask are these prices.
    let rest = |account, side, price| {
        Command::Place(order(account, side, OrderKind::Limit { price: Price(price) }, 1_000))
    };
    let mut rates = Vec::new();
    for (i, &(offset_ms, index)) in updates.iter().enumerate() {
        let now = START_MS + offset_ms;
        if i == book_from {
            apply(&mut engine, now, rest(ALICE, Side::Buy, 651_500));
            apply(&mut engine, now, rest(BOB, Side::Sell, 651_510));
        }
        apply(&mut engine, now, Command::IndexPrice { market: BTC, price: Price(index) });
        rates.push(engine.clearinghouse().predicted_funding_rate(BTC).unwrap().0);
    }
    rates
}

#[test]
fn impact_prices_are_sampled_once_per_window() {
    // The index falls at every update, so every sample's premium is larger than the one before.
    let updates = [(0, 650_000), (1_000, 649_900), (4_999, 649_800), (5_000, 649_700), (9_000, 649_600)];
    let rates = predicted_rates(5_000, &updates, 0);
    // A sample at 0 ms and one at 5,000 ms; the updates in between leave the average alone.
    assert_eq!(rates[0], rates[1], "{rates:?}");
    assert_eq!(rates[1], rates[2], "{rates:?}");
    assert!(rates[3] > rates[2], "{rates:?}");
    assert_eq!(rates[3], rates[4], "{rates:?}");
    // Sampling on every update: each one moves the average.
    let every = predicted_rates(0, &updates, 0);
    assert!(every.windows(2).all(|w| w[1] > w[0]), "{every:?}");
    assert_eq!(every[0], rates[0], "the first sample is the same either way");
}

#[test]
fn a_book_too_thin_to_sample_uses_up_its_window() {
    let updates = [(0, 650_000), (1_000, 650_000), (5_000, 650_000)];
    // Empty at 0 ms: no sample, so the rate is the interest term alone (0.01 %) — and it stays
    // so at 1,000 ms although the book is deep by then, because the window was used up.
    let rates = predicted_rates(5_000, &updates, 1);
    assert_eq!(rates[..2], [10_000, 10_000], "{rates:?}");
    assert!(rates[2] > 10_000, "the next window samples the book: {rates:?}");
    // Sampling on every update takes the book as soon as it is there.
    let every = predicted_rates(0, &updates, 1);
    assert_eq!(every[0], 10_000, "{every:?}");
    assert!(every[1] > 10_000, "{every:?}");
}

#[test]
fn an_account_waiting_to_be_liquidated_may_not_trade_the_market() {
    use keel_liquidation::{LiquidationConfig, LiquidationEvent, Throttle};
    use keel_margin::LiquidationTarget;
    // A throttle too tight to close anything keeps a liquidation waiting in the queue.
    let throttle = Throttle { slice_ms: 1_000, max_notional: Money(1) };
    let mut h = Harness {
        engine: Engine::with_liquidation(LiquidationConfig {
            throttle: Some(throttle),
            ..LiquidationConfig::default()
        }),
        seq: 0,
    };
    let carol = AccountId(3);
    h.ok(Command::CreateMarket(Box::new(presets::btc_perp(BTC.0))));
    for (account, usd) in [(ALICE, 100_000), (BOB, 100_000), (carol, 1_000)] {
        h.ok(Command::OpenAccount { account });
        h.ok(Command::Deposit { account, asset: AssetId::SETTLEMENT, amount: usd * Money::SCALE });
    }
    h.ok(Command::IndexPrice { market: BTC, price: Price(650_000) });
    // Carol buys 0.2 BTC at 65,000 (13,000 of notional on 1,000): 7 % lower she is under water.
    h.limit(BOB, Side::Sell, 650_000, 200);
    h.limit(carol, Side::Buy, 650_000, 200);
    let events = h.ok(Command::IndexPrice { market: BTC, price: Price(600_000) });
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Liquidation(LiquidationEvent::Waiting { account, target: LiquidationTarget::Cross }) if *account == carol
        )),
        "{events:?}"
    );

    // Carol may neither add to nor close her position while it waits; Alice trades on.
    for side in [Side::Buy, Side::Sell] {
        let place = Command::Place(order(carol, side, OrderKind::Limit { price: Price(600_000) }, 1));
        assert_eq!(h.refused(place), ErrorCode::InLiquidation);
    }
    h.limit(ALICE, Side::Buy, 590_000, 1);
    assert!(h.position(carol) > 0, "the throttle holds the liquidation back");
}

/// Two stops triggered by one trade: a stop-limit that comes to rest, then a stop-market that
/// meets it, either from the same account (self-trade prevention cancels the resting one) or
/// from another (it fills as a maker). The resting stop's reservation must exist before its
/// cancel releases it or its fill shrinks it, though both happen within the one book operation
/// that triggered it.
#[test]
fn a_stop_that_rests_and_is_met_by_the_next_stop_of_the_same_trigger_keeps_its_reservation() {
    const CAROL: AccountId = AccountId(3);
    const DAVE: AccountId = AccountId(4);
    for (seller, cancelled) in [(CAROL, true), (DAVE, false)] {
        let mut h = Harness::new();
        for account in [CAROL, DAVE] {
            h.ok(Command::OpenAccount { account });
            h.ok(Command::Deposit { account, asset: AssetId::SETTLEMENT, amount: 100_000 * Money::SCALE });
        }
        // No trade yet, so no last price: both stops may be placed on either side of it.
        let buy_stop = OrderKind::StopLimit {
            trigger: Price(650_000),
            price: Price(650_000),
            reference: keel_types::StopReference::Last,
        };
        h.ok(Command::Place(order(CAROL, Side::Buy, buy_stop, 1)));
        let sell_stop =
            OrderKind::StopMarket { trigger: Price(700_000), reference: keel_types::StopReference::Last };
        let mut sell = order(seller, Side::Sell, sell_stop, 1);
        sell.stp = StpMode::CancelOldest;
        h.ok(Command::Place(sell));
        // A trade at 690,000 triggers both: Carol's buy rests at 650,000, the sell meets it.
        h.limit(ALICE, Side::Sell, 690_000, 1);
        let events = h.ok(Command::Place(order(BOB, Side::Buy, OrderKind::Market, 1)));
        let self_trade = events.iter().any(|e| {
            matches!(
                e,
                Event::Book {
                    event: keel_types::BookEvent::Cancelled {
                        reason: keel_types::CancelReason::SelfTrade,
                        ..
                    },
                    ..
                }
            )
        });
        assert_eq!(self_trade, cancelled, "{events:?}");
        assert_eq!(h.position(CAROL), if cancelled { 0 } else { 1 }, "{events:?}");
        h.engine.check_invariants().unwrap_or_else(|broken| panic!("{broken}: {events:?}"));
    }
}
