//! Snapshot files: the engine state as of a sequence number, written atomically so recovery can
//! load the newest good one and replay only the journal records after it. Payloads are opaque
//! bytes here.
//!
//! # File format (version 2)
//!
//! A snapshot of the state after applying command `seq` lives in `snapshot-<seq>.snap`, with `seq`
//! in decimal, zero-padded to 20 digits so names sort in sequence order. All integers are
//! little-endian:
//!
//! ```text
//!   offset  size  field
//!        0     8  magic        "KEELSNP\0" = 4B 45 45 4C 53 4E 50 00
//!        8     4  version      u32, currently 2
//!       12     4  crc          u32, CRC-32C (Castagnoli) of the payload bytes
//!       16     8  seq          u64, must equal the sequence number in the file name
//!       24     8  len          u64, payload length; the file is exactly 32 + len bytes long
//!       32   len  payload      opaque bytes
//! ```
//!
//! # Atomicity
//!
//! [`write_snapshot`] writes `snapshot-<seq>.tmp`, syncs it, renames it to the final name and syncs
//! the directory. A crash at any point leaves either no `.snap` for that sequence number or a
//! complete one; stray `.tmp` files are ignored by readers and removed by [`prune_snapshots`]. The
//! checksum and the length and sequence cross-checks catch what atomic rename cannot: media
//! corruption and files copied or edited by hand.

use crate::checksum::crc32c;
use crate::journal::sync_dir;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Magic bytes that open every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"KEELSNP\0";
/// The snapshot format version this code writes and reads.
///
/// Version 2 differs from version 1 only in the payload, which since version 2 starts with the
/// codec's schema byte (`codec::SCHEMA_VERSION`); version 1 files are refused rather than misread.
pub const SNAPSHOT_VERSION: u32 = 2;
/// Size of the snapshot header.
pub const SNAPSHOT_HEADER_LEN: usize = 32;

const PREFIX: &str = "snapshot-";
const SNAP_SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".tmp";
const SEQ_DIGITS: usize = 20;

/// Errors that stop a snapshot operation (as opposed to defects in one file, which are skipped).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// An operating-system call failed.
    #[error("snapshot {path}: {op} failed: {source}", path = path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What we were doing, for the operator.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Why a snapshot file was not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotDefect {
    /// Shorter than the header.
    Truncated {
        /// The file's length.
        len: u64,
    },
    /// Does not start with the snapshot magic.
    BadMagic,
    /// Written by an unsupported format version.
    UnsupportedVersion {
        /// The version in the header.
        found: u32,
    },
    /// The header's sequence number disagrees with the file name.
    SeqMismatch {
        /// Sequence number in the file name.
        in_name: u64,
        /// Sequence number in the header.
        in_header: u64,
    },
    /// The header's payload length disagrees with the file's size.
    LengthMismatch {
        /// Payload length in the header.
        in_header: u64,
        /// Payload bytes actually present.
        actual: u64,
    },
    /// The payload does not match its checksum.
    ChecksumMismatch {
        /// Checksum in the header.
        stored: u32,
        /// Checksum computed over the payload.
        computed: u32,
    },
}

impl fmt::Display for SnapshotDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SnapshotDefect::Truncated { len } => {
                write!(f, "truncated ({len} bytes, shorter than the {SNAPSHOT_HEADER_LEN}-byte header)")
            }
            SnapshotDefect::BadMagic => write!(f, "not a snapshot file (wrong magic bytes)"),
            SnapshotDefect::UnsupportedVersion { found } => {
                write!(f, "format version {found} is not supported (this build reads {SNAPSHOT_VERSION})")
            }
            SnapshotDefect::SeqMismatch { in_name, in_header } => {
                write!(f, "file name says seq {in_name} but the header says {in_header}")
            }
            SnapshotDefect::LengthMismatch { in_header, actual } => {
                write!(f, "header announces {in_header} payload bytes but {actual} are present")
            }
            SnapshotDefect::ChecksumMismatch { stored, computed } => {
                write!(f, "payload checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
        }
    }
}

/// A loaded, verified snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The sequence number of the last command the state includes.
    pub seq: u64,
    /// The opaque state bytes.
    pub payload: Vec<u8>,
    /// The file it came from.
    pub path: PathBuf,
}

/// A snapshot file that was passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedSnapshot {
    /// The file.
    pub path: PathBuf,
    /// Sequence number from its name.
    pub seq: u64,
    /// What is wrong with it.
    pub defect: SnapshotDefect,
}

impl fmt::Display for SkippedSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "skipped snapshot {} (seq {}): {}", self.path.display(), self.seq, self.defect)
    }
}

/// Result of [`latest_valid_snapshot`]: the newest good snapshot, and every newer one that was
/// skipped as damaged (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotScan {
    /// The newest snapshot that verified, if any.
    pub latest: Option<Snapshot>,
    /// Newer snapshots that failed verification.
    pub skipped: Vec<SkippedSnapshot>,
}

