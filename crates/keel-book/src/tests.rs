//! Unit tests: one or more per order type and rule of `docs/book.md`.

use crate::{BookConfig, OrderBook, OrderView};
use keel_types::{
    AccountId, Amend, BookEvent, CancelReason, NewOrder, OrderId, OrderKind, Price, Qty, RejectReason,
    Resting, Rounding, Side, StopReference, StpMode, TimeInForce,
};

const A: AccountId = AccountId(1);
const B: AccountId = AccountId(2);
const C: AccountId = AccountId(3);

fn book() -> OrderBook {
    OrderBook::new(BookConfig { max_price: Price(1_000_000), max_qty: Qty(1_000), ..BookConfig::default() })
}

fn limit(id: u64, account: AccountId, side: Side, price: i64, qty: i64) -> NewOrder {
    NewOrder::limit(OrderId(id), account, side, Price(price), Qty(qty))
}

fn place(book: &mut OrderBook, order: NewOrder) -> Vec<BookEvent> {
    let mut out = Vec::new();
    let _ = book.place(order, &mut out);
    book.check_invariants().unwrap();
    out
}

fn fills(events: &[BookEvent]) -> Vec<(u64, u64, i64, i64)> {
    events
        .iter()
        .filter_map(|e| match *e {
            BookEvent::Fill { maker, taker, price, qty, .. } => Some((maker.0, taker.0, price.0, qty.0)),
            _ => None,
        })
        .collect()
}

fn cancels(events: &[BookEvent]) -> Vec<(u64, i64, CancelReason)> {
    events
        .iter()
        .filter_map(|e| match *e {
            BookEvent::Cancelled { id, remaining, reason, .. } => Some((id.0, remaining.0, reason)),
            _ => None,
        })
        .collect()
}

fn rejection(events: &[BookEvent]) -> Option<RejectReason> {
    match events {
        [BookEvent::Rejected { reason, .. }] => Some(*reason),
        _ => None,
    }
}

/// Everything observable about the book, to prove a rejected command changed nothing.
fn state(book: &OrderBook) -> (Vec<OrderView>, Vec<OrderView>, Vec<NewOrder>, Option<Price>) {
    (
        book.orders(Side::Buy).collect(),
        book.orders(Side::Sell).collect(),
        book.pending_stops().collect(),
        book.last_trade_price(),
    )
}

fn ids(book: &OrderBook, side: Side) -> Vec<u64> {
    book.orders(side).map(|o| o.id.0).collect()
}

#[test]
fn limit_orders_rest_and_set_the_touch() {
    let mut b = book();
    let events = place(&mut b, limit(1, A, Side::Buy, 99, 5));
    assert!(matches!(events.as_slice(), [BookEvent::Accepted { .. }]));
    place(&mut b, limit(2, A, Side::Buy, 98, 7));
    place(&mut b, limit(3, B, Side::Sell, 101, 4));
    place(&mut b, limit(4, B, Side::Sell, 101, 6));
    assert_eq!((b.best_bid(), b.best_ask()), (Some(Price(99)), Some(Price(101))));
    assert_eq!(b.qty_at(Side::Sell, Price(101)), Qty(10));
    assert_eq!(b.qty_at(Side::Sell, Price(102)), Qty(0));
    assert_eq!(ids(&b, Side::Buy), vec![1, 2]);
    assert_eq!(ids(&b, Side::Sell), vec![3, 4]);
}

#[test]
fn matching_takes_best_price_first_then_oldest_and_prints_at_the_makers_price() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Sell, 102, 5));
    place(&mut b, limit(2, A, Side::Sell, 101, 3));
    place(&mut b, limit(3, B, Side::Sell, 101, 4));
    // A buy limited at 105 takes 101 (oldest first), then 102, each at the maker's price.
    let events = place(&mut b, limit(4, C, Side::Buy, 105, 9));
    assert_eq!(fills(&events), vec![(2, 4, 101, 3), (3, 4, 101, 4), (1, 4, 102, 2)]);
    assert_eq!(ids(&b, Side::Sell), vec![1]);
    assert_eq!(b.qty_at(Side::Sell, Price(102)), Qty(3));
    assert_eq!(b.last_trade_price(), Some(Price(102)));
    // The final fill reports what remains of both sides.
    assert!(matches!(
        events.last(),
        Some(BookEvent::Fill { maker_remaining: Qty(3), taker_remaining: Qty(0), .. })
    ));
}

