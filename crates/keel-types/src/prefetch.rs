//! Software prefetch: ask the memory system for a cache line before the code needs it.
//!
//! The engine applies commands that each touch a random one of many accounts, so most of its time
//! goes in cache misses on the account's record and positions. A command batch is known ahead of
//! its application, so while one command is applied the next one's memory can already be on its
//! way; a prefetch never faults and never changes a result, it only moves a line closer.

/// Hints that the cache line holding `*p` will be read soon. Does nothing on targets without a
/// prefetch instruction. Any address is allowed, including dangling ones: nothing is read.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is part of SSE, which every x86-64 processor has; it reads nothing
    // architecturally and cannot fault, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch`] for every cache line of `bytes` bytes starting at `p`, up to `max_lines` lines.
#[inline(always)]
pub fn prefetch_bytes<T>(p: *const T, bytes: usize, max_lines: usize) {
    const LINE: usize = 64;
    let start = p.cast::<u8>();
    // Counted from the line `p` falls in, so an object that straddles a line boundary gets the
    // last line too.
    let offset = start as usize % LINE;
    let lines = (offset + bytes).div_ceil(LINE).min(max_lines);
    let first = start.wrapping_sub(offset);
    for i in 0..lines {
        prefetch(first.wrapping_add(i * LINE));
    }
}