impl SnapshotScan {
    /// The newest good snapshot as `(seq, payload)`.
    pub fn into_latest(self) -> Option<(u64, Vec<u8>)> {
        self.latest.map(|s| (s.seq, s.payload))
    }
}

impl fmt::Display for SnapshotScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for skipped in &self.skipped {
            writeln!(f, "{skipped}")?;
        }
        match &self.latest {
            Some(s) => {
                write!(f, "loaded snapshot {} (seq {}, {} bytes)", s.path.display(), s.seq, s.payload.len())
            }
            None => write!(f, "no valid snapshot found"),
        }
    }
}

/// What [`prune_snapshots`] kept and removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PruneReport {
    /// Sequence numbers of the verified snapshots kept, newest first.
    pub kept: Vec<u64>,
    /// Files deleted.
    pub removed: Vec<PathBuf>,
}

/// The file name of the snapshot at `seq`.
pub fn snapshot_file_name(seq: u64) -> String {
    format!("{PREFIX}{seq:0SEQ_DIGITS$}{SNAP_SUFFIX}")
}

fn tmp_file_name(seq: u64) -> String {
    format!("{PREFIX}{seq:0SEQ_DIGITS$}{TMP_SUFFIX}")
}

/// Parses `snapshot-<20 digits><suffix>`; anything else in the directory is not ours and is ignored.
fn parse_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(suffix)?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io { path: path.to_path_buf(), op, source }
}

/// Encodes the 32-byte header for `payload` at `seq`: a file image is this header followed by
/// the payload, as [`write_snapshot`] writes it and [`verify_snapshot_bytes`] checks it.
pub fn encode_header(seq: u64, payload: &[u8]) -> [u8; SNAPSHOT_HEADER_LEN] {
    let mut header = [0u8; SNAPSHOT_HEADER_LEN];
    header[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    header[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&crc32c(payload).to_le_bytes());
    header[16..24].copy_from_slice(&seq.to_le_bytes());
    header[24..32].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    header
}

/// Checks a whole snapshot file image named for `seq_in_name`; returns the payload range on success.
/// Total over arbitrary input, so it can be fuzzed.
pub fn verify_snapshot_bytes(
    bytes: &[u8],
    seq_in_name: u64,
) -> Result<std::ops::Range<usize>, SnapshotDefect> {
    if bytes.len() < SNAPSHOT_HEADER_LEN {
        return Err(SnapshotDefect::Truncated { len: bytes.len() as u64 });
    }
    let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let u64_at = |at: usize| (u64::from(u32_at(at + 4)) << 32) | u64::from(u32_at(at));
    if bytes[..8] != SNAPSHOT_MAGIC {
        return Err(SnapshotDefect::BadMagic);
    }
    let version = u32_at(8);
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotDefect::UnsupportedVersion { found: version });
    }
    let seq = u64_at(16);
    if seq != seq_in_name {
        return Err(SnapshotDefect::SeqMismatch { in_name: seq_in_name, in_header: seq });
    }
    let len = u64_at(24);
    let actual = (bytes.len() - SNAPSHOT_HEADER_LEN) as u64;
    if len != actual {
        return Err(SnapshotDefect::LengthMismatch { in_header: len, actual });
    }
    let payload = SNAPSHOT_HEADER_LEN..bytes.len();
    let stored = u32_at(12);
    let computed = crc32c(&bytes[payload.clone()]);
    if stored != computed {
        return Err(SnapshotDefect::ChecksumMismatch { stored, computed });
    }
    Ok(payload)
}

/// Writes the snapshot of the state after command `seq` into `dir` atomically and durably; returns
/// the final path. An existing snapshot at the same `seq` is replaced.
pub fn write_snapshot(dir: impl AsRef<Path>, seq: u64, payload: &[u8]) -> Result<PathBuf, SnapshotError> {
    let dir = dir.as_ref();
    let tmp = dir.join(tmp_file_name(seq));
    let target = dir.join(snapshot_file_name(seq));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp, "create"))?;
        file.write_all(&encode_header(seq, payload)).map_err(io_err(&tmp, "write"))?;
        file.write_all(payload).map_err(io_err(&tmp, "write"))?;
        // The data must be on disk before the rename makes it visible under the final name;
        // otherwise a power loss could leave a complete-looking name over incomplete contents.
        file.sync_all().map_err(io_err(&tmp, "sync"))?;
        drop(file);
        fs::rename(&tmp, &target).map_err(io_err(&target, "rename into place"))?;
        sync_dir(dir).map_err(io_err(dir, "sync the directory"))
    })();
    if result.is_err() {
        // Best effort: a leftover temporary file is harmless (ignored, later pruned).
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| target)
}

/// Every `snapshot-<seq>.snap` in `dir` as `(seq, path)`, newest first.
pub fn list_snapshots(dir: impl AsRef<Path>) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
    list_with_suffix(dir.as_ref(), SNAP_SUFFIX)
}

