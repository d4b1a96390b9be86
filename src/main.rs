//! The `keel` command line.

use clap::{Parser, Subcommand, ValueEnum};
use keel_sim::flow::Regime;
use keel_sim::scenario::{self, Flush, RunOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Keel: a perpetual-futures exchange engine.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the exchange: engine, journal and the binary TCP gateway on 127.0.0.1 (the default
    /// command). See docs/protocol.md.
    Serve {
        /// Port to listen on (default 7700, or the configuration file's).
        #[arg(long)]
        port: Option<u16>,
        /// TOML configuration: markets, accounts and keys, port, flush policy, rate limits.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Journal directory (default ./keel-data, or the configuration file's).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Journal flush policy (default buffered, or the configuration file's).
        #[arg(long, value_enum)]
        flush: Option<FlushArg>,
        /// Stop after this many seconds instead of waiting for Ctrl-C.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
    },
    /// Drive a running gateway with generated orders at a fixed rate; report round-trip latency
    /// percentiles (from each order's scheduled send time) and throughput.
    Load {
        /// The gateway's address.
        #[arg(long, default_value = "127.0.0.1:7700")]
        address: SocketAddr,
        /// Sessions to open (they log on as the demo accounts in turn).
        #[arg(long, default_value_t = 2)]
        sessions: usize,
        /// Requests per second offered, over all sessions.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// Seconds to send for.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Never yield the core between requests: for a generator pinned to a core of its own
        /// (e.g. `taskset -c 0 keel load --spin` beside `taskset -c 1 keel serve`).
        #[arg(long)]
        spin: bool,
    },
    /// Measure the matching core on generated order flow.
    Bench {
        /// Operations per regime.
        #[arg(long, default_value_t = 2_000_000)]
        ops: usize,
        /// Which regimes to run (default: all).
        #[arg(long, value_enum)]
        regime: Vec<RegimeArg>,
    },
    /// Run a JSON Lines scenario (see docs/scenario.md) on a fresh engine; print every event as JSON.
    Scenario {
        /// The scenario file ("-" reads standard input).
        file: PathBuf,
        /// Report malformed lines and carry on instead of stopping at the first.
        #[arg(long)]
        keep_going: bool,
    },
    /// Replay a journal (a file, or a store directory's journal) on a fresh engine; print its
    /// events, then the journal report and the state digest.
    Replay {
        /// The journal file or store directory.
        journal: PathBuf,
    },
    /// Recover the engine from a store, then sequence scenario lines from standard input durably,
    /// printing each acknowledged outcome as a JSON line.
    Run {
        /// The store directory (created if missing).
        #[arg(long)]
        store: PathBuf,
        /// What an acknowledgement promises: fsync (survives power loss) or buffered (survives a
        /// process crash).
        #[arg(long, value_enum, default_value_t = FlushArg::Fsync)]
        flush: FlushArg,
        /// Write a snapshot every N commands.
        #[arg(long, value_name = "N")]
        snapshot_every: Option<u64>,
        /// Report malformed lines and carry on instead of stopping at the first.
        #[arg(long)]
        keep_going: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FlushArg {
    Fsync,
    Buffered,
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

/// Opens a scenario file, or standard input for "-".
fn open_input(file: &Path) -> io::Result<Box<dyn BufRead>> {
    if file.as_os_str() == "-" {
        return Ok(Box::new(BufReader::new(io::stdin())));
    }
    Ok(Box::new(BufReader::new(std::fs::File::open(file)?)))
}

fn main() {
    let cli = Cli::parse();
    let serve_by_default =
        Command::Serve { port: None, config: None, data_dir: None, flush: None, duration: None };
    match cli.command.unwrap_or(serve_by_default) {
        Command::Serve { port, config, data_dir, flush, duration } => {
            std::process::exit(serve(port, config, data_dir, flush, duration));
        }
        Command::Load { address, sessions, rate, duration, spin } => {
            let mut options = keel_gateway::load::LoadOptions::demo(address);
            options.sessions = sessions;
            options.spin = spin;
            options.rate = rate;
            options.duration = Duration::from_secs_f64(duration.max(0.0));
            if let Err(error) = keel_gateway::load::run(&options, &mut io::stdout()) {
                eprintln!("error: {error}");
                std::process::exit(1);
            }
        }
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
        Command::Scenario { file, keep_going } => {
            let input = match open_input(&file) {
                Ok(input) => input,
                Err(error) => {
                    eprintln!("error: cannot read {}: {error}", file.display());
                    std::process::exit(scenario::EXIT_FAILURE);
                }
            };
            let mut out = io::BufWriter::new(io::stdout().lock());
            let code = scenario::run_scenario(input, keep_going, &mut out, &mut io::stderr());
            drop(out);
            std::process::exit(code);
        }
        Command::Replay { journal } => {
            let mut out = io::BufWriter::new(io::stdout().lock());
            let code = scenario::replay_journal(&journal, &mut out, &mut io::stderr());
            let _ = out.flush();
            drop(out);
            std::process::exit(code);
        }
        Command::Run { store, flush, snapshot_every, keep_going } => {
            let flush = match flush {
                FlushArg::Fsync => Flush::Fsync,
                FlushArg::Buffered => Flush::Buffered,
            };
            let options = RunOptions { store, flush, snapshot_every, keep_going };
            let stdin = io::stdin().lock();
            let code = scenario::run_store(&options, stdin, io::stdout(), &mut io::stderr());
            std::process::exit(code);
        }
    }
}

/// `keel serve`: the demo configuration or a file, with flags on top; returns the exit code.
fn serve(
    port: Option<u16>,
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    flush: Option<FlushArg>,
    duration: Option<f64>,
) -> i32 {
    let mut config = match config {
        Some(file) => match keel_gateway::ServeConfig::load(&file) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("error: {error}");
                return 2;
            }
        },
        None => keel_gateway::ServeConfig::demo(),
    };
    config.port = port.unwrap_or(config.port);
    config.data_dir = data_dir.unwrap_or(config.data_dir);
    if let Some(flush) = flush {
        config.flush = match flush {
            FlushArg::Fsync => keel_gateway::config::Flush::Fsync,
            FlushArg::Buffered => keel_gateway::config::Flush::Buffered,
        };
    }
    let duration = duration.map(|seconds| Duration::from_secs_f64(seconds.max(0.0)));
    match keel_gateway::serve::run(keel_gateway::serve::ServeOptions { config, duration }, &mut io::stdout())
    {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: {error}");
            1
        }
    }
}
