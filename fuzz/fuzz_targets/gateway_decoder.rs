//! The gateway's frame decoder on arbitrary bytes: it must never panic, must consume no more than
//! it was given, and every frame it accepts must re-encode to exactly the bytes it came from.

#![no_main]

use keel_gateway::codec::{ClientMessage, ServerMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A stream of client frames, as a session's reader sees it.
    let mut at = 0;
    while at < data.len() {
        match ClientMessage::decode(&data[at..]) {
            Ok(Some((message, used))) => {
                assert!(used <= data.len() - at);
                assert_eq!(message.encode(), &data[at..at + used]);
                at += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
    // The same bytes as server frames, as the client library sees them.
    let mut at = 0;
    while at < data.len() {
        match ServerMessage::decode(&data[at..]) {
            Ok(Some((message, used))) => {
                assert!(used <= data.len() - at);
                assert_eq!(message.encode(), &data[at..at + used]);
                at += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
});
