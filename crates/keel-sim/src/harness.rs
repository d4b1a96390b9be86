//! Replays a generated flow through a fresh [`OrderBook`] and measures it.
//!
//! Two passes over the same operations, each on a fresh book:
//! - **throughput**: the whole flow under one clock, nothing else in the loop, repeated
//!   [`THROUGHPUT_PASSES`] times (fastest and median reported);
//! - **latency**: every operation timed on its own with the CPU's time-stamp counter (x86-64) or
//!   the monotonic clock elsewhere, recorded in an HDR histogram. The timer's own cost is
//!   measured and reported, not subtracted.

use crate::flow::{FlowConfig, FlowOp, book_config};
use hdrhistogram::Histogram;
use keel_book::OrderBook;
use keel_types::{BookEvent, CancelReason};
use std::time::{Duration, Instant};

/// Throughput passes per regime; the fastest and the median are reported.
pub const THROUGHPUT_PASSES: usize = 5;

/// What one regime's run measured.
#[derive(Debug)]
pub struct Report {
    /// Operations replayed.
    pub ops: usize,
    /// Events the book emitted over the run.
    pub events: usize,
    /// Wall time of the fastest throughput pass.
    pub elapsed: Duration,
    /// Wall time of the median throughput pass.
    pub median_elapsed: Duration,
    /// Latency of every operation, in nanoseconds.
    pub all: Histogram<u64>,
    /// Latency of resting limit placements (GTC) that did not trade.
    pub add: Histogram<u64>,
    /// Latency of cancels.
    pub cancel: Histogram<u64>,
    /// Latency of operations that traded (takers, crossing amends).
    pub matched: Histogram<u64>,
    /// Latency of amends that did not trade.
    pub amend: Histogram<u64>,
    /// Cost of one timer read pair, in nanoseconds (median), included in every latency.
    pub timer_overhead_ns: f64,
}

impl Report {
    /// Operations per second of the throughput pass.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

#[inline]
fn apply(book: &mut OrderBook, op: &FlowOp, events: &mut Vec<BookEvent>) {
    let _ = match *op {
        FlowOp::Place(order) => book.place(order, events),
        FlowOp::Cancel(id) => book.cancel(id, CancelReason::User, events),
        FlowOp::Amend(amend) => book.amend(amend, events),
    };
}

/// Replays `ops` (generated with `config`) and measures throughput and latency.
pub fn measure(config: &FlowConfig, ops: &[FlowOp]) -> Report {
    let book_config = book_config(config);

    // Throughput passes, each on a fresh book; the event buffer is drained per operation, as an
    // engine would. On a shared virtual machine a pass can be slowed several-fold by a neighbour,
    // so the report gives the fastest pass (the least disturbed) and the median.
    let mut events = Vec::with_capacity(4096);
    let mut event_count = 0;
    let mut passes: Vec<Duration> = (0..THROUGHPUT_PASSES)
        .map(|_| {
            let mut book = OrderBook::new(book_config);
            event_count = 0;
            let start = Instant::now();
            for op in ops {
                events.clear();
                apply(&mut book, op, &mut events);
                event_count += events.len();
            }
            let elapsed = start.elapsed();
            std::hint::black_box(&book);
            elapsed
        })
        .collect();
    passes.sort_unstable();
    let elapsed = passes[0];
    let median_elapsed = passes[passes.len() / 2];

    // Latency pass.
    let clock = Clock::calibrate();
    let new_hist = || Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("valid histogram bounds");
    let (mut all, mut add, mut cancel, mut matched, mut amend) =
        (new_hist(), new_hist(), new_hist(), new_hist(), new_hist());
    let mut book = OrderBook::new(book_config);
    for op in ops {
        events.clear();
        let t0 = clock.now();
        apply(&mut book, op, &mut events);
        let t1 = clock.now();
        let ns = clock.nanos(t1.wrapping_sub(t0)).max(1);
        all.saturating_record(ns);
        let traded = events.iter().any(|e| matches!(e, BookEvent::Fill { .. }));
        let hist = match op {
            _ if traded => &mut matched,
            FlowOp::Place(_) => &mut add,
            FlowOp::Cancel(_) => &mut cancel,
            FlowOp::Amend(_) => &mut amend,
        };
        hist.saturating_record(ns);
    }
    Report {
        ops: ops.len(),
        events: event_count,
        elapsed,
        median_elapsed,
        all,
        add,
        cancel,
        matched,
        amend,
        timer_overhead_ns: clock.overhead_ns(),
    }
}

/// A cheap per-operation timer: the time-stamp counter where there is one, calibrated against the
/// monotonic clock.
struct Clock {
    ticks_per_ns: f64,
}

impl Clock {
    fn calibrate() -> Clock {
        let (i0, t0) = (Instant::now(), raw_ticks());
        std::thread::sleep(Duration::from_millis(50));
        let (i1, t1) = (Instant::now(), raw_ticks());
        let ns = (i1 - i0).as_nanos() as f64;
        Clock { ticks_per_ns: (t1.wrapping_sub(t0)) as f64 / ns }
    }