#[test]
fn marketable_limit_stops_at_its_limit_and_rests_the_remainder() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Sell, 100, 2));
    place(&mut b, limit(2, A, Side::Sell, 103, 2));
    let events = place(&mut b, limit(3, B, Side::Buy, 101, 5));
    assert_eq!(fills(&events), vec![(1, 3, 100, 2)]);
    assert!(cancels(&events).is_empty());
    assert_eq!(b.best_bid(), Some(Price(101)));
    assert_eq!(b.order(OrderId(3)).unwrap().qty, Qty(3));
    assert_eq!(b.best_ask(), Some(Price(103)));
}

#[test]
fn ioc_cancels_its_unfilled_rest_with_an_event() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Buy, 100, 2));
    let events = place(&mut b, limit(2, B, Side::Sell, 99, 5).with_tif(TimeInForce::Ioc));
    assert_eq!(fills(&events), vec![(1, 2, 100, 2)]);
    assert_eq!(cancels(&events), vec![(2, 3, CancelReason::Unfilled)]);
    assert_eq!(b.resting_count(), 0);
    // An IOC that cannot trade at all is cancelled whole.
    let events = place(&mut b, limit(3, B, Side::Sell, 99, 5).with_tif(TimeInForce::Ioc));
    assert_eq!(cancels(&events), vec![(3, 5, CancelReason::Unfilled)]);
}

#[test]
fn fill_or_kill_fills_whole_or_changes_nothing() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Sell, 100, 2));
    place(&mut b, limit(2, A, Side::Sell, 101, 2));
    let before = state(&b);
    let events = place(&mut b, limit(3, B, Side::Buy, 101, 5).with_tif(TimeInForce::Fok));
    assert!(fills(&events).is_empty());
    assert_eq!(cancels(&events), vec![(3, 5, CancelReason::FillOrKill)]);
    assert_eq!(state(&b), before);
    let events = place(&mut b, limit(4, B, Side::Buy, 101, 4).with_tif(TimeInForce::Fok));
    assert_eq!(fills(&events), vec![(1, 4, 100, 2), (2, 4, 101, 2)]);
    assert_eq!(b.resting_count(), 0);
}

#[test]
fn fill_or_kill_does_not_count_own_orders_it_would_cancel_itself_on() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Sell, 100, 2));
    place(&mut b, limit(2, B, Side::Sell, 100, 5));
    // B's own order stands behind A's: with cancel-newest the taker would stop at it.
    let events = place(&mut b, limit(3, B, Side::Buy, 100, 3).with_tif(TimeInForce::Fok));
    assert_eq!(cancels(&events), vec![(3, 3, CancelReason::FillOrKill)]);
    // With cancel-oldest, B's resting order is removed and only A's counts: still not enough.
    let events = place(
        &mut b,
        limit(4, B, Side::Buy, 100, 3).with_tif(TimeInForce::Fok).with_stp(StpMode::CancelOldest),
    );
    assert_eq!(cancels(&events), vec![(4, 3, CancelReason::FillOrKill)]);
    assert_eq!(ids(&b, Side::Sell), vec![1, 2]);
    // Two lots are available from other accounts: a cancel-oldest FOK for 2 fills.
    let events = place(
        &mut b,
        limit(5, B, Side::Buy, 100, 2).with_tif(TimeInForce::Fok).with_stp(StpMode::CancelOldest),
    );
    assert_eq!(fills(&events), vec![(1, 5, 100, 2)]);
}

#[test]
fn post_only_is_rejected_if_it_would_take_and_rests_otherwise() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Sell, 100, 2));
    let before = state(&b);
    let events = place(&mut b, limit(2, B, Side::Buy, 100, 1).with_tif(TimeInForce::PostOnly));
    assert_eq!(rejection(&events), Some(RejectReason::PostOnlyWouldTake));
    assert_eq!(state(&b), before);
    let events = place(&mut b, limit(2, B, Side::Buy, 99, 1).with_tif(TimeInForce::PostOnly));
    assert!(matches!(events.as_slice(), [BookEvent::Accepted { .. }]));
    assert_eq!(b.best_bid(), Some(Price(99)));
}

