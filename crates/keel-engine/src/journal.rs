//! The command journal: an append-only file of sequenced, checksummed records that makes the
//! engine durable. Records are opaque bytes here; what they mean is the state machine's business.
//!
//! # File format (version 2)
//!
//! All integers are little-endian. A journal file is a 12-byte file header followed by zero or
//! more records laid end to end, with no padding and no trailer:
//!
//! ```text
//! file header (12 bytes)
//!   offset  size  field
//!        0     8  magic          "KEELJNL\0" = 4B 45 45 4C 4A 4E 4C 00
//!        8     4  version        u32, currently 2
//!
//! record (16-byte record header + payload), starting at offset 12 for the first record
//!   offset  size  field
//!        0     4  len            u32, payload length in bytes (0 allowed), at most the reader's
//!                                maximum record length (16 MiB by default)
//!        4     4  crc            u32, CRC-32C (Castagnoli) over the 8 seq bytes followed by the
//!                                len payload bytes, i.e. crc32c(seq_le ‖ payload)
//!        8     8  seq            u64, the command's sequence number
//!       16   len  payload        opaque bytes
//! ```
//!
//! Sequence numbers start at 1 or later (0 is never a valid command sequence) and are strictly
//! consecutive: each record's `seq` is the previous record's `seq + 1`. The first record may carry
//! any sequence number ≥ 1, so a journal can start after a snapshot.
//!
//! The length field is not covered by the checksum; it is guarded instead by the maximum record
//! length (a corrupt length cannot make a reader allocate more than that) and by the checksum
//! landing on the wrong bytes if the length is wrong.
//!
//! # Recovery
//!
//! A reader accepts the longest prefix of well-formed records and stops at the first record that
//! is torn (the file ends inside its header or payload), has an oversized length, a checksum
//! mismatch, or a sequence number that does not follow its predecessor. [`Journal::open`] then cuts
//! the file at the end of the last good record, so the next append continues a clean file, and
//! reports what it found in an [`OpenReport`]. Because a record is only acknowledged after the
//! [`Journal::commit`] covering it has returned, a crash can only tear records nobody was told
//! about — under [`FlushPolicy::Fsync`]. Damage followed by many more bytes than one batch
//! (see [`OpenReport::truncated_bytes`]) points at media corruption rather than a torn write, and is
//! worth an operator's attention before trading resumes.
//!
//! A file that does not start with the journal magic is never modified: opening it fails with
//! [`HeaderError::NotAJournal`], because it is more likely a wrong path than a damaged journal.

use crate::checksum::Crc32c;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Magic bytes that open every journal file.
pub const MAGIC: [u8; 8] = *b"KEELJNL\0";
/// The journal format version this code writes and reads.
///
/// Version 2 differs from version 1 only in what the payloads hold: since version 2 every payload
/// starts with the codec's schema byte (`codec::SCHEMA_VERSION`). Version 1 files, whose payloads
/// do not, are refused rather than misread.
pub const FORMAT_VERSION: u32 = 2;
/// Size of the file header: magic plus version.
pub const FILE_HEADER_LEN: usize = 12;
/// Size of a record header: length, checksum, sequence number.
pub const RECORD_HEADER_LEN: usize = 16;
/// Default cap on a record's payload length, far above any real command and far below what would
/// hurt if a corrupt length field made us allocate it.
pub const DEFAULT_MAX_RECORD_LEN: u32 = 16 << 20;
/// Default initial capacity of the append buffer: one batch of about 1024 typical commands fits
/// without reallocating.
pub const DEFAULT_BUFFER_CAPACITY: usize = 256 << 10;
/// Read buffer size for replay; large reads amortise the system call per record to almost nothing.
const READ_BUFFER_LEN: usize = 1 << 20;

/// The header every journal file starts with, as bytes.
const fn file_header() -> [u8; FILE_HEADER_LEN] {
    let v = FORMAT_VERSION.to_le_bytes();
    let m = MAGIC;
    [m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], v[0], v[1], v[2], v[3]]
}

/// When appended records reach the disk, and therefore what an acknowledgement promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every commit writes the batch and calls `fdatasync`: a committed record survives a process
    /// crash, a kernel panic and a power loss (given a disk that honours flushes). The cost is one
    /// device flush per commit, so batch many records per commit.
    Fsync,
    /// Every commit writes the batch to the operating system; `fdatasync` runs once at least
    /// `records` records have been written since the last one. A committed record survives a process
    /// crash; on power loss up to `records` (rounded up to whole batches) committed records can be
    /// lost, and the journal recovers to an earlier prefix.
    FsyncEvery {
        /// Records written between two `fdatasync` calls.
        records: u64,
    },
    /// Every commit writes the batch to the operating system and never calls `fdatasync` (except in
    /// [`Journal::sync`]): a committed record survives a crash of this process but not a power loss
    /// or kernel crash, after which any suffix of committed records may be missing. For tests,
    /// simulations, and replicated deployments where another copy provides power-loss durability.
    Buffered,
}

/// Settings for [`Journal::open_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalOptions {
    /// When committed records are flushed to disk.
    pub flush: FlushPolicy,
    /// Largest accepted payload, in bytes, both when appending and when reading.
    pub max_record_len: u32,
    /// Initial capacity of the append buffer; it grows (once) if a batch is larger.
    pub buffer_capacity: usize,
}

