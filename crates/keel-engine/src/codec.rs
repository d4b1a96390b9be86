//! The one place that turns engine values into bytes and back: journal records, snapshots and
//! the state digest all go through here.
//!
//! The format is bincode 2 (standard configuration: little-endian, variable-length integers) over
//! the serde representation of the types. It is compact and fast, and keeping it behind this
//! module means it can be swapped without touching the engine.

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// Bytes that do not decode to the expected value.
#[derive(Debug, Error)]
#[error("cannot decode {what}: {detail}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// The decoder's explanation.
    pub detail: String,
}

/// Largest value the decoder accepts. Decoding untrusted bytes (a damaged journal, a fuzzer) must
/// not let a forged length prefix make it allocate without bound.
const DECODE_LIMIT: usize = 1 << 30;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn decode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT>,
> {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Appends the encoding of `value` to `out`.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail for lack of space; serde impls of our types never error.
    bincode::serde::encode_into_std_write(value, out, config()).expect("encoding into memory cannot fail");
}

/// The encoding of `value`.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

/// Decodes a whole value from `bytes`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, decode_config())
        .map_err(|error| DecodeError { what, detail: error.to_string() })?;
    if used != bytes.len() {
        return Err(DecodeError { what, detail: format!("{} trailing bytes", bytes.len() - used) });
    }
    Ok(value)
}