#[test]
fn market_orders_never_walk_past_the_protection_price() {
    // 1% protection: from a best ask of 1,000 the market buy may reach 1,010, not 1,011.
    let mut b = OrderBook::new(BookConfig { market_protection_bps: 100, ..BookConfig::default() });
    let mut out = Vec::new();
    for (id, price) in [(1, 1_000), (2, 1_010), (3, 1_011)] {
        b.place(limit(id, A, Side::Sell, price, 1), &mut out).unwrap();
    }
    out.clear();
    b.place(NewOrder::market(OrderId(9), B, Side::Buy, Qty(5)), &mut out).unwrap();
    assert_eq!(fills(&out), vec![(1, 9, 1_000, 1), (2, 9, 1_010, 1)]);
    assert_eq!(cancels(&out), vec![(9, 3, CancelReason::PriceProtection)]);
    assert_eq!(b.best_ask(), Some(Price(1_011)));
    // Into an empty side a market order is cancelled whole.
    out.clear();
    b.place(NewOrder::market(OrderId(10), B, Side::Sell, Qty(5)), &mut out).unwrap();
    assert_eq!(cancels(&out), vec![(10, 5, CancelReason::Unfilled)]);
    // A market order that empties the side reports Unfilled, not protection.
    out.clear();
    b.place(NewOrder::market(OrderId(11), B, Side::Buy, Qty(5)).with_stp(StpMode::CancelNewest), &mut out)
        .unwrap();
    assert_eq!(fills(&out), vec![(3, 11, 1_011, 1)]);
    assert_eq!(cancels(&out), vec![(11, 4, CancelReason::Unfilled)]);
    // A post-only market order makes no sense.
    out.clear();
    assert_eq!(
        b.place(
            NewOrder::market(OrderId(12), B, Side::Buy, Qty(1)).with_tif(TimeInForce::PostOnly),
            &mut out
        ),
        Err(RejectReason::InvalidTimeInForce)
    );
}

#[test]
fn ids_are_unique_while_live_and_free_once_the_order_left() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Buy, 100, 2));
    let before = state(&b);
    assert_eq!(
        rejection(&place(&mut b, limit(1, B, Side::Sell, 200, 2))),
        Some(RejectReason::DuplicateOrderId)
    );
    assert_eq!(state(&b), before);
    // Filled: the id is free again.
    place(&mut b, limit(2, B, Side::Sell, 100, 2));
    assert!(!b.is_live(OrderId(1)));
    place(&mut b, limit(1, A, Side::Buy, 90, 1));
    // Cancelled: free again.
    let mut out = Vec::new();
    b.cancel(OrderId(1), CancelReason::User, &mut out).unwrap();
    assert_eq!(cancels(&out), vec![(1, 1, CancelReason::User)]);
    place(&mut b, limit(1, A, Side::Buy, 91, 1));
    assert_eq!(b.best_bid(), Some(Price(91)));
}

#[test]
fn the_id_index_is_sized_to_the_live_orders_not_to_the_capacity() {
    // A book sized for 65,536 orders that holds a few hundred at a time: orders come and go,
    // ids keep rising, and the index stays a table for a few hundred, not for the capacity.
    let mut b = book();
    assert_eq!(b.config().order_capacity, 1 << 16);
    let mut out = Vec::new();
    for id in 1..=20_000u64 {
        out.clear();
        let side = if id % 2 == 0 { Side::Buy } else { Side::Sell };
        let price = if side == Side::Buy { 100 - (id % 7) as i64 } else { 110 + (id % 7) as i64 };
        b.place(limit(id, A, side, price, 1), &mut out).unwrap();
        if id > 300 {
            b.cancel(OrderId(id - 300), CancelReason::User, &mut out).unwrap();
        }
    }
    b.check_invariants().unwrap();
    assert_eq!(b.resting_count(), 300);
    assert!(b.ids.capacity() <= 1_024, "an index for {} ids holds 300 orders", b.ids.capacity());
}