impl JournalOptions {
    /// Default limits with the given flush policy.
    pub fn new(flush: FlushPolicy) -> Self {
        JournalOptions {
            flush,
            max_record_len: DEFAULT_MAX_RECORD_LEN,
            buffer_capacity: DEFAULT_BUFFER_CAPACITY,
        }
    }
}

/// What is wrong with the first 12 bytes of a file that was supposed to be a journal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The magic bytes do not match: this is some other file and will not be touched.
    #[error("not a Keel journal (starts with {found:02X?}, expected {MAGIC:02X?}); refusing to modify it")]
    NotAJournal {
        /// The first bytes of the file (up to 8).
        found: Vec<u8>,
    },
    /// A journal written by a different version of the format.
    #[error("journal format version {found} is not supported (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// The version found in the file header.
        found: u32,
    },
}

/// Errors from opening, appending to, committing or reading a journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An operating-system call on the journal file failed.
    #[error("journal {path}: {op} failed: {source}", path = path.display())]
    Io {
        /// The journal file.
        path: PathBuf,
        /// What we were doing, for the operator.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file's header shows it is not a journal this build can use.
    #[error("journal {path}: {source}", path = path.display())]
    Header {
        /// The file in question.
        path: PathBuf,
        /// What is wrong with its header.
        #[source]
        source: HeaderError,
    },
    /// An append whose sequence number does not directly follow the last one.
    #[error(
        "append rejected: sequence number {got} does not follow the journal's last sequence number {last}"
    )]
    OutOfSequence {
        /// The last sequence number in the journal (including uncommitted appends).
        last: u64,
        /// The sequence number offered.
        got: u64,
    },
    /// An append with sequence number 0, which is reserved to mean "nothing yet".
    #[error("append rejected: sequence number 0 is reserved; sequences start at 1")]
    ZeroSequence,
    /// A payload longer than the configured maximum record length.
    #[error("append rejected: payload of {len} bytes exceeds the maximum record length of {max} bytes")]
    RecordTooLarge {
        /// The payload length offered.
        len: usize,
        /// The configured maximum.
        max: u32,
    },
    /// A previous write or sync failed, so what reached the disk is unknown; the journal refuses
    /// further work rather than acknowledge records on top of an unknown state.
    #[error(
        "journal {path} is unusable after an earlier write or sync failure; restart the engine to recover it from disk",
        path = path.display()
    )]
    Poisoned {
        /// The journal file.
        path: PathBuf,
    },
}

/// What a reader found where the well-formed records end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// The file is shorter than the 12-byte file header but its bytes are a prefix of it: the crash
    /// happened while the journal was being created.
    TornFileHeader {
        /// Bytes present.
        available: usize,
    },
    /// The file ends inside a 16-byte record header.
    TornRecordHeader {
        /// Bytes of the record header present.
        available: usize,
    },
    /// The file ends inside a record's payload.
    TornPayload {
        /// Payload length announced by the record header.
        len: u32,
        /// Payload bytes present.
        available: u64,
    },
    /// The record's length field exceeds the maximum record length.
    OversizedLength {
        /// The length field read.
        len: u32,
        /// The maximum accepted.
        max: u32,
    },
    /// The checksum stored in the record does not match its sequence number and payload.
    ChecksumMismatch {
        /// The sequence number field as read (unverified, since the checksum failed).
        seq: u64,
        /// The checksum stored in the record.
        stored: u32,
        /// The checksum computed over the bytes read.
        computed: u32,
    },
    /// A checksum-valid record whose sequence number does not follow its predecessor (or is 0).
    SequenceGap {
        /// The sequence number that should have come next.
        expected: u64,
        /// The sequence number found.
        found: u64,
    },
}

/// The first bad spot in a journal: what was found, and at which byte offset of the file the bad
/// record (or file header) starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailDamage {
    /// Byte offset from the start of the file where the bad record begins.
    pub offset: u64,
    /// What is wrong there.
    pub kind: DamageKind,
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DamageKind::TornFileHeader { available } => {
                write!(f, "torn file header ({available} of {FILE_HEADER_LEN} bytes)")
            }
            DamageKind::TornRecordHeader { available } => {
                write!(f, "torn record header ({available} of {RECORD_HEADER_LEN} bytes)")
            }
            DamageKind::TornPayload { len, available } => {
                write!(f, "torn payload ({available} of {len} bytes)")
            }
            DamageKind::OversizedLength { len, max } => {
                write!(f, "length field {len} exceeds the maximum record length {max}")
            }
            DamageKind::ChecksumMismatch { seq, stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}) in a record claiming seq {seq}"
            ),
            DamageKind::SequenceGap { expected, found } => {
                write!(f, "sequence gap (expected seq {expected}, found {found})")
            }
        }
    }
}

impl fmt::Display for TailDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte offset {}", self.kind, self.offset)
    }
}

/// What [`Journal::open`] found and did, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The journal file.
    pub path: PathBuf,
    /// True if the file did not exist, or was empty, and a fresh journal was initialised.
    pub created: bool,
    /// Good records recovered.
    pub records: u64,
    /// Sequence number of the first good record.
    pub first_seq: Option<u64>,
    /// Sequence number of the last good record; the next append must be this plus one.
    pub last_seq: Option<u64>,
    /// File length after recovery: header plus good records.
    pub valid_bytes: u64,
    /// Bytes cut from the end of the file because they followed the first bad record.
    pub truncated_bytes: u64,
    /// The first bad record, if any.
    pub damage: Option<TailDamage>,
}

