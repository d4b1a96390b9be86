//! Memory per resting order: one million resting orders, counted by a global allocator that
//! tracks live bytes.

use keel_book::{BookConfig, OrderBook};
use keel_types::{AccountId, BookEvent, NewOrder, OrderId, Price, Qty, Side};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Tracking;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

const ORDERS: usize = 1_000_000;

#[test]
fn a_million_resting_orders_fit_in_200_mb_with_at_most_64_bytes_of_overhead_each() {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut book = OrderBook::new(BookConfig {
        order_capacity: ORDERS,
        level_capacity: 1 << 15,
        account_capacity: 1 << 12,
        ..BookConfig::default()
    });
    let mut events: Vec<BookEvent> = Vec::with_capacity(16);
    // 10,000 levels a side of 50 orders each, from 1,000 accounts; bids and asks never cross.
    for i in 0..ORDERS {
        events.clear();
        let (side, price) = if i % 2 == 0 {
            (Side::Buy, 1_000_000 - 1 - (i / 2 % 10_000) as i64)
        } else {
            (Side::Sell, 1_000_000 + 1 + (i / 2 % 10_000) as i64)
        };
        let order =
            NewOrder::limit(OrderId(i as u64 + 1), AccountId((i % 1_000) as u32), side, Price(price), Qty(1));
        book.place(order, &mut events).unwrap();
    }
    let total = (LIVE_BYTES.load(Ordering::Relaxed) - before) as usize;
    assert_eq!(book.resting_count(), ORDERS);
    let overhead = (total - ORDERS * OrderBook::ORDER_SLOT_BYTES) / ORDERS;
    assert!(total < 200 << 20, "{ORDERS} resting orders took {} MB", total >> 20);
    assert!(
        overhead <= 64,
        "each resting order costs {overhead} bytes beyond its {}-byte slab slot",
        OrderBook::ORDER_SLOT_BYTES
    );
    eprintln!(
        "{ORDERS} resting orders: {:.1} MB in all, {} B slab slot + {overhead} B overhead per order",
        total as f64 / 1048576.0,
        OrderBook::ORDER_SLOT_BYTES
    );
}