#[test]
fn cancel_of_anything_not_live_is_rejected() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Buy, 100, 2));
    place(&mut b, limit(2, B, Side::Sell, 100, 2)); // fills 1 and 2
    place(&mut b, limit(3, A, Side::Buy, 90, 2));
    let mut out = Vec::new();
    b.cancel(OrderId(3), CancelReason::User, &mut out).unwrap();
    let before = state(&b);
    for id in [1, 2, 3, 77] {
        out.clear();
        assert_eq!(b.cancel(OrderId(id), CancelReason::User, &mut out), Err(RejectReason::UnknownOrder));
        assert_eq!(rejection(&out), Some(RejectReason::UnknownOrder));
    }
    assert_eq!(state(&b), before);
}

#[test]
fn amend_down_keeps_priority_and_amend_up_or_reprice_loses_it() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Buy, 100, 5));
    place(&mut b, limit(2, B, Side::Buy, 100, 5));
    let mut out = Vec::new();
    b.amend(Amend { id: OrderId(1), price: None, qty: Qty(3) }, &mut out).unwrap();
    assert!(matches!(out[0], BookEvent::Amended { qty: Qty(3), priority_kept: true, .. }));
    assert_eq!(ids(&b, Side::Buy), vec![1, 2]);
    assert_eq!(b.qty_at(Side::Buy, Price(100)), Qty(8));
    out.clear();
    b.amend(Amend { id: OrderId(1), price: None, qty: Qty(4) }, &mut out).unwrap();
    assert!(matches!(out[0], BookEvent::Amended { qty: Qty(4), priority_kept: false, .. }));
    assert_eq!(ids(&b, Side::Buy), vec![2, 1]);
    out.clear();
    b.amend(Amend { id: OrderId(2), price: Some(Price(100)), qty: Qty(5) }, &mut out).unwrap();
    assert!(
        matches!(out[0], BookEvent::Amended { priority_kept: true, .. }),
        "same price and qty keeps its place"
    );
    assert_eq!(ids(&b, Side::Buy), vec![2, 1]);
    out.clear();
    b.amend(Amend { id: OrderId(2), price: Some(Price(99)), qty: Qty(5) }, &mut out).unwrap();
    b.amend(Amend { id: OrderId(2), price: Some(Price(100)), qty: Qty(5) }, &mut out).unwrap();
    assert_eq!(ids(&b, Side::Buy), vec![1, 2]);
    b.check_invariants().unwrap();
}

#[test]
fn amend_that_crosses_trades_at_the_resting_prices() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Sell, 101, 2));
    place(&mut b, limit(2, A, Side::Sell, 102, 2));
    place(&mut b, limit(3, B, Side::Buy, 99, 5));
    let mut out = Vec::new();
    b.amend(Amend { id: OrderId(3), price: Some(Price(105)), qty: Qty(5) }, &mut out).unwrap();
    assert_eq!(fills(&out), vec![(1, 3, 101, 2), (2, 3, 102, 2)]);
    assert_eq!(b.order(OrderId(3)).map(|o| (o.price, o.qty)), Some((Price(105), Qty(1))));
    b.check_invariants().unwrap();
}

#[test]
fn bad_amends_are_rejected_and_change_nothing() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Sell, 101, 2));
    place(&mut b, limit(2, B, Side::Buy, 99, 5).with_tif(TimeInForce::PostOnly));
    let stop = NewOrder {
        kind: OrderKind::StopMarket { trigger: Price(120), reference: StopReference::Mark },
        ..limit(3, B, Side::Buy, 1, 1)
    };
    place(&mut b, stop);
    let before = state(&b);
    let cases = [
        (Amend { id: OrderId(2), price: None, qty: Qty(0) }, RejectReason::InvalidQuantity),
        (Amend { id: OrderId(2), price: None, qty: Qty(-1) }, RejectReason::InvalidQuantity),
        (Amend { id: OrderId(2), price: None, qty: Qty(1_001) }, RejectReason::QuantityTooLarge),
        (Amend { id: OrderId(2), price: Some(Price(0)), qty: Qty(1) }, RejectReason::InvalidPrice),
        (Amend { id: OrderId(2), price: Some(Price(1_000_001)), qty: Qty(1) }, RejectReason::PriceOutOfRange),
        (Amend { id: OrderId(2), price: Some(Price(101)), qty: Qty(5) }, RejectReason::PostOnlyWouldTake),
        (Amend { id: OrderId(9), price: None, qty: Qty(1) }, RejectReason::UnknownOrder),
        (Amend { id: OrderId(3), price: None, qty: Qty(1) }, RejectReason::StopNotAmendable),
    ];
    for (amend, reason) in cases {
        let mut out = Vec::new();
        assert_eq!(b.amend(amend, &mut out), Err(reason), "{amend:?}");
        assert_eq!(rejection(&out), Some(reason));
        assert_eq!(state(&b), before);
    }
}