impl OpenReport {
    /// True if the journal was intact (nothing was cut).
    pub fn is_clean(&self) -> bool {
        self.damage.is_none() && self.truncated_bytes == 0
    }
}

/// Writes "N records (seq a..=b)" or "no records".
fn write_range(
    f: &mut fmt::Formatter<'_>,
    records: u64,
    first: Option<u64>,
    last: Option<u64>,
) -> fmt::Result {
    match (first, last) {
        (Some(first), Some(last)) => write!(f, "{records} records (seq {first}..={last})"),
        _ => write!(f, "no records"),
    }
}

impl fmt::Display for OpenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "journal {}: ", self.path.display())?;
        if self.created {
            write!(f, "initialised a new journal")?;
            if let Some(damage) = &self.damage {
                write!(
                    f,
                    " (previous creation was interrupted: {damage}; cut {} bytes)",
                    self.truncated_bytes
                )?;
            }
            return Ok(());
        }
        write!(f, "recovered ")?;
        write_range(f, self.records, self.first_seq, self.last_seq)?;
        write!(f, " in {} bytes", self.valid_bytes)?;
        match &self.damage {
            None => write!(f, "; clean"),
            Some(damage) => write!(
                f,
                "; DAMAGE: {damage}; truncated {} bytes after the last good record",
                self.truncated_bytes
            ),
        }
    }
}

/// What a replay read, and why it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Good records read.
    pub records: u64,
    /// Sequence number of the first good record.
    pub first_seq: Option<u64>,
    /// Sequence number of the last good record.
    pub last_seq: Option<u64>,
    /// Byte offset just past the last good record (the file header counts).
    pub valid_bytes: u64,
    /// The first bad record, if the reader stopped at one rather than at a clean end of file.
    pub damage: Option<TailDamage>,
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replayed ")?;
        write_range(f, self.records, self.first_seq, self.last_seq)?;
        match &self.damage {
            None => write!(f, ", clean end of journal at byte {}", self.valid_bytes),
            Some(damage) => write!(f, ", stopped at {damage}"),
        }
    }
}

/// State of a file's first bytes, as far as the journal header goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderState {
    /// The file is empty.
    Empty,
    /// The file is shorter than the header but matches it so far.
    Torn,
    /// A complete, supported header.
    Valid,
}

/// Classifies the first bytes of a file (pass at least `FILE_HEADER_LEN` bytes if the file has them).
fn check_file_header(bytes: &[u8]) -> Result<HeaderState, HeaderError> {
    let expected = file_header();
    if bytes.is_empty() {
        return Ok(HeaderState::Empty);
    }
    if bytes.len() < FILE_HEADER_LEN {
        return if expected.starts_with(bytes) {
            Ok(HeaderState::Torn)
        } else {
            Err(HeaderError::NotAJournal { found: bytes[..bytes.len().min(MAGIC.len())].to_vec() })
        };
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(HeaderError::NotAJournal { found: bytes[..MAGIC.len()].to_vec() });
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion { found: version });
    }
    Ok(HeaderState::Valid)
}

/// The result of decoding one record at the start of a byte slice.
enum Decoded {
    /// A good record: its sequence number and total encoded length (header plus payload).
    Record { seq: u64, encoded_len: usize },
    /// The slice ends before the record does; `needed` bytes would be required to decide.
    Incomplete { needed: usize },
    /// The record is bad.
    Damaged(DamageKind),
}

/// Decodes the record at the start of `buf`. `last_seq` is the previous good record's sequence
/// number (None before the first). Pure and total: never panics, never allocates.
#[inline]
fn decode_record(buf: &[u8], last_seq: Option<u64>, max_len: u32) -> Decoded {
    if buf.len() < 4 {
        return Decoded::Incomplete { needed: RECORD_HEADER_LEN };
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len > max_len {
        return Decoded::Damaged(DamageKind::OversizedLength { len, max: max_len });
    }
    if buf.len() < RECORD_HEADER_LEN {
        return Decoded::Incomplete { needed: RECORD_HEADER_LEN };
    }
    // `len <= max_len <= u32::MAX`, so this cannot overflow a 64-bit usize; saturate elsewhere.
    let encoded_len = RECORD_HEADER_LEN.saturating_add(len as usize);
    if buf.len() < encoded_len {
        return Decoded::Incomplete { needed: encoded_len };
    }
    let stored = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let seq_bytes = [buf[8], buf[9], buf[10], buf[11], buf[12], buf[13], buf[14], buf[15]];
    let computed = Crc32c::new().update(&seq_bytes).update(&buf[RECORD_HEADER_LEN..encoded_len]).finish();
    let seq = u64::from_le_bytes(seq_bytes);
    if stored != computed {
        return Decoded::Damaged(DamageKind::ChecksumMismatch { seq, stored, computed });
    }
    let expected = match last_seq {
        None => seq.max(1),
        Some(last) => last.wrapping_add(1),
    };
    if seq != expected || seq == 0 {
        return Decoded::Damaged(DamageKind::SequenceGap { expected, found: seq });
    }
    Decoded::Record { seq, encoded_len }
}

/// The damage to report when the input ends with `available` bytes of an unfinished record.
fn torn_kind(rest: &[u8]) -> DamageKind {
    if rest.len() < RECORD_HEADER_LEN {
        DamageKind::TornRecordHeader { available: rest.len() }
    } else {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        DamageKind::TornPayload { len, available: (rest.len() - RECORD_HEADER_LEN) as u64 }
    }
}

/// A whole journal image parsed in memory by [`parse_records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedJournal {
    /// Each good record's sequence number and the byte range of its payload in the input.
    pub records: Vec<(u64, Range<usize>)>,
    /// Length of the good prefix: the file header plus all good records.
    pub valid_len: usize,
    /// The first bad record, if any.
    pub damage: Option<TailDamage>,
}

