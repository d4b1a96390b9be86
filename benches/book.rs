//! Criterion micro-benchmarks of the matching core: add, cancel, amend, and matches that take
//! one level or sweep ten, each against a book with realistic background depth.
//!
//! Run with `cargo bench --bench book`. Each benchmark times its operation in chunks of 1,000:
//! the untimed part of a chunk prepares exactly what the timed part consumes (orders to cancel,
//! levels to take), so every measured operation does the same work on a book of the same shape.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keel_book::{BookConfig, OrderBook};
use keel_types::{
    AccountId, Amend, BookEvent, CancelReason, NewOrder, OrderId, Price, Qty, Side, TimeInForce,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

const CHUNK: u64 = 1_000;
const MID: i64 = 1_000_000;
/// Background depth: levels per side and orders per level.
const DEPTH_LEVELS: i64 = 500;
const ORDERS_PER_LEVEL: u64 = 4;

struct Bench {
    book: OrderBook,
    events: Vec<BookEvent>,
    next_id: u64,
}

impl Bench {
    /// A book with 500 levels a side, 4 orders each, from 20 accounts, spread 2 ticks.
    fn new() -> Bench {
        let config = BookConfig {
            order_capacity: 1 << 16,
            level_capacity: 1 << 14,
            account_capacity: 1 << 10,
            ..BookConfig::default()
        };
        let mut bench =
            Bench { book: OrderBook::new(config), events: Vec::with_capacity(1 << 12), next_id: 1 };
        for level in 0..DEPTH_LEVELS {
            for _ in 0..ORDERS_PER_LEVEL {
                bench.place(Side::Buy, MID - 1 - level - 1_000, 5);
                bench.place(Side::Sell, MID + 1 + level + 1_000, 5);
            }
        }
        bench
    }

    fn id(&mut self) -> OrderId {
        self.next_id += 1;
        OrderId(self.next_id)
    }

    fn place(&mut self, side: Side, price: i64, qty: i64) -> OrderId {
        let id = self.id();
        let account = AccountId((id.0 % 20) as u32);
        self.events.clear();
        let _ = self.book.place(NewOrder::limit(id, account, side, Price(price), Qty(qty)), &mut self.events);
        id
    }

    fn take(&mut self, side: Side, limit: i64, qty: i64) {
        let id = self.id();
        self.events.clear();
        let order =
            NewOrder::limit(id, AccountId(999), side, Price(limit), Qty(qty)).with_tif(TimeInForce::Ioc);
        let _ = self.book.place(order, &mut self.events);
    }
}

/// Runs `iters` timed operations in chunks: `prepare` (untimed) then `run` (timed) per chunk.
fn chunked(
    iters: u64,
    bench: &mut Bench,
    mut prepare: impl FnMut(&mut Bench, u64) -> Vec<OrderId>,
    mut run: impl FnMut(&mut Bench, &[OrderId], u64),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = CHUNK.min(iters - done);
        let ids = prepare(bench, n);
        let start = Instant::now();
        run(bench, &ids, n);
        total += start.elapsed();
        done += n;
    }
    total
}

/// A price inside the spread window (the background book starts 1,000 ticks away), so new levels
/// form near the touch as in live trading.
fn near_touch(side: Side, i: u64) -> i64 {
    let offset = (i % 50) as i64;
    match side {
        Side::Buy => MID - 1 - offset,
        Side::Sell => MID + 1 + offset,
    }
}

fn book_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("book");
    group.throughput(Throughput::Elements(1));

    group.bench_function("add", |b| {
        b.iter_custom(|iters| {
            let mut bench = Bench::new();
            let mut added = Vec::with_capacity(CHUNK as usize);
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = CHUNK.min(iters - done);
                let start = Instant::now();
                for i in 0..n {
                    added.push(bench.place(Side::Buy, near_touch(Side::Buy, i), 3));
                }
                total += start.elapsed();
                for id in added.drain(..) {
                    bench.events.clear();
                    let _ = bench.book.cancel(id, CancelReason::User, &mut bench.events);
                }
                done += n;
            }
            total
        })
    });

    group.bench_function("cancel", |b| {
        b.iter_custom(|iters| {
            let mut bench = Bench::new();
            chunked(
                iters,
                &mut bench,
                |bench, n| {
                    (0..n).map(|i| bench.place(Side::Sell, near_touch(Side::Sell, i * 7), 3)).collect()
                },
                |bench, ids, _| {
                    for &id in ids {
                        bench.events.clear();
                        black_box(bench.book.cancel(id, CancelReason::User, &mut bench.events)).ok();
                    }
                },
            )
        })
    });

    group.bench_function("amend_qty_down", |b| {
        b.iter_custom(|iters| {
            let mut bench = Bench::new();
            chunked(
                iters,
                &mut bench,
                |bench, n| (0..n).map(|i| bench.place(Side::Buy, near_touch(Side::Buy, i), 10)).collect(),
                |bench, ids, _| {
                    for &id in ids {
                        bench.events.clear();
                        let amend = Amend { id, price: None, qty: Qty(9) };
                        black_box(bench.book.amend(amend, &mut bench.events)).ok();
                    }
                },
            )
        })
    });

    group.bench_function("amend_reprice", |b| {
        b.iter_custom(|iters| {
            let mut bench = Bench::new();
            chunked(
                iters,
                &mut bench,
                |bench, n| (0..n).map(|i| bench.place(Side::Buy, near_touch(Side::Buy, i), 10)).collect(),
                |bench, ids, _| {
                    for (i, &id) in ids.iter().enumerate() {
                        bench.events.clear();
                        let price = Price(near_touch(Side::Buy, i as u64 + 17));
                        let amend = Amend { id, price: Some(price), qty: Qty(10) };
                        black_box(bench.book.amend(amend, &mut bench.events)).ok();
                    }
                },
            )
        })
    });

    for levels in [1i64, 10] {
        group.bench_with_input(BenchmarkId::new("match_levels", levels), &levels, |b, &levels| {
            b.iter_custom(|iters| {
                let mut bench = Bench::new();
                chunked(
                    iters,
                    &mut bench,
                    |bench, n| {
                        // n takers' worth of asks: `levels` levels of one order each per taker,
                        // laid out from the touch outward so each taker sweeps exactly its own.
                        for i in 0..n as i64 * levels {
                            bench.place(Side::Sell, MID + 1 + i, 2);
                        }
                        Vec::new()
                    },
                    |bench, _, n| {
                        for i in 0..n as i64 {
                            bench.take(Side::Buy, MID + (i + 1) * levels, 2 * levels);
                        }
                    },
                )
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = book_benches
}
criterion_main!(benches);
