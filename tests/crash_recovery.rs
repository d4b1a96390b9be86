//! Crash recovery of `keel run`, on a real process and a real disk: acknowledged commands survive
//! a SIGKILL, the recovered state (newest snapshot + journal tail) equals a clean replay of the
//! journal, and a damaged journal is cut at the damage and reported.
//!
//! Acknowledgements are durable through the journal alone; snapshots are written in the
//! background and only shorten recovery, so nothing ties a snapshot's arrival on disk to an
//! acknowledgement. To exercise recovery from a snapshot, the kill test waits until one is on disk.

use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Accounts the deposits rotate over. Numeric ids, because names do not outlive a process.
const ACCOUNTS: u32 = 4;

/// Upper bound on any single wait, so a broken binary fails the test instead of hanging it.
const TIMEOUT: Duration = Duration::from_secs(60);

/// How long the kill test waits for the first background snapshot to reach the disk.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);

/// The sequence numbers of the complete snapshot files (`snapshot-<seq>.snap`) in `store`. A
/// snapshot is renamed to that name only after it was written and synced, so one seen here is
/// whole; temporary files (`.tmp`) are not counted.
fn snapshots_on_disk(store: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(store.join("snapshots")) else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_prefix("snapshot-")?.strip_suffix(".snap")?.parse().ok()
        })
        .collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-crash-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}