/// Parses a complete journal file image: validates the file header, then returns the good records
/// and the first damage. Total over arbitrary input (never panics, allocates only the result), so it
/// can be driven directly by a fuzzer; it applies exactly the rules [`Journal::open`] and
/// [`JournalReader`] apply.
pub fn parse_records(file: &[u8], max_record_len: u32) -> Result<ParsedJournal, HeaderError> {
    let mut parsed = ParsedJournal { records: Vec::new(), valid_len: 0, damage: None };
    match check_file_header(&file[..file.len().min(FILE_HEADER_LEN)])? {
        HeaderState::Empty => return Ok(parsed),
        HeaderState::Torn => {
            parsed.damage =
                Some(TailDamage { offset: 0, kind: DamageKind::TornFileHeader { available: file.len() } });
            return Ok(parsed);
        }
        HeaderState::Valid => {}
    }
    let mut pos = FILE_HEADER_LEN;
    let mut last_seq = None;
    while pos < file.len() {
        let rest = &file[pos..];
        match decode_record(rest, last_seq, max_record_len) {
            Decoded::Record { seq, encoded_len } => {
                parsed.records.push((seq, pos + RECORD_HEADER_LEN..pos + encoded_len));
                last_seq = Some(seq);
                pos += encoded_len;
            }
            Decoded::Incomplete { .. } => {
                parsed.damage = Some(TailDamage { offset: pos as u64, kind: torn_kind(rest) });
                break;
            }
            Decoded::Damaged(kind) => {
                parsed.damage = Some(TailDamage { offset: pos as u64, kind });
                break;
            }
        }
    }
    parsed.valid_len = pos;
    Ok(parsed)
}

/// Streaming record decoder over any byte source, with one reusable read buffer. Shared by replay
/// and by the recovery scan in [`Journal::open`], so both apply the same rules.
struct RecordStream<R> {
    src: R,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The source is exhausted (or the byte limit reached).
    eof: bool,
    /// Bytes the stream may still read from `src`.
    remaining: u64,
    /// File offset of `buf[start]`.
    offset: u64,
    max_record_len: u32,
    records: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    damage: Option<TailDamage>,
    done: bool,
}

impl<R: Read> RecordStream<R> {
    fn new(src: R, max_record_len: u32, buffer_len: usize, limit: u64) -> Self {
        RecordStream {
            src,
            buf: vec![0; buffer_len.max(RECORD_HEADER_LEN)],
            start: 0,
            end: 0,
            eof: false,
            remaining: limit,
            offset: 0,
            max_record_len,
            records: 0,
            first_seq: None,
            last_seq: None,
            damage: None,
            done: false,
        }
    }

    /// Makes at least `needed` unconsumed bytes available, unless the source ends first.
    fn fill(&mut self, needed: usize) -> io::Result<()> {
        // Compact when the record would not fit, or when the consumed prefix is large enough that
        // refilling only the tail would mean many small reads.
        if self.start + needed > self.buf.len() || self.start > self.buf.len() / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if needed > self.buf.len() {
                // Only for records larger than the read buffer; bounded by the maximum record length.
                self.buf.resize(needed, 0);
            }
        }
        while self.end - self.start < needed && !self.eof {
            let room = (self.buf.len() - self.end).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            if room == 0 {
                self.eof = true;
                break;
            }
            match self.src.read(&mut self.buf[self.end..self.end + room]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.end += n;
                    self.remaining -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads and checks the file header; returns its state.
    fn read_header(&mut self) -> io::Result<Result<HeaderState, HeaderError>> {
        self.fill(FILE_HEADER_LEN)?;
        let avail = (self.end - self.start).min(FILE_HEADER_LEN);
        let state = check_file_header(&self.buf[self.start..self.start + avail]);
        match state {
            Ok(HeaderState::Valid) => {
                self.start += FILE_HEADER_LEN;
                self.offset = FILE_HEADER_LEN as u64;
            }
            Ok(HeaderState::Torn) => {
                self.damage =
                    Some(TailDamage { offset: 0, kind: DamageKind::TornFileHeader { available: avail } });
                self.done = true;
            }
            Ok(HeaderState::Empty) | Err(_) => self.done = true,
        }
        Ok(state)
    }

    /// Advances to the next good record and returns its sequence number and payload range in
    /// `self.buf`, or None at a clean end or at the first damage.
    #[inline]
    fn next_range(&mut self) -> io::Result<Option<(u64, Range<usize>)>> {
        loop {
            if self.done {
                return Ok(None);
            }
            let rest = &self.buf[self.start..self.end];
            match decode_record(rest, self.last_seq, self.max_record_len) {
                Decoded::Record { seq, encoded_len } => {
                    let range = self.start + RECORD_HEADER_LEN..self.start + encoded_len;
                    self.start += encoded_len;
                    self.offset += encoded_len as u64;
                    self.records += 1;
                    self.first_seq.get_or_insert(seq);
                    self.last_seq = Some(seq);
                    return Ok(Some((seq, range)));
                }
                Decoded::Incomplete { needed } => {
                    if self.eof {
                        if !rest.is_empty() {
                            self.damage = Some(TailDamage { offset: self.offset, kind: torn_kind(rest) });
                        }
                        self.done = true;
                    } else {
                        self.fill(needed)?;
                    }
                }
                Decoded::Damaged(kind) => {
                    self.damage = Some(TailDamage { offset: self.offset, kind });
                    self.done = true;
                }
            }
        }
    }

    fn report(&self) -> ReplayReport {
        ReplayReport {
            records: self.records,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            valid_bytes: self.offset,
            damage: self.damage,
        }
    }
}

/// One record read back from a journal, borrowing the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The command's sequence number.
    pub seq: u64,
    /// The opaque payload.
    pub payload: &'a [u8],
}

/// Sequential reader for replay. It yields good records in order and stops quietly at the first bad
/// one; [`JournalReader::report`] then says where and why. It never modifies the file — use
/// [`Journal::open`] first at start-up to repair the tail.
pub struct JournalReader<R = File> {
    stream: RecordStream<R>,
    path: PathBuf,
}

impl JournalReader<File> {
    /// Opens the journal at `path` for replay with the default maximum record length.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, JournalError> {
        Self::open_with(path, DEFAULT_MAX_RECORD_LEN)
    }

