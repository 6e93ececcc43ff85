//! Typed views over wire headers, in the smoltcp style.
//!
//! Each protocol has a `Packet<T: AsRef<[u8]>>` view that reads and writes fields in place
//! (`new_checked` validates the length once, so accessors never panic), and a `Repr` that is
//! a plain, owned description of the header with `parse`, `emit` and `buffer_len`.

pub mod checksum;
pub mod ethernet;
pub mod header;
pub mod ipv4;
pub mod ipv6;
pub mod stoq;
pub mod stun;
pub mod udp;

use core::fmt;

/// Why a header could not be parsed or emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer is shorter than the header (or than a length field claims).
    Truncated,
    /// A field holds a value this parser rejects (version, header length, ...).
    Malformed,
    /// The checksum does not match.
    Checksum,
    /// A buffer passed to `emit` is too small for the header.
    BufferTooSmall,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "header truncated",
            Self::Malformed => "malformed header field",
            Self::Checksum => "checksum mismatch",
            Self::BufferTooSmall => "output buffer too small",
        })
    }
}

impl core::error::Error for Error {}

/// Result of a wire parse.
pub type Result<T> = core::result::Result<T, Error>;

/// Reads a big-endian `u16` at `off`; callers have validated the length.
#[inline]
fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Writes a big-endian `u16` at `off`; callers have validated the length.
#[inline]
fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}
