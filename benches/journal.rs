//! Journal throughput: appends with batched commits under each flush policy, replay (records read
//! and checksummed, and real commands read and decoded), the recovery scan at open, and raw
//! CRC-32C speed. Prints records per second.
//!
//! Run with `cargo bench --bench journal`. Files go to a fresh directory under the system temp
//! directory (or under `KEEL_BENCH_DIR` if set, to measure a specific disk) and are removed
//! afterwards. Payloads are 64 bytes, as a typical encoded order command, except in the replay of
//! real commands; commits cover batches of 1,024 records, the way the sequencer drains its queue.
//! Fsync numbers depend entirely on the device: on tmpfs or a disk with a volatile write cache
//! they are optimistic.

use hdrhistogram::Histogram;
use keel_engine::Sequenced;
use keel_engine::checksum::crc32c;
use keel_engine::codec;
use keel_engine::journal::{FlushPolicy, Journal, JournalReader};
use keel_sim::engine_flow::{EngineFlowConfig, generate};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PAYLOAD_LEN: usize = 64;
const BATCH: u64 = 1024;
const BUFFERED_RECORDS: u64 = 4 * 1024 * 1024;
const FSYNC_BATCHES: u64 = 200;
const RUNS: usize = 3;

/// A scratch directory removed on drop, so an interrupted run leaves nothing behind but the rest do.
struct BenchDir(PathBuf);

impl BenchDir {
    fn new() -> BenchDir {
        let base = std::env::var_os("KEEL_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("keel-journal-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the bench directory");
        BenchDir(dir)
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rate(records: u64, elapsed: Duration) -> f64 {
    records as f64 / elapsed.as_secs_f64()
}

fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / (1024.0 * 1024.0)
}

/// Appends `batches` batches of `BATCH` records; returns the elapsed time and per-commit latencies.
fn append_run(path: &Path, policy: FlushPolicy, batches: u64) -> (Duration, Histogram<u64>) {
    let _ = std::fs::remove_file(path);
    let (mut journal, _) = Journal::open(path, policy).expect("open");
    let mut commits = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    let mut payload = [0u8; PAYLOAD_LEN];
    let mut seq = 1u64;
    let start = Instant::now();
    for _ in 0..batches {
        for _ in 0..BATCH {
            // Vary the payload so the checksum work is real.
            payload[..8].copy_from_slice(&seq.to_le_bytes());
            journal.append(seq, &payload).expect("append");
            seq += 1;
        }
        let before = Instant::now();
        let durable = journal.commit().expect("commit");
        commits.saturating_record(before.elapsed().as_nanos() as u64);
        assert_eq!(durable, seq - 1);
    }
    (start.elapsed(), commits)
}

fn report_append(name: &str, path: &Path, policy: FlushPolicy, batches: u64) {
    let records = batches * BATCH;
    let mut best = Duration::MAX;
    let mut latencies = None;
    for _ in 0..RUNS {
        let (elapsed, commits) = append_run(path, policy, batches);
        if elapsed < best {
            best = elapsed;
            latencies = Some(commits);
        }
    }
    let commits = latencies.expect("at least one run");
    let bytes = std::fs::metadata(path).expect("stat").len();
    println!(
        "append {name:<28} {records:>9} records  {:>12.0} records/s  {:>8.1} MiB/s  commit p50 {:>8.1} us  p99 {:>8.1} us  max {:>8.1} us",
        rate(records, best),
        mib_per_s(bytes, best),
        commits.value_at_quantile(0.5) as f64 / 1e3,
        commits.value_at_quantile(0.99) as f64 / 1e3,
        commits.max() as f64 / 1e3,
    );
}

fn report_replay(path: &Path) {
    let bytes = std::fs::metadata(path).expect("stat").len();
    let mut best = Duration::MAX;
    let mut records = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let mut checksum = 0u64;
        let mut reader = JournalReader::open(path).expect("open for replay");
        while let Some(record) = reader.next_record().expect("read") {
            checksum = checksum.wrapping_add(record.seq ^ u64::from(record.payload[PAYLOAD_LEN - 1]));
        }
        black_box(checksum);
        let elapsed = start.elapsed();
        let report = reader.report();
        assert!(report.damage.is_none());
        records = report.records;
        best = best.min(elapsed);
    }
    println!(
        "replay {:<28} {records:>9} records  {:>12.0} records/s  {:>8.1} MiB/s",
        "JournalReader (page cache)",
        rate(records, best),
        mib_per_s(bytes, best)
    );
}

/// Replay as recovery does it, short of applying: a journal of real commands (the engine bench's
/// generated flow over 10 markets and 100,000 accounts, encoded as the sequencer encodes them)
/// read, checksummed and decoded back into commands.
fn report_replay_commands(path: &Path, commands: usize) {
    let stream = generate(&EngineFlowConfig::new(10, 100_000, commands));
    let _ = std::fs::remove_file(path);
    let (mut journal, _) = Journal::open(path, FlushPolicy::Buffered).expect("open");
    let mut payload = Vec::with_capacity(256);
    for chunk in stream.chunks(BATCH as usize) {
        for command in chunk {
            payload.clear();
            codec::encode_into(command, &mut payload);
            journal.append(command.seq, &payload).expect("append");
        }
        journal.commit().expect("commit");
    }
    drop(journal);
    let bytes = std::fs::metadata(path).expect("stat").len();
    let mut best = Duration::MAX;
    for _ in 0..RUNS {
        let start = Instant::now();
        let mut reader = JournalReader::open(path).expect("open for replay");
        let mut decoded = 0usize;
        while let Some(record) = reader.next_record().expect("read") {
            let command: Sequenced = codec::decode("journal record", record.payload).expect("decode");
            black_box(&command);
            decoded += 1;
        }
        let elapsed = start.elapsed();
        assert!(reader.report().damage.is_none());
        assert_eq!(decoded, stream.len());
        best = best.min(elapsed);
    }
    let records = stream.len() as u64;
    println!(
        "replay {:<28} {records:>9} records  {:>12.0} records/s  {:>8.1} MiB/s  ({:.1} bytes per record)",
        "read + decode commands",
        rate(records, best),
        mib_per_s(bytes, best),
        bytes as f64 / records as f64
    );
}

fn report_open_scan(path: &Path) {
    let bytes = std::fs::metadata(path).expect("stat").len();
    let mut best = Duration::MAX;
    let mut records = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let (journal, report) = Journal::open(path, FlushPolicy::Fsync).expect("open");
        let elapsed = start.elapsed();
        assert!(report.is_clean());
        records = report.records;
        drop(journal);
        best = best.min(elapsed);
    }
    println!(
        "open   {:<28} {records:>9} records  {:>12.0} records/s  {:>8.1} MiB/s",
        "recovery scan + sync",
        rate(records, best),
        mib_per_s(bytes, best)
    );
}

