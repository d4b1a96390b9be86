//! Differential fuzzing of the order book: arbitrary bytes become a command sequence that runs
//! through both the real book and the simple reference book; any divergence, broken invariant,
//! unconserved quantity or rejected-but-changed command is a crash.

#![no_main]

use keel_book::differential::{decode, run_differential};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (config, commands) = decode(data);
    if let Err(divergence) = run_differential(config, &commands) {
        panic!("{divergence}");
    }
});
