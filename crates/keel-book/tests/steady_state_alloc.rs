//! The matching path allocates nothing in steady state: a counting global allocator watches a
//! long mixed run (rest, take, cancel, amend, stops, cancel-all) inside the configured capacities.
//!
//! Only the test's own thread is counted: the test harness's main thread allocates while the
//! test runs (its own bookkeeping and output), and on a busy machine those allocations used to
//! land inside the counted window now and then.

use keel_book::{BookConfig, OrderBook};
use keel_types::{
    AccountId, Amend, BookEvent, CancelReason, NewOrder, OrderId, OrderKind, Price, Qty, Side, StopReference,
    StpMode, TimeInForce,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted (const-initialized: reading it never
    /// allocates, so the allocator may consult it).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTED.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A small deterministic generator (xorshift), so the run needs no allocation of its own.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
}

fn run(book: &mut OrderBook, rng: &mut Rng, events: &mut Vec<BookEvent>, next_id: &mut u64, steps: usize) {
    for _ in 0..steps {
        events.clear();
        let id = OrderId(*next_id);
        *next_id += 1;
        let account = AccountId(rng.below(50) as u32);
        let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
        let offset = rng.below(40) - 5;
        let price = Price(match side {
            Side::Buy => 10_000 - offset,
            Side::Sell => 10_000 + offset,
        });
        let recent = OrderId(next_id.saturating_sub(1 + rng.below(200) as u64));
        match rng.below(20) {
            0..=8 => {
                let _ = book.place(NewOrder::limit(id, account, side, price, Qty(1 + rng.below(20))), events);
            }
            9..=10 => {
                let order = NewOrder::limit(id, account, side, price, Qty(1 + rng.below(30)))
                    .with_tif(TimeInForce::Ioc)
                    .with_stp(StpMode::CancelOldest);
                let _ = book.place(order, events);
            }
            11 => {
                let _ = book.place(NewOrder::market(id, account, side, Qty(1 + rng.below(10))), events);
            }
            12..=15 => {
                let _ = book.cancel(recent, CancelReason::User, events);
            }
            16..=17 => {
                let amend = Amend { id: recent, price: Some(price), qty: Qty(1 + rng.below(20)) };
                let _ = book.amend(amend, events);
            }
            18 => {
                let trigger = Price(10_000 + rng.below(60) - 30);
                let stop = NewOrder {
                    kind: OrderKind::StopMarket { trigger, reference: StopReference::Mark },
                    ..NewOrder::limit(id, account, side, price, Qty(1 + rng.below(5)))
                };
                let _ = book.place(stop, events);
                book.trigger_stops(StopReference::Mark, Price(10_000 + rng.below(60) - 30), events);
            }
            _ => {
                book.cancel_all(account, CancelReason::CancelAll, events);
            }
        }
    }
}

#[test]
fn steady_state_matching_does_not_allocate() {
    let mut book = OrderBook::new(BookConfig {
        order_capacity: 1 << 14,
        level_capacity: 1 << 10,
        account_capacity: 256,
        ..BookConfig::default()
    });
    let mut events = Vec::with_capacity(4096);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut next_id = 1;
    // Warm up: let every structure reach its working size.
    run(&mut book, &mut rng, &mut events, &mut next_id, 20_000);
    book.check_invariants().unwrap();
    let resting = book.resting_count();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTED.with(|c| c.set(true));
    run(&mut book, &mut rng, &mut events, &mut next_id, 200_000);
    COUNTED.with(|c| c.set(false));
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    book.check_invariants().unwrap();
    assert!(resting > 100, "the run should keep a populated book, had {resting} resting orders");
    assert_eq!(allocations, 0, "the matching path allocated {allocations} times in steady state");
}
