//! The `keel scenario`, `keel replay` and `keel run` commands, driven as a user would: the real
//! binary, real files, JSON Lines in and out.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// A directory under the target's temporary area, emptied first, unique per test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-scenario-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(KEEL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel starts");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("keel finishes")
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

/// The name of an event's variant (`{"Settled":{..}}` → "Settled").
fn kind(event: &Value) -> &str {
    event.as_object().and_then(|o| o.keys().next()).map_or("", String::as_str)
}

fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_runs_cleanly() {
    let files = example_files();
    assert!(files.len() >= 4, "expected the example scenarios, found {files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let output = Command::new(KEEL).arg("scenario").arg(&file).output().expect("keel runs");
        assert_eq!(output.status.code(), Some(0), "{name}: {}", stderr(&output));
        assert!(stderr(&output).is_empty(), "{name}: {}", stderr(&output));
        let lines = json_lines(&output);
        assert!(!lines.is_empty(), "{name} printed nothing");
        let kinds: Vec<&str> = lines.iter().map(|l| kind(&l["event"])).collect();
        assert!(!kinds.contains(&"Fault"), "{name} produced a Fault");
        let rejected = kinds.iter().filter(|k| **k == "Rejected").count();
        if name.contains("reject") {
            assert!(rejected > 0, "{name} is meant to demonstrate rejections");
        } else {
            assert_eq!(rejected, 0, "{name} produced Rejected events: {lines:?}");
        }
        // Sequence numbers start at 1 and never go back (a tick with nothing due prints nothing,
        // so the printed ones may skip); every line carries its source line.
        let mut last_seq = 1;
        for line in &lines {
            let seq = line["seq"].as_u64().expect("seq");
            assert!(seq >= last_seq, "{name}: seq {seq} after {last_seq}");
            last_seq = seq;
            assert!(line["line"].as_u64().is_some(), "{name}: {line}");
        }
    }
}

#[test]
fn examples_show_what_they_claim() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let events = |file: &str| {
        let output = Command::new(KEEL).arg("scenario").arg(dir.join(file)).output().expect("keel runs");
        json_lines(&output)
    };
    let count = |lines: &[Value], k: &str| lines.iter().filter(|l| kind(&l["event"]) == k).count();

    let trade = events("simple_trade.jsonl");
    assert_eq!(count(&trade, "Settled"), 4, "two fills, both sides booked");
    assert_eq!(count(&trade, "AccountView"), 2);
    assert_eq!(count(&trade, "Depth"), 2);

    let stop = events("stop_order.jsonl");
    let triggered = stop.iter().any(|l| l["event"]["Book"]["event"].get("Triggered").is_some());
    assert!(triggered, "the stop order triggered");
    let stopper_flat = stop.iter().rev().find(|l| kind(&l["event"]) == "AccountView").expect("a view");
    assert_eq!(stopper_flat["event"]["AccountView"]["positions"], Value::Array(vec![]));

    let funding = events("funding.jsonl");
    let paid = funding.iter().find(|l| kind(&l["event"]) == "Funding").expect("funding settled");
    let payments = paid["event"]["Funding"]["payments"].as_array().expect("payments");
    assert_eq!(payments.len(), 2);
    let sum: i64 = payments.iter().map(|p| p[1].as_i64().expect("amount")).sum();
    assert_eq!(sum, 0, "funding is a transfer between accounts");
    assert!(paid["event"]["Funding"]["rate"].as_i64().expect("rate") > 0, "the premium is positive");

    let long = events("leveraged_long.jsonl");
    let ratios: Vec<i64> =
        long.iter().filter_map(|l| l["event"]["AccountView"]["margin_ratio"].as_i64()).collect();
    assert!(ratios.len() >= 3 && ratios.windows(2).all(|w| w[0] < w[1]), "ratio grows: {ratios:?}");
}

#[test]
fn a_malformed_line_stops_the_run_naming_the_line_and_the_field() {
    let scenario = [
        r#"{"cmd":"create_market","preset":"BTC-PERP","id":1}"#,
        r#"{"cmd":"open_account","account":"alice"}"#,
        r#"{"cmd":"deposit","account":"alice","amount":"100000"}"#,
        r#"{"cmd":"index","market":"BTC-PERP","price":"65000"}"#,
        "# the next order is off the 0.1 tick",
        "",
        r#"{"cmd":"place","account":"alice","market":"BTC-PERP","side":"buy","price":65000.05,"qty":"0.1"}"#,
        r#"{"cmd":"digest"}"#,
    ]
    .join("\n");
    let output = run(&["scenario", "-"], &scenario);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output).trim(),
        "error: line 7, field \"price\": 65000.05 is not a multiple of the tick size 0.1"
    );
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 4, "the four commands before the bad line ran, nothing after");
    assert!(lines.iter().all(|l| l["line"].as_u64() < Some(7)));

    let output = run(&["scenario", "--keep-going", "-"], &scenario);
    assert_eq!(output.status.code(), Some(2), "a bad line is still reported in the exit code");
    assert!(stderr(&output).contains("line 7, field \"price\""));
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 5, "the digest after the bad line ran too");
    assert_eq!(kind(&lines[4]["event"]), "Digest");
    assert_eq!(lines[4]["line"], 8);
}

