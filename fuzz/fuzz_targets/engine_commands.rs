//! Arbitrary bytes as a hostile command stream through the whole engine
//! (`keel_sim::adversary`): no panic, no internal fault, a refused command or a query changes
//! nothing, and the exchange's invariants hold after every command.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none engine_commands -- -max_total_time=60`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = keel_sim::adversary::run(data) {
        panic!("{finding}");
    }
});
