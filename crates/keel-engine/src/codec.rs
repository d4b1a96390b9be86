//! The one place that turns engine values into bytes and back: journal records, snapshots and
//! the state digest all go through here.
//!
//! The format is bincode 2 (standard configuration: little-endian, variable-length integers) over
//! the serde representation of the types. It is compact and fast, and keeping it behind this
//! module means it can be swapped without touching the engine.
//!
//! # Schema version
//!
//! bincode is not self-describing: bytes written by a build whose types had another shape (a
//! command variant inserted before another, a field added to the state) can decode without error
//! into different values. Every payload Keel keeps on disk — a journal record, a snapshot —
//! therefore starts with one byte, [`SCHEMA_VERSION`], and [`decode`] refuses bytes of another
//! schema by name ([`DecodeError::Schema`]) instead of guessing. The crate's golden tests
//! (`tests/encoding_golden.rs`) pin the encoding of every command and of a small engine state: a
//! change of shape that fails them must bump [`SCHEMA_VERSION`].

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// The version of the encoding of journal records and snapshots, written as the first byte of
/// each. Bump it whenever a serialized type changes shape (see the module documentation).
pub const SCHEMA_VERSION: u8 = 2;

/// Bytes that do not decode to the expected value.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes were written with another encoding schema: by another version of Keel.
    #[error(
        "cannot decode {what}: written with encoding schema {found}, this build reads schema {SCHEMA_VERSION}"
    )]
    Schema {
        /// What was being decoded.
        what: &'static str,
        /// The schema byte the bytes start with.
        found: u8,
    },
    /// The bytes are not an encoding of the expected value.
    #[error("cannot decode {what}: {detail}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's explanation.
        detail: String,
    },
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

/// Appends the encoding of `value` to `out`: the schema byte, then the value.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    out.push(SCHEMA_VERSION);
    encode_value_into(value, out);
}

/// The encoding of `value`: the schema byte, then the value.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

/// Appends the bare encoding of `value`, without the schema byte: for the state digest, which
/// hashes many small values and is compared only between engines of one build.
pub(crate) fn encode_value_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail for lack of space; serde impls of our types never error.
    bincode::serde::encode_into_std_write(value, out, config()).expect("encoding into memory cannot fail");
}

/// Decodes a whole value from `bytes` written by [`encode`]: the schema byte must be this build's
/// [`SCHEMA_VERSION`], and trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    let Some((&schema, body)) = bytes.split_first() else {
        return Err(DecodeError::Malformed { what, detail: "no bytes".into() });
    };
    if schema != SCHEMA_VERSION {
        return Err(DecodeError::Schema { what, found: schema });
    }
    let (value, used) = bincode::serde::decode_from_slice(body, decode_config())
        .map_err(|error| DecodeError::Malformed { what, detail: error.to_string() })?;
    if used != body.len() {
        return Err(DecodeError::Malformed { what, detail: format!("{} trailing bytes", body.len() - used) });
    }
    Ok(value)
}