#[test]
fn bad_new_orders_are_rejected_and_change_nothing() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Sell, 101, 2));
    let before = state(&b);
    let stop_limit = |trigger, price| NewOrder {
        kind: OrderKind::StopLimit {
            trigger: Price(trigger),
            price: Price(price),
            reference: StopReference::Last,
        },
        ..limit(5, B, Side::Buy, 1, 1)
    };
    let cases = [
        (limit(2, B, Side::Buy, 100, 0), RejectReason::InvalidQuantity),
        (limit(2, B, Side::Buy, 100, -3), RejectReason::InvalidQuantity),
        (limit(2, B, Side::Buy, 100, 1_001), RejectReason::QuantityTooLarge),
        (limit(2, B, Side::Buy, 0, 1), RejectReason::InvalidPrice),
        (limit(2, B, Side::Buy, -5, 1), RejectReason::InvalidPrice),
        (limit(2, B, Side::Buy, 1_000_001, 1), RejectReason::PriceOutOfRange),
        (limit(1, B, Side::Buy, 100, 1), RejectReason::DuplicateOrderId),
        (limit(2, B, Side::Buy, 101, 1).with_tif(TimeInForce::PostOnly), RejectReason::PostOnlyWouldTake),
        (stop_limit(0, 100), RejectReason::InvalidPrice),
        (stop_limit(100, 0), RejectReason::InvalidPrice),
        (stop_limit(100, 100).with_tif(TimeInForce::PostOnly), RejectReason::InvalidTimeInForce),
    ];
    for (order, reason) in cases {
        let mut out = Vec::new();
        assert_eq!(b.place(order, &mut out), Err(reason), "{order:?}");
        assert_eq!(rejection(&out), Some(reason));
        assert_eq!(state(&b), before);
    }
}

#[test]
fn self_trade_prevention_modes() {
    let setup = || {
        let mut b = book();
        place(&mut b, limit(1, A, Side::Sell, 100, 2));
        place(&mut b, limit(2, B, Side::Sell, 100, 2));
        place(&mut b, limit(3, C, Side::Sell, 100, 2));
        b
    };
    // Cancel newest: the taker stops at B's own order; B's order stays.
    let mut b = setup();
    let events = place(&mut b, limit(9, B, Side::Buy, 100, 5));
    assert_eq!(fills(&events), vec![(1, 9, 100, 2)]);
    assert_eq!(cancels(&events), vec![(9, 3, CancelReason::SelfTrade)]);
    assert_eq!(ids(&b, Side::Sell), vec![2, 3]);
    // Cancel oldest: B's resting order goes and matching continues with C.
    let mut b = setup();
    let events = place(&mut b, limit(9, B, Side::Buy, 100, 5).with_stp(StpMode::CancelOldest));
    assert_eq!(fills(&events), vec![(1, 9, 100, 2), (3, 9, 100, 2)]);
    assert_eq!(cancels(&events), vec![(2, 2, CancelReason::SelfTrade)]);
    assert_eq!(b.order(OrderId(9)).unwrap().qty, Qty(1), "the rest of a GTC taker rests");
    // Cancel both: B's resting order, then the taker's rest.
    let mut b = setup();
    let events = place(&mut b, limit(9, B, Side::Buy, 100, 5).with_stp(StpMode::CancelBoth));
    assert_eq!(fills(&events), vec![(1, 9, 100, 2)]);
    assert_eq!(cancels(&events), vec![(2, 2, CancelReason::SelfTrade), (9, 3, CancelReason::SelfTrade)]);
    assert_eq!(ids(&b, Side::Sell), vec![3]);
    assert!(b.order(OrderId(9)).is_none());
}

