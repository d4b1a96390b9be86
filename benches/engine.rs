//! Whole-engine throughput and latency on a generated flow across 10 markets and 100,000
//! accounts, margin checks on (see `keel_sim::engine_flow`). Run with `cargo bench --bench engine`.
//! `KEEL_ENGINE_COMMANDS` sets the flow length (default 2,000,000); `KEEL_ENGINE_RATE` the
//! offered rate of the latency pass (default 1,000,000 commands per second).

use keel_sim::engine_flow::{EngineFlowConfig, generate};
use keel_sim::harness::{measure_engine, percentile_row};

fn main() {
    let env =
        |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let commands = env("KEEL_ENGINE_COMMANDS", 2_000_000) as usize;
    let rate = env("KEEL_ENGINE_RATE", 1_000_000);
    let config = EngineFlowConfig::new(10, 100_000, commands);
    let stream = generate(&config);
    let setup = stream.len() - commands;
    let report = measure_engine(&stream, setup, rate);
    let (best, median) = report.throughput();
    let passes: Vec<String> =
        report.passes.iter().map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3)).collect();
    println!(
        "engine: {} commands (10 markets, 100,000 accounts): fastest pass {:.2} M commands/s, median {:.2} M/s (passes: {})",
        report.commands,
        best / 1e6,
        median / 1e6,
        passes.join(", ")
    );
    println!("latency at {} commands/s offered (coordinated-omission corrected), ns:", report.offered_rate);
    println!(
        "                  {:>7} {:>7} {:>7} {:>7} {:>8} {:>9}",
        "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    println!("  all             {}", percentile_row(&report.latency));
}
