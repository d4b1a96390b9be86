//! File-level tests of the journal and snapshot files: round trips, reopening, and recovery from
//! torn, corrupted and foreign files. Records here are encoded by hand from the documented format,
//! so the tests also pin the on-disk layout.

use keel_engine::checksum::crc32c;
use keel_engine::journal::{
    DamageKind, FlushPolicy, HeaderError, Journal, JournalError, JournalOptions, JournalReader, TailDamage,
};
use keel_engine::snapshot_file::{
    SnapshotDefect, latest_valid_snapshot, list_snapshots, prune_snapshots, snapshot_file_name,
    write_snapshot,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("keel-journal-test-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const HEADER: &[u8; 12] = b"KEELJNL\0\x02\0\0\0";

/// Encodes one record exactly as the module documentation describes.
fn encode(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut covered = seq.to_le_bytes().to_vec();
    covered.extend_from_slice(payload);
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32c(&covered).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn payload(seq: u64) -> Vec<u8> {
    format!("command #{seq} {}", "x".repeat((seq % 7) as usize)).into_bytes()
}

/// A journal image with records `first..first+count`, and each record's start offset.
fn image(first: u64, count: u64) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = HEADER.to_vec();
    let mut starts = Vec::new();
    for seq in first..first + count {
        starts.push(bytes.len());
        bytes.extend_from_slice(&encode(seq, &payload(seq)));
    }
    (bytes, starts)
}

fn read_all(path: &Path) -> (Vec<(u64, Vec<u8>)>, keel_engine::journal::ReplayReport) {
    let mut records = Vec::new();
    let report =
        JournalReader::open(path).unwrap().for_each_record(|seq, p| records.push((seq, p.to_vec()))).unwrap();
    (records, report)
}

fn expected(first: u64, count: u64) -> Vec<(u64, Vec<u8>)> {
    (first..first + count).map(|seq| (seq, payload(seq))).collect()
}

#[test]
fn round_trip_through_the_file() {
    let dir = TempDir::new("round-trip");
    let path = dir.path("journal");
    let (mut journal, report) = Journal::open(&path, FlushPolicy::Fsync).unwrap();
    assert!(report.created);
    assert_eq!(report.last_seq, None);
    assert_eq!(journal.commit().unwrap(), 0, "nothing durable yet");
    for batch in 0..10u64 {
        for seq in batch * 100 + 1..=batch * 100 + 100 {
            journal.append(seq, &payload(seq)).unwrap();
        }
        assert_eq!(journal.commit().unwrap(), batch * 100 + 100);
    }
    assert_eq!(journal.synced_seq(), 1000);
    let (on_disk, _) = image(1, 1000);
    assert_eq!(fs::read(&path).unwrap(), on_disk, "file matches the documented format byte for byte");
    let (records, report) = read_all(&path);
    assert_eq!(records, expected(1, 1000));
    assert_eq!(
        (report.records, report.first_seq, report.last_seq, report.damage),
        (1000, Some(1), Some(1000), None)
    );
}

#[test]
fn reopen_continues_the_sequence() {
    let dir = TempDir::new("reopen");
    let path = dir.path("journal");
    {
        let (mut journal, _) = Journal::open(&path, FlushPolicy::Buffered).unwrap();
        for seq in 50..60 {
            journal.append(seq, &payload(seq)).unwrap();
        }
        assert_eq!(journal.commit().unwrap(), 59);
        // Appended but never committed: must not survive.
        journal.append(60, b"lost").unwrap();
    }
    let (mut journal, report) = Journal::open(&path, FlushPolicy::Fsync).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!((report.records, report.first_seq, report.last_seq), (10, Some(50), Some(59)));
    assert_eq!(journal.durable_seq(), 59, "the recovered prefix is synced at open");
    assert!(matches!(journal.append(61, b"x"), Err(JournalError::OutOfSequence { last: 59, got: 61 })));
    for seq in 60..70 {
        journal.append(seq, &payload(seq)).unwrap();
    }
    assert_eq!(journal.commit().unwrap(), 69);
    drop(journal);
    assert_eq!(read_all(&path).0, expected(50, 20));
}

#[test]
fn append_rejections_leave_the_journal_usable() {
    let dir = TempDir::new("rejections");
    let path = dir.path("journal");
    let options = JournalOptions { max_record_len: 8, ..JournalOptions::new(FlushPolicy::Fsync) };
    let (mut journal, _) = Journal::open_with(&path, options).unwrap();
    assert!(matches!(journal.append(0, b"a"), Err(JournalError::ZeroSequence)));
    assert!(matches!(journal.append(1, &[0; 9]), Err(JournalError::RecordTooLarge { len: 9, max: 8 })));
    journal.append(1, &[0; 8]).unwrap();
    assert!(matches!(journal.append(1, b"a"), Err(JournalError::OutOfSequence { last: 1, got: 1 })));
    journal.append(2, b"").unwrap();
    assert_eq!(journal.pending_records(), 2);
    assert_eq!(journal.commit().unwrap(), 2);
    let message = journal.append(5, b"a").unwrap_err().to_string();
    assert_eq!(
        message,
        "append rejected: sequence number 5 does not follow the journal's last sequence number 2"
    );
}

#[test]
fn flush_policies_report_what_they_guarantee() {
    let dir = TempDir::new("policies");
    let path = dir.path("journal");
    let (mut journal, _) = Journal::open(&path, FlushPolicy::FsyncEvery { records: 25 }).unwrap();
    for seq in 1..=10 {
        journal.append(seq, b"c").unwrap();
    }
    assert_eq!(journal.commit().unwrap(), 10, "written to the OS");
    assert_eq!(journal.synced_seq(), 0, "below the fsync threshold");
    for seq in 11..=30 {
        journal.append(seq, b"c").unwrap();
    }
    assert_eq!(journal.commit().unwrap(), 30);
    assert_eq!(journal.synced_seq(), 30, "threshold crossed");
    journal.append(31, b"c").unwrap();
    assert_eq!(journal.sync().unwrap(), 31, "explicit sync covers everything");

    let (mut buffered, _) = Journal::open(dir.path("buffered"), FlushPolicy::Buffered).unwrap();
    buffered.append(1, b"c").unwrap();
    assert_eq!(buffered.commit().unwrap(), 1);
    assert_eq!(buffered.synced_seq(), 0);
}

#[test]
fn reader_of_a_live_journal_sees_committed_records_only() {
    let dir = TempDir::new("live-reader");
    let (mut journal, _) = Journal::open(dir.path("journal"), FlushPolicy::Buffered).unwrap();
    for seq in 1..=5 {
        journal.append(seq, &payload(seq)).unwrap();
    }
    journal.commit().unwrap();
    journal.append(6, b"pending").unwrap();
    let mut reader = journal.reader().unwrap();
    let mut seen = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        seen.push((record.seq, record.payload.to_vec()));
    }
    assert_eq!(seen, expected(1, 5));
    assert_eq!(reader.report().damage, None);
}

/// Cutting the file anywhere inside the last record recovers exactly the records before it and cuts
/// the file at the end of the last good one.
#[test]
fn torn_tail_at_every_offset_of_the_last_record() {
    let dir = TempDir::new("torn");
    let path = dir.path("journal");
    let (full, starts) = image(1, 5);
    let last_start = *starts.last().unwrap();
    for cut in last_start + 1..=full.len() {
        fs::write(&path, &full[..cut]).unwrap();
        let (journal, report) = Journal::open(&path, FlushPolicy::Fsync).unwrap();
        drop(journal);
        let on_disk = fs::read(&path).unwrap();
        if cut == full.len() {
            assert!(report.is_clean());
            assert_eq!(on_disk, full);
            continue;
        }
        assert_eq!(report.records, 4, "cut at {cut}");
        assert_eq!(report.last_seq, Some(4));
        assert_eq!(report.valid_bytes, last_start as u64);
        assert_eq!(report.truncated_bytes, (cut - last_start) as u64);
        assert_eq!(on_disk, &full[..last_start], "file cut to the last good record");
        let damage = report.damage.unwrap_or_else(|| panic!("cut at {cut} must be reported"));
        assert_eq!(damage.offset, last_start as u64);
        if cut - last_start < 16 {
            assert_eq!(damage.kind, DamageKind::TornRecordHeader { available: cut - last_start });
        } else {
            assert!(
                matches!(damage.kind, DamageKind::TornPayload { available, .. } if available == (cut - last_start - 16) as u64)
            );
        }
        assert_eq!(read_all(&path).0, expected(1, 4));
    }
}

#[test]
fn cut_at_a_record_boundary_is_clean() {
    let dir = TempDir::new("boundary");
    let path = dir.path("journal");
    let (full, starts) = image(1, 5);
    fs::write(&path, &full[..starts[3]]).unwrap();
    let (_, report) = Journal::open(&path, FlushPolicy::Fsync).unwrap();
    assert!(report.is_clean());
    assert_eq!(report.last_seq, Some(3));
}

/// Corrupting any byte of a middle record drops it and everything after it, and the report names
/// where that record starts.
#[test]
fn flipped_byte_in_the_middle_drops_the_rest() {
    let dir = TempDir::new("flip");
    let path = dir.path("journal");
    let (full, starts) = image(1, 9);
    let victim = 4; // seq 5
    for at in starts[victim]..starts[victim + 1] {
        let mut bytes = full.clone();
        bytes[at] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let (_, report) = Journal::open(&path, FlushPolicy::Fsync).unwrap();
        assert_eq!(report.records, 4, "flip at {at}: {report}");
        assert_eq!(report.damage.unwrap().offset, starts[victim] as u64, "flip at {at}");
        assert_eq!(report.truncated_bytes, (full.len() - starts[victim]) as u64);
        assert!(report.to_string().contains(&format!("at byte offset {}", starts[victim])), "{report}");
        assert_eq!(fs::read(&path).unwrap(), &full[..starts[victim]]);
    }
    // A flipped payload byte is a checksum mismatch specifically.
    let mut bytes = full.clone();
    bytes[starts[victim] + 17] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let (_, report) = Journal::open(&path, FlushPolicy::Fsync).unwrap();
    assert!(matches!(report.damage.unwrap().kind, DamageKind::ChecksumMismatch { seq: 5, .. }));
}

#[test]
fn sequence_gap_stops_recovery() {
    let dir = TempDir::new("gap");
    let path = dir.path("journal");
    let (mut bytes, _) = image(1, 3);
    let gap_at = bytes.len();
    bytes.extend_from_slice(&encode(5, b"skipped seq 4"));
    bytes.extend_from_slice(&encode(6, b"after the gap"));
    fs::write(&path, &bytes).unwrap();
    let (mut journal, report) = Journal::open(&path, FlushPolicy::Fsync).unwrap();
    assert_eq!(report.last_seq, Some(3));
    assert_eq!(
        report.damage,
        Some(TailDamage { offset: gap_at as u64, kind: DamageKind::SequenceGap { expected: 4, found: 5 } })
    );
    journal.append(4, b"the real seq 4").unwrap();
    assert_eq!(journal.commit().unwrap(), 4);
}

#[test]
fn oversized_length_field_is_reported_not_allocated() {
    let dir = TempDir::new("oversized");
    let path = dir.path("journal");
    let (mut bytes, _) = image(1, 2);
    let bad_at = bytes.len();
    let mut bad = encode(3, b"abc");
    bad[..4].copy_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
    bytes.extend_from_slice(&bad);
    fs::write(&path, &bytes).unwrap();
    let (_, report) = Journal::open(&path, FlushPolicy::Fsync).unwrap();
    assert_eq!(report.records, 2);
    assert_eq!(
        report.damage,
        Some(TailDamage {
            offset: bad_at as u64,
            kind: DamageKind::OversizedLength { len: 0x7FFF_FFF0, max: 16 << 20 }
        })
    );
}

#[test]
fn empty_file_is_initialised() {
    let dir = TempDir::new("empty");
    let path = dir.path("journal");
    fs::write(&path, b"").unwrap();
    let (_, report) = Journal::open(&path, FlushPolicy::Fsync).unwrap();
    assert!(report.created && report.is_clean());
    assert_eq!(fs::read(&path).unwrap(), HEADER);
}

#[test]
fn header_only_is_an_empty_journal() {
    let dir = TempDir::new("header-only");
    let path = dir.path("journal");
    fs::write(&path, HEADER).unwrap();
    let (mut journal, report) = Journal::open(&path, FlushPolicy::Fsync).unwrap();
    assert!(!report.created && report.is_clean());
    assert_eq!((report.records, report.last_seq), (0, None));
    journal.append(1000, b"first after snapshot 999").unwrap();
    assert_eq!(journal.commit().unwrap(), 1000);
    let (records, _) = read_all(&path);
    assert_eq!(records, vec![(1000, b"first after snapshot 999".to_vec())]);
}

#[test]
fn torn_file_header_is_reinitialised() {
    let dir = TempDir::new("torn-header");
    let path = dir.path("journal");
    fs::write(&path, &HEADER[..5]).unwrap();
    let (_, report) = Journal::open(&path, FlushPolicy::Fsync).unwrap();
    assert!(report.created);
    assert_eq!(report.truncated_bytes, 5);
    assert_eq!(report.damage.unwrap().kind, DamageKind::TornFileHeader { available: 5 });
    assert_eq!(fs::read(&path).unwrap(), HEADER);
}

#[test]
fn foreign_file_is_refused_and_untouched() {
    let dir = TempDir::new("foreign");
    let path = dir.path("journal");
    let contents = b"# not a journal, someone's config file\nkey = value\n".to_vec();
    fs::write(&path, &contents).unwrap();
    let err = Journal::open(&path, FlushPolicy::Fsync).unwrap_err();
    assert!(matches!(&err, JournalError::Header { source: HeaderError::NotAJournal { .. }, .. }), "{err}");
    assert!(err.to_string().contains("not a Keel journal"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), contents, "the file must not be modified");

    // A short foreign file is not mistaken for a torn header either.
    fs::write(&path, b"PK\x03").unwrap();
    assert!(Journal::open(&path, FlushPolicy::Fsync).is_err());
    assert_eq!(fs::read(&path).unwrap(), b"PK\x03");

    // A future version, and version 1 (payloads without the codec's schema byte), are refused
    // and left as they are.
    for version in [3u8, 1] {
        let mut other = HEADER.to_vec();
        other[8] = version;
        fs::write(&path, &other).unwrap();
        let err = Journal::open(&path, FlushPolicy::Fsync).unwrap_err();
        assert!(err.to_string().contains(&format!("version {version} is not supported")), "{err}");
        assert!(JournalReader::open(&path).is_err());
        assert_eq!(fs::read(&path).unwrap(), other, "the file must not be modified");
    }
}

#[test]
fn missing_directory_is_an_io_error() {
    let dir = TempDir::new("missing");
    let err = Journal::open(dir.path("no/such/dir/journal"), FlushPolicy::Fsync).unwrap_err();
    assert!(matches!(err, JournalError::Io { op: "create", .. }), "{err}");
}

#[test]
fn reader_stops_at_damage_and_reports_it() {
    let dir = TempDir::new("reader-damage");
    let path = dir.path("journal");
    let (mut bytes, starts) = image(1, 6);
    bytes[starts[3] + 20] ^= 0xFF;
    fs::write(&path, &bytes).unwrap();
    let (records, report) = read_all(&path);
    assert_eq!(records, expected(1, 3));
    assert_eq!(report.valid_bytes, starts[3] as u64);
    assert!(matches!(report.damage, Some(TailDamage { kind: DamageKind::ChecksumMismatch { .. }, .. })));
    assert_eq!(fs::read(&path).unwrap(), bytes, "replay never modifies the file");
}

#[test]
fn large_records_cross_the_read_buffer() {
    let dir = TempDir::new("large");
    let path = dir.path("journal");
    let (mut journal, _) = Journal::open(&path, FlushPolicy::Buffered).unwrap();
    let sizes = [0usize, 1, 3 << 20, 17, (1 << 20) - 16, 1 << 20, 5];
    let payloads: Vec<Vec<u8>> =
        sizes.iter().enumerate().map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect()).collect();
    for (i, p) in payloads.iter().enumerate() {
        journal.append(i as u64 + 1, p).unwrap();
        journal.commit().unwrap();
    }
    drop(journal);
    let (records, report) = read_all(&path);
    assert_eq!(report.damage, None);
    assert_eq!(records.into_iter().map(|(_, p)| p).collect::<Vec<_>>(), payloads);
}