    /// Opens the journal at `path` for replay, rejecting records longer than `max_record_len`.
    pub fn open_with(path: impl AsRef<Path>, max_record_len: u32) -> Result<Self, JournalError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(io_err(path, "open for replay"))?;
        Self::with_limit(file, path.to_path_buf(), max_record_len, u64::MAX)
    }
}

impl<R: Read> JournalReader<R> {
    /// Reads a journal image from any byte source (a file, a network stream, a slice in tests);
    /// `name` appears in error messages.
    pub fn from_reader(src: R, name: impl Into<PathBuf>, max_record_len: u32) -> Result<Self, JournalError> {
        Self::with_limit(src, name.into(), max_record_len, u64::MAX)
    }

    fn with_limit(src: R, path: PathBuf, max_record_len: u32, limit: u64) -> Result<Self, JournalError> {
        let mut stream = RecordStream::new(src, max_record_len, READ_BUFFER_LEN, limit);
        match stream.read_header() {
            Err(source) => Err(JournalError::Io { path, op: "read the file header", source }),
            Ok(Err(source)) => Err(JournalError::Header { path, source }),
            Ok(Ok(_)) => Ok(JournalReader { stream, path }),
        }
    }

    /// The next good record, or None at the end of the good records (see [`Self::report`]).
    #[inline]
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, JournalError> {
        match self.stream.next_range() {
            Ok(Some((seq, range))) => Ok(Some(Record { seq, payload: &self.stream.buf[range] })),
            Ok(None) => Ok(None),
            Err(source) => Err(JournalError::Io { path: self.path.clone(), op: "read", source }),
        }
    }

    /// Calls `apply` with every good record in order, then returns the report.
    pub fn for_each_record(
        mut self,
        mut apply: impl FnMut(u64, &[u8]),
    ) -> Result<ReplayReport, JournalError> {
        while let Some(record) = self.next_record()? {
            apply(record.seq, record.payload);
        }
        Ok(self.report())
    }

    /// What has been read so far; after `next_record` returned None, why reading stopped.
    pub fn report(&self) -> ReplayReport {
        self.stream.report()
    }
}

/// Adapts an `io::Error` into a [`JournalError::Io`] naming the file and the operation.
fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io { path: path.to_path_buf(), op, source }
}

/// Makes a directory entry (a created or renamed file) durable. Only Unix can open and sync a
/// directory; elsewhere the rename is as durable as the platform makes it.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The append side of the journal: one writer, buffering a batch of records in memory and making it
/// durable on [`Journal::commit`].
///
/// Only one `Journal` may have a file open at a time; the engine's single-writer design guarantees
/// that, and nothing here locks the file. Dropping a `Journal` discards uncommitted appends, which is
/// correct because nothing uncommitted was acknowledged; call [`Journal::sync`] before a clean
/// shutdown under the non-`Fsync` policies.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    options: JournalOptions,
    /// Encoded records appended since the last commit.
    buf: Vec<u8>,
    /// Records in `buf`.
    buffered_records: u64,
    /// Last appended sequence number, committed or not.
    last_seq: Option<u64>,
    /// Last sequence number handed to the operating system.
    written_seq: Option<u64>,
    /// Last sequence number covered by an `fdatasync`.
    synced_seq: Option<u64>,
    /// Records written since the last `fdatasync`.
    unsynced_records: u64,
    /// Bytes in the file (header plus written records).
    file_len: u64,
    poisoned: bool,
}

