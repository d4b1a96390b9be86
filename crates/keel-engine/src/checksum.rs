//! CRC-32C (Castagnoli), the checksum guarding every journal record and snapshot payload.
//!
//! CRC-32C rather than the zlib CRC-32 because its polynomial has better error-detection
//! properties for the record sizes we write and it is the checksum storage systems standardised on
//! (iSCSI, ext4, Btrfs), so external tools can verify our files. The implementation is portable,
//! table-driven "slicing-by-8": eight 256-entry tables, built at compile time, let the loop fold
//! eight input bytes per step instead of one, which keeps checksumming well below the cost of the
//! system calls around it during replay.
//!
//! Parameters: reflected polynomial `0x82F63B78`, initial value `0xFFFFFFFF`, final XOR
//! `0xFFFFFFFF`, so `crc32c(b"123456789") == 0xE306_9283`.

/// The CRC-32C polynomial in reflected (LSB-first) form.
const POLY: u32 = 0x82F6_3B78;

/// Slicing-by-8 tables: `TABLES[0]` is the classic byte-at-a-time table; `TABLES[k][b]` is the CRC
/// contribution of byte `b` followed by `k` zero bytes.
static TABLES: [[u32; 256]; 8] = build_tables();

const fn build_tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ POLY } else { crc >> 1 };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 8 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev >> 8) ^ tables[0][(prev & 0xFF) as usize];
            k += 1;
        }
        i += 1;
    }
    tables
}

/// Advances a raw (pre-inverted) CRC register over `data`.
#[inline]
fn update_raw(mut crc: u32, data: &[u8]) -> u32 {
    let t = &TABLES;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xFF) as usize]
            ^ t[2][((hi >> 8) & 0xFF) as usize]
            ^ t[1][((hi >> 16) & 0xFF) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xFF) as usize];
    }
    crc
}

/// CRC-32C of `data` in one call.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    !update_raw(!0, data)
}

/// Incremental CRC-32C, for checksums over several non-contiguous pieces (sequence number, then
/// payload) without copying them together.
#[derive(Clone, Copy, Debug)]
pub struct Crc32c {
    state: u32,
}

impl Crc32c {
    /// A checksum over no bytes yet.
    #[inline]
    pub const fn new() -> Self {
        Crc32c { state: !0 }
    }

    /// Feeds `data` into the checksum; feeding pieces in order equals checksumming their concatenation.
    #[inline]
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.state = update_raw(self.state, data);
        self
    }

    /// The checksum of everything fed so far (the value stays usable for further updates).
    #[inline]
    pub const fn finish(&self) -> u32 {
        !self.state
    }
}

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bit-at-a-time reference, independent of the tables.
    fn reference(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ POLY } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"a"), 0xC1D0_4330);
    }

    /// The test vectors of RFC 3720 (iSCSI), appendix B.4.
    #[test]
    fn rfc3720_vectors() {
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        let descending: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(crc32c(&descending), 0x113F_DB5C);
        let iscsi_read: [u8; 48] = [
            0x01, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18,
            0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(crc32c(&iscsi_read), 0xD9963A56);
    }

    #[test]
    fn every_length_matches_reference() {
        let data: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(crc32c(&data[..len]), reference(&data[..len]), "length {len}");
        }
    }

    proptest! {
        #[test]
        fn incremental_equals_one_shot(data in proptest::collection::vec(any::<u8>(), 0..512), split in 0usize..512) {
            let split = split.min(data.len());
            let mut crc = Crc32c::new();
            crc.update(&data[..split]).update(&data[split..]);
            prop_assert_eq!(crc.finish(), crc32c(&data));
            prop_assert_eq!(crc32c(&data), reference(&data));
        }
    }
}