// ---------------------------------------------------------------------------------------------
// Snapshots

#[test]
fn snapshot_round_trip_and_newest_wins() {
    let dir = TempDir::new("snap");
    assert_eq!(latest_valid_snapshot(&dir.0).unwrap().latest, None);
    write_snapshot(&dir.0, 100, b"state at 100").unwrap();
    let path = write_snapshot(&dir.0, 250, b"state at 250").unwrap();
    write_snapshot(&dir.0, 0, b"genesis").unwrap();
    assert_eq!(path, dir.path(&snapshot_file_name(250)));
    assert!(!dir.path("snapshot-00000000000000000250.tmp").exists());
    let scan = latest_valid_snapshot(&dir.0).unwrap();
    assert!(scan.skipped.is_empty());
    assert_eq!(scan.into_latest(), Some((250, b"state at 250".to_vec())));
    let listed: Vec<u64> = list_snapshots(&dir.0).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(listed, vec![250, 100, 0]);
}

#[test]
fn corrupt_newest_snapshot_falls_back_to_the_previous_one() {
    let dir = TempDir::new("snap-corrupt");
    write_snapshot(&dir.0, 10, b"state at 10").unwrap();
    write_snapshot(&dir.0, 20, b"state at 20").unwrap();
    let newest = write_snapshot(&dir.0, 30, b"state at 30").unwrap();
    let newer_torn = write_snapshot(&dir.0, 40, b"state at 40").unwrap();

    let mut bytes = fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&newest, &bytes).unwrap();
    let torn = fs::read(&newer_torn).unwrap();
    fs::write(&newer_torn, &torn[..torn.len() - 3]).unwrap();
    // Junk the scan must ignore: a crashed write and an unrelated file.
    fs::write(dir.path("snapshot-00000000000000000050.tmp"), b"half").unwrap();
    fs::write(dir.path("notes.txt"), b"hello").unwrap();

    let scan = latest_valid_snapshot(&dir.0).unwrap();
    let skipped: Vec<(u64, &SnapshotDefect)> = scan.skipped.iter().map(|s| (s.seq, &s.defect)).collect();
    assert_eq!(skipped.len(), 2);
    assert!(matches!(skipped[0], (40, SnapshotDefect::LengthMismatch { .. })));
    assert!(matches!(skipped[1], (30, SnapshotDefect::ChecksumMismatch { .. })));
    let text = scan.to_string();
    assert!(
        text.contains("skipped snapshot") && text.contains("seq 30") && text.contains("loaded snapshot"),
        "{text}"
    );
    assert_eq!(scan.into_latest(), Some((20, b"state at 20".to_vec())));

    // Pruning keeps the newest good snapshot even though newer damaged ones exist.
    let report = prune_snapshots(&dir.0, 1).unwrap();
    assert_eq!(report.kept, vec![20]);
    assert_eq!(report.removed, vec![dir.path(&snapshot_file_name(10))]);
    assert_eq!(latest_valid_snapshot(&dir.0).unwrap().into_latest().unwrap().0, 20);
}