    #[inline]
    fn now(&self) -> u64 {
        raw_ticks()
    }

    #[inline]
    fn nanos(&self, ticks: u64) -> u64 {
        (ticks as f64 / self.ticks_per_ns) as u64
    }

    /// Median cost of two back-to-back reads.
    fn overhead_ns(&self) -> f64 {
        let mut samples: Vec<u64> = (0..10_001)
            .map(|_| {
                let a = self.now();
                let b = self.now();
                b.wrapping_sub(a)
            })
            .collect();
        samples.sort_unstable();
        samples[samples.len() / 2] as f64 / self.ticks_per_ns
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn raw_ticks() -> u64 {
    // SAFETY: RDTSC is available on every x86-64 CPU and has no memory effects.
    unsafe { std::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn raw_ticks() -> u64 {
    use std::sync::OnceLock;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Formats a histogram's percentiles as one table row: p50 p90 p99 p99.9 p99.99 max.
pub fn percentile_row(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "(none)".into();
    }
    let q = |p: f64| h.value_at_quantile(p);
    format!(
        "{:>7} {:>7} {:>7} {:>7} {:>8} {:>9}   n={}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        q(0.9999),
        h.max(),
        h.len()
    )
}

/// Generates each regime's flow, measures it, and prints a report; returns the worst regime's
/// throughput in operations per second (the figure that counts).
pub fn run_regimes(regimes: &[crate::flow::Regime], ops: usize, mut print: impl FnMut(&str)) -> f64 {
    let mut worst = f64::INFINITY;
    for &regime in regimes {
        let config = FlowConfig::new(regime, ops);
        let flow = crate::flow::generate(&config);
        let mix = crate::flow::mix(&flow);
        let report = measure(&config, &flow);
        let rate = report.ops_per_sec();
        worst = worst.min(rate);
        print(&format!(
            "regime {:<8} {:>10} ops in {:>8.1} ms = {:>6.2} M ops/s (median of {} passes {:.2})  ({} events; mix: {} rest, {} ioc, {} market, {} cancel, {} amend)",
            regime.name(),
            report.ops,
            report.elapsed.as_secs_f64() * 1e3,
            rate / 1e6,
            THROUGHPUT_PASSES,
            report.ops as f64 / report.median_elapsed.as_secs_f64() / 1e6,
            report.events,
            mix.limits,
            mix.iocs,
            mix.markets,
            mix.cancels,
            mix.amends,
        ));
        print(&format!(
            "  latency ns      {:>7} {:>7} {:>7} {:>7} {:>8} {:>9}",
            "p50", "p90", "p99", "p99.9", "p99.99", "max"
        ));
        for (name, hist) in [
            ("all", &report.all),
            ("add", &report.add),
            ("cancel", &report.cancel),
            ("amend", &report.amend),
            ("matching", &report.matched),
        ] {
            print(&format!("  {name:<14}  {}", percentile_row(hist)));
        }
        print(&format!("  (each latency includes the timer's own ~{:.0} ns)", report.timer_overhead_ns));
    }
    worst
}

/// What the engine benchmark measured.
#[derive(Debug)]
pub struct EngineReport {
    /// Commands in the measured flow (setup excluded).
    pub commands: usize,
    /// Wall time of each throughput pass, in the order they ran (each on a fresh engine).
    pub passes: Vec<Duration>,
    /// Latency per command at the fixed offered rate, measured from each command's scheduled
    /// arrival (so time spent queued behind a slow command counts), in nanoseconds.
    pub latency: Histogram<u64>,
    /// The offered rate of the latency pass, commands per second.
    pub offered_rate: u64,
}

/// Measures the whole engine on `commands` (the first `setup` of which are applied untimed):
/// throughput flat out in [`ENGINE_PASSES`] passes, each on a fresh engine, then latency at a
/// fixed offered rate, corrected for coordinated omission.
pub fn measure_engine(commands: &[keel_engine::Sequenced], setup: usize, offered_rate: u64) -> EngineReport {
    use keel_engine::Engine;
    let (setup_part, flow) = commands.split_at(setup);
    let mut events = Vec::with_capacity(4096);
    let prepare = |events: &mut Vec<keel_engine::Event>| {
        let mut engine = Engine::new();
        for command in setup_part {
            events.clear();
            engine.apply(command, events);
        }
        engine
    };

    // Throughput: the whole flow is queued, as in a sequencer batch, so the engine may prefetch
    // the accounts of the next three commands while it applies one. Several passes: the first of a
    // process also pays first-touch page faults, and the host's neighbours disturb some passes.
    let mut passes = Vec::with_capacity(ENGINE_PASSES);
    for _ in 0..ENGINE_PASSES {
        let mut engine = prepare(&mut events);
        let start = Instant::now();
        for (i, command) in flow.iter().enumerate() {
            prefetch_flow(flow, i);
            engine.prefetch([1, 2, 3].map(|k| flow.get(i + k).map(|c| &c.command)));
            events.clear();
            engine.apply(command, &mut events);
        }
        passes.push(start.elapsed());
        std::hint::black_box(&engine);
    }

    // Latency: command i is due at start + i / rate. If the engine is still busy with earlier
    // commands when it is due, the wait counts: latency = completion − due time.
    let clock = Clock::calibrate();
    let mut engine = prepare(&mut events);
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
    let interval_ticks = clock.ticks_per_ns * 1e9 / offered_rate as f64;
    let t0 = clock.now();
    // Whether the command about to be applied had arrived while the one before it ran, and so
    // was prefetched as the next in line.
    let mut staged = false;
    for (i, command) in flow.iter().enumerate() {
        let due = t0 + (i as f64 * interval_ticks) as u64;
        while clock.now() < due {
            std::hint::spin_loop();
        }
        prefetch_flow(flow, i);
        // Only commands already due have arrived and may be prefetched. One that reached an idle
        // engine is loaded now, as a sequencer does with the first command of a batch.
        let now = clock.now();
        let arrived =
            |k: usize| (t0 + (k as f64 * interval_ticks) as u64 <= now).then(|| flow.get(k)).flatten();
        if !staged {
            engine.prefetch_now(&command.command);
        }
        engine.prefetch([1, 2, 3].map(|k| arrived(i + k).map(|c| &c.command)));
        staged = arrived(i + 1).is_some();
        events.clear();
        engine.apply(command, &mut events);
        let done = clock.now();
        latency.saturating_record(clock.nanos(done.saturating_sub(due)).max(1));
    }
    EngineReport { commands: flow.len(), passes, latency, offered_rate }
}

/// How far ahead in the flow [`prefetch_flow`] reads.
const FLOW_LOOKAHEAD: usize = 16;

/// Starts loading command `i + FLOW_LOOKAHEAD` of the harness's flow. The flow is a
/// pre-generated array far larger than the cache, while a sequencer's batch was just written by
/// its drain and is already cached; without this the harness would time its own input's cache
/// misses as engine work.
#[inline]
fn prefetch_flow(flow: &[keel_engine::Sequenced], i: usize) {
    if let Some(command) = flow.get(i + FLOW_LOOKAHEAD) {
        keel_types::prefetch_bytes(command, std::mem::size_of::<keel_engine::Sequenced>(), 2);
    }
}

/// Throughput passes [`measure_engine`] makes.
pub const ENGINE_PASSES: usize = 3;

impl EngineReport {
    /// Commands per second of the fastest pass (the least disturbed) and of the median pass.
    pub fn throughput(&self) -> (f64, f64) {
        let mut rates: Vec<f64> =
            self.passes.iter().map(|d| self.commands as f64 / d.as_secs_f64().max(1e-9)).collect();
        rates.sort_by(|a, b| b.total_cmp(a));
        (rates.first().copied().unwrap_or(0.0), rates.get(rates.len() / 2).copied().unwrap_or(0.0))
    }
}