#[test]
fn stops_trigger_on_their_reference_in_placement_order() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Sell, 110, 10));
    let stop_market = |id, trigger| NewOrder {
        kind: OrderKind::StopMarket { trigger: Price(trigger), reference: StopReference::Mark },
        ..limit(id, B, Side::Buy, 1, 2)
    };
    place(&mut b, stop_market(10, 106));
    place(&mut b, stop_market(11, 104));
    place(
        &mut b,
        NewOrder {
            kind: OrderKind::StopLimit {
                trigger: Price(105),
                price: Price(108),
                reference: StopReference::Mark,
            },
            ..limit(12, C, Side::Buy, 1, 3)
        },
    );
    place(
        &mut b,
        NewOrder {
            kind: OrderKind::StopMarket { trigger: Price(104), reference: StopReference::Last },
            ..limit(13, C, Side::Buy, 1, 1)
        },
    );
    assert_eq!(b.stop_count(), 4);
    let mut out = Vec::new();
    // Mark 103 reaches nothing.
    assert_eq!(b.trigger_stops(StopReference::Mark, Price(103), &mut out), 0);
    assert!(out.is_empty());
    // Mark 105 reaches 11 (104) and 12 (105), not 10 (106); they run in placement order.
    assert_eq!(b.trigger_stops(StopReference::Mark, Price(105), &mut out), 2);
    let triggered: Vec<u64> = out
        .iter()
        .filter_map(|e| match e {
            BookEvent::Triggered { id, .. } => Some(id.0),
            _ => None,
        })
        .collect();
    assert_eq!(triggered, vec![11, 12]);
    assert_eq!(fills(&out), vec![(1, 11, 110, 2)]);
    // The stop-limit at 108 cannot reach the ask at 110 and rests as a limit order.
    assert_eq!(b.order(OrderId(12)).map(|o| o.price), Some(Price(108)));
    // The last-price stop is untouched by mark updates; placing a mark stop already reached is refused.
    assert_eq!(b.stop_count(), 2);
    let before = state(&b);
    assert_eq!(rejection(&place(&mut b, stop_market(14, 105))), Some(RejectReason::StopWouldTrigger));
    assert_eq!(state(&b), before);
    // A pending stop can be cancelled, and cannot be found among resting orders.
    out.clear();
    b.cancel(OrderId(13), CancelReason::User, &mut out).unwrap();
    assert_eq!(cancels(&out), vec![(13, 1, CancelReason::User)]);
    assert!(b.order(OrderId(10)).is_none() && b.is_live(OrderId(10)));
    b.check_invariants().unwrap();
}

#[test]
fn sell_stops_trigger_on_a_falling_last_price() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Buy, 95, 10));
    place(&mut b, limit(2, A, Side::Buy, 92, 2));
    place(&mut b, limit(5, A, Side::Buy, 90, 10));
    place(
        &mut b,
        NewOrder {
            kind: OrderKind::StopMarket { trigger: Price(96), reference: StopReference::Last },
            ..limit(3, B, Side::Sell, 1, 12)
        },
    );
    // A trade at 95 moves the last price to 95; the caller feeds it back.
    place(&mut b, limit(4, C, Side::Sell, 95, 1));
    assert_eq!(b.last_trade_price(), Some(Price(95)));
    let mut out = Vec::new();
    b.trigger_stops(StopReference::Last, b.last_trade_price().unwrap(), &mut out);
    // The triggered stop sells as a market order: 5% protection from 95 stops it at 91, so the
    // bid at 90 is out of its reach and the rest is cancelled.
    assert_eq!(fills(&out), vec![(1, 3, 95, 9), (2, 3, 92, 2)]);
    assert_eq!(cancels(&out), vec![(3, 1, CancelReason::PriceProtection)]);
    b.check_invariants().unwrap();
}

#[test]
fn reduce_only_is_carried_and_can_be_shrunk_without_losing_priority() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Sell, 100, 5).reduce_only());
    place(&mut b, limit(2, B, Side::Sell, 100, 5));
    assert!(b.order(OrderId(1)).unwrap().reduce_only);
    let mut out = Vec::new();
    b.amend(Amend { id: OrderId(1), price: None, qty: Qty(2) }, &mut out).unwrap();
    assert_eq!(ids(&b, Side::Sell), vec![1, 2]);
    b.cancel(OrderId(1), CancelReason::ReduceOnly, &mut out).unwrap();
    assert_eq!(cancels(&out), vec![(1, 2, CancelReason::ReduceOnly)]);
}

