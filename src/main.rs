//! The `keel` command line.

use clap::{Parser, Subcommand, ValueEnum};
use keel_sim::flow::Regime;

/// Keel: a perpetual-futures exchange engine.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the matching core on generated order flow (the default command).
    Bench {
        /// Operations per regime.
        #[arg(long, default_value_t = 2_000_000)]
        ops: usize,
        /// Which regimes to run (default: all).
        #[arg(long, value_enum)]
        regime: Vec<RegimeArg>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RegimeArg {
    Calm,
    Volatile,
    Crash,
}

impl From<RegimeArg> for Regime {
    fn from(arg: RegimeArg) -> Regime {
        match arg {
            RegimeArg::Calm => Regime::Calm,
            RegimeArg::Volatile => Regime::Volatile,
            RegimeArg::Crash => Regime::Crash,
        }
    }
}

fn main() {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Bench { ops: 2_000_000, regime: Vec::new() }) {
        Command::Bench { ops, regime } => {
            let regimes: Vec<Regime> = if regime.is_empty() {
                Regime::ALL.to_vec()
            } else {
                regime.into_iter().map(Regime::from).collect()
            };
            if cfg!(debug_assertions) {
                eprintln!("note: this is a debug build; run `cargo run --release` for meaningful numbers");
            }
            println!("keel book benchmark: {ops} operations per regime, single thread");
            let worst = keel_sim::harness::run_regimes(&regimes, ops, |line| println!("{line}"));
            println!("worst regime: {:.2} M ops/s", worst / 1e6);
        }
    }
}
