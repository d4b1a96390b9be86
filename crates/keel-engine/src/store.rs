//! The engine's durable state on disk: a journal of sequenced commands and snapshots of the whole
//! state, in one directory; and recovery, which rebuilds the engine from them.
//!
//! ```text
//! <dir>/journal.kjl              every sequenced command, appended (see `journal`)
//! <dir>/snapshots/snapshot-<seq>.snap   the engine's state after command <seq> (see `snapshot_file`)
//! ```
//!
//! Recovery = the newest valid snapshot + the journal records after it. The journal is repaired
//! first: a torn or corrupt tail is cut at the last good record and reported.
//!
//! The journal alone makes commands durable; it holds every command since the store was created,
//! so recovery from the journal alone reaches the same state. A snapshot only shortens recovery
//! (fewer records to replay). That is why the sequencer may write snapshots in the background and
//! why a crash may leave the newest snapshot some way behind the last acknowledged command, or no
//! snapshot at all: recovery then replays more of the journal, never less of the state.

use crate::codec::{self, DecodeError};
use crate::command::Sequenced;
use crate::engine::Engine;
use crate::journal::{FlushPolicy, Journal, JournalError, JournalReader, OpenReport};
use crate::snapshot_file::{self, SnapshotError};
use std::fmt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// File name of the journal inside a store directory.
pub const JOURNAL_FILE: &str = "journal.kjl";
/// Directory of the snapshots inside a store directory.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// A store directory that cannot be opened or recovered.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The journal could not be opened, read or repaired.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Snapshots could not be listed or written.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A record or snapshot passed its checksum but does not decode: written by an incompatible
    /// version. Recovery stops rather than guess.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// The store directory could not be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The journal skips sequence numbers after the snapshot: commands are missing.
    #[error("journal resumes at {found} but the snapshot ends at {snapshot}: commands are missing")]
    Gap {
        /// Last sequence number in the snapshot.
        snapshot: u64,
        /// First journal record after it.
        found: u64,
    },
}

/// What recovery found and did.
#[derive(Debug)]
pub struct RecoveryReport {
    /// The snapshot recovery started from (its sequence number), if any.
    pub snapshot_seq: Option<u64>,
    /// Snapshots skipped as damaged, with why.
    pub skipped_snapshots: Vec<String>,
    /// Journal records applied after the snapshot.
    pub replayed: u64,
    /// The journal's start-up report (records found, tail damage and truncation).
    pub journal: OpenReport,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.snapshot_seq {
            Some(seq) => write!(f, "restored snapshot at seq {seq}")?,
            None => write!(f, "no snapshot")?,
        }
        write!(f, ", replayed {} journal records; journal: {}", self.replayed, self.journal)?;
        for skipped in &self.skipped_snapshots {
            write!(f, "; skipped {skipped}")?;
        }
        Ok(())
    }
}

/// Path of the journal in `dir`.
pub fn journal_path(dir: &Path) -> PathBuf {
    dir.join(JOURNAL_FILE)
}

/// Opens (or creates) the store in `dir` and rebuilds the engine: newest valid snapshot, then the
/// journal records after it. Returns the engine, the journal ready for appending, and a report.
pub fn recover(dir: &Path, flush: FlushPolicy) -> Result<(Engine, Journal, RecoveryReport), StoreError> {
    let snapshots = dir.join(SNAPSHOT_DIR);
    std::fs::create_dir_all(&snapshots)
        .map_err(|source| StoreError::CreateDir { path: snapshots.clone(), source })?;
    let (journal, journal_report) = Journal::open(journal_path(dir), flush)?;
    let scan = snapshot_file::latest_valid_snapshot(&snapshots)?;
    let skipped_snapshots = scan.skipped.iter().map(ToString::to_string).collect();
    let (mut engine, snapshot_seq) = match scan.into_latest() {
        Some((seq, bytes)) => (codec::decode::<Engine>("snapshot", &bytes)?.restored(), Some(seq)),
        None => (Engine::new(), None),
    };
    let from = snapshot_seq.unwrap_or(0);
    let mut replayed = 0;
    let mut events = Vec::with_capacity(256);
    let mut reader = JournalReader::open(journal_path(dir))?;
    while let Some(record) = reader.next_record()? {
        if record.seq <= from {
            continue;
        }
        // The journal itself guarantees consecutive records; this catches a journal that starts
        // after the snapshot (or after seq 1 with no snapshot).
        if record.seq != engine.last_seq() + 1 {
            return Err(StoreError::Gap { snapshot: from, found: record.seq });
        }
        let command: Sequenced = codec::decode("journal record", record.payload)?;
        events.clear();
        engine.apply(&command, &mut events);
        replayed += 1;
    }
    Ok((
        engine,
        journal,
        RecoveryReport { snapshot_seq, skipped_snapshots, replayed, journal: journal_report },
    ))
}

/// Writes a snapshot of `engine` into the store in `dir` and keeps the newest `keep` snapshots,
/// all on the calling thread: [`encode_snapshot`] then [`write_encoded_snapshot`].
pub fn snapshot(dir: &Path, engine: &Engine, keep: usize) -> Result<PathBuf, StoreError> {
    let (seq, encoded) = encode_snapshot(engine);
    write_encoded_snapshot(dir, seq, &encoded, keep)
}

/// Captures `engine` as snapshot bytes: the sequence number of the last command it has applied,
/// and its encoding. This is the part of a snapshot that needs the engine itself (so, in the
/// sequencer, the engine thread); the rest, [`write_encoded_snapshot`], needs only the bytes.
pub fn encode_snapshot(engine: &Engine) -> (u64, Vec<u8>) {
    (engine.last_seq(), codec::encode(engine))
}

/// Writes an engine encoded by [`encode_snapshot`] (its state after command `seq`) into the store
/// in `dir` — temporary file, fsync, rename, fsync of the directory — and keeps the newest `keep`
/// snapshots. The sequencer runs this on a writer thread of its own, because the write, the
/// fsyncs and the pruning (which re-reads and checksums the kept snapshots) take longer than the
/// encoding and need nothing from the engine.
pub fn write_encoded_snapshot(
    dir: &Path,
    seq: u64,
    encoded: &[u8],
    keep: usize,
) -> Result<PathBuf, StoreError> {
    let snapshots = dir.join(SNAPSHOT_DIR);
    std::fs::create_dir_all(&snapshots)
        .map_err(|source| StoreError::CreateDir { path: snapshots.clone(), source })?;
    let path = snapshot_file::write_snapshot(&snapshots, seq, encoded)?;
    snapshot_file::prune_snapshots(&snapshots, keep)?;
    Ok(path)
}

/// Reads every good command of a journal file in order, for `keel replay`; stops at the first bad
/// record and says why in the returned report.
pub fn read_journal(
    path: &Path,
    mut visit: impl FnMut(Sequenced),
) -> Result<crate::journal::ReplayReport, StoreError> {
    let mut reader = JournalReader::open(path)?;
    while let Some(record) = reader.next_record()? {
        visit(codec::decode("journal record", record.payload)?);
    }
    Ok(reader.report())
}