#[test]
fn cancel_all_removes_an_accounts_orders_and_stops_oldest_first() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Buy, 99, 1));
    place(&mut b, limit(2, B, Side::Buy, 99, 1));
    place(&mut b, limit(3, A, Side::Sell, 105, 1));
    place(
        &mut b,
        NewOrder {
            kind: OrderKind::StopMarket { trigger: Price(120), reference: StopReference::Mark },
            ..limit(4, A, Side::Buy, 1, 1)
        },
    );
    let mut out = Vec::new();
    assert_eq!(b.cancel_all(A, CancelReason::Liquidation, &mut out), 3);
    assert_eq!(
        cancels(&out),
        vec![
            (1, 1, CancelReason::Liquidation),
            (3, 1, CancelReason::Liquidation),
            (4, 1, CancelReason::Liquidation)
        ]
    );
    assert_eq!(ids(&b, Side::Buy), vec![2]);
    assert_eq!(b.stop_count(), 0);
    assert_eq!(b.account_orders(A).count(), 0);
    assert_eq!(b.account_orders(B).map(|o| o.id.0).collect::<Vec<_>>(), vec![2]);
    b.check_invariants().unwrap();
}

#[test]
fn depth_and_impact_queries() {
    let mut b = book();
    for (id, price, qty) in [(1, 100, 2), (2, 101, 3), (3, 103, 5), (4, 100, 1)] {
        place(&mut b, limit(id, A, Side::Sell, price, qty));
    }
    place(&mut b, limit(5, B, Side::Buy, 98, 4));
    let depth: Vec<(i64, i64, u32)> =
        b.levels(Side::Sell).take(2).map(|l| (l.price.0, l.qty.0, l.orders)).collect();
    assert_eq!(depth, vec![(100, 3, 2), (101, 3, 1)]);
    // Buying 5 lots: 3 at 100 + 2 at 101 = 502 → average 100.4.
    let est = b.estimate_fill_qty(Side::Buy, Qty(5));
    assert_eq!((est.qty, est.notional, est.worst_price, est.complete), (Qty(5), 502, Some(Price(101)), true));
    assert_eq!(est.average_price(Rounding::Floor), Some(Price(100)));
    assert_eq!(est.average_price(Rounding::Ceil), Some(Price(101)));
    // More than the side holds.
    let est = b.estimate_fill_qty(Side::Buy, Qty(50));
    assert_eq!((est.qty, est.complete), (Qty(11), false));
    // Spending 610 tick·lots: 300 buys 3 at 100, 303 buys 3 at 101, 7 left cannot buy at 103.
    let est = b.estimate_fill_notional(Side::Buy, 610);
    assert_eq!((est.qty, est.notional, est.worst_price, est.complete), (Qty(6), 603, Some(Price(101)), true));
    // Exactly the first two levels (300 + 303): both taken whole, nothing left for 103.
    let est = b.estimate_fill_notional(Side::Buy, 603);
    assert_eq!((est.qty, est.notional, est.worst_price, est.complete), (Qty(6), 603, Some(Price(101)), true));
    // One short of the second level's last lot: that lot is not affordable.
    let est = b.estimate_fill_notional(Side::Buy, 602);
    assert_eq!((est.qty, est.notional, est.worst_price, est.complete), (Qty(5), 502, Some(Price(101)), true));
    // More than the whole side costs (300 + 303 + 515): everything, and not complete.
    let est = b.estimate_fill_notional(Side::Buy, 5_000);
    assert_eq!(
        (est.qty, est.notional, est.worst_price, est.complete),
        (Qty(11), 1_118, Some(Price(103)), false)
    );
    assert_eq!(b.estimate_fill_qty(Side::Sell, Qty(1)).average_price(Rounding::Floor), Some(Price(98)));
    // Depth within 1 tick of 101: levels 100 and 101; within 2 ticks 103 counts too.
    assert_eq!(b.qty_within(Side::Sell, Price(101), 1), Qty(6));
    assert_eq!(b.qty_within(Side::Sell, Price(101), 2), Qty(11));
    assert_eq!(b.qty_within(Side::Sell, Price(101), 0), Qty(3));
    assert_eq!(b.qty_within(Side::Buy, Price(100), 1), Qty(0));
    assert_eq!(b.qty_within(Side::Buy, Price(100), 2), Qty(4));
}