impl Journal {
    /// Opens (or creates) the journal at `path` with default limits; see [`Journal::open_with`].
    pub fn open(path: impl AsRef<Path>, flush: FlushPolicy) -> Result<(Journal, OpenReport), JournalError> {
        Self::open_with(path, JournalOptions::new(flush))
    }

    /// Opens the journal at `path`, creating it if missing. An existing file is scanned in full;
    /// at the first bad or torn record the file is truncated to the end of the last good record and
    /// synced, and the report says what was found. The recovered records are synced to disk before
    /// this returns, so anything replayed from them is durable whatever the previous process's
    /// flush policy was. Replay them with [`Journal::reader`].
    pub fn open_with(
        path: impl AsRef<Path>,
        options: JournalOptions,
    ) -> Result<(Journal, OpenReport), JournalError> {
        let path = path.as_ref();
        let (mut file, mut created) =
            match OpenOptions::new().read(true).write(true).create_new(true).open(path) {
                Ok(file) => (file, true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let file =
                        OpenOptions::new().read(true).write(true).open(path).map_err(io_err(path, "open"))?;
                    (file, false)
                }
                Err(e) => return Err(io_err(path, "create")(e)),
            };
        let existing_len = file.metadata().map_err(io_err(path, "stat"))?.len();

        let mut scan =
            ReplayReport { records: 0, first_seq: None, last_seq: None, valid_bytes: 0, damage: None };
        let mut needs_header = created || existing_len == 0;
        if !needs_header {
            let mut stream = RecordStream::new(&mut file, options.max_record_len, READ_BUFFER_LEN, u64::MAX);
            let state = stream
                .read_header()
                .map_err(io_err(path, "read the file header"))?
                .map_err(|source| JournalError::Header { path: path.to_path_buf(), source })?;
            while stream.next_range().map_err(io_err(path, "scan"))?.is_some() {}
            scan = stream.report();
            if state != HeaderState::Valid {
                needs_header = true;
            }
        }

        let (valid_bytes, truncated_bytes) = if needs_header {
            // Empty or torn at creation: start over with a fresh header.
            file.set_len(0).map_err(io_err(path, "truncate"))?;
            file.seek(SeekFrom::Start(0)).map_err(io_err(path, "seek"))?;
            file.write_all(&file_header()).map_err(io_err(path, "write the file header"))?;
            file.sync_all().map_err(io_err(path, "sync"))?;
            let dir = path.parent().unwrap_or(Path::new(""));
            sync_dir(dir).map_err(io_err(path, "sync the parent directory"))?;
            created = true;
            (FILE_HEADER_LEN as u64, existing_len)
        } else {
            if scan.damage.is_some() || scan.valid_bytes != existing_len {
                file.set_len(scan.valid_bytes).map_err(io_err(path, "truncate the damaged tail"))?;
            }
            // Also makes durable whatever a previous process wrote without syncing.
            file.sync_all().map_err(io_err(path, "sync"))?;
            file.seek(SeekFrom::Start(scan.valid_bytes)).map_err(io_err(path, "seek"))?;
            (scan.valid_bytes, existing_len.saturating_sub(scan.valid_bytes))
        };

        let report = OpenReport {
            path: path.to_path_buf(),
            created,
            records: scan.records,
            first_seq: scan.first_seq,
            last_seq: scan.last_seq,
            valid_bytes,
            truncated_bytes,
            damage: scan.damage,
        };
        let journal = Journal {
            file,
            path: path.to_path_buf(),
            options,
            buf: Vec::with_capacity(options.buffer_capacity),
            buffered_records: 0,
            last_seq: scan.last_seq,
            written_seq: scan.last_seq,
            synced_seq: scan.last_seq,
            unsynced_records: 0,
            file_len: valid_bytes,
            poisoned: false,
        };
        Ok((journal, report))
    }