fn list_with_suffix(dir: &Path, suffix: &str) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir, "list the snapshot directory"))? {
        let entry = entry.map_err(io_err(dir, "list the snapshot directory"))?;
        if let Some(seq) = entry.file_name().to_str().and_then(|name| parse_name(name, suffix)) {
            found.push((seq, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    Ok(found)
}

/// Reads and verifies one snapshot file. `Ok(Err(defect))` means the file is damaged; `Ok(Ok(None))`
/// means it vanished since it was listed (a concurrent prune).
fn load(path: &Path, seq: u64) -> Result<Result<Option<Vec<u8>>, SnapshotDefect>, SnapshotError> {
    let mut bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(None)),
        // Other read failures are not evidence of a bad snapshot; they stop recovery for an operator.
        Err(e) => return Err(io_err(path, "read")(e)),
    };
    Ok(verify_snapshot_bytes(&bytes, seq).map(|range| {
        bytes.truncate(range.end);
        bytes.drain(..range.start);
        Some(bytes)
    }))
}

/// Loads the newest snapshot in `dir` that verifies, trying older ones when newer ones are damaged
/// and listing those in the result. I/O errors other than damage (permissions, a missing directory)
/// are errors, not skips: recovering from an older state than necessary should be a decision, not an
/// accident.
pub fn latest_valid_snapshot(dir: impl AsRef<Path>) -> Result<SnapshotScan, SnapshotError> {
    let mut scan = SnapshotScan::default();
    for (seq, path) in list_snapshots(dir)? {
        match load(&path, seq)? {
            Ok(Some(payload)) => {
                scan.latest = Some(Snapshot { seq, payload, path });
                break;
            }
            Ok(None) => {}
            Err(defect) => scan.skipped.push(SkippedSnapshot { path, seq, defect }),
        }
    }
    Ok(scan)
}

/// Deletes old snapshots, keeping the newest `keep` (at least 1) that verify. Only snapshots older
/// than the oldest kept one are removed — damaged newer ones stay for inspection — together with
/// temporary files older than the newest kept snapshot. Nothing is removed unless at least one
/// snapshot verifies, so pruning can never leave the directory without a good snapshot. Reads and
/// checksums the kept snapshots in full.
pub fn prune_snapshots(dir: impl AsRef<Path>, keep: usize) -> Result<PruneReport, SnapshotError> {
    let dir = dir.as_ref();
    let keep = keep.max(1);
    let mut report = PruneReport::default();
    let snapshots = list_snapshots(dir)?;
    let mut oldest_kept = None;
    for (seq, path) in &snapshots {
        if report.kept.len() == keep {
            break;
        }
        if let Ok(Some(_)) = load(path, *seq)? {
            report.kept.push(*seq);
            oldest_kept = Some(*seq);
        }
    }
    let (Some(oldest_kept), Some(&newest_kept)) = (oldest_kept, report.kept.first()) else {
        return Ok(report);
    };
    let stale_snapshots = snapshots.into_iter().filter(|(seq, _)| *seq < oldest_kept);
    let stale_tmps = list_with_suffix(dir, TMP_SUFFIX)?.into_iter().filter(|(seq, _)| *seq < newest_kept);
    for (_, path) in stale_snapshots.chain(stale_tmps) {
        match fs::remove_file(&path) {
            Ok(()) => report.removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, "remove")(e)),
        }
    }
    if !report.removed.is_empty() {
        sync_dir(dir).map_err(io_err(dir, "sync the directory"))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_seq() {
        assert_eq!(snapshot_file_name(42), "snapshot-00000000000000000042.snap");
        assert_eq!(parse_name(&snapshot_file_name(u64::MAX), SNAP_SUFFIX), Some(u64::MAX));
        assert_eq!(parse_name("snapshot-42.snap", SNAP_SUFFIX), None);
        assert_eq!(parse_name("snapshot-0000000000000000004x.snap", SNAP_SUFFIX), None);
        assert_eq!(parse_name("snapshot-99999999999999999999.snap", SNAP_SUFFIX), None);
    }

    #[test]
    fn verify_catches_each_defect() {
        let payload = b"state bytes";
        let mut good = encode_header(9, payload).to_vec();
        good.extend_from_slice(payload);
        assert_eq!(verify_snapshot_bytes(&good, 9), Ok(32..good.len()));
        assert_eq!(
            verify_snapshot_bytes(&good, 8),
            Err(SnapshotDefect::SeqMismatch { in_name: 8, in_header: 9 })
        );
        assert_eq!(verify_snapshot_bytes(&good[..10], 9), Err(SnapshotDefect::Truncated { len: 10 }));
        assert!(matches!(
            verify_snapshot_bytes(&good[..good.len() - 1], 9),
            Err(SnapshotDefect::LengthMismatch { in_header: 11, actual: 10 })
        ));
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(verify_snapshot_bytes(&flipped, 9), Err(SnapshotDefect::ChecksumMismatch { .. })));
        let mut magic = good.clone();
        magic[0] = b'X';
        assert_eq!(verify_snapshot_bytes(&magic, 9), Err(SnapshotDefect::BadMagic));
        let mut version = good;
        version[8] = 7;
        assert_eq!(verify_snapshot_bytes(&version, 9), Err(SnapshotDefect::UnsupportedVersion { found: 7 }));
    }
}
