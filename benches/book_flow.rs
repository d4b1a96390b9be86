//! Throughput and latency of the matching core over realistic generated order flow, in calm,
//! volatile and crash regimes (see `keel_sim::flow`). Run with `cargo bench --bench book_flow`;
//! `KEEL_FLOW_OPS` sets the operations per regime (default 2,000,000).

use keel_sim::flow::Regime;

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no flags of its own.
    let ops = std::env::var("KEEL_FLOW_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    let worst = keel_sim::harness::run_regimes(&Regime::ALL, ops, |line| println!("{line}"));
    println!("worst regime: {:.2} M ops/s", worst / 1e6);
}