    /// Buffers one record. `seq` must be the last sequence number plus one; in an empty journal any
    /// `seq >= 1` is accepted (a journal may start right after a snapshot). Nothing reaches the file
    /// until [`Journal::commit`], and the record must not be acknowledged before that returns.
    #[inline]
    pub fn append(&mut self, seq: u64, payload: &[u8]) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned { path: self.path.clone() });
        }
        if payload.len() > self.options.max_record_len as usize {
            return Err(JournalError::RecordTooLarge {
                len: payload.len(),
                max: self.options.max_record_len,
            });
        }
        match self.last_seq {
            None if seq == 0 => return Err(JournalError::ZeroSequence),
            Some(last) if last.checked_add(1) != Some(seq) => {
                return Err(JournalError::OutOfSequence { last, got: seq });
            }
            _ => {}
        }
        let seq_bytes = seq.to_le_bytes();
        let crc = Crc32c::new().update(&seq_bytes).update(payload).finish();
        // Length checked above against a u32 maximum, so the cast is exact.
        self.buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf.extend_from_slice(&seq_bytes);
        self.buf.extend_from_slice(payload);
        self.buffered_records += 1;
        self.last_seq = Some(seq);
        Ok(())
    }

    /// Writes the buffered batch and flushes it as the policy requires; returns the highest sequence
    /// number that now meets the policy's guarantee (0 if none), so every command with a sequence
    /// number up to it may be acknowledged. On any I/O error the journal is poisoned: what reached
    /// the disk is unknown, so it must be reopened (recovered) rather than retried.
    pub fn commit(&mut self) -> Result<u64, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned { path: self.path.clone() });
        }
        self.write_buffer()?;
        let due = match self.options.flush {
            FlushPolicy::Fsync => self.unsynced_records > 0,
            FlushPolicy::FsyncEvery { records } => self.unsynced_records >= records.max(1),
            FlushPolicy::Buffered => false,
        };
        if due {
            self.sync_file()?;
        }
        Ok(self.durable_seq())
    }

    /// Commits, then syncs regardless of the policy (for shutdown or before taking a snapshot);
    /// returns the highest synced sequence number (0 if none).
    pub fn sync(&mut self) -> Result<u64, JournalError> {
        self.commit()?;
        if self.unsynced_records > 0 {
            self.sync_file()?;
        }
        Ok(self.synced_seq.unwrap_or(0))
    }

    fn write_buffer(&mut self) -> Result<(), JournalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(source) = self.file.write_all(&self.buf) {
            self.poisoned = true;
            return Err(JournalError::Io { path: self.path.clone(), op: "write", source });
        }
        self.file_len += self.buf.len() as u64;
        self.buf.clear();
        self.unsynced_records += self.buffered_records;
        self.buffered_records = 0;
        self.written_seq = self.last_seq;
        Ok(())
    }

    fn sync_file(&mut self) -> Result<(), JournalError> {
        // After a failed fdatasync the kernel may have dropped the dirty pages and a retry can
        // falsely succeed, so a failure poisons the journal instead of being retried.
        if let Err(source) = self.file.sync_data() {
            self.poisoned = true;
            return Err(JournalError::Io { path: self.path.clone(), op: "sync", source });
        }
        self.synced_seq = self.written_seq;
        self.unsynced_records = 0;
        Ok(())
    }

    /// Highest sequence number meeting the flush policy's guarantee (0 if none): synced for
    /// [`FlushPolicy::Fsync`], written to the operating system for the other policies.
    pub fn durable_seq(&self) -> u64 {
        match self.options.flush {
            FlushPolicy::Fsync => self.synced_seq.unwrap_or(0),
            FlushPolicy::FsyncEvery { .. } | FlushPolicy::Buffered => self.written_seq.unwrap_or(0),
        }
    }

    /// Highest sequence number covered by an `fdatasync` (0 if none).
    pub fn synced_seq(&self) -> u64 {
        self.synced_seq.unwrap_or(0)
    }

    /// Last appended sequence number, committed or not; the next append must be this plus one.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Records appended but not yet committed.
    pub fn pending_records(&self) -> u64 {
        self.buffered_records
    }

    /// Bytes written to the file so far (header plus committed records).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The journal file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options the journal was opened with.
    pub fn options(&self) -> JournalOptions {
        self.options
    }

    /// A replay reader over the records committed so far (uncommitted appends are not included).
    pub fn reader(&self) -> Result<JournalReader<File>, JournalError> {
        let file = File::open(&self.path).map_err(io_err(&self.path, "open for replay"))?;
        JournalReader::with_limit(file, self.path.clone(), self.options.max_record_len, self.file_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Encodes records by hand, independently of `Journal::append`.
    fn image(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = file_header().to_vec();
        for &(seq, payload) in records {
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            let mut crc = Crc32c::new();
            crc.update(&seq.to_le_bytes()).update(payload);
            out.extend_from_slice(&crc.finish().to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(payload);
        }
        out
    }

    type OwnedRecords = Vec<(u64, Vec<u8>)>;

    /// Runs the streaming reader with a tiny buffer, to exercise refills at every boundary; None if
    /// the header is rejected.
    fn stream_parse(bytes: &[u8], max: u32, buffer_len: usize) -> Option<(OwnedRecords, ReplayReport)> {
        let mut stream = RecordStream::new(bytes, max, buffer_len, u64::MAX);
        stream.read_header().unwrap().ok()?;
        let mut out = Vec::new();
        while let Some((seq, range)) = stream.next_range().unwrap() {
            out.push((seq, stream.buf[range].to_vec()));
        }
        Some((out, stream.report()))
    }

    #[test]
    fn format_is_as_documented() {
        let bytes = image(&[(7, b"abc")]);
        assert_eq!(&bytes[..8], b"KEELJNL\0");
        assert_eq!(&bytes[8..12], &[2, 0, 0, 0]);
        assert_eq!(&bytes[12..16], &[3, 0, 0, 0]);
        let crc = crate::checksum::crc32c(&[7, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', b'c']);
        assert_eq!(&bytes[16..20], &crc.to_le_bytes());
        assert_eq!(&bytes[20..28], &[7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[28..], b"abc");
    }

    #[test]
    fn parses_good_records() {
        let bytes = image(&[(5, b"a"), (6, b""), (7, b"xyz")]);
        let parsed = parse_records(&bytes, 1024).unwrap();
        assert_eq!(parsed.damage, None);
        assert_eq!(parsed.valid_len, bytes.len());
        let got: Vec<(u64, &[u8])> = parsed.records.iter().map(|(s, r)| (*s, &bytes[r.clone()])).collect();
        assert_eq!(got, vec![(5, &b"a"[..]), (6, &b""[..]), (7, &b"xyz"[..])]);
    }

    #[test]
    fn header_cases() {
        assert_eq!(parse_records(b"", 16).unwrap().damage, None);
        let torn = parse_records(b"KEEL", 16).unwrap();
        assert_eq!(
            torn.damage,
            Some(TailDamage { offset: 0, kind: DamageKind::TornFileHeader { available: 4 } })
        );
        assert!(matches!(parse_records(b"PK\x03\x04", 16), Err(HeaderError::NotAJournal { .. })));
        assert!(matches!(parse_records(b"hello, world!", 16), Err(HeaderError::NotAJournal { .. })));
        // Version 1 (payloads without a schema byte) and any later version are refused.
        for version in [1, FORMAT_VERSION + 1] {
            let mut other = file_header().to_vec();
            other[8..12].copy_from_slice(&version.to_le_bytes());
            assert_eq!(parse_records(&other, 16), Err(HeaderError::UnsupportedVersion { found: version }));
        }
    }

    #[test]
    fn sequence_rules() {
        let gap = image(&[(1, b"a"), (3, b"b")]);
        let parsed = parse_records(&gap, 16).unwrap();
        assert_eq!(parsed.records.len(), 1);
        assert_eq!(parsed.damage.unwrap().kind, DamageKind::SequenceGap { expected: 2, found: 3 });
        assert_eq!(parsed.damage.unwrap().offset, 12 + 17);

        let zero = image(&[(0, b"a")]);
        let parsed = parse_records(&zero, 16).unwrap();
        assert_eq!(parsed.damage.unwrap().kind, DamageKind::SequenceGap { expected: 1, found: 0 });

        let wrap = image(&[(u64::MAX, b"a"), (0, b"b")]);
        let parsed = parse_records(&wrap, 16).unwrap();
        assert_eq!(parsed.records.len(), 1);
        assert!(matches!(parsed.damage.unwrap().kind, DamageKind::SequenceGap { found: 0, .. }));
    }

    #[test]
    fn oversized_length_is_damage_not_allocation() {
        let mut bytes = image(&[(1, b"a")]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 12]);
        let parsed = parse_records(&bytes, 1 << 20).unwrap();
        assert_eq!(parsed.records.len(), 1);
        assert_eq!(
            parsed.damage,
            Some(TailDamage {
                offset: 29,
                kind: DamageKind::OversizedLength { len: u32::MAX, max: 1 << 20 }
            })
        );
        let (records, report) = stream_parse(&bytes, 1 << 20, 64).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(report.damage, parsed.damage);
    }

    #[test]
    fn display_is_readable() {
        let damage = TailDamage {
            offset: 1234,
            kind: DamageKind::ChecksumMismatch { seq: 99, stored: 0xDEAD_BEEF, computed: 0x0123_4567 },
        };
        let report = OpenReport {
            path: PathBuf::from("keel.journal"),
            created: false,
            records: 98,
            first_seq: Some(1),
            last_seq: Some(98),
            valid_bytes: 1234,
            truncated_bytes: 40,
            damage: Some(damage),
        };
        assert_eq!(
            report.to_string(),
            "journal keel.journal: recovered 98 records (seq 1..=98) in 1234 bytes; DAMAGE: checksum mismatch \
             (stored 0xdeadbeef, computed 0x01234567) in a record claiming seq 99 at byte offset 1234; \
             truncated 40 bytes after the last good record"
        );
    }

    fn arb_image() -> impl Strategy<Value = Vec<u8>> {
        let records = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8);
        (records, 1u64..5, any::<Vec<(usize, u8)>>(), any::<Option<usize>>()).prop_map(
            |(payloads, first, flips, cut)| {
                let recs: Vec<(u64, &[u8])> =
                    payloads.iter().enumerate().map(|(i, p)| (first + i as u64, p.as_slice())).collect();
                let mut bytes = image(&recs);
                for (at, mask) in flips.into_iter().take(2) {
                    let at = at % bytes.len();
                    bytes[at] ^= mask;
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut % (bytes.len() + 1));
                }
                bytes
            },
        )
    }

    proptest! {
        /// The in-memory parser and the streaming reader agree on every input, at every buffer size.
        #[test]
        fn stream_agrees_with_parser(bytes in arb_image(), buffer_len in 1usize..80) {
            let parsed = parse_records(&bytes, 64);
            let streamed = stream_parse(&bytes, 64, buffer_len);
            match (parsed, streamed) {
                (Err(_), None) => {}
                (Ok(parsed), Some((records, report))) => {
                    let expected: Vec<(u64, Vec<u8>)> =
                        parsed.records.iter().map(|(s, r)| (*s, bytes[r.clone()].to_vec())).collect();
                    prop_assert_eq!(records, expected);
                    prop_assert_eq!(report.damage, parsed.damage);
                    if parsed.valid_len >= FILE_HEADER_LEN {
                        prop_assert_eq!(report.valid_bytes, parsed.valid_len as u64);
                    }
                }
                (p, s) => prop_assert!(false, "parser {:?} vs stream {:?}", p.is_ok(), s.is_some()),
            }
        }

        /// Arbitrary bytes never panic the parser.
        #[test]
        fn parser_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..200), max in any::<u32>()) {
            let mut bytes = bytes;
            if bytes.len() >= 12 && bytes[0] & 1 == 0 {
                bytes[..12].copy_from_slice(&file_header());
            }
            let _ = parse_records(&bytes, max);
            let _ = stream_parse(&bytes, max.min(1 << 16), 7);
        }
    }
}