#[test]
fn hostile_input_is_reported_and_never_crashes() {
    let lines = [
        "not json at all",
        "[1, 2, 3]",
        "{\"cmd\": 7}",
        "{\"cmd\":\"place\"}",
        "{\"cmd\":\"deposit\",\"account\":\"nobody\",\"amount\":1}",
        "{\"cmd\":\"create_market\",\"preset\":\"BTC-PERP\",\"id\":1}",
        "{\"cmd\":\"open_account\",\"account\":\"a\"}",
        "{\"cmd\":\"deposit\",\"account\":\"a\",\"amount\":1e400}",
        "{\"cmd\":\"deposit\",\"account\":\"a\",\"amount\":\"79228162514264337593543950335\"}",
        "{\"cmd\":\"deposit\",\"account\":\"a\",\"amount\":-0}",
        "{\"cmd\":\"place\",\"account\":\"a\",\"market\":1,\"side\":\"buy\",\"price\":1e300,\"qty\":1}",
        "{\"cmd\":\"place\",\"account\":\"a\",\"market\":1,\"side\":\"buy\",\"price\":\"9999999999\",\"qty\":\"9999999999\"}",
        "{\"cmd\":\"place\",\"account\":4294967295,\"market\":4294967295,\"side\":\"sell\",\"qty\":1}",
        "{\"cmd\":\"depth\",\"market\":1,\"levels\":4294967295}",
        "{\"cmd\":\"advance\",\"hours\":\"999999999999999999\"}",
        "{\"cmd\":\"tick\",\"at_ms\":18446744073709551615}",
        "{\"cmd\":\"tick\"}",
        "{\"cmd\":\"create_market\",\"symbol\":\"Z\",\"tick\":\"1000000\",\"lot\":\"1000000\",\"max_price\":\"1e27\",\"max_position\":\"1\",\"tiers\":[]}",
        "{\"cmd\":\"create_market\",\"symbol\":\"Y\",\"tick\":\"0.000001\",\"lot\":\"1\",\"max_price\":\"1\",\"max_position\":\"1\",\"tiers\":[{\"floor\":0,\"mmr\":\"1%\",\"max_leverage\":4294967295}]}",
        "{\"cmd\":\"add_asset\",\"symbol\":\"Q\",\"decimals\":18,\"price\":\"9223372036854.775807\",\"haircut\":\"100%\"}",
        "{\"cmd\":\"deposit\",\"account\":\"a\",\"asset\":\"Q\",\"amount\":\"9.223372036854775807\"}",
        "{\"cmd\":\"account\",\"account\":\"a\"}",
        "\u{feff}{\"cmd\":\"digest\"}",
        "{\"cmd\":\"digest\"}",
    ]
    .join("\n");
    let mut input = lines.into_bytes();
    input.extend_from_slice(b"\n\xff\xfe invalid utf-8\n");
    let mut child = Command::new(KEEL)
        .args(["scenario", "--keep-going", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel starts");
    child.stdin.take().expect("stdin").write_all(&input).expect("write");
    let output = child.wait_with_output().expect("keel finishes");
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("line 1:") && err.contains("line 25:"), "{err}");
    let lines = json_lines(&output);
    assert_eq!(kind(&lines.last().expect("output")["event"]), "Digest");
}

#[test]
fn a_run_journal_replays_to_the_same_digest() {
    let dir = temp_dir("replay");
    let store = dir.join("store");
    let scenario =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/simple_trade.jsonl"))
            .expect("example");
    let output = run(&["run", "--store", store.to_str().unwrap(), "--flush", "buffered"], &scenario);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let lines = json_lines(&output);
    let shutdown = &lines.last().expect("output")["shutdown"];
    let outcomes = &lines[..lines.len() - 1];
    assert!(outcomes.iter().all(|o| o["tag"].is_u64() && o["events"].is_array()));
    let run_events: usize = outcomes.iter().map(|o| o["events"].as_array().unwrap().len()).sum();
    let query_events = outcomes
        .iter()
        .flat_map(|o| o["events"].as_array().unwrap())
        .filter(|e| ["AccountView", "Depth", "Digest"].contains(&kind(e)))
        .count();

    let replay = Command::new(KEEL)
        .args(["replay", store.join("journal.kjl").to_str().unwrap()])
        .output()
        .expect("keel replay");
    assert_eq!(replay.status.code(), Some(0), "{}", stderr(&replay));
    let replayed = json_lines(&replay);
    let summary = replayed.last().expect("summary");
    assert_eq!(summary["digest"], shutdown["digest"]);
    assert_eq!(summary["last_seq"], shutdown["last_seq"]);
    assert_eq!(summary["journal"]["damage"], Value::Null);
    assert!(stderr(&replay).contains("clean end of journal"));
    // The journal holds the state changes only, so replay shows every event but the queries'.
    assert_eq!(replayed.len() - 1, run_events - query_events);

    // Starting again on the same store continues where it stopped.
    let again = run(&["run", "--store", store.to_str().unwrap()], "{\"cmd\":\"tick\"}\n");
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let lines = json_lines(&again);
    assert_eq!(lines[0]["seq"].as_u64(), shutdown["last_seq"].as_u64().map(|s| s + 1));
    assert!(stderr(&again).contains("; clean"), "{}", stderr(&again));
    let _ = std::fs::remove_dir_all(&dir);
}
