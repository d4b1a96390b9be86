//! A fast hasher for the integer ids the book indexes by.
//!
//! The std `SipHash` defends hash tables against adversarial keys at ~20 ns a lookup. Order ids are
//! assigned by the engine, not by traders, so that defence buys nothing here; a folded 128-bit
//! multiply spreads sequential and strided ids alike over the whole hash in about a nanosecond.

use std::hash::{BuildHasherDefault, Hasher};

/// Hashes one integer key by a folded multiply.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-integer keys, which the book never uses; still hash them properly.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        const K: u128 = 0x9E37_79B9_7F4A_7C15;
        let product = u128::from(n ^ self.0) * K;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

/// `BuildHasher` for [`IdHasher`].
pub type BuildIdHasher = BuildHasherDefault<IdHasher>;

/// A hash map keyed by ids, hashed with [`IdHasher`].
pub type IdMap<K, V> = std::collections::HashMap<K, V, BuildIdHasher>;