fn report_crc() {
    // Record-sized inputs from a cache-resident buffer: the shape of the work in append and replay.
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let chunk = 8 + PAYLOAD_LEN;
    let rounds = 64;
    let mut best = Duration::MAX;
    for _ in 0..RUNS {
        let start = Instant::now();
        let mut acc = 0u32;
        for _ in 0..rounds {
            for piece in black_box(&data).chunks_exact(chunk) {
                acc ^= crc32c(piece);
            }
        }
        black_box(acc);
        best = best.min(start.elapsed());
    }
    let bytes = (data.len() / chunk * chunk * rounds) as u64;
    println!(
        "crc32c {:<28} {:>9} bytes    {:>8.1} MiB/s ({chunk}-byte inputs)",
        "slicing-by-8",
        bytes,
        mib_per_s(bytes, best)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a plain `cargo test --benches` passes nothing and only wants
    // the target to build and run quickly.
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let dir = BenchDir::new();
    let path = dir.0.join("bench.journal");
    let scale = if quick { 64 } else { 1 };
    println!(
        "journal bench in {} ({PAYLOAD_LEN}-byte payloads, {BATCH} records per commit, best of {RUNS})",
        dir.0.display()
    );

    report_append("Buffered", &path, FlushPolicy::Buffered, BUFFERED_RECORDS / BATCH / scale);
    report_append(
        "FsyncEvery{65536}",
        &path,
        FlushPolicy::FsyncEvery { records: 65_536 },
        BUFFERED_RECORDS / BATCH / scale,
    );
    report_append("Fsync", &path, FlushPolicy::Fsync, FSYNC_BATCHES / scale);

    // Replay and recovery scan read the large Buffered journal.
    append_run(&path, FlushPolicy::Buffered, BUFFERED_RECORDS / BATCH / scale);
    report_replay(&path);
    report_open_scan(&path);
    report_replay_commands(&dir.0.join("commands.journal"), 1_000_000 / scale as usize);
    report_crc();
}
