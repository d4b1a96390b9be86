//! Arbitrary bytes as a scenario file: read as (lossy) UTF-8 text and run line by line on a fresh
//! engine through `run_scenario` with errors continuing, exactly as `keel scenario --keep-going`
//! runs a file. No line may panic the parser, the runner or the engine behind it; a malformed line
//! is reported and skipped.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none scenario_lines -- -max_total_time=60`.

#![no_main]

use keel_sim::scenario::{EXIT_BAD_INPUT, run_scenario};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Lossy, so that bytes that are not UTF-8 damage one character and the rest of the line still
    // reaches the parser (invalid UTF-8 itself only makes a line an error).
    let text = String::from_utf8_lossy(data);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_scenario(text.as_bytes(), true, &mut out, &mut err);
    // Writing into memory cannot fail, so the run either succeeds or met malformed lines.
    match code {
        0 => assert!(err.is_empty(), "a clean run reported errors"),
        EXIT_BAD_INPUT => assert!(!err.is_empty(), "a run with malformed lines reported none"),
        other => panic!("unexpected exit code {other}"),
    }
});
