//! Ctrl-C (SIGINT) and SIGTERM as a flag `keel serve` polls, so it can shut down cleanly with the
//! journal synced instead of dying mid-write.
//!
//! Uses the C library's `signal` directly (the standard library links it already) rather than a
//! crate: the handler only stores to an atomic, which is async-signal-safe.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
mod unix {
    use super::{INTERRUPTED, Ordering};

    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;

    unsafe extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }

    extern "C" fn on_signal(_: i32) {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }

    pub(super) fn install() {
        // SAFETY: `on_signal` only performs an atomic store, which is async-signal-safe, and has
        // the `void (*)(int)` signature `signal` expects.
        unsafe {
            signal(SIGINT, on_signal);
            signal(SIGTERM, on_signal);
        }
    }
}

/// Routes SIGINT and SIGTERM to [`interrupted`] instead of killing the process (Unix only; on
/// other systems Ctrl-C still ends the process at once).
pub fn install() {
    #[cfg(unix)]
    unix::install();
}

/// True once SIGINT or SIGTERM arrived after [`install`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