#[test]
fn prefetching_any_account_is_harmless() {
    let mut book = book();
    place(&mut book, limit(1, A, Side::Buy, 100, 5));
    let before = state(&book);
    // Known, never seen, and beyond the flat slot array: none may panic or change anything.
    for account in [A, C, AccountId(u32::MAX)] {
        book.prefetch_account_slot(account);
        book.prefetch_account_orders(account);
    }
    assert_eq!(state(&book), before);
}

#[test]
fn a_gated_placement_runs_the_book_checks_then_the_gate_and_a_refusal_changes_nothing() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Sell, 101, 5));
    let before = state(&b);
    let mut out = Vec::new();

    // The book's own rules come first: the gate is not asked about an order the book refuses.
    let mut asked = false;
    let refused = b.place_gated(limit(2, B, Side::Buy, 101, 0), &mut out, |_, _| {
        asked = true;
        Ok::<(), &str>(())
    });
    assert_eq!(refused, Err(crate::Refusal::Book(RejectReason::InvalidQuantity)));
    assert!(!asked);

    // The gate sees the book as it is and the order as submitted; its refusal is passed back.
    let refused = b.place_gated(limit(2, B, Side::Buy, 101, 3), &mut out, |book, order| {
        assert_eq!(book.best_ask(), Some(Price(101)));
        assert_eq!(order.qty, Qty(3));
        Err("no margin")
    });
    assert_eq!(refused, Err(crate::Refusal::Gate("no margin")));
    assert!(out.is_empty(), "a refusal emits no event: {out:?}");
    assert_eq!(state(&b), before);
    b.check_invariants().unwrap();

    // Let through, the order enters exactly as `place` enters it.
    let mut reference = book();
    place(&mut reference, limit(1, A, Side::Sell, 101, 5));
    let expected = place(&mut reference, limit(2, B, Side::Buy, 101, 3));
    b.place_gated(limit(2, B, Side::Buy, 101, 3), &mut out, |_, _| Ok::<(), &str>(())).unwrap();
    assert_eq!(out, expected);
    assert_eq!(state(&b), state(&reference));
    b.check_invariants().unwrap();
}

#[test]
fn an_owner_checked_cancel_takes_only_the_accounts_own_orders() {
    let mut b = book();
    place(&mut b, limit(1, A, Side::Sell, 101, 5));
    let stop = NewOrder {
        kind: OrderKind::StopMarket { trigger: Price(120), reference: StopReference::Mark },
        ..limit(2, A, Side::Buy, 1, 2)
    };
    place(&mut b, stop);
    let before = state(&b);
    let mut out = Vec::new();

    // Another account's orders and an id that is not live are refused alike, silently.
    for (account, id) in [(B, 1), (B, 2), (A, 3)] {
        assert_eq!(
            b.cancel_of(account, OrderId(id), CancelReason::User, &mut out),
            Err(RejectReason::UnknownOrder)
        );
    }
    assert!(out.is_empty(), "a refusal emits no event: {out:?}");
    assert_eq!(state(&b), before);

    // The owner's cancels are those of `cancel`: the resting order says where it rested.
    b.cancel_of(A, OrderId(1), CancelReason::User, &mut out).unwrap();
    b.cancel_of(A, OrderId(2), CancelReason::User, &mut out).unwrap();
    assert_eq!(cancels(&out), vec![(1, 5, CancelReason::User), (2, 2, CancelReason::User)]);
    assert!(matches!(
        out[0],
        BookEvent::Cancelled { resting: Some(Resting { side: Side::Sell, price: Price(101) }), .. }
    ));
    assert!(matches!(out[1], BookEvent::Cancelled { resting: None, .. }));
    assert!(!b.is_live(OrderId(1)) && !b.is_live(OrderId(2)));
    b.check_invariants().unwrap();
}