fn setup_lines() -> Vec<String> {
    let mut lines = vec![r#"{"cmd":"create_market","preset":"BTC-PERP","id":1}"#.to_string()];
    for account in 1..=ACCOUNTS {
        lines.push(format!(r#"{{"cmd":"open_account","account":{account}}}"#));
    }
    lines
}

/// The `i`-th deposit line: account `1 + i % ACCOUNTS` receives 1 USD.
fn deposit_line(i: u64) -> String {
    format!(r#"{{"cmd":"deposit","account":{},"amount":"1"}}"#, 1 + i % u64::from(ACCOUNTS))
}

/// Runs `keel run` on `store` with `stdin` as input, waiting at most [`TIMEOUT`].
fn run_store(store: &Path, stdin: &str) -> Output {
    let mut child = Command::new(KEEL)
        .args(["run", "--store", store.to_str().expect("utf-8 path"), "--flush", "fsync"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel starts");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let (done, finished) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done.send(());
        output
    });
    finished.recv_timeout(TIMEOUT).expect("keel run finishes in time");
    waiter.join().expect("waiter").expect("keel output")
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The final `{"shutdown":{..}}` line's (last_seq, digest).
fn shutdown_state(lines: &[Value]) -> (u64, u64) {
    let shutdown = &lines.last().expect("output")["shutdown"];
    (shutdown["last_seq"].as_u64().expect("last_seq"), shutdown["digest"].as_u64().expect("digest"))
}

/// Settlement balances (money units) from the account views among `lines`' outcomes.
fn balances(lines: &[Value]) -> HashMap<u64, i64> {
    lines
        .iter()
        .filter_map(|l| l["events"].as_array())
        .flatten()
        .filter_map(|e| e.get("AccountView"))
        .map(|v| (v["account"].as_u64().expect("account"), v["balance"].as_i64().expect("balance")))
        .collect()
}

/// Asks a store for every account's view and its digest, then shuts it down.
fn inspect(store: &Path) -> (Output, Vec<Value>) {
    let mut input: String =
        (1..=ACCOUNTS).map(|a| format!("{{\"cmd\":\"account\",\"account\":{a}}}\n")).collect();
    input.push_str("{\"cmd\":\"digest\"}\n");
    let output = run_store(store, &input);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let lines = json_lines(&output);
    (output, lines)
}

/// `keel replay` of a journal: its summary line.
fn replay(journal: &Path) -> (Output, Value) {
    let output = Command::new(KEEL).arg("replay").arg(journal).output().expect("keel replay");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = json_lines(&output).pop().expect("summary line");
    (output, summary)
}

#[test]
fn acknowledged_commands_survive_a_kill_and_recovery_equals_replay() {
    let dir = temp_dir("kill");
    let store = dir.join("store");
    let mut child = Command::new(KEEL)
        .args(["run", "--store", store.to_str().unwrap(), "--flush", "fsync", "--snapshot-every", "97"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel starts");
    let setup = setup_lines();
    let setup_count = setup.len() as u64;

    // Writer: the setup, then deposits until the pipe breaks (the child died) or a cap is reached.
    let mut stdin = child.stdin.take().expect("stdin");
    let (sent_tx, sent_rx) = mpsc::channel::<u64>();
    let writer = std::thread::spawn(move || {
        for line in &setup {
            if writeln!(stdin, "{line}").is_err() {
                return 0;
            }
        }
        let mut sent = 0u64;
        while sent < 200_000 {
            if writeln!(stdin, "{}", deposit_line(sent)).is_err() {
                break;
            }
            sent += 1;
            let _ = sent_tx.send(sent);
        }
        sent
    });

    // Reader: acknowledgements, as they are printed.
    let stdout = child.stdout.take().expect("stdout");
    let (ack_tx, ack_rx) = mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let value: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if ack_tx.send(value).is_err() {
                break;
            }
        }
    });

    // Kill after a few hundred acknowledged deposits, while more are in flight.
    let mut acked: Vec<Value> = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    let mut deposits_acked = 0;
    while deposits_acked < 300 {
        let left = deadline.saturating_duration_since(Instant::now());
        let ack = ack_rx.recv_timeout(left).expect("acknowledgements keep coming");
        if ack["tag"].as_u64().expect("tag") > setup_count {
            deposits_acked += 1;
        }
        acked.push(ack);
    }
    // Snapshots are written in the background and promise nothing relative to acknowledgements,
    // so wait until one is on disk before the kill: then recovery must start from a snapshot and
    // replay the journal tail after it. Deposits keep flowing meanwhile.
    let snapshot_deadline = Instant::now() + SNAPSHOT_TIMEOUT;
    let snapshot_seen = loop {
        if let Some(&seq) = snapshots_on_disk(&store).iter().max() {
            break seq;
        }
        assert!(
            Instant::now() < snapshot_deadline,
            "no snapshot file appeared in {} within {SNAPSHOT_TIMEOUT:?} of {deposits_acked} acknowledged \
             deposits (--snapshot-every 97): the background snapshot writer is stuck or failing",
            store.join("snapshots").display()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("child reaped");
    assert!(!status.success(), "the child was killed, not finished: {status:?}");
    // Acknowledgements already printed before the kill are acknowledgements too.
    reader.join().expect("reader");
    acked.extend(ack_rx.try_iter());
    let sent = writer.join().expect("writer");
    let sent = sent.max(sent_rx.try_iter().last().unwrap_or(0));

    // Acknowledged deposits per account, and sent deposits per account (tags are line numbers).
    let mut acked_per_account: HashMap<u64, i64> = HashMap::new();
    for ack in &acked {
        let tag = ack["tag"].as_u64().expect("tag");
        let events = ack["events"].as_array().expect("events");
        if tag > setup_count {
            assert_eq!(events.len(), 1, "{ack}");
            let deposited = &events[0]["Deposited"];
            assert_eq!(deposited["amount"], 1_000_000, "{ack}");
            let account = deposited["account"].as_u64().expect("account");
            assert_eq!(account, 1 + (tag - setup_count - 1) % u64::from(ACCOUNTS), "tag {tag}");
            *acked_per_account.entry(account).or_default() += 1;
        } else {
            assert!(events.iter().all(|e| e.get("Rejected").is_none()), "setup refused: {ack}");
        }
    }
    let acked_deposits: i64 = acked_per_account.values().sum();
    assert!(acked_deposits >= 300);
    assert!(sent > acked_deposits as u64, "commands were still in flight at the kill ({sent} sent)");
    let mut sent_per_account: HashMap<u64, i64> = HashMap::new();
    for i in 0..sent {
        *sent_per_account.entry(1 + i % u64::from(ACCOUNTS)).or_default() += 1;
    }

    // Restart: recovery report, every account's balance, and the digest.
    let (restart, lines) = inspect(&store);
    let report = stderr(&restart);
    assert!(report.contains("recovery:"), "{report}");
    assert!(report.contains("; clean") || report.contains("DAMAGE"), "clean or repaired: {report}");
    // A snapshot was on disk before the kill: recovery starts from it (or a newer one written
    // since), while the replay below starts from the journal's first record.
    assert!(report.contains("restored snapshot at seq"), "{report}");
    let restored: u64 = report
        .split("restored snapshot at seq ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no snapshot sequence number in: {report}"));
    assert!(
        restored >= snapshot_seen,
        "restored seq {restored}, but seq {snapshot_seen} was on disk: {report}"
    );
    let recovered = balances(&lines);
    for account in 1..=u64::from(ACCOUNTS) {
        let balance = recovered.get(&account).copied().expect("account recovered");
        let units = balance / 1_000_000;
        assert_eq!(balance % 1_000_000, 0);
        let acked = acked_per_account.get(&account).copied().unwrap_or(0);
        let sent = sent_per_account.get(&account).copied().unwrap_or(0);
        assert!(acked <= units && units <= sent, "account {account}: {acked} acked ≤ {units} ≤ {sent} sent");
    }
    let (last_seq, digest) = shutdown_state(&lines);
    let total_units: i64 = recovered.values().map(|b| b / 1_000_000).sum();
    assert_eq!(last_seq, setup_count + total_units as u64, "every journalled command is a deposit or setup");

    // An independent clean replay of the journal (from seq 1, no snapshot) reaches the same state.
    let (_, summary) = replay(&store.join("journal.kjl"));
    assert_eq!(summary["digest"].as_u64(), Some(digest));
    assert_eq!(summary["last_seq"].as_u64(), Some(last_seq));
    assert_eq!(summary["journal"]["damage"], Value::Null);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Offsets of each record in a journal file: (start, payload length).
fn record_offsets(bytes: &[u8]) -> Vec<(usize, usize)> {
    const FILE_HEADER: usize = 12;
    const RECORD_HEADER: usize = 16;
    let mut records = Vec::new();
    let mut at = FILE_HEADER;
    while at + RECORD_HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        records.push((at, len));
        at += RECORD_HEADER + len;
    }
    assert_eq!(at, bytes.len(), "a cleanly shut down journal ends on a record boundary");
    records
}

fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("copy directory");
    std::fs::copy(from.join("journal.kjl"), to.join("journal.kjl")).expect("copy journal");
}

#[test]
fn a_torn_or_corrupt_journal_recovers_the_prefix_before_the_damage() {
    let dir = temp_dir("damage");
    let store = dir.join("store");
    let setup = setup_lines();
    let setup_count = setup.len() as u64;
    let deposits = 200u64;
    let mut input = setup.join("\n");
    input.push('\n');
    for i in 0..deposits {
        input.push_str(&deposit_line(i));
        input.push('\n');
    }
    let output = run_store(&store, &input);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let (last_seq, _) = shutdown_state(&json_lines(&output));
    assert_eq!(last_seq, setup_count + deposits);

    let bytes = std::fs::read(store.join("journal.kjl")).expect("journal");
    let records = record_offsets(&bytes);
    assert_eq!(records.len() as u64, last_seq);

    // Copy 1: cut inside the payload of record 151 (seq 151). Copy 2: flip a payload byte of
    // record 101 (seq 101). Each keeps exactly the records before the damage.
    let torn = dir.join("torn");
    copy_store(&store, &torn);
    let (start, len) = records[150];
    let cut = start + 16 + len / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(torn.join("journal.kjl"))
        .and_then(|f| f.set_len(cut as u64))
        .expect("truncate");

    let corrupt = dir.join("corrupt");
    copy_store(&store, &corrupt);
    let (start, len) = records[100];
    let mut damaged = bytes.clone();
    damaged[start + 16 + len / 2] ^= 0x40;
    std::fs::write(corrupt.join("journal.kjl"), &damaged).expect("write corrupt copy");

    for (copy, kept, damage, offset) in [
        (&torn, 150u64, "torn payload", records[150].0),
        (&corrupt, 100u64, "checksum mismatch", records[100].0),
    ] {
        // The independent replay of the damaged file stops at the damage and names it.
        let (replayed, summary) = replay(&copy.join("journal.kjl"));
        assert_eq!(summary["last_seq"].as_u64(), Some(kept));
        let named = summary["journal"]["damage"].as_str().expect("damage named").to_string();
        assert!(named.contains(damage) && named.contains(&format!("offset {offset}")), "{named}");
        assert!(stderr(&replayed).contains(damage));

        // The restart names the damage and the prefix it kept, and cuts the tail.
        let (restart, lines) = inspect(copy);
        let report = stderr(&restart);
        assert!(report.contains("DAMAGE"), "{report}");
        assert!(report.contains(damage), "{report}");
        assert!(report.contains(&format!("at byte offset {offset}")), "{report}");
        assert!(report.contains(&format!("{kept} records (seq 1..={kept})")), "{report}");
        assert_eq!(std::fs::metadata(copy.join("journal.kjl")).unwrap().len(), offset as u64);

        // Recovered state = the commands before the damage: the setup, then deposits in order.
        let (recovered_seq, digest) = shutdown_state(&lines);
        assert_eq!(recovered_seq, kept);
        assert_eq!(summary["digest"].as_u64(), Some(digest));
        let mut expected: HashMap<u64, i64> = (1..=u64::from(ACCOUNTS)).map(|a| (a, 0)).collect();
        for i in 0..kept - setup_count {
            *expected.get_mut(&(1 + i % u64::from(ACCOUNTS))).unwrap() += 1_000_000;
        }
        assert_eq!(balances(&lines), expected);

        // The repaired store takes new commands from the next sequence number on.
        let next = run_store(copy, &format!("{}\n", deposit_line(0)));
        assert_eq!(next.status.code(), Some(0), "{}", stderr(&next));
        assert!(stderr(&next).contains("; clean"), "{}", stderr(&next));
        assert_eq!(json_lines(&next)[0]["seq"].as_u64(), Some(kept + 1));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
