//! Arbitrary bytes as a snapshot: as a whole file image (header + payload) through
//! `verify_snapshot_bytes`, and as a payload through the decode and restore that recovery uses
//! (`store::recover`: `codec::decode::<Engine>` then `Engine::restored`). Nothing may panic or
//! allocate without bound; an engine that decodes is then used a little (digest, queries, a few
//! commands), so that a decoded but inconsistent state that would panic later is found too.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none snapshot_bytes -- -max_total_time=60`.

#![no_main]

use keel_engine::checksum::crc32c;
use keel_engine::snapshot_file::{SNAPSHOT_HEADER_LEN, encode_header, verify_snapshot_bytes};
use keel_engine::{Command, Engine, PlaceOrder, Sequenced, codec};
use keel_types::{OrderId, OrderKind, Price, Qty, Side, StpMode, TimeInForce};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As a file image, named for the sequence number its header claims, so that mutated inputs
    // get past the name check to the length and checksum checks.
    let seq_in_header = data.get(16..24).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
    if let Ok(payload) = verify_snapshot_bytes(data, seq_in_header) {
        assert_eq!(payload, SNAPSHOT_HEADER_LEN..data.len(), "the payload is the rest of the file");
        restore_and_use(&data[payload]);
    }

    // The same bytes under a correct header must verify to exactly themselves, and only under
    // the file name of their own sequence number.
    let seq = u64::from(crc32c(data));
    let image = file_image(seq, data);
    assert_eq!(verify_snapshot_bytes(&image, seq), Ok(SNAPSHOT_HEADER_LEN..image.len()));
    assert!(verify_snapshot_bytes(&image, seq + 1).is_err(), "a snapshot verified under another seq");

    // As a payload that passed its checksum (a file edited by hand, or written by a buggy build).
    restore_and_use(data);
});

/// What `write_snapshot` writes for `payload` at `seq`.
fn file_image(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut image = encode_header(seq, payload).to_vec();
    image.extend_from_slice(payload);
    image
}

/// Decodes and restores `payload` exactly as recovery does, then reads and drives the engine.
fn restore_and_use(payload: &[u8]) {
    let Ok(engine) = codec::decode::<Engine>("snapshot", payload) else { return };
    let mut engine = engine.restored();
    let before = engine.digest();
    // A restored engine re-encodes to a payload that restores to the same state.
    let again =
        codec::decode::<Engine>("snapshot", &codec::encode(&engine)).expect("re-encoded snapshot decodes");
    assert_eq!(again.restored().digest(), before, "a snapshot's re-encoding restores to another state");

    let market = engine.market_ids().next();
    let account = engine.clearinghouse().accounts().first().map(|a| a.id());
    let mut commands = vec![Command::Digest, Command::Tick];
    if let Some(account) = account {
        commands.push(Command::AccountView { account });
    }
    if let Some(market) = market {
        commands.push(Command::Depth { market, levels: 4 });
        commands.push(Command::Heatmap { market, bucket_ticks: 10 });
        let book = engine.book(market).expect("a listed market has a book");
        let (bid, ask) = (book.best_bid(), book.best_ask());
        let resting = [Side::Buy, Side::Sell].into_iter().find_map(|side| book.orders(side).next());
        if let Some(order) = resting {
            commands.push(Command::Amend {
                account: order.account,
                market,
                id: order.id,
                price: None,
                qty: Qty(order.qty.0.saturating_add(1)),
            });
            commands.push(Command::Cancel { account: order.account, market, id: order.id });
        }
        if let Some(account) = account {
            // Orders that take the touch on each side, then rest, then everything is cancelled.
            for (side, price) in [(Side::Buy, ask), (Side::Sell, bid), (Side::Buy, bid)] {
                let price = price.unwrap_or(Price(1));
                commands.push(Command::Place(PlaceOrder {
                    account,
                    market,
                    side,
                    kind: OrderKind::Limit { price },
                    qty: Qty(1),
                    tif: TimeInForce::Gtc,
                    stp: StpMode::CancelNewest,
                    reduce_only: false,
                }));
            }
            commands.push(Command::Place(PlaceOrder {
                account,
                market,
                side: Side::Sell,
                kind: OrderKind::Market,
                qty: Qty(2),
                tif: TimeInForce::Ioc,
                stp: StpMode::CancelNewest,
                reduce_only: false,
            }));
            commands.push(Command::CancelAll { account, market: None });
        }
        let index = bid.or(ask).or(engine.book(market).and_then(|b| b.mark_price())).unwrap_or(Price(1));
        commands.push(Command::IndexPrice { market, price: index });
        commands.push(Command::Cancel {
            account: account.unwrap_or_default(),
            market,
            id: OrderId(u64::MAX),
        });
        commands.push(Command::SettleFunding { market });
    }
    commands.push(Command::Digest);

    let mut events = Vec::new();
    let mut seq = engine.last_seq();
    let mut time_ms = engine.time_ms();
    for command in commands {
        if !command.is_query() {
            seq = seq.saturating_add(1);
            time_ms = time_ms.saturating_add(1_000);
        }
        events.clear();
        engine.apply(&Sequenced { seq, time_ms, command }, &mut events);
    }
    let _ = engine.digest();
}
