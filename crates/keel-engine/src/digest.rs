//! The state digest: one number that two engines with the same logical state agree on.
//!
//! The digest hashes a canonical view of the state — orders in priority order, stops in trigger
//! order, accounts in opening order, the liquidator's ordered state — not the raw structures:
//! slab slots and hash-table layouts legitimately differ between an engine that replayed the whole
//! journal and one restored from a snapshot, while the state they represent is the same.

use crate::codec;
use crate::engine::Engine;
use keel_types::Side;
use serde::Serialize;

/// 64-bit FNV-1a: simple, stable across platforms and versions, ample for comparing states.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn value<T: Serialize>(&mut self, value: &T, buffer: &mut Vec<u8>) {
        buffer.clear();
        codec::encode_value_into(value, buffer);
        self.write(&(buffer.len() as u64).to_le_bytes());
        self.write(buffer);
    }
}

impl Engine {
    /// A hash of the engine's whole logical state (see the module documentation).
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::new();
        let mut buffer = Vec::with_capacity(4096);
        h.value(&(self.last_seq, self.time_ms, self.next_order_id, self.next_adl_refresh_ms), &mut buffer);
        for market in &self.markets {
            h.value(&market.spec, &mut buffer);
            let book = &market.book;
            for side in [Side::Buy, Side::Sell] {
                for order in book.orders(side) {
                    h.value(
                        &(order.id, order.account, order.side, order.price, order.qty, order.tif, order.stp),
                        &mut buffer,
                    );
                    h.value(&order.reduce_only, &mut buffer);
                }
            }
            for stop in book.pending_stops() {
                h.value(&stop, &mut buffer);
            }
            h.value(&(book.last_trade_price(), book.mark_price()), &mut buffer);
        }
        let ch = &self.clearinghouse;
        for account in ch.accounts() {
            h.value(account, &mut buffer);
        }
        h.value(&(ch.fees_collected(), ch.net_deposits()), &mut buffer);
        for market in &self.markets {
            h.value(&ch.mark_price(market.id()).ok(), &mut buffer);
        }
        // The liquidator keeps only ordered containers, so its encoding is canonical.
        h.value(&self.liquidator, &mut buffer);
        h.0
    }
}
