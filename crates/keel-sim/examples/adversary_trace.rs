//! Prints the command stream that a file of bytes makes through `keel_sim::adversary`: each
//! command with its events, then the finding if a rule broke. For reproducing what the
//! `engine_commands` fuzz target or the property test found:
//!
//! ```sh
//! cargo run --release -p keel-sim --example adversary_trace -- fuzz/artifacts/engine_commands/crash-<hash>
//! ```

use keel_engine::{Command, Event};
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: adversary_trace FILE (raw bytes, as the fuzzer saves them)");
        return ExitCode::FAILURE;
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("{path}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut print = |index: usize, command: &Command, events: &[Event]| {
        println!("{index}: {command:?}");
        for event in events {
            println!("    {event:?}");
        }
    };
    match keel_sim::adversary::run_observed(&bytes, &mut print) {
        Ok(summary) => {
            println!("no rule broken: {summary:?}");
            ExitCode::SUCCESS
        }
        Err(finding) => {
            println!("FINDING: {finding}");
            ExitCode::FAILURE
        }
    }
}