#[test]
fn prune_keeps_the_newest_valid_snapshots_and_clears_stale_temporaries() {
    let dir = TempDir::new("prune");
    for seq in [5u64, 10, 15, 20, 25] {
        write_snapshot(&dir.0, seq, format!("state {seq}").as_bytes()).unwrap();
    }
    fs::write(dir.path("snapshot-00000000000000000007.tmp"), b"crashed").unwrap();
    fs::write(dir.path("snapshot-00000000000000000099.tmp"), b"in progress").unwrap();
    let report = prune_snapshots(&dir.0, 2).unwrap();
    assert_eq!(report.kept, vec![25, 20]);
    assert_eq!(report.removed.len(), 4, "{report:?}");
    let left: Vec<u64> = list_snapshots(&dir.0).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(left, vec![25, 20]);
    assert!(!dir.path("snapshot-00000000000000000007.tmp").exists());
    assert!(dir.path("snapshot-00000000000000000099.tmp").exists(), "a newer write may be in progress");

    // With no valid snapshot nothing is removed.
    let bare = TempDir::new("prune-bare");
    let only = write_snapshot(&bare.0, 1, b"x").unwrap();
    fs::write(&only, b"garbage").unwrap();
    assert_eq!(prune_snapshots(&bare.0, 1).unwrap().removed, Vec::<PathBuf>::new());
    assert!(only.exists());
}

