//! `keel serve`: recover the store, start the exchange, print where it listens and how to log on,
//! run until Ctrl-C (or a time limit), then shut down with the journal synced.

use crate::config::ServeConfig;
use crate::server::{GatewayError, Server};
use keel_engine::{Command, Event};
use std::io::Write;
use std::time::{Duration, Instant};

/// Options of `keel serve`.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The configuration (the demo one unless a file was given).
    pub config: ServeConfig,
    /// Stop after this long (none: run until Ctrl-C).
    pub duration: Option<Duration>,
}

/// Runs the exchange until interrupted; prints progress to `out`.
pub fn run(options: ServeOptions, out: &mut dyn Write) -> Result<(), GatewayError> {
    crate::signal::install();
    let config = &options.config;
    let server = Server::open(config)?;
    let _ = writeln!(out, "keel: store {} — {}", config.data_dir.display(), server.recovery_report());
    for market in &config.markets {
        let _ = writeln!(out, "keel: market {} id {}", market.preset, market.id);
    }
    for account in &config.accounts {
        let _ = writeln!(out, "keel: account {} key {}", account.id, account.key);
    }
    for feeder in &config.feeders {
        let _ = writeln!(out, "keel: index-price feeder {} key {}", feeder.id, feeder.key);
    }
    let _ =
        writeln!(out, "keel: listening on {} (protocol: docs/protocol.md); Ctrl-C stops", server.address());
    let _ = out.flush();
    let started = Instant::now();
    while !crate::signal::interrupted() && options.duration.is_none_or(|d| started.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let digest = server.operator(Command::Digest).ok().and_then(|events| {
        events.into_iter().find_map(|e| match e {
            Event::Digest { digest } => Some(digest),
            _ => None,
        })
    });
    let engine = server.shutdown()?;
    let _ = writeln!(
        out,
        "keel: stopped at seq {} (digest {:016x}); journal synced",
        engine.last_seq(),
        digest.unwrap_or(0)
    );
    Ok(())
}
