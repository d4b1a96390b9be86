//! Arbitrary bytes as a journal file: the parser and the streaming reader must never panic and
//! must agree on which records are good; every good record's payload must decode to a command
//! or be refused with a typed error (never a panic, never an unbounded allocation).
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none journal_records -- -max_total_time=60`.

#![no_main]

use keel_engine::journal::{JournalReader, parse_records};
use keel_engine::{Sequenced, codec};
use libfuzzer_sys::fuzz_target;

const MAX_RECORD: u32 = 1 << 16;

fuzz_target!(|data: &[u8]| {
    // Random bytes rarely carry a valid checksum, so also feed them to the payload decoder
    // directly: a damaged or forged record must be refused, never panic or allocate unbounded.
    let _ = codec::decode::<Sequenced>("fuzz input", data);
    let parsed = parse_records(data, MAX_RECORD);
    let Ok(mut reader) = JournalReader::from_reader(data, "fuzz", MAX_RECORD) else {
        assert!(parsed.is_err(), "the reader refused a header the parser accepted");
        return;
    };
    let parsed = parsed.expect("the parser refused a header the reader accepted");
    let mut streamed = Vec::new();
    while let Some(record) = reader.next_record().expect("reading from memory cannot fail") {
        streamed.push((record.seq, record.payload.to_vec()));
        let _ = codec::decode::<Sequenced>("journal record", record.payload);
    }
    let expected: Vec<(u64, Vec<u8>)> =
        parsed.records.iter().map(|(seq, range)| (*seq, data[range.clone()].to_vec())).collect();
    assert_eq!(streamed, expected, "the parser and the streaming reader disagree");
});