#[test]
fn missing_snapshot_directory_is_an_error() {
    let dir = TempDir::new("snap-missing");
    assert!(latest_valid_snapshot(dir.path("nope")).is_err());
    assert!(write_snapshot(dir.path("nope"), 1, b"x").is_err());
}

// ---------------------------------------------------------------------------------------------
// Records and snapshots of another encoding schema

/// A store whose journal or newest snapshot was written with another encoding schema is not
/// recovered: recovery names the schema and stops, instead of decoding bytes it cannot vouch for.
#[test]
fn recovery_refuses_another_schema_by_name() {
    use keel_engine::codec::{self, DecodeError, SCHEMA_VERSION};
    use keel_engine::store::{self, StoreError};
    use keel_engine::{Command, Engine, Sequenced};

    let foreign = SCHEMA_VERSION.wrapping_add(1);
    let tick = |seq| Sequenced { seq, time_ms: 1_000 + seq, command: Command::Tick };

    // The journal: a good record, then one of another schema (checksum and sequence in order).
    let dir = TempDir::new("schema-journal");
    let (mut journal, _) = Journal::open(store::journal_path(&dir.0), FlushPolicy::Fsync).unwrap();
    journal.append(1, &codec::encode(&tick(1))).unwrap();
    let mut other = codec::encode(&tick(2));
    other[0] = foreign;
    journal.append(2, &other).unwrap();
    journal.commit().unwrap();
    drop(journal);
    match store::recover(&dir.0, FlushPolicy::Fsync) {
        Err(StoreError::Decode(DecodeError::Schema { what: "journal record", found })) => {
            assert_eq!(found, foreign)
        }
        other => panic!("expected a schema error, got {:?}", other.map(|(_, _, report)| report)),
    }

    // The newest snapshot: an engine's encoding with another schema byte, in a file with a good
    // header and checksum, as another build would have written it.
    let dir = TempDir::new("schema-snapshot");
    let snapshots = dir.path(store::SNAPSHOT_DIR);
    fs::create_dir_all(&snapshots).unwrap();
    let mut payload = codec::encode(&Engine::new());
    payload[0] = foreign;
    write_snapshot(&snapshots, 0, &payload).unwrap();
    let err = store::recover(&dir.0, FlushPolicy::Fsync).map(|_| ()).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "written with encoding schema {foreign}, this build reads schema {SCHEMA_VERSION}"
        )),
        "{err}"
    );
}
